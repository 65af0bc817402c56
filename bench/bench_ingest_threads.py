"""Where a Sonde server's ingest CPU goes, by thread, per sample.

    .venv/bin/python bench/bench_ingest_threads.py
    .venv/bin/python bench/bench_ingest_threads.py --hours 6 --rounds 2

Starts a real ``sonde serve`` on a fresh data directory and sends it the first
``--hours`` of the side-by-side's ``small`` fleet (bench/peers/workload.py: 16
replicas, 16 GPU gauges and a 12-bucket latency histogram by status each, at 10 s)
through OTLP, 180 steps a request, from 2 senders, as ``bench/peers/run`` does. Each
thread's on-CPU time is read from ``/proc/PID/task`` (``bench_fleet.thread_cpu``)
before and after the load (the load's quiet-down included), and threads are told
apart by what the kernel knows of them:
- the process's main thread runs the event loop: uvicorn, FastAPI, the key check;
- ClickHouse names its own threads: ``MergeMutate`` merges parts, the rest are chDB's
  insert and background threads;
- every other thread is a Python thread: the request threads (decode, walk,
  cumulative state, Arrow, the write-ahead log) and the store's writer.

docs/benchmarks.md, "Why the ingest target is out of reach", reads the event loop's
share from this as the floor HTTP costs.
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "bench"), str(ROOT / "bench" / "peers"), str(ROOT / "tests")]

import load  # noqa: E402
import peers  # noqa: E402
from bench_fleet import thread_cpu  # noqa: E402
from workload import SCALES, Fleet  # noqa: E402

_CLASSES = ("event loop (main thread)", "Python threads: requests and the writer", "chDB: inserts and the rest",
            "chDB: merges")


def classify(pid: int, tid: int, comm: str, python_comm: str) -> str:
    if tid == pid:
        return _CLASSES[0]
    if comm == python_comm:
        return _CLASSES[1]
    return _CLASSES[3] if comm.startswith("MergeMutate") else _CLASSES[2]


def one_load(hours: float) -> tuple[int, dict[str, float]]:
    """Samples sent, and CPU seconds by thread class."""
    end_ns = time.time_ns() // (60 * 10**9) * (60 * 10**9)
    fleet = Fleet(dataclasses.replace(SCALES["small"], hours=hours), 1, end_ns)
    reps = [fleet.replica(d, r) for d, r in fleet.replicas()]
    with tempfile.TemporaryDirectory() as d:
        server = peers.Sonde(pathlib.Path(d), "sonde", "/v1/otlp/v1/metrics")
        try:
            server.settle(longest=20)
            pid = server.proc.pid
            before = thread_cpu(pid)
            python_comm = before[pid][0]  # what the kernel calls this process's own threads
            result = load.load(server, fleet, reps, "otlp", steps=180, per_request=1, senders=2)
            after = thread_cpu(pid)
        finally:
            server.stop()
    by = dict.fromkeys(_CLASSES, 0.0)
    for tid, (comm, ns) in after.items():
        by[classify(pid, tid, comm, python_comm)] += (ns - before.get(tid, (comm, 0))[1]) / 1e9
    return result["samples"], by


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hours", type=float, default=6, help="hours of the small fleet to send (6: 2.0M samples)")
    ap.add_argument("--rounds", type=int, default=1, help="loads, each into a fresh server")
    args = ap.parse_args()
    runs = [one_load(args.hours) for _ in range(args.rounds)]
    print("| thread | " + " | ".join(f"load {i + 1}: us a sample" for i in range(len(runs))) + " |")
    print("|---|" + "---|" * len(runs))
    for c in _CLASSES:
        print(f"| {c} | " + " | ".join(f"{by[c] / n * 1e6:.2f}" for n, by in runs) + " |")
    print("| all | " + " | ".join(f"{sum(by.values()) / n * 1e6:.2f}" for n, by in runs) + " |")
    print("| samples per server CPU-second | " + " | ".join(f"{n / sum(by.values()):,.0f}" for n, by in runs) + " |")


if __name__ == "__main__":
    main()
