"""Logs: two questions of one deployment, each through Sonde's API, through chDB's own
scan of the same stored table, and through ``grep`` over the same lines as a file.
Lines per second = the lines of the question's window / p50 time.

- a rare regex over the deployment's day (``search_pattern``; ``grep -E -c``);
- includes and excludes over its last 30 minutes (``includes``/``excludes``: every
  include and no exclude appears, as substrings; ``grep -F`` for each include, then
  ``grep -v -F -c`` for the excludes).

Each run's filter carries a different never-matching part (the regex a
``...|zq{run}xj`` alternative, the excludes a ``zq{run}xj`` term), so that no run is
answered from ClickHouse's query condition cache, which keys on the filter; all three
tools get the same filters.
"""

from __future__ import annotations

import json
import pathlib
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass

import httpx
import numpy as np

from peers import Sonde
from wire import ld

RARE = "CUDA error: an illegal memory access was encountered"
PATTERN = r"CUDA error: an illegal memory access.*device [0-7]"
# includes/excludes: a few hundred of the 4,000-odd lines of 30 minutes (errors with
# retry=1... that did not wait 4xxx ms), under the API's limit of 1,000, so every tool
# finds the same lines
INCLUDES = ("ERROR", "retry=1")
EXCLUDES = ("after 4",)
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


@dataclass(frozen=True)
class Question:
    title: str
    lo_ns: int
    hi_ns: int
    #: the rare regex (``search_pattern``); otherwise the includes and excludes
    is_regex: bool

    def api(self, k: int) -> dict:
        """The API's filters for run ``k``."""
        if self.is_regex:
            return {"search_pattern": f"{PATTERN}|zq{k}xj"}
        return {"includes": list(INCLUDES), "excludes": [*EXCLUDES, f"zq{k}xj"]}

    def chdb(self, k: int) -> tuple[str, dict]:
        """chDB's raw count of the same rows with the same filter."""
        where = "entity = 'd000' AND ts >= fromUnixTimestamp64Nano({lo:Int64}) AND ts < fromUnixTimestamp64Nano({hi:Int64})"
        params: dict = {"lo": self.lo_ns, "hi": self.hi_ns}
        f = self.api(k)
        if self.is_regex:
            where += " AND match(message, {p:String})"
            params["p"] = f["search_pattern"]
        for name, terms, test in (("i", f.get("includes", ()), "> 0"), ("x", f.get("excludes", ()), "= 0")):
            for j, term in enumerate(terms):
                where += f" AND position(message, {{{name}{j}:String}}) {test}"
                params[f"{name}{j}"] = term
        return f"SELECT count() AS n FROM sonde.logs WHERE {where}", params

    def grep(self, k: int, path: pathlib.Path) -> str:
        """A shell command counting the same lines of ``path``."""
        f = self.api(k)
        if self.is_regex:
            return f"grep -E -c {shlex.quote(f['search_pattern'])} {path}"
        first, *rest = f["includes"]
        cmd = f"grep -F -e {shlex.quote(first)} {path}"
        for term in rest:
            cmd += f" | grep -F -e {shlex.quote(term)}"
        return cmd + " | grep -v -F -c " + " ".join(f"-e {shlex.quote(t)}" for t in f["excludes"])


def questions(t0_ns: int, end_ns: int) -> list[Question]:
    return [Question("a rare regex over one deployment's day", t0_ns, end_ns, True),
            Question("includes and excludes over its last 30 minutes", end_ns - 1800 * 10**9, end_ns, False)]


def run(tmp: pathlib.Path, seed: int, total: int, deployments: int, end_ns: int, runs: int) -> dict:
    t0_ns = end_ns - 86400 * 10**9
    per = total // deployments
    qs = questions(t0_ns, end_ns)
    files = {q.title: tmp / f"d000-{i}.log" for i, q in enumerate(qs)}
    lines = {}
    server = Sonde(tmp, "sonde-logs", "/v1/otlp/v1/logs")
    try:
        sent, t, cpu0 = 0, time.perf_counter(), server.cpu()
        with httpx.Client(timeout=300) as http:
            for dep in range(deployments):
                ts, msgs = lines_of(seed, dep, per, t0_ns)
                if dep == 0:
                    for q in qs:
                        inside = [m for t_, m in zip(ts, msgs) if q.lo_ns <= t_ < q.hi_ns]
                        files[q.title].write_bytes(b"\n".join(inside) + b"\n")
                        lines[q.title] = len(inside)
                for i in range(0, per, 10_000):
                    r = http.post(server.write_url, content=otlp_logs(dep, ts[i:i + 10_000], msgs[i:i + 10_000]),
                                  headers={"Content-Type": "application/x-protobuf", **server.write_headers})
                    r.raise_for_status()
                    sent += len(msgs[i:i + 10_000])
        ingest = {"lines": sent, "wall_s": time.perf_counter() - t}
        server.settle(longest=60)
        ingest["cpu_s"] = server.cpu() - cpu0
        api: dict = {}
        with httpx.Client(timeout=120) as http:
            for q in qs:
                times = []
                for k in range(runs + 1):  # run 0 warms up
                    t = time.perf_counter()
                    r = http.get(f"{server.url}/v1/models/m000/deployments/d000/logs", headers=server.query_headers,
                                 params={"start_epoch_millis": q.lo_ns // 10**6, "end_epoch_millis": q.hi_ns // 10**6,
                                         "limit": 1000, **q.api(k)})
                    elapsed = time.perf_counter() - t
                    r.raise_for_status()
                    if k:
                        times.append(elapsed)
                api[q.title] = (times, len(r.json()["logs"]))
    finally:
        server.stop()
    # chDB in a child process: one process per data dir, and this one holds no session
    script = ("import json, sys, time\nfrom sonde.store.chdb import ChdbExecutor\n"
              "ex = ChdbExecutor.open(sys.argv[1]); out = []\n"
              "for sql, params in json.loads(sys.argv[2]):\n"
              "    t = time.perf_counter()\n"
              "    r = ex.query_arrow(sql, params)\n"
              "    out.append([time.perf_counter() - t, r.column('n')[0].as_py()])\n"
              "print(json.dumps(out))\n")
    stmts = [q.chdb(k) for q in qs for k in range(runs + 1)]
    raw = json.loads(subprocess.run([sys.executable, "-c", script, str(server.dir / "store"), json.dumps(stmts)],
                                    check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
    out = []
    for n, q in enumerate(qs):
        mine = raw[n * (runs + 1):(n + 1) * (runs + 1)]
        grep = []
        for k in range(runs + 1):
            t = time.perf_counter()
            g = subprocess.run(q.grep(k, files[q.title]), shell=True, capture_output=True, text=True)
            grep.append((time.perf_counter() - t, int(g.stdout.strip() or 0)))
        rows = {"Sonde API (limit 1000)": api[q.title],
                "chDB scan of the stored table (count)": ([x[0] for x in mine[1:]], mine[-1][1]),
                "grep over the lines as a file": ([x[0] for x in grep[1:]], grep[-1][1])}
        out.append({"title": q.title, "lines": lines[q.title], "filters": q.api(runs), "grep": q.grep(runs, "FILE"),
                    "rows": {k: {"p50_ms": statistics.median(v) * 1000, "lines_per_s": lines[q.title] / statistics.median(v),
                                 "matches": m} for k, (v, m) in rows.items()}})
    return {"ingest": ingest, "questions": out}


def table(res: dict) -> str:
    i = res["ingest"]
    out = (f"{i['lines']:,} lines ingested in {i['wall_s']:.1f} s ({i['lines'] / i['wall_s']:,.0f}/s,"
           f" {i['lines'] / i['cpu_s']:,.0f} per server CPU-s)")
    for q in res["questions"]:
        rows = ["| tool | p50 ms | lines/s | matches |", "|---|---|---|---|"]
        rows += [f"| {k} | {v['p50_ms']:,.1f} | {v['lines_per_s']:,.0f} | {v['matches']:,} |" for k, v in q["rows"].items()]
        out += f"\n\n#### {q['title'][0].upper()}{q['title'][1:]}: {q['lines']:,} lines\n\n" + "\n".join(rows)
    return out
