"""Agent overhead and spool replay rate, against a real ``sonde serve``.

    .venv/bin/python bench/bench_agent.py [--window-1s 30] [--window-10s 60] [--batches 2000]

1. CPU overhead: ``sonde agent run --interval I`` supervising an idle child
   (``sleep``), sending to a real server. After a warm-up, the agent process's own CPU
   time (all its threads; the child is not counted) is read over a window of wall time. Reported as % of one core (from per-thread schedstat,
   ns resolution; utime+stime, 10 ms ticks, alongside), with CPU per sample and RSS.
   Goal (issue 4): <= 1% of a core at --interval 1.
2. Spool replay: a spool filled with ``--batches`` batches the way an outage fills it
   (alternating one metrics tick of 16 points and one log batch of 50 lines, encoded by
   the agent's own code), replayed into the real server by the agent's Exporter; rate =
   batches (and points + log records) acknowledged per second of wall time, from the
   first request to an empty spool. Once with replay's coalescing (up to 256 batches
   per request), once with one batch per request (at most 200 batches: it is slow),
   to show why it coalesces.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

import psutil

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from live_server import LiveServer  # noqa: E402

from sonde.agent import otlp  # noqa: E402
from sonde.agent.export import Exporter  # noqa: E402
from sonde.agent.model import LogRecord, Point  # noqa: E402
from sonde.spool import Spool  # noqa: E402

TICK_POINTS = 16
LOG_LINES = 50


def task_cpu_ns(pid: int) -> int:
    """On-CPU time of every thread of ``pid`` in ns (/proc/PID/task/*/schedstat): far finer
    than utime/stime's 10 ms clock ticks, which a 0.1%-of-a-core process barely moves."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            pass  # a thread that ended between listing and reading
    return total


def cpu_overhead(server: LiveServer, tmp: pathlib.Path, interval: int, window: float, warmup: float) -> dict:
    key_file = tmp / "ingest.key"
    key_file.write_text(server.creds["ingest_key"])
    spool = tmp / f"spool-{interval}"
    cmd = [sys.executable, "-m", "sonde", "agent", "run", "--server", server.url, "--key-file", str(key_file),
           "--model-id", "bench", "--deployment-id", f"cpu-{interval}", "--interval", str(interval),
           "--spool-dir", str(spool), "--log-level", "warning",
           "--", sys.executable, "-c", "import time; time.sleep(10**6)"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        agent = psutil.Process(proc.pid)
        time.sleep(warmup)  # imports, NVML init, first samples: start-up, not steady state
        c0, n0, w0 = agent.cpu_times(), task_cpu_ns(proc.pid), time.monotonic()
        time.sleep(window)
        c1, n1, w1 = agent.cpu_times(), task_cpu_ns(proc.pid), time.monotonic()
        cpu = (n1 - n0) / 1e9
        ticks_cpu = (c1.user + c1.system) - (c0.user + c0.system)
        wall = w1 - w0
        rss = agent.memory_info().rss
    finally:
        proc.terminate()
        proc.wait(30)
    return {"interval": interval, "wall": wall, "cpu": cpu, "pct": 100 * cpu / wall, "ticks_pct": 100 * ticks_cpu / wall,
            "per_sample_ms": 1000 * cpu / (wall / interval), "rss_mib": rss / 2**20}


def fill_spool(path: pathlib.Path, batches: int) -> tuple[int, int]:
    """Spool ``batches`` batches, half metric ticks, half log batches; returns (points, records)."""
    res = otlp.resource({"sonde.model_id": "bench", "sonde.deployment_id": "replay", "sonde.replica": "bench"})
    spool = Spool(str(path))
    points = records = 0
    t0 = time.time_ns() - batches * 10**9
    for i in range(batches):
        ts = t0 + i * 10**9
        if i % 2 == 0:
            tick = [Point(f"bench.gauge.{j}", "1", "gauge", float(i + j), {"hw.gpu.index": j % 8}) for j in range(TICK_POINTS)]
            spool.append(otlp.METRICS, otlp.compress(otlp.metrics_request(res, tick, ts)))
            points += len(tick)
        else:
            lines = [LogRecord(ts + k, f"INFO:model:request served in 12.{k} ms request_id=r{i}-{k}", 9, "INFO",
                               {"request_id": f"r{i}-{k}", "log.iostream": "stderr"}) for k in range(LOG_LINES)]
            spool.append(otlp.LOGS, otlp.compress(otlp.logs_request(res, lines)))
            records += len(lines)
    spool.close()
    return points, records


def replay(server: LiveServer, path: pathlib.Path, max_entries: int, batches: int, items: int) -> dict:
    spool = Spool(str(path))
    exporter = Exporter(server.url, server.creds["ingest_key"], spool, {}, replay_max_entries=max_entries)
    start = time.monotonic()
    exporter.start()
    with exporter._cond:  # wake it: the spool is not empty and no retry is pending
        exporter._cond.notify()
    while len(spool) and time.monotonic() - start < 600:
        time.sleep(0.01)
    elapsed = time.monotonic() - start
    left = len(spool)
    stats = exporter.stats
    exporter.close()
    spool.close()
    return {"per_request": max_entries, "batches": batches - left, "seconds": elapsed,
            "batches_s": (batches - left) / elapsed, "items_s": items * (batches - left) / batches / elapsed,
            "requests": stats.replay_requests, "left": left}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--window-1s", type=float, default=30.0, help="measurement window at --interval 1 (s)")
    ap.add_argument("--window-10s", type=float, default=60.0, help="measurement window at --interval 10 (s)")
    ap.add_argument("--warmup", type=float, default=5.0)
    ap.add_argument("--batches", type=int, default=2000, help="spooled batches to replay")
    args = ap.parse_args()

    tmp = pathlib.Path(tempfile.mkdtemp(prefix="sonde-bench-agent-"))
    (tmp / "data").mkdir()
    server = LiveServer(tmp / "data").start()
    try:
        print(f"machine: {psutil.cpu_count()} CPUs, python {sys.version.split()[0]}")
        print("\nagent CPU overhead, supervising an idle child, sending to a real server")
        print(f"{'interval':>9} {'window s':>9} {'CPU s':>7} {'% of a core':>12} {'(utime+stime)':>14} "
              f"{'CPU/sample ms':>14} {'RSS MiB':>8}")
        for interval, window in ((1, args.window_1s), (10, args.window_10s)):
            r = cpu_overhead(server, tmp, interval, window, args.warmup)
            print(f"{r['interval']:>8}s {r['wall']:>9.1f} {r['cpu']:>7.3f} {r['pct']:>11.3f}% {r['ticks_pct']:>13.2f}% "
                  f"{r['per_sample_ms']:>14.2f} {r['rss_mib']:>8.1f}")

        print(f"\nspool replay into a real server ({args.batches} batches: ticks of {TICK_POINTS} points "
              f"and batches of {LOG_LINES} log lines, alternating)")
        print(f"{'batches/request':>16} {'batches':>8} {'requests':>9} {'seconds':>8} {'batches/s':>10} {'points+lines/s':>15}")
        for max_entries in (256, 1):
            # one batch per request runs at the server's group-commit pace: fewer batches
            n = args.batches if max_entries > 1 else min(args.batches, 200)
            path = tmp / f"replay-{max_entries}"
            points, records = fill_spool(path, n)
            r = replay(server, path, max_entries, n, points + records)
            print(f"{r['per_request']:>16} {r['batches']:>8} {r['requests']:>9} {r['seconds']:>8.2f} "
                  f"{r['batches_s']:>10.0f} {r['items_s']:>15.0f}" + (f"  ({r['left']} left)" if r["left"] else ""))
            shutil.rmtree(path)
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
