"""What ``heap_keep_mb`` (sonde/heap.py) saves a metrics question in a real server: two
``sonde serve`` on copies of one store, glibc's own heap policy (``heap_keep_mb`` = 0)
against the setting, asked the same questions in alternation so both see the same
moments of this noisy machine.

    .venv/bin/python bench/bench_heap.py
    .venv/bin/python bench/bench_heap.py --store /tmp/store-small --keep 32 --runs 200

The store is the peers harness's ``--scale`` fleet (bench_start.kept_or_built: sent through a real
server over OTLP), built into ``--store`` or reused from it; the questions are the
harness's (bench/peers/queries.py) on its first deployment, ``Cache-Control: no-cache``.
Per question and server: request p50 on the client, the server's CPU a request (all
threads), its minor page faults a request, and its resident size at the end.
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

import httpx
import psutil

import bench_start  # noqa: E402  (puts bench/peers on the path)
from live_server import LiveServer  # noqa: E402
from queries import QUERIES, sonde_request  # noqa: E402
from workload import SCALES  # noqa: E402

ASKED = ("gpu_1h", "gpu_24h", "req_24h", "p99_24h")


def _faults(pid: int) -> int:
    return int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[7])


def _cpu(p: psutil.Process) -> float:
    t = p.cpu_times()
    return t.user + t.system


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", default="small", choices=sorted(SCALES))
    ap.add_argument("--store", help="a folder holding a store built here before, or to build one into")
    ap.add_argument("--keep", type=float, default=32.0, help="heap_keep_mb of the second server")
    ap.add_argument("--runs", type=int, default=150, help="requests per question and server")
    args = ap.parse_args()
    folder = pathlib.Path(args.store or tempfile.mkdtemp(prefix="sonde-heap-"))
    end_ms = bench_start.kept_or_built(folder, args.scale) // 10**6
    work = pathlib.Path(tempfile.mkdtemp(prefix="sonde-heap-ab-"))
    settings = (0.0, args.keep)
    servers = []
    try:
        for keep in settings:
            copy = work / f"keep-{keep:g}"
            # cp -a: the store's table folders are relative symlinks
            subprocess.run(["cp", "-a", str(folder / "sonde"), str(copy)], check=True)
            live = LiveServer(str(copy), env={"SONDE_HEAP_KEEP_MB": str(keep)}).start(timeout=600)
            live.query_headers = live.headers("management_key")  # as queries.sonde_request reads them
            servers.append(live)
        procs = [psutil.Process(s.proc.pid) for s in servers]
        clients = [httpx.Client(timeout=60) for _ in servers]
        questions = [q for q in QUERIES if q[0] in ASKED]

        def ask(i: int, window_s: int, metric: str) -> None:
            url, params, headers = sonde_request(servers[i], end_ms, window_s, metric, nocache=True)
            clients[i].get(url, params=params, headers=headers).raise_for_status()

        for _ in range(20):  # the memories loaded, the code paths warm
            for i in range(2):
                for _, _, window_s, metric, _ in questions:
                    ask(i, window_s, metric)
        time.sleep(5)
        print(f"\nstore: {folder} ({args.scale}); deployment d000, {args.runs} requests a question and server,"
              f" alternating\n")
        print("| question | heap_keep_mb | p50 ms | server CPU ms a request | page faults a request |")
        print("|---|---|---|---|---|")
        for key, title, window_s, metric, _ in questions:
            lat: list[list[float]] = [[], []]
            cpu, faults = [0.0, 0.0], [0, 0]
            for n in range(args.runs):
                for i in (n % 2, 1 - n % 2):
                    c0, f0, t0 = _cpu(procs[i]), _faults(procs[i].pid), time.perf_counter()
                    ask(i, window_s, metric)
                    lat[i].append((time.perf_counter() - t0) * 1e3)
                    time.sleep(0.002)  # the server's threads finish with the request
                    cpu[i] += _cpu(procs[i]) - c0
                    faults[i] += _faults(procs[i].pid) - f0
            for i, keep in enumerate(settings):
                print(f"| {title} | {keep:g} | {statistics.median(lat[i]):.2f} | {cpu[i] / args.runs * 1e3:.2f} |"
                      f" {faults[i] / args.runs:.0f} |", flush=True)
        print("\nresident MiB at the end: " + ", ".join(
            f"heap_keep_mb {keep:g}: {p.memory_info().rss / 2**20:.0f}" for keep, p in zip(settings, procs)))
    finally:
        for s in servers:
            s.stop()
        subprocess.run(["rm", "-rf", str(work)], check=False)


if __name__ == "__main__":
    sys.exit(main())
