"""Requests benchmark: span ingest through a real ``sonde serve``'s OTLP receiver, then
the requests endpoints over what was ingested, through its HTTP API.

    .venv/bin/python bench/bench_requests.py                       # 1M spans, ~1-2 minutes
    .venv/bin/python bench/bench_requests.py --spans 200000 --runs 10
    taskset -c 0,1 .venv/bin/python bench/bench_requests.py        # server and clients on 2 cores
    .venv/bin/python bench/bench_requests.py --ingest-processes 1  # span decoding beside the server

Not a test (CI never runs it). 16 clients by default: each posts one request at a time
and waits for its group commit (``flush_interval_ms`` and the insert), so a few clients
measure that wait, not the server (4 clients: ~23k spans/s with the server half idle).

Each client is one replica of one deployment posting
protobuf ``ExportTraceServiceRequest``s of ``--batch`` spans: requests of 4 spans each
(a server span with route, method, status and an ``X-Request-ID`` header attribute;
``tokenize``, ``model.forward`` and ``detokenize`` children), lognormal latencies, 2%
5xx and 3% 404. Every span starts inside the hour before the run, so the whole load
(all ``--spans``) lies in the hour the queries ask about: the slowest 20 must be found
among all of it. Bodies are built before the clock starts; each client's first body
warms the server off the clock; the rest are posted by all clients at once, and
"spans/s" is those spans over the time from release to the last acknowledgement
(acknowledged means committed to the store). "per server CPU s" divides them by the
CPU time the server process used (chDB's threads included), the figure a busy machine
distorts least; "decode-only" is the receiver's protobuf-to-Arrow step alone, here.

The queries then run against the same server, just after the load (its background
merges still going): each ``--runs`` times after one warm-up, over one persistent
HTTP connection, timed from request to parsed JSON.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import sys
import tempfile
import time

import httpx
import numpy as np
import psutil
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from bench_ingest import post_concurrently

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from live_server import LiveServer  # noqa: E402
from otlp_build import attributes  # noqa: E402

from sonde.ingest import decode as dec  # noqa: E402
from sonde.ingest.traces import TracesWalk  # noqa: E402

SEC = 10**9
MODEL, DEP = "bench", "bench-d"
#: children of each server span: name, start and end as fractions of the request
CHILDREN = (("tokenize", 0.0, 0.05), ("model.forward", 0.05, 0.9), ("detokenize", 0.9, 0.98))
PER_REQUEST = 1 + len(CHILDREN)
SERVER, INTERNAL = 2, 1


class Bodies:
    """One client's bodies, each a template message whose ids, times and statuses are
    rewritten per body: building the attributes once keeps building 1M spans to seconds."""

    def __init__(self, client: int, batch: int, end_ns: int, seed: int):
        self.client, self.requests, self.end_ns = client, batch // PER_REQUEST, end_ns
        self.rng = np.random.default_rng(seed)
        self.msg = ExportTraceServiceRequest()
        rs = self.msg.resource_spans.add()
        rs.resource.attributes.extend(attributes(
            {"sonde.model_id": MODEL, "sonde.deployment_id": DEP, "sonde.replica": f"r{client:03d}"}))
        spans = rs.scope_spans.add().spans
        for _ in range(self.requests):
            spans.add(name="POST /v1/generate", kind=SERVER, attributes=attributes({
                "http.route": "/v1/generate", "http.request.method": "POST", "http.response.status_code": 200,
                "http.request.header.x-request-id": ["-"], "server.address": "bench"}))
            for name, _, _ in CHILDREN:
                spans.add(name=name, kind=INTERNAL, attributes=attributes({"model.name": "bench-7b"}))
        self.spans = list(spans)

    def body(self, k: int) -> bytes:
        n, rng = self.requests, self.rng
        ids = np.frombuffer(rng.bytes(n * (16 + 8 * PER_REQUEST)), np.uint8).reshape(n, -1)
        # starts inside the hour before end_ns, ending before it
        starts = self.end_ns - 3600 * SEC + 10 * SEC + rng.integers(0, 3580 * SEC, n)
        durs = (rng.lognormal(np.log(0.08), 0.7, n) * SEC).astype(np.int64)
        u = rng.random(n)
        statuses = np.where(u < 0.02, 500, np.where(u < 0.05, 404, 200))
        it = iter(self.spans)
        for i in range(n):
            trace, row, start, dur = ids[i, :16].tobytes(), ids[i], int(starts[i]), int(durs[i])
            server = next(it)
            server.trace_id, server.span_id = trace, row[16:24].tobytes()
            server.start_time_unix_nano, server.end_time_unix_nano = start, start + dur
            server.attributes[2].value.int_value = int(statuses[i])
            server.attributes[3].value.array_value.values[0].string_value = f"req-{self.client}-{k}-{i}"
            server.status.code = 2 if statuses[i] >= 500 else 0
            for j, (_, a, b) in enumerate(CHILDREN):
                child = next(it)
                child.trace_id, child.span_id = trace, row[24 + 8 * j:32 + 8 * j].tobytes()
                child.parent_span_id = server.span_id
                child.start_time_unix_nano, child.end_time_unix_nano = start + int(dur * a), start + int(dur * b)
        return self.msg.SerializeToString()


def decode_only(bodies: list[bytes]) -> tuple[float, float]:
    """Spans/s from protobuf to Arrow rows in this process (no HTTP, no store), by the
    wall clock and by this thread's CPU time; a first pass warms pyarrow up, as in a server."""

    def once() -> int:
        rows = [TracesWalk("ws").walk(dec.decode(b, dec.Encoding.PROTOBUF, "traces")).result() for b in bodies]
        return sum(r.finish([MODEL] * len(r.placements), 0).num_rows for r in rows)

    once()
    start, cpu = time.perf_counter(), time.thread_time()
    n = once()
    return n / (time.perf_counter() - start), n / (time.thread_time() - cpu)


def ingest(server: LiveServer, args, end_ns: int) -> dict:
    per_client = max(2, args.spans // (args.clients * args.batch))
    t = time.perf_counter()
    makers = [Bodies(c, args.batch, end_ns, seed=c) for c in range(args.clients)]
    bodies = [[m.body(k) for k in range(per_client)] for m in makers]
    batch = makers[0].requests * PER_REQUEST
    print(f"built {args.clients} x {per_client} bodies of {batch} spans"
          f" ({sum(map(len, bodies[0])) / per_client / 1024:.0f} KiB each) in {time.perf_counter() - t:.0f} s",
          flush=True)
    headers = {**server.headers("ingest_key"), "Content-Type": "application/x-protobuf"}
    proc = psutil.Process(server.proc.pid)
    r = post_concurrently("spans", f"{server.url}/v1/otlp/v1/traces", headers, [b[0] for b in bodies],
                          [[(x, batch) for x in b[1:]] for b in bodies], lambda: server_cpu(proc))
    timed = batch * r["requests"]
    return {"spans": batch * args.clients * per_client, "timed": timed, "batch": batch,
            "rate": timed / r["elapsed"], "per_cpu": timed / (r["after"] - r["before"]),
            "p50": r["p50"], "p99": r["p99"], "decode": decode_only(bodies[0][:20])}


def server_cpu(proc: psutil.Process) -> float:
    """CPU seconds of the server and its span decoding processes (``--ingest-processes``)."""
    return sum(sum(p.cpu_times()[:2]) for p in (proc, *proc.children(recursive=True)))


def timed_get(c: httpx.Client, url: str, params: dict, runs: int) -> tuple[list[float], dict]:
    first = c.get(url, params=params)  # warm-up, and a sanity check
    assert first.status_code == 200, first.text[:500]
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        body = c.get(url, params=params).raise_for_status().json()
        times.append(time.perf_counter() - t)
    return times, body


def queries(server: LiveServer, end_ns: int, runs: int) -> list[tuple[str, list[float], int]]:
    url = f"{server.url}/v1/models/{MODEL}/deployments/{DEP}/requests"
    hour = {"start_epoch_millis": end_ns // 10**6 - 3600_000, "end_epoch_millis": end_ns // 10**6}
    out = []
    with httpx.Client(headers=server.headers(), timeout=60) as c:
        for label, extra in (("slowest 20, 1 h", {}), ("slowest 20, 5xx, 1 h", {"status": "5xx"}),
                             ("newest 20, 1 h", {"order": "newest"}),
                             ("slowest 100, 1 h", {"limit": 100})):
            times, body = timed_get(c, url, {**hour, **extra}, runs)
            out.append((label, times, len(body["requests"])))
            if not extra:
                slowest = [r["request_id"] for r in body["requests"]]
        # one request with its spans and log lines: the page a row of the list opens
        times = []
        for i in range(runs + 1):
            t = time.perf_counter()
            body = c.get(f"{url}/{slowest[i % len(slowest)]}").raise_for_status().json()
            times.append(time.perf_counter() - t)
        out.append(("one request + spans", times[1:], len(body["spans"])))
    return out


def ms(xs: list[float], p: float) -> float:
    return float(np.percentile(np.array(xs) * 1000, p))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--spans", type=int, default=1_000_000, help="spans to load (all of one deployment)")
    ap.add_argument("--batch", type=int, default=1000, help="spans per OTLP request (whole requests of 4)")
    ap.add_argument("--clients", type=int, default=16, help="concurrent posters, one replica each")
    ap.add_argument("--runs", type=int, default=30, help="timed runs per query")
    ap.add_argument("--ingest-processes", type=int, default=0,
                    help="the server's ingest_processes setting (span decoding beside the server)")
    args = ap.parse_args()
    end_ns = time.time_ns() // SEC * SEC
    print(f"sonde requests benchmark: {len(os.sched_getaffinity(0))} cores available,"
          f" load average {os.getloadavg()[0]:.2f} at start")
    with tempfile.TemporaryDirectory(prefix="sonde-bench-requests-") as data:
        server = LiveServer(data, env={"SONDE_INGEST_PROCESSES": str(args.ingest_processes)}).start()
        try:
            r = ingest(server, args, end_ns)
            q = queries(server, end_ns, args.runs)
        finally:
            server.stop()
    print(f"\nspan ingest through OTLP/HTTP ({args.clients} clients, {r['batch']} spans a request,"
          f" ingest_processes={args.ingest_processes},"
          f" {r['timed']:,} spans timed of {r['spans']:,} loaded; goal >= 50,000 spans/s)")
    print(f"{'spans/s':>10} {'per server CPU s':>17} {'p50 ms':>7} {'p99 ms':>7} {'decode-only /s':>15}"
          f" {'per CPU s':>10}")
    print(f"{r['rate']:>10,.0f} {r['per_cpu']:>17,.0f} {r['p50']:>7.0f} {r['p99']:>7.0f} {r['decode'][0]:>15,.0f}"
          f" {r['decode'][1]:>10,.0f}")
    print(f"\nrequests endpoints over {r['spans']:,} spans ({r['spans'] // PER_REQUEST:,} requests) of one deployment"
          f" in the hour queried, loaded through OTLP; goal: slowest 20 p50 < 100 ms")
    print(f"{'query':<22} {'p50 ms':>7} {'p90 ms':>7} {'mean ms':>8} {'runs':>5} {'rows':>5}")
    for label, times, rows in q:
        print(f"{label:<22} {ms(times, 50):>7.1f} {ms(times, 90):>7.1f} {statistics.mean(times) * 1000:>8.1f}"
              f" {len(times):>5} {rows:>5}")


if __name__ == "__main__":
    main()
