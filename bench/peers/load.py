"""Senders: the same samples into each system through its native write path.

Requests go out in lock step: every chunk of ``steps`` samples per series (for all
replicas, ``reps`` replicas a request) is acknowledged before the next chunk starts.
That keeps the data time-ordered per series for Prometheus, whose head refuses
samples more than an hour older than its newest (one sender running ahead of another
would get the other's samples refused), and it is what a fleet of scrapers sending
as they go looks like. Bodies are built in the sender threads (numpy, ~3 us a
sample for remote write and less for OTLP), so the client shares the 2 cores; the
primary figure is therefore samples per *server* CPU-second, not per wall second.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

import wire
from workload import Fleet, ReplicaData

CPU_TICK_S = 1 / os.sysconf("SC_CLK_TCK")

ENCODERS = {"otlp": (wire.otlp, wire.OTLP_HEADERS), "remote-write": (wire.remote_write, wire.RW_HEADERS)}


def load(server, fleet: Fleet, reps: list[ReplicaData], encoding: str, *, steps: int, per_request: int = 1,
         senders: int = 2, settle_s: float = 60) -> dict:
    """Send steps [0, fleet.scale.steps) of ``reps``; returns samples, wall and server
    CPU seconds (including the quiet-down after the last acknowledgement), request
    latencies and the mean request size in samples."""
    encode, headers = ENCODERS[encoding]
    headers = {**headers, **server.write_headers}
    groups = [reps[i:i + per_request] for i in range(0, len(reps), per_request)]
    local = threading.local()
    latencies: list[float] = []
    counted = [0, 0]  # samples, requests
    lock = threading.Lock()

    def send(task) -> None:
        group, lo, hi = task
        body = encode(fleet, group, lo, hi)
        n = sum(fleet.samples(d, lo, hi) for d in group)
        if not n:
            return
        if not hasattr(local, "http"):
            local.http = httpx.Client(timeout=300)
        t = time.perf_counter()
        r = local.http.post(server.write_url, content=body, headers=headers)
        elapsed = time.perf_counter() - t
        if r.status_code not in (200, 204) or "X-Sonde-Rejected" in r.headers:
            raise RuntimeError(f"{server.name}: {r.status_code} {r.headers.get('X-Sonde-Rejected-Reasons')} {r.text[:300]}")
        if encoding == "otlp" and r.content:
            _check_partial_success(server.name, r.content)
        with lock:
            latencies.append(elapsed)
            counted[0] += n
            counted[1] += 1

    cpu0, t0 = server.cpu(), time.perf_counter()
    with ThreadPoolExecutor(senders) as pool:
        for lo in range(0, fleet.scale.steps, steps):
            hi = min(lo + steps, fleet.scale.steps)
            list(pool.map(send, [(g, lo, hi) for g in groups]))
    wall = time.perf_counter() - t0
    if hasattr(server, "flush"):
        server.flush()
    server.settle(longest=settle_s)
    cpu = server.cpu() - cpu0
    lat = sorted(latencies)
    # CPU times come in clock ticks: a load too small to use one (a tiny sweep point to a
    # fast peer) reads 0, and its rate is then a lower bound, at one tick
    below_tick = cpu < CPU_TICK_S
    return {"samples": counted[0], "requests": counted[1], "wall_s": wall, "cpu_s": cpu,
            "per_s": counted[0] / wall, "per_cpu_s": counted[0] / max(cpu, CPU_TICK_S),
            "per_cpu_s_is_bound": below_tick,
            "batch": counted[0] / max(counted[1], 1), "p50_ms": statistics.median(lat) * 1000,
            "p99_ms": lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000}


def _check_partial_success(name: str, body: bytes) -> None:
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceResponse
    resp = ExportMetricsServiceResponse.FromString(body)
    if resp.partial_success.rejected_data_points:
        raise RuntimeError(f"{name}: {resp.partial_success.rejected_data_points} points rejected:"
                           f" {resp.partial_success.error_message}")
