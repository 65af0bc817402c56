"""Agent-shaped ingest: a fleet's many small requests through a real ``sonde serve``.

Not a test (CI never runs it). ``bench_ingest.py`` measures big requests (10k points or
lines each); a fleet of ``sonde agent run`` nodes sends small ones: one request per node
per tick (every metric of the node: 54 points with 8 GPUs) and one log batch per node
per second (however many lines that second had); a model server with SondeMiddleware
exports its request metrics every 10 s. Here each client thread is one node posting
bodies built by the real code (``bench_storage``: the agent's samplers over simulated
hardware, ``Agent.tick``, the agent's OTLP encoder and line parser; the middleware's
instruments on an OpenTelemetry SDK provider with ``sonde_views()``, cumulative), gzipped
as they are sent, to a fresh server (one warm-up request per client off the clock, as a
long-running server would be warm). Workloads: ``agent-tick`` (one node's tick),
``agent-logs`` (``--lines`` lines), ``sdk-export`` (one replica's middleware export at
5 requests/s: exponential histograms).

Server CPU per request is what sizes the API tier of a cluster (docs/scale-out.md). The
server is ``sonde serve``'s app with one change at the executor seam: the chDB executor
is wrapped to add up the CPU time its calls take on the calling thread. Server CPU is
read per thread from /proc (schedstat, ns): chDB's own pools carry ClickHouse's thread
names (ThreadPool, MergeMutate, BgSchPool, ...), the interpreter's threads are named
``python``. The API's own cost, what stays on an API replica when the store is a
ClickHouse cluster, is the python threads' CPU less the executor's; what chDB does
(inserts, merges, the state reads) moves to the ClickHouse servers there.

    .venv/bin/python bench/bench_fleet.py [--clients 32] [--requests 40] [--lines 80]
        [--state-sync process|store] [--only agent-tick|agent-logs|sdk-export]

``--state-sync store`` starts the server with ``SONDE_STATE_SYNC=store``: every metrics
request first reads its series' cumulative state back from the store, as API replicas
sharing a ClickHouse cluster do. Other ``SONDE_*`` settings are taken from the
environment as ``sonde serve`` takes them.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import tempfile
import time

import httpx
import numpy as np

from bench_ingest import post_concurrently
from bench_storage import SimNode, SimReplicaHttp, serving_lines
from sonde.agent import otlp
from sonde.agent.logs import make_record

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from live_server import LiveServer, free_port  # noqa: E402

SEC = 10**9
WORKLOADS = ("agent-tick", "agent-logs", "sdk-export")
T0 = (time.time_ns() // SEC - 3600) * SEC


class _Args:
    nodes, gpus, interval = 2, 8, 10  # what SimNode reads; rank 1 of 2 is a serving node


def serve(port: int, data_dir: str) -> None:
    """The server process: ``sonde serve``'s app on chDB, the executor's CPU added up."""
    import uvicorn

    from sonde.api.app import create_app
    from sonde.settings import Config
    from sonde.store import Store
    from sonde.store.base import Executor
    from sonde.store.chdb import ChdbExecutor

    class TimedExecutor(Executor):
        def __init__(self, inner: Executor):
            self.inner, self.cpu, self.calls = inner, 0.0, 0
            self.cluster, self.exclusive = inner.cluster, inner.exclusive

        def _timed(self, fn, *a):
            t = time.thread_time()
            try:
                return fn(*a)
            finally:
                self.cpu += time.thread_time() - t
                self.calls += 1

        def command(self, sql, params=None):
            return self._timed(self.inner.command, sql, params)

        def query_arrow(self, sql, params=None):
            return self._timed(self.inner.query_arrow, sql, params)

        def insert_arrow(self, table, data):
            return self._timed(self.inner.insert_arrow, table, data)

        def close(self):
            self.inner.close()

    config = Config.load(data_dir=data_dir, port=port)
    ex = TimedExecutor(ChdbExecutor.open(os.path.join(data_dir, "store")))
    store = Store(ex, "sonde", retention_days=config.retention_days, flush_interval_ms=config.flush_interval_ms,
                  batch_max_rows=config.batch_max_rows, max_pending_rows=config.max_pending_rows)
    app = create_app(config, store=store)
    app.get("/_bench/executor")(lambda: {"cpu": ex.cpu, "calls": ex.calls})
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


class BenchServer(LiveServer):
    def start(self, timeout: float = 60) -> "BenchServer":
        import subprocess

        self.log = open(os.path.join(self.data_dir, "server.log"), "ab")
        self.proc = subprocess.Popen([sys.executable, __file__, "--serve", str(self.port), self.data_dir],
                                     env=self.env, stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"bench server exited with {self.proc.returncode}; see {self.data_dir}/server.log")
            try:
                self.creds = __import__("json").load(open(os.path.join(self.data_dir, "credentials.json")))
                if httpx.get(f"{self.url}/v1/models", headers=self.headers(), timeout=2).status_code == 200:
                    return self
            except (OSError, ValueError, httpx.HTTPError):
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("bench server did not become ready")

    def executor_cpu(self) -> float:
        return httpx.get(f"{self.url}/_bench/executor", timeout=10).json()["cpu"]


def thread_cpu(pid: int) -> dict[int, tuple[str, int]]:
    """tid -> (thread name, on-CPU ns) for every thread of ``pid``."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                name = f.read().strip()
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                out[int(tid)] = (name, int(f.read().split()[0]))
        except (FileNotFoundError, ProcessLookupError):
            pass
    return out


def cpu_split(before: dict, after: dict) -> tuple[float, float]:
    """(python-thread seconds, other-thread seconds) between two :func:`thread_cpu` reads."""
    py = other = 0
    for tid, (name, ns) in after.items():
        d = ns - before.get(tid, (name, 0))[1]
        if name.startswith("python") or name.startswith("sonde"):
            py += d
        else:
            other += d
    return py / 1e9, other / 1e9


def end_to_end(signal: str, bodies: list[list[tuple[bytes, int]]]) -> dict:
    """Post every client's bodies (the first one each off the clock) concurrently."""
    warm, timed = [b[0] for b in bodies], [b[1:] for b in bodies]
    items = sum(n for b in timed for _, n in b)
    requests = sum(len(b) for b in timed)
    with tempfile.TemporaryDirectory(prefix="sonde-bench-fleet-") as data:
        server = BenchServer(data, port=free_port()).start()
        try:
            headers = {"Authorization": f"Bearer {server.creds['ingest_key']}",
                       "Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"}
            r = post_concurrently(signal, f"{server.url}/v1/otlp/v1/{signal}", headers, [b for b, _ in warm], timed,
                                  lambda: (server.executor_cpu(), thread_cpu(server.proc.pid)))
        finally:
            server.stop()
    (ex0, cpu0), (ex1, cpu1) = r["before"], r["after"]
    py, other = cpu_split(cpu0, cpu1)
    return {"requests": requests, "items": items, "elapsed": r["elapsed"], "py": py, "other": other,
            "ex": ex1 - ex0, "p50": r["p50"], "p99": r["p99"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clients", type=int, default=32, help="concurrent nodes")
    ap.add_argument("--requests", type=int, default=40, help="timed requests per client and workload")
    ap.add_argument("--lines", type=int, default=80, help="log lines per log request (one node's second)")
    ap.add_argument("--state-sync", choices=("process", "store"), default=None,
                    help="the server's state_sync setting [default: the server's own]")
    ap.add_argument("--only", choices=WORKLOADS, action="append")
    ap.add_argument("--serve", nargs=2, metavar=("PORT", "DATA_DIR"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        return serve(int(args.serve[0]), args.serve[1])
    if args.state_sync:
        os.environ["SONDE_STATE_SYNC"] = args.state_sync

    rng = np.random.default_rng(11)

    def node(c: int) -> SimNode:
        n = SimNode(1, _Args, T0, rng)  # a serving node with 8 GPUs
        # each client its own replica, and so its own series
        n.resource = otlp.resource({**n.resource_attrs, "sonde.replica": f"n{c:04d}",
                                    "service.instance.id": f"n{c:04d}"})
        return n

    def ticks(n: SimNode) -> list[tuple[bytes, int]]:
        out = []
        for k in range(args.requests + 1):
            body, points = n.tick(T0 + (k + 1) * 10 * SEC, 10)
            out.append((otlp.compress(body), points))
        return out

    def exports(n: SimNode) -> list[tuple[bytes, int]]:
        http = SimReplicaHttp(n, True, T0, rng)
        out = []
        for k in range(args.requests + 1):
            body, points = http.tick(T0 + (k + 1) * 10 * SEC, 5, 10)
            out.append((otlp.compress(body), points))
        return out

    def log_batches(n: SimNode) -> list[tuple[bytes, int]]:
        out = []
        for k in range(args.requests + 1):
            ts, records = T0 + k * SEC, []
            while len(records) < args.lines:
                for line in serving_lines(rng, ts + len(records) * 1000):
                    records.append(make_record(line, ts + len(records) * 1000, "stdout"))
            out.append((otlp.compress(otlp.logs_request(n.resource, records[: args.lines])), args.lines))
        return out

    print(f"agent-shaped ingest: {args.clients} clients x {args.requests} requests, gzip, "
          f"state_sync={args.state_sync or 'default'}, {len(os.sched_getaffinity(0))} cores, "
          f"load average {os.getloadavg()[0]:.1f} at start")
    print(f"{'workload':<11} {'items/req':>9} {'requests':>8} {'req/s':>6} {'items/s':>8} {'p50 ms':>7} "
          f"{'p99 ms':>7} | CPU ms/req: {'server':>7} {'chDB':>6} {'API':>6} | {'items/API CPU s':>15}")
    for kind in args.only or WORKLOADS:
        nodes = [node(c) for c in range(args.clients)]
        if kind == "agent-tick":
            r = end_to_end("metrics", [ticks(n) for n in nodes])
        elif kind == "sdk-export":
            r = end_to_end("metrics", [exports(n) for n in nodes])
        else:
            r = end_to_end("logs", [log_batches(n) for n in nodes])
        n_req = r["requests"]
        api = r["py"] - r["ex"]
        print(f"{kind:<11} {r['items'] / n_req:>9.0f} {n_req:>8} {n_req / r['elapsed']:>6.0f} "
              f"{r['items'] / r['elapsed']:>8,.0f} {r['p50']:>7.0f} {r['p99']:>7.0f} | {'':>11} "
              f"{(r['py'] + r['other']) / n_req * 1000:>7.2f} {(r['other'] + r['ex']) / n_req * 1000:>6.2f} "
              f"{api / n_req * 1000:>6.2f} | {r['items'] / api:>15,.0f}", flush=True)


if __name__ == "__main__":
    main()
