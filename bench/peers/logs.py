"""Logs: a rare regex over one deployment's day, through Sonde's API, through chDB's
own scan of the same stored table, and through ``grep -E`` over the same lines as a
file. Lines per second = that deployment's lines of the day / p50 time.

Each run's pattern carries a different never-matching alternative
(``...|zq{run}xj``), so that no run is answered from ClickHouse's query condition
cache, which keys on the filter; all three tools get the same patterns.
"""

from __future__ import annotations

import json
import pathlib
import statistics
import subprocess
import sys
import time

import httpx
import numpy as np

from peers import Sonde
from wire import ld

RARE = "CUDA error: an illegal memory access was encountered"
PATTERN = r"CUDA error: an illegal memory access.*device [0-7]"
TEMPLATES = ["INFO POST /v1/predict 200 latency_ms={} tokens={} req={:x}",
             "DEBUG batch size={} queue={} step={:x}",
             "WARNING slow request latency_ms={} tokens={} req={:x}",
             "INFO GET /health 200 latency_ms={} n={} id={:x}",
             "ERROR upstream timeout after {} ms retry={} req={:x}"]


def lines_of(seed: int, dep: int, n: int, t0_ns: int) -> tuple[np.ndarray, list[bytes]]:
    rng = np.random.default_rng([seed, 7, dep])
    ts = t0_ns + np.sort(rng.integers(0, 86400 * 10**9, n))
    pick, a, b, c = rng.integers(0, len(TEMPLATES), n), rng.integers(0, 5000, n), rng.integers(0, 4096, n), \
        rng.integers(0, 2**40, n)
    rare = rng.random(n) < 2e-5
    msgs = [(f"{RARE} (device {a[i] % 8})" if rare[i] else TEMPLATES[pick[i]].format(a[i], b[i], c[i])).encode()
            for i in range(n)]
    return ts, msgs


def otlp_logs(dep: int, ts: np.ndarray, msgs: list[bytes]) -> bytes:
    """ExportLogsServiceRequest: LogRecord {time_unix_nano = 1 (fixed64); body = 5}."""
    kv = lambda k, v: ld(1, ld(1, k.encode()) + ld(2, ld(1, v.encode())))  # noqa: E731
    resource = kv("sonde.model_id", f"m{dep:03d}") + kv("sonde.deployment_id", f"d{dep:03d}") + \
        kv("sonde.replica", "r00")
    recs = b"".join(ld(2, b"\x09" + int(t).to_bytes(8, "little") + ld(5, ld(1, m))) for t, m in zip(ts, msgs))
    return ld(1, ld(1, resource) + ld(2, ld(1, ld(1, b"sonde-bench-peers")) + recs))


def run(tmp: pathlib.Path, seed: int, total: int, deployments: int, end_ns: int, runs: int) -> dict:
    t0_ns = end_ns - 86400 * 10**9
    per = total // deployments
    server = Sonde(tmp, "sonde-logs", "/v1/otlp/v1/logs")
    try:
        sent, t, cpu0 = 0, time.perf_counter(), server.cpu()
        with httpx.Client(timeout=300) as http:
            for dep in range(deployments):
                ts, msgs = lines_of(seed, dep, per, t0_ns)
                if dep == 0:
                    (tmp / "d000.log").write_bytes(b"\n".join(msgs) + b"\n")
                for i in range(0, per, 10_000):
                    r = http.post(server.write_url, content=otlp_logs(dep, ts[i:i + 10_000], msgs[i:i + 10_000]),
                                  headers={"Content-Type": "application/x-protobuf", **server.write_headers})
                    r.raise_for_status()
                    sent += len(msgs[i:i + 10_000])
        ingest = {"lines": sent, "wall_s": time.perf_counter() - t}
        server.settle(longest=60)
        ingest["cpu_s"] = server.cpu() - cpu0
        patterns = [f"{PATTERN}|zq{k}xj" for k in range(runs + 1)]
        api, matches = [], 0
        with httpx.Client(timeout=120) as http:
            for k, p in enumerate(patterns):
                t = time.perf_counter()
                r = http.get(f"{server.url}/v1/models/m000/deployments/d000/logs", headers=server.query_headers,
                             params={"start_epoch_millis": t0_ns // 10**6, "end_epoch_millis": end_ns // 10**6,
                                     "search_pattern": p, "limit": 1000})
                elapsed = time.perf_counter() - t
                r.raise_for_status()
                if k:
                    api.append(elapsed)
                matches = len(r.json()["logs"])
    finally:
        server.stop()
    script = ("import json, sys, time\nfrom sonde.store.chdb import ChdbExecutor\n"
              "ex = ChdbExecutor.open(sys.argv[1]); out = []\n"
              "for p in json.loads(sys.argv[2]):\n"
              "    t = time.perf_counter()\n"
              "    r = ex.query_arrow(\"SELECT count() AS n FROM sonde.logs WHERE entity = 'd000' AND match(message, {p:String})\", {'p': p})\n"
              "    out.append([time.perf_counter() - t, r.column('n')[0].as_py()])\n"
              "print(json.dumps(out))\n")
    raw = json.loads(subprocess.run([sys.executable, "-c", script, str(server.dir / "store"), json.dumps(patterns)],
                                    check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
    grep = []
    for p in patterns:
        t = time.perf_counter()
        g = subprocess.run(["grep", "-E", "-c", p, str(tmp / "d000.log")], capture_output=True, text=True)
        grep.append((time.perf_counter() - t, int(g.stdout.strip() or 0)))
    rows = {"Sonde API (search_pattern, limit 1000)": (api, matches),
            "chDB scan of the stored table (count, match())": ([x[0] for x in raw[1:]], raw[-1][1]),
            "grep -E -c over the lines as a file": ([x[0] for x in grep[1:]], grep[-1][1])}
    return {"ingest": ingest, "day_lines": per,
            "rows": {k: {"p50_ms": statistics.median(v) * 1000, "lines_per_s": per / statistics.median(v),
                         "matches": m} for k, (v, m) in rows.items()}}


def table(res: dict) -> str:
    i = res["ingest"]
    head = (f"{i['lines']:,} lines ingested in {i['wall_s']:.1f} s ({i['lines'] / i['wall_s']:,.0f}/s,"
            f" {i['lines'] / i['cpu_s']:,.0f} per server CPU-s); one deployment's day: {res['day_lines']:,} lines\n\n")
    rows = ["| tool | p50 ms | lines/s | matches |", "|---|---|---|---|"]
    rows += [f"| {k} | {v['p50_ms']:,.1f} | {v['lines_per_s']:,.0f} | {v['matches']:,} |" for k, v in res["rows"].items()]
    return head + "\n".join(rows)
