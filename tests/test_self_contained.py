"""The repository stands alone: nothing in it reads, or points at, a file beside the checkout.

A clone on a new machine has nothing beside it, so the vendor schemas, the contract and
every fixture live in the repository (docs/api.md). The audit hook in conftest.py fails
any test that opens a file beside the checkout; the scan below finds the references that
would open one, or send a reader to one, before anything runs them.
"""

from __future__ import annotations

import os
import pathlib
import re

import pytest

from conftest import BESIDE, OPENED_BESIDE, REPO, Beside

# Files of the development checkout's neighbours: the vendor pages and the contract notes.
OUTSIDE = re.compile(r"shared/spec|\.\./shared\b|SONDE\.md|management-openapi\.json"
                     r"|\b(?:chain-deployments|deployment-logs|deployment-metrics|loops-deployment-metrics"
                     r"|training-job-metrics)\.txt\b")
#: a folder beside the checkout, as the development machine has one
SIBLING = "shared"
SCANNED = ("src", "tests", "bench", "docs", "README.md")


def test_paths_beside_the_checkout_are_flagged(tmp_path):
    beside = Beside(tmp_path / "repo", allowed=[tmp_path / "venv", "/usr"])
    assert beside(tmp_path / "shared" / "spec" / "x.json") == str(tmp_path / "shared" / "spec" / "x.json")
    assert beside(os.fsencode(tmp_path / "shared")) == str(tmp_path / "shared")
    assert beside(f"{tmp_path}/repo/../{SIBLING}/x") == str(tmp_path / "shared" / "x")
    assert beside(tmp_path / "repo-other" / "x") == str(tmp_path / "repo-other" / "x")  # a prefix is not inside


def test_the_checkout_and_the_interpreter_are_not(tmp_path, monkeypatch):
    beside = Beside(tmp_path / "repo", allowed=[tmp_path / "venv", "/usr"])
    for path in (tmp_path / "repo", tmp_path / "repo" / "tests" / "x.py", tmp_path / "venv" / "lib" / "a.py",
                 tmp_path / ".cache" / "x", tmp_path, "/usr/lib/python3/os.py", "/etc/hosts", 3):
        assert beside(path) is None, path
    (tmp_path / "repo").mkdir()
    monkeypatch.chdir(tmp_path / "repo")
    assert beside("tests/x.py") is None
    assert beside(f"../{SIBLING}/x") == str(tmp_path / "shared" / "x")


def test_the_guard_is_off_where_everything_is_beside_the_checkout():
    assert not Beside(pathlib.Path("/repo")).active and Beside(pathlib.Path("/repo"))("/etc/hosts") is None


def test_the_hook_records_an_open_beside_the_checkout():
    if not BESIDE.active:
        pytest.skip(f"the checkout's parent {REPO.parent} is the root or the temp dir: the guard is off")
    missing = REPO.parent / "sonde-no-such-sibling" / "x.json"
    seen = len(OPENED_BESIDE)
    with pytest.raises(FileNotFoundError):
        open(missing)
    assert OPENED_BESIDE[seen:] == [str(missing)]
    del OPENED_BESIDE[seen:]  # recorded as it should be; not a failure of this test


def test_no_file_refers_to_one_outside_the_repository():
    here = pathlib.Path(__file__).resolve()
    found = []
    for top in SCANNED:
        root = REPO / top
        for path in sorted(root.rglob("*")) if root.is_dir() else [root]:
            if not path.is_file() or "__pycache__" in path.parts or path == here:
                continue
            data = path.read_bytes()
            if b"\0" in data:
                continue
            for n, line in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
                if OUTSIDE.search(line):
                    found.append(f"{path.relative_to(REPO)}:{n}: {line.strip()}")
    assert not found, "cite the project's docs (docs/api.md) instead:\n" + "\n".join(found)


def test_citations_of_the_contract_name_its_sections():
    api = (REPO / "docs" / "api.md").read_text()
    # GitHub's anchors: lower case, punctuation dropped, spaces as hyphens
    anchors = {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in re.findall(r"^#+ (.+)$", api, re.M)}
    cited = {}
    for top in SCANNED:
        for path in (REPO / top).rglob("*.py"):
            for anchor in re.findall(r"docs/api\.md#([\w-]+)", path.read_text()):
                cited.setdefault(anchor, path.relative_to(REPO))
    assert cited and not {a: p for a, p in cited.items() if a not in anchors}
