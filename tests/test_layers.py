"""The tree shows the flow: each package imports only what lies upstream of it."""

import ast
import pathlib
import re

import pytest

SRC = pathlib.Path(__file__).resolve().parents[1] / "src" / "sonde"

# package -> sibling packages it may import (besides its own modules and top-level helpers)
ALLOWED = {
    "store": set(),
    "ingest": {"store"},
    "query": {"store"},
    "agent": set(),
    "instrument": set(),
    # the app serves the dashboard's static files (sonde.web imports no sibling)
    # alerts evaluate through the query layer and keep their documents in the store
    "alerts": {"store", "query"},
    "api": {"store", "ingest", "query", "web", "alerts"},
    "web": set(),
}
PACKAGES = {p.name for p in SRC.iterdir() if p.is_dir() and (p / "__init__.py").exists()}


def _imported_packages(path: pathlib.Path, package: str) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 2 and node.module:  # from ..x import y
                found.add(node.module.split(".")[0])
            elif node.level == 0 and node.module and node.module.startswith("sonde."):
                found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("sonde.")}
    return (found & PACKAGES) - {package}


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_only_upstream(package):
    for path in (SRC / package).rglob("*.py"):
        extra = _imported_packages(path, package) - ALLOWED[package]
        assert not extra, f"{path.relative_to(SRC)} imports {sorted(extra)}"


# SQL keywords in the shapes a statement takes; prose in docstrings does not match them.
_SQL = re.compile(
    r"\b(SELECT\s+\S|INSERT\s+INTO|ALTER\s+TABLE|CREATE\s+(TABLE|DATABASE|VIEW)|DROP\s+(TABLE|DATABASE)"
    r"|FROM\s+\{|WHERE\s+\w+\s*(=|IN)\s|GROUP\s+BY|ORDER\s+BY|UNION\s+ALL)"
)
# Calls that run SQL on a store's executor.
_SQL_CALLS = {"query", "command", "query_arrow", "insert_arrow"}


def _sql_in(path: pathlib.Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and _SQL.search(node.value):
            found.append(f"line {node.lineno}: {node.value.strip()[:60]!r}")
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in _SQL_CALLS
              and isinstance(node.func.value, ast.Attribute) and node.func.value.attr == "ex"):
            found.append(f"line {node.lineno}: .ex.{node.func.attr}(...)")
    return found


def test_sql_detector_finds_statements_and_executor_calls(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text('"""A SELECTed few: select from the list, group by hand."""\n'
                      'q = f"SELECT n FROM {t} WHERE ws = {{ws:String}}"\n'
                      'store.ex.query(q)\n')
    assert sorted({line.split(":")[0] for line in _sql_in(sample)}) == ["line 2", "line 3"]


def test_api_holds_no_sql():
    """SQL lives in sonde.query or sonde.store; the api package speaks HTTP."""
    offenders = {str(p.relative_to(SRC)): found for p in sorted((SRC / "api").rglob("*.py")) if (found := _sql_in(p))}
    assert not offenders, offenders
