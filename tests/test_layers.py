"""The tree shows the flow: each package imports only what lies upstream of it."""

import ast
import pathlib

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
    "api": {"store", "ingest", "query", "web"},
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
