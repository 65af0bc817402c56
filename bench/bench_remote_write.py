"""Prometheus remote-write ingest throughput: end to end through a real ``sonde serve``
(``POST /api/v1/write``), and convert-only (snappy + WriteRequest -> OTLP request, in
this process, no store).

    .venv/bin/python bench/bench_remote_write.py
    .venv/bin/python bench/bench_remote_write.py --clients 2 --requests 10

Each request is what one Prometheus shard sends at ``max_samples_per_send: 2000``
for one replica's page: 720 counters (``_total``), 720 gauges and 40 classic
histograms of 12 ``le`` buckets plus ``_sum`` and ``_count`` (560 samples), each
series one sample, timestamps advancing per request. Every client is its own
replica; bodies are built before the clock starts; the first request of each client
warms the server off the clock. "per server CPU s" divides the samples by the CPU
time the server process used (all its threads).
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

import cramjam
import httpx
import psutil

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from live_server import LiveServer  # noqa: E402

from sonde.ingest import prompb  # noqa: E402
from sonde.ingest.remote_write import Converter  # noqa: E402

LE = ("0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf")
T0_MS = time.time_ns() // 10**6 - 3_600_000
SAMPLES = 720 + 720 + 40 * (len(LE) + 2)
HEADERS = {"Content-Type": "application/x-protobuf", "Content-Encoding": "snappy",
           "X-Prometheus-Remote-Write-Version": "0.1.0"}


def _series(wr, name: str, labels: dict, t: int, v: float) -> None:
    ts = wr.timeseries.add()
    for k, val in sorted({"__name__": name, **labels}.items()):
        ts.labels.add(name=k, value=val)
    ts.samples.add(timestamp=t, value=v)


def body(client: int, k: int) -> bytes:
    t = T0_MS + k * 10_000
    place = {"model_id": "bench", "deployment_id": "bench-d", "replica": f"r{client:04d}", "job": "vllm",
             "instance": f"10.0.0.{client}:8000"}
    wr = prompb.WriteRequest()
    for i in range(720):
        _series(wr, f"bench_requests_{i % 24}_total", {**place, "route": f"/v1/r{i // 24}"}, t, (k + 1) * (i + 1))
        _series(wr, f"bench_queue_{i % 24}", {**place, "route": f"/v1/r{i // 24}"}, t, float(i % 7 + k))
    for h in range(40):
        labels = {**place, "route": f"/v1/r{h}"}
        for j, le in enumerate(LE):
            _series(wr, "bench_latency_seconds_bucket", {**labels, "le": le}, t, (k + 1) * (j + 1))
        _series(wr, "bench_latency_seconds_sum", labels, t, (k + 1) * 3.5)
        _series(wr, "bench_latency_seconds_count", labels, t, (k + 1) * len(LE))
    return bytes(cramjam.snappy.compress_raw(wr.SerializeToString()))


def convert_only(bodies: list[bytes]) -> tuple[float, float]:
    """Samples/s from a snappy body to the OTLP view message the ingest walk reads, by
    the wall clock and by this thread's CPU time."""
    start, cpu = time.perf_counter(), time.thread_time()
    for b in bodies:
        Converter(prompb.parse(bytes(cramjam.snappy.decompress_raw(b))))
    n = SAMPLES * len(bodies)
    return n / (time.perf_counter() - start), n / (time.thread_time() - cpu)


def post_all(url: str, headers: dict, bodies: list[list[bytes]], cpu) -> dict:
    """Each client's first body off the clock, then the rest from a thread per client,
    released together; ``cpu()`` read just before and after. Anything but 204 ends it."""
    with httpx.Client(timeout=120) as c:
        for mine in bodies:
            c.post(url, content=mine[0], headers=headers).raise_for_status()
    latencies: list[float] = []
    errors: list[str] = []
    barrier = threading.Barrier(len(bodies) + 1)

    def run(mine: list[bytes]) -> None:
        with httpx.Client(timeout=120) as c:
            barrier.wait()
            for b in mine[1:]:
                t = time.perf_counter()
                r = c.post(url, content=b, headers=headers)
                latencies.append(time.perf_counter() - t)
                if r.status_code != 204 or "X-Sonde-Rejected" in r.headers:
                    errors.append(f"{r.status_code} {r.headers.get('X-Sonde-Rejected-Reasons')} {r.text[:200]}")

    threads = [threading.Thread(target=run, args=(mine,)) for mine in bodies]
    for t in threads:
        t.start()
    before = cpu()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    elapsed, after = time.perf_counter() - start, cpu()
    if errors:
        raise SystemExit(f"{len(errors)} failed requests, first: {errors[0]}")
    lat = sorted(latencies)
    return {"elapsed": elapsed, "cpu": after - before, "p50": statistics.median(lat) * 1000,
            "p99": lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=2)
    ap.add_argument("--requests", type=int, default=10, help="timed requests per client")
    args = ap.parse_args()
    bodies = [[body(c, k) for k in range(args.requests + 1)] for c in range(args.clients)]
    print(f"sonde remote-write benchmark: {args.clients} clients x {args.requests} requests of {SAMPLES} samples"
          f" ({len(bodies[0][1]):,} bytes snappy), {len(os.sched_getaffinity(0))} cores,"
          f" load average {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory(prefix="sonde-bench-") as data:
        server = LiveServer(data).start()
        try:
            headers = {**HEADERS, "Authorization": f"Bearer {server.creds['ingest_key']}"}
            proc = psutil.Process(server.proc.pid)
            r = post_all(f"{server.url}/api/v1/write", headers, bodies, lambda: sum(proc.cpu_times()[:2]))
        finally:
            server.stop()
    n = SAMPLES * args.clients * args.requests
    conv = convert_only([b for mine in bodies for b in mine[1:]])
    print(f"{'end to end /s':>14} {'per server CPU s':>17} {'p50 ms':>7} {'p99 ms':>7}"
          f" {'convert-only /s':>16} {'per CPU s':>10}")
    print(f"{n / r['elapsed']:>14,.0f} {n / r['cpu']:>17,.0f} {r['p50']:>7.0f} {r['p99']:>7.0f}"
          f" {conv[0]:>16,.0f} {conv[1]:>10,.0f}")


if __name__ == "__main__":
    main()
