"""Benchmark: the training-job metrics endpoint over a large multi-node job.

Not a test (CI never runs it). It builds a fresh embedded store holding one training job
of ``--nodes`` nodes (default 8) with ``--gpus`` GPUs each (default 8), sampled every
10 s for ``--days`` days (default 7) with what the agent sends for a training node: per
GPU ``hw.gpu.utilization`` and ``hw.gpu.memory.usage``; per node ``process.cpu.time``
(monotonic, stored as deltas as ingest stores cumulative sums), ``process.memory.usage``
and ``system.filesystem.usage``/``.limit`` for the ephemeral and the cache mounts. That
is nodes x (2 x gpus + 6) series (176 by default, 10.6 M rows over 7 days). It then
times ``GET /v1/training_projects/{p}/jobs/{j}/metrics`` through the real app in
process (auth, inventory, queries, JSON) and prints p50/p99 for 7 days (default step:
1800 s) and 1 h (default step: 10 s).

    .venv/bin/python bench/bench_training.py [--nodes 8] [--gpus 8] [--days 7] [--runs 30]
        [--windows 6,20,48] [--data-dir DIR] [--keep] [--reuse]

Data are generated with numpy straight into Arrow columns (``bench_metrics.table``) and
written through ``Store.submit`` (the group-commit path ingest uses), one node per
batch, so the training rollup's materialized view fills as ingest would fill it; then
the points and the rollup are merged (OPTIMIZE FINAL) as a long-running server's
background merges would have done. Each series' samples are drawn once per kind and
rotated in time per node and GPU, so every series holds different data.
docs/training.md has the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import httpx
import numpy as np
import pyarrow as pa

from bench_metrics import (
    INTERVAL_S, add_store_options, bench_app, last_ts_ns, load, percentile, submit_pipelined, table,
)
from sonde.store import Store

PROJECT, JOB = "bench-project", "bench-job"
GIB = 2**30


def node_tables(rng, shapes: dict, ws: str, rank: int, gpus: int, ts: np.ndarray) -> list[pa.Table]:
    n = len(ts)
    common = dict(ws=ws, entity=JOB, parent=PROJECT, replica=f"node{rank}", ts=ts + int(rng.integers(10**9)),
                  scope=pa.array(["training_job"] * n, pa.string()), node_rank=np.full(n, rank, np.int32))
    node = {"sonde.node_id": f"node-{rank}"}

    def roll(a):
        return np.roll(a, int(rng.integers(n)))

    out = []
    for g in range(gpus):
        gpu = {**node, "hw.gpu.index": str(g)}
        out.append(table(n, metric="hw.gpu.utilization", kind="gauge", unit="1", attrs=gpu,
                         value=roll(shapes["util"]), **common))
        out.append(table(n, metric="hw.gpu.memory.usage", kind="gauge", unit="By", attrs=gpu,
                         value=roll(shapes["gpu_mem"]), **common))
    out.append(table(n, metric="process.cpu.time", kind="sum", unit="s", attrs=node, monotonic=True,
                     value=roll(shapes["cpu"]), **common))
    out.append(table(n, metric="process.memory.usage", kind="gauge", unit="By", attrs=node,
                     value=roll(shapes["rss"]), **common))
    for mount, limit in (("ephemeral", 500 * GIB), ("cache", 2000 * GIB)):
        a = {**node, "sonde.mount": mount, "system.filesystem.mountpoint": f"/{mount}"}
        out.append(table(n, metric="system.filesystem.usage", kind="gauge", unit="By", attrs=a,
                         value=roll(shapes["fs"]) * (4 if mount == "cache" else 1), **common))
        out.append(table(n, metric="system.filesystem.limit", kind="gauge", unit="By", attrs=a,
                         value=np.full(n, float(limit)), **common))
    return out


def generate(store: Store, ws: str, nodes: int, gpus: int, days: float, end_ns: int, seed: int = 7) -> int:
    rng = np.random.default_rng(seed)
    n = int(days * 86400 / INTERVAL_S)
    ts = end_ns - (n - np.arange(n, dtype=np.int64)) * INTERVAL_S * 10**9
    shapes = {
        "util": np.clip(rng.normal(0.85, 0.1, n), 0, 1), "gpu_mem": rng.normal(120 * GIB, 2 * GIB, n),
        "cpu": rng.uniform(40, 80, n),  # CPU seconds per 10 s: 4-8 cores busy
        "rss": rng.normal(200 * GIB, 5 * GIB, n), "fs": np.linspace(50, 150, n) * GIB,
    }
    return submit_pipelined(store, (node_tables(rng, shapes, ws, rank, gpus, ts) for rank in range(nodes)),
                            nodes, "nodes")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nodes", type=int, default=8)
    ap.add_argument("--gpus", type=int, default=8)
    ap.add_argument("--days", type=float, default=7)
    ap.add_argument("--windows", default="",
                    help="more windows to time, comma-separated hours (e.g. 6,20,48); default: 7 d and 1 h only")
    add_store_options(ap)
    args = ap.parse_args()

    end_ns = time.time_ns() // 10**9 * 10**9
    with bench_app(args, "sonde-bench-training-") as (store, app, creds, data_dir):
        ws = creds["workspace_id"]
        if args.reuse:
            end_ns = last_ts_ns(store, JOB)
            print(f"data: {data_dir} (reused)")
        else:
            print(f"data: {data_dir}; 1 job x {args.nodes} nodes x {args.gpus} GPUs "
                  f"({args.nodes * (2 * args.gpus + 6)} series), every {INTERVAL_S} s for {args.days:g} days")
            load(store, lambda: generate(store, ws, args.nodes, args.gpus, args.days, end_ns))
            t = time.perf_counter()
            store.ex.command(f"OPTIMIZE TABLE {store.t('training_rollup')} FINAL")
            print(f"  training rollup merged in {time.perf_counter() - t:.0f} s")
        app.state.inventory.ensure(ws, "training_project", PROJECT, "", {})
        app.state.inventory.ensure(ws, "training_job", JOB, PROJECT, {"current_status": "RUNNING"})
        url = f"/v1/training_projects/{PROJECT}/jobs/{JOB}/metrics"
        headers = {"Authorization": f"Bearer {creds['management_key']}"}
        end_ms = end_ns // 10**6
        cases = [(f"{min(args.days, 7):g} d", min(args.days, 7) * 86400_000), ("1 h", 3600_000)]
        cases += [(f"{float(h):g} h", int(float(h) * 3600_000)) for h in args.windows.split(",") if h]

        async def measure():
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://bench") as c:
                print(f"\n{'window':<8} {'step s':>6} {'points':>7} {'p50 ms':>8} {'p99 ms':>8} {'runs':>5}")
                for label, span in cases:
                    params = {"start_epoch_millis": int(end_ms - span), "end_epoch_millis": end_ms}
                    r = await c.get(url, params=params, headers=headers)  # warm-up, and a sanity check
                    body = r.json()
                    assert r.status_code == 200 and len(body["per_node_metrics"]) == args.nodes, r.text[:500]
                    assert len(body["gpu_utilization"]) == args.gpus and body["cache"] is not None
                    steps = len(body["cpu_usage"])
                    points = sum(len(v) for node in body["per_node_metrics"]
                                 for f in ("gpu_utilization", "gpu_memory_usage_bytes")
                                 for v in node["metrics"][f].values())
                    times = []
                    for _ in range(args.runs):
                        t0 = time.perf_counter()
                        r = await c.get(url, params=params, headers=headers)
                        times.append(time.perf_counter() - t0)
                        assert r.status_code == 200
                    step = round(span / 1000 / steps) if steps else 0
                    print(f"{label:<8} {step:>6} {points:>7} {percentile(times, 50):>8.1f} "
                          f"{percentile(times, 99):>8.1f} {args.runs:>5}", flush=True)

        asyncio.run(measure())


if __name__ == "__main__":
    main()
