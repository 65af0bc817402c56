"""docs/architecture.md names real things: every file, folder, module and attribute it
cites in backticks exists, so the map cannot drift from the code unnoticed."""

from __future__ import annotations

import importlib
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "sonde"
DOC = ROOT / "docs" / "architecture.md"
FILE_SUFFIXES = (".py", ".md", ".json", ".yml", ".yaml", ".js", ".css", ".html", ".toml")


def _cited() -> list[str]:
    return sorted(set(re.findall(r"`([^`\s]+)`", DOC.read_text())))


def _path(token: str) -> pathlib.Path | None:
    """A repository path, or a path under src/sonde/ (how the doc names modules)."""
    for base in (SRC, ROOT):
        if (base / token).exists():
            return base / token
    return None


def _modules() -> dict[str, list[str]]:
    """Module basename -> dotted names, for the doc's ``module.attribute`` form."""
    out: dict[str, list[str]] = {}
    for p in SRC.rglob("*.py"):
        if p.stem == "__init__":
            continue
        dotted = ".".join(("sonde",) + p.relative_to(SRC).with_suffix("").parts)
        out.setdefault(p.stem, []).append(dotted)
    return out


def _check(token: str, modules: dict[str, list[str]]) -> str | None:
    """None when ``token`` names something real (or is not a code reference), else why not."""
    token = token.rstrip(",.;:")
    if token.endswith(FILE_SUFFIXES) or (token.endswith("/") and "/" in token[:-1] + "/"):
        if "://" in token or token.startswith("/"):
            return None  # URLs and routes
        return None if _path(token) else f"{token}: no such file or folder"
    m = re.fullmatch(r"([a-z_]+(?:/[a-z_]+)+)\.([A-Za-z_][A-Za-z_0-9]*)", token)
    if m:  # ingest/pipeline.Registrar
        module = "sonde." + m.group(1).replace("/", ".")
        return _attr(module, m.group(2), token)
    m = re.fullmatch(r"sonde(\.[a-z_]+)+(\.[A-Za-z_][A-Za-z_0-9]*)?", token)
    top = token.split(".")[1] if m else ""
    if m and ((SRC / top).is_dir() or (SRC / f"{top}.py").exists()):  # sonde.ingest.columns.series_hash
        # (other sonde.* names are resource attributes such as sonde.replica, not code)
        parts = token.split(".")
        for cut in range(len(parts), 1, -1):
            try:
                obj = importlib.import_module(".".join(parts[:cut]))
            except ModuleNotFoundError:
                continue
            for name in parts[cut:]:
                if not hasattr(obj, name):
                    return f"{token}: {name!r} not found"
                obj = getattr(obj, name)
            return None
        return f"{token}: no such module"
    m = re.fullmatch(r"([a-z_]+)\.([A-Za-z_][A-Za-z_0-9]*)", token)
    if m and m.group(1) in modules:  # schema.TABLES, auth.ingest
        found = [mod for mod in modules[m.group(1)] if _attr(mod, m.group(2), token) is None]
        return None if found else f"{token}: {m.group(2)!r} not in any module named {m.group(1)}"
    return None


def _attr(module: str, name: str, token: str) -> str | None:
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError:
        return f"{token}: no module {module}"
    return None if hasattr(mod, name) else f"{token}: {module} has no {name!r}"


def test_every_cited_path_and_name_exists():
    modules = _modules()
    problems = [p for p in (_check(t, modules) for t in _cited()) if p]
    assert not problems, "docs/architecture.md cites what does not exist:\n" + "\n".join(problems)


@pytest.mark.parametrize("token, bad", [
    ("store/schema.py", False), ("store/nothing.py", True), ("ingest/", False),
    ("sonde.ingest.columns.series_hash", False), ("sonde.ingest.columns.no_such", True),
    ("schema.TABLES", False), ("schema.NO_SUCH", True), ("store/accounts.Accounts", False),
    ("store/accounts.Nope", True), ("application/json", False), ("sonde.replica", False),
    ("sonde.query.nope", True),
])
def test_the_checker_itself(token, bad):
    assert (_check(token, _modules()) is not None) == bad
