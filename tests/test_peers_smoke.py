"""``bench/peers/run --scale tiny --logs ...``: Sonde, Prometheus and VictoriaMetrics
(Debian's packages) started, loaded with the same samples and queried, then the logs
questions asked of a Sonde, chDB and grep, in one child process. Checks that every
number of every table is produced, not how fast anything is, and that the results of a
run without the remote-write Sonde (``--skip-remote-write``) print as well.

``./run test`` installs ``prometheus`` and ``victoria-metrics`` when missing; without
them this test fails, saying so, unless ``SONDE_SKIP_PROMETHEUS=1`` or
``SONDE_SKIP_VICTORIA=1``.
"""

from __future__ import annotations

import json
import pathlib
import re
import subprocess

import pytest

from peers import binary

pytestmark = pytest.mark.e2e

ROOT = pathlib.Path(__file__).resolve().parents[1]
# ">=" / "<=": a rate whose CPU time was under one clock tick (a bound), and ratios of it
NUMBER = re.compile(r"^([<>]=)?-?[\d,]+(\.\d+)?$")


def test_tiny_scale_produces_every_number(tmp_path):
    binary("prometheus", "SONDE_SKIP_PROMETHEUS")  # skips or fails as tests/peers.py does
    binary("victoria-metrics", "SONDE_SKIP_VICTORIA")
    out = subprocess.run([str(ROOT / "bench" / "peers" / "run"), "--scale", "tiny", "--out", str(tmp_path),
                          "--logs", "40000", "--log-deployments", "2"],
                         capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-4000:]
    tables, current = [], None  # each table: header, then rows
    for line in out.stdout.splitlines():
        if not line.startswith("|"):
            current = None
        elif not line.startswith("|---"):
            row = [c.strip() for c in line.strip().strip("|").split("|")]
            if current is None:
                current = [row]
                tables.append(current)
            else:
                current.append(row)
    # systems, queries, the same with answers kept, sweep points, then the two logs questions' tools
    assert [len(t) - 1 for t in tables] == [4, 7, 7, 4 * 2, 3, 3], out.stdout
    for header, *rows in tables:
        for r in rows:
            assert len(r) == len(header), (header, r)
            for cell in r[1:]:
                assert NUMBER.match(cell), f"not a number: {cell!r} under {header} in {r}"
    res = json.loads((tmp_path / "results.json").read_text())
    assert set(res["systems"]) == {"Sonde (OTLP)", "Sonde (remote write)", "Prometheus", "VictoriaMetrics"}
    samples = {s["ingest"]["samples"] for s in res["systems"].values()}
    assert len(samples) == 1 and samples.pop() > 0  # the same samples into every system
    for key, d in res["diffs"].items():
        assert d["pairs"] > 0, key  # Sonde and Prometheus both answered, and were compared
        assert d["kept_vs_computed"] == 0 and d["kept_pairs"] > 0, key  # a kept answer is the computed one
    for q in res["logs"]["questions"]:  # the three tools found the same lines
        assert q["lines"] > 0 and len({r["matches"] for r in q["rows"].values()}) == 1, q
    # a run without the remote-write Sonde (--skip-remote-write) reports the other three
    del res["systems"]["Sonde (remote write)"]
    (tmp_path / "without-rw.json").write_text(json.dumps(res))
    out = subprocess.run([str(ROOT / "bench" / "peers" / "run"), "--report", str(tmp_path / "without-rw.json"),
                          "--out", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-4000:]
    assert "Sonde (remote write)" not in out.stdout
    assert out.stdout.count("| Sonde (OTLP) |") == 1 + 2  # ingest table, then the sweep's two points
