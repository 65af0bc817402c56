"""The agent's line parser on real-looking output of model servers."""

from __future__ import annotations

import json
import pathlib

import pytest

from sonde.agent.logs import make_record, parse
from sonde.agent.model import CANONICAL

CASES = [json.loads(l) for l in (pathlib.Path(__file__).parent / "fixtures" / "agent" / "log_lines.jsonl").open()]
# What the server maps severity numbers to (docs/api.md#logs: 1-8 DEBUG, 9-12 INFO, 13-16 WARNING, 17-24 ERROR).
SERVER_LEVEL = {"DEBUG": "DEBUG", "INFO": "INFO", "WARNING": "WARNING", "ERROR": "ERROR", "CRITICAL": "ERROR"}


def server_level(n: int) -> str | None:
    if n == 0:
        return None
    return "DEBUG" if n <= 8 else "INFO" if n <= 12 else "WARNING" if n <= 16 else "ERROR"


@pytest.mark.parametrize("case", CASES, ids=[c["line"][:40] or "<empty>" for c in CASES])
def test_level_and_attributes(case):
    level, attrs = parse(make_record(case["line"], 0).body)  # body: colour codes already removed
    assert (CANONICAL[level] if level else None) == case["level"]
    assert attrs == case["attrs"]


@pytest.mark.parametrize("case", CASES, ids=[c["line"][:40] or "<empty>" for c in CASES])
def test_record_severity_maps_to_the_servers_level(case):
    rec = make_record(case["line"] + "\n", 123, "stderr")
    assert rec.ts_ns == 123
    assert rec.attrs["log.iostream"] == "stderr"
    assert "\x1b" not in rec.body and not rec.body.endswith("\n")
    if case["level"] is None:
        assert (rec.severity_number, rec.severity_text) == (0, "")
    else:
        assert server_level(rec.severity_number) == SERVER_LEVEL[case["level"]]
        assert rec.severity_text in (case["level"], "CRITICAL")


def test_server_level_helper_matches_the_spec_ranges():
    # the helper above is itself a claim about docs/api.md's ranges: check it at the edges
    assert [server_level(n) for n in (1, 8, 9, 12, 13, 16, 17, 24)] == [
        "DEBUG", "DEBUG", "INFO", "INFO", "WARNING", "WARNING", "ERROR", "ERROR"]


def test_body_is_the_line_as_printed():
    line = '{"level": "info", "message": "x", "extra": {"nested": [1, 2]}}'
    assert make_record(line, 1).body == line  # lossless: search patterns match what the user printed


def test_colour_codes_removed_from_body():
    rec = make_record("\x1b[33mWARNING\x1b[0m:  disk at 91%", 1)
    assert rec.body == "WARNING:  disk at 91%"
    assert rec.severity_text == "WARNING"


def test_uvicorn_access_line_without_level_prefix_has_no_level():
    level, attrs = parse('127.0.0.1:5000 - "GET /health HTTP/1.1" 200')
    assert level is None
    assert attrs["http.response.status_code"] == 200


@pytest.mark.parametrize("line", [
    "a" * 65536, 'x - "' * 13000, "INFO: " + '1.2.3.4:5 - "GET ' * 4000, "[" * 65536,
    "2024-05-01 " * 6000, "request_id=" * 6000, "INFO:" * 13000, "{" + '"a":' * 16000,
], ids=["one-token", "access-prefixes", "access-requests", "brackets", "timestamps", "tokens", "levels", "json-ish"])
def test_long_hostile_lines_parse_in_linear_time(line):
    # lines are untrusted and up to 64 KiB: a backtracking regex here stalls the reader
    # thread, the pipe fills, and the model server blocks on its next print. A quadratic
    # scan of 64 KiB is ~4e9 steps, many seconds; the bound is loose enough that a
    # preempted test process on a loaded CI machine does not trip it.
    import time

    start = time.perf_counter()
    make_record(line, 0)
    assert time.perf_counter() - start < 1.0
