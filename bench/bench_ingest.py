"""OTLP ingest throughput: end to end through a real ``sonde serve`` over HTTP, and
decode-only (protobuf -> Arrow rows, in this process, no store).

    .venv/bin/python bench/bench_ingest.py                 # the full table
    .venv/bin/python bench/bench_ingest.py --quick         # fewer requests
    taskset -c 0,1 .venv/bin/python bench/bench_ingest.py  # server and clients on 2 cores
    .venv/bin/python bench/bench_ingest.py --state-sync process --state-sync store   # both, one run

Workloads, each request one replica's export of 10k points (5k for histograms):
  numbers   50 metrics x 200 series with 3 attributes, half gauges, half cumulative
            counters (the OpenTelemetry SDK default), timestamps advancing per request
  histogram 250 series of a cumulative explicit-bucket histogram (16 buckets) x 20 metrics
  logs      10k log records with 3 attributes (request_id unique per record)
Every client is its own replica, so series never collide between clients; bodies are
built before the clock starts. The server is started fresh per run in a temp dir.
"per server CPU s" divides the points by the CPU time the server process used (all
its threads, chDB's included): the figure a busy machine does not distort.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import sys
import tempfile
import threading
import time

import httpx
import psutil

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from live_server import LiveServer  # noqa: E402
from otlp_build import (  # noqa: E402
    SEC, gauge, hist_point, histogram, log_record, logs_request, metrics_request, number, sum_metric,
)

from sonde.ingest import decode as dec  # noqa: E402
from sonde.ingest.columns import SeriesCache  # noqa: E402
from sonde.ingest.logs import LogsWalk  # noqa: E402
from sonde.ingest.metrics import MetricsWalk  # noqa: E402

BOUNDS = [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 25]
T0 = (time.time_ns() // SEC - 3600) * SEC


def resource(client: int) -> dict:
    return {"sonde.model_id": "bench", "sonde.deployment_id": "bench-d", "sonde.replica": f"r{client:04d}"}


def numbers_body(client: int, k: int) -> tuple[bytes, int]:
    ts = T0 + k * 10 * SEC
    metrics = []
    for m in range(50):
        pts = [number(ts, (k + 1) * 10 + i if m % 2 else 0.5 * i + k, start=T0 - SEC,
                      attrs={"gpu": i % 8, "route": f"/v1/r{i}", "method": "POST"}) for i in range(200)]
        metrics.append(sum_metric(f"bench.counter.{m}", pts) if m % 2 else gauge(f"bench.gauge.{m}", pts))
    return metrics_request(resource(client), metrics).SerializeToString(), 10_000


def histogram_body(client: int, k: int) -> tuple[bytes, int]:
    ts = T0 + k * 10 * SEC
    metrics = []
    for m in range(20):
        pts = []
        for i in range(250):
            counts = [(k + 1) * (b + i % 3) for b in range(len(BOUNDS) + 1)]
            pts.append(hist_point(ts, counts, BOUNDS, start=T0 - SEC, sum=float(sum(counts)),
                                  attrs={"http.response.status_code": 200 + i % 5, "route": f"/v1/r{i}"}))
        metrics.append(histogram(f"bench.duration.{m}", pts))
    return metrics_request(resource(client), metrics).SerializeToString(), 5_000


def logs_body(client: int, k: int) -> tuple[bytes, int]:
    ts = T0 + k * 10 * SEC
    records = [log_record(ts + i, f"request {i} served in {i % 97} ms", severity_number=9 + (i % 3) * 4,
                          attrs={"request_id": f"req-{client}-{k}-{i}", "component": "server", "status": 200})
               for i in range(10_000)]
    return logs_request(resource(client), records).SerializeToString(), 10_000


WORKLOADS = {"numbers": (numbers_body, "metrics"), "histogram": (histogram_body, "metrics"),
             "logs": (logs_body, "logs")}


def decode_only(kind: str, bodies: list[bytes], points: int) -> tuple[float, float]:
    """Points/s from protobuf to Arrow rows in this process: no HTTP, no cumulative
    state, no store; by the wall clock and by this thread's CPU time (which other
    processes on a busy machine do not inflate). The series cache is warmed by a
    first pass, as in a server."""
    signal = WORKLOADS[kind][1]
    cache = SeriesCache()

    def once() -> None:
        for body in bodies:
            msg = dec.decode(body, dec.Encoding.PROTOBUF, signal)
            if signal == "metrics":
                walk = MetricsWalk("ws", cache, lambda ws, pl: "bench").walk(msg)
                for b in walk.blocks.values():
                    if len(b):
                        b.to_arrow()
            else:
                LogsWalk("ws", lambda ws, pl: "bench", now_ns=0).walk(msg).to_arrow(1)

    once()
    start, cpu = time.perf_counter(), time.thread_time()
    once()
    n = points * len(bodies)
    return n / (time.perf_counter() - start), n / (time.thread_time() - cpu)


def post_concurrently(label: str, url: str, headers: dict, warm: list[bytes],
                      timed: list[list[tuple[bytes, int]]], sample) -> dict:
    """Post the ``warm`` bodies one by one, off the clock; then each client's ``timed``
    bodies from a thread of its own, all released together. ``sample()`` is read just
    before the release and after the last answer (``before`` / ``after``); any failed
    request ends the benchmark."""
    latencies: list[float] = []
    errors: list[str] = []
    with httpx.Client(timeout=120) as c:
        for body in warm:
            c.post(url, content=body, headers=headers).raise_for_status()
    barrier = threading.Barrier(len(timed) + 1)

    def run(mine):
        with httpx.Client(timeout=120) as c:
            barrier.wait()
            for body, _ in mine:
                t = time.perf_counter()
                r = c.post(url, content=body, headers=headers)
                latencies.append(time.perf_counter() - t)
                if r.status_code != 200:
                    errors.append(f"{r.status_code} {r.content[:200]!r}")

    threads = [threading.Thread(target=run, args=(b,)) for b in timed]
    for t in threads:
        t.start()
    before = sample()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    after = sample()
    if errors:
        raise SystemExit(f"{label}: {len(errors)} failed requests, first: {errors[0]}")
    lat = sorted(latencies)
    return {"elapsed": elapsed, "before": before, "after": after, "requests": len(lat),
            "p50": statistics.median(lat) * 1000, "p99": lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000}


def end_to_end(kind: str, clients: int, per_client: int, state_sync: str = "auto") -> dict:
    make, signal = WORKLOADS[kind]
    # request 0 of each client warms the server (registration, series cache, state)
    # off the clock, as a long-running server would be
    bodies = [[make(c, k) for k in range(per_client + 1)] for c in range(clients)]
    warmups, bodies = [b[0][0] for b in bodies], [b[1:] for b in bodies]
    points = bodies[0][0][1]
    with tempfile.TemporaryDirectory(prefix="sonde-bench-") as data:
        server = LiveServer(data, env={"SONDE_STATE_SYNC": state_sync}).start()
        try:
            headers = {"Authorization": f"Bearer {server.creds['ingest_key']}",
                       "Content-Type": "application/x-protobuf"}
            proc = psutil.Process(server.proc.pid)
            r = post_concurrently(kind, f"{server.url}/v1/otlp/v1/{signal}", headers, warmups, bodies,
                                  lambda: sum(proc.cpu_times()[:2]))
        finally:
            server.stop()
    server_cpu = r["after"] - r["before"]
    return {
        "rate": points * clients * per_client / r["elapsed"], "points": points, "requests": r["requests"],
        "per_cpu": points * clients * per_client / server_cpu, "p50": r["p50"], "p99": r["p99"],
        "decode": decode_only(kind, [b for b, _ in bodies[0]], points),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--requests", type=int, default=5, help="timed requests per client")
    ap.add_argument("--quick", action="store_true", help="2 requests per client")
    ap.add_argument("--only", choices=sorted(WORKLOADS), action="append")
    ap.add_argument("--state-sync", choices=["auto", "process", "store"], action="append",
                    help="the server's state_sync setting; 'store' is what API replicas sharing a cluster run")
    args = ap.parse_args()
    per_client = 2 if args.quick else args.requests
    cores = len(os.sched_getaffinity(0))
    print(f"sonde ingest benchmark: {args.clients} clients x {per_client} requests, {cores} cores available")
    print(f"load average {os.getloadavg()[0]:.2f} at start")
    print(f"{'workload':<16} {'per req':>8} {'requests':>8} {'end to end /s':>14} {'per server CPU s':>17}"
          f" {'p50 ms':>7} {'p99 ms':>7} {'decode-only /s':>15} {'per CPU s':>10}")
    runs = [(kind, sync) for kind in args.only or WORKLOADS for sync in args.state_sync or ["auto"]]
    for kind, sync in runs:
        r = end_to_end(kind, args.clients, per_client, sync)
        label = kind if sync == "auto" else f"{kind} ({sync})"
        print(f"{label:<16} {r['points']:>8} {r['requests']:>8} {r['rate']:>14,.0f} {r['per_cpu']:>17,.0f}"
              f" {r['p50']:>7.0f} {r['p99']:>7.0f} {r['decode'][0]:>15,.0f} {r['decode'][1]:>10,.0f}", flush=True)


if __name__ == "__main__":
    main()
