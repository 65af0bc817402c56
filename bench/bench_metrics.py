"""Benchmark: the deployment metrics endpoint over a realistic store.

Not a test (CI never runs it). It builds a fresh embedded store holding 100
deployments, each with 2 replicas sending every 10 s for 7 days what standard
OpenTelemetry instrumentation sends (per replica: a delta HTTP duration histogram per
status code (200 and 500), an active-requests up-down counter, GPU utilisation,
process memory, CPU time, replica state: 7 series), then times
``GET /v1/models/{m}/deployments/{d}/metrics`` for one deployment through the real app
in process (auth, inventory check, queries, JSON) and prints p50/p99 for SERIES 1 h,
SERIES 7 d and SUMMARY 7 d, for the default metric set and for every metric.

    .venv/bin/python bench/bench_metrics.py [--histograms explicit|exponential]
        [--deployments 100] [--days 7] [--runs 30] [--data-dir DIR] [--keep] [--reuse]

``--data-dir DIR --keep`` leaves the store in DIR; ``--reuse`` then measures it again
without generating anything.

``--histograms explicit`` (the default) sends the SDK's default aggregation: explicit
buckets with the semantic conventions' 14 advisory bounds. ``exponential`` gives the
measured deployment base-2 exponential histograms as the SDK builds them (largest
scale that fits 160 buckets, so ~100-160 buckets per 10 s point); the other
deployments keep explicit ones, which only changes how long generation takes (the
query reads one deployment's rows).

Data are generated with numpy straight into Arrow columns and written through
``Store.submit`` in big batches (the group-commit path ingest uses), then the table
is merged (OPTIMIZE FINAL) as a long-running server's background merges would have
done. Each series' samples are drawn once and rotated in time per deployment and
replica, which keeps generation to a few minutes while every deployment holds
different data.
"""

from __future__ import annotations

import argparse
import asyncio
from contextlib import contextmanager
import hashlib
import json
import os
import shutil
import tempfile
import time

import httpx
import numpy as np
import pyarrow as pa

from sonde.api.app import create_app
from sonde.query.catalogue import CATALOGUE
from sonde.settings import Config
from sonde.store import ARROW_SCHEMAS, Store
from sonde.store.chdb import ChdbExecutor

SCHEMA = ARROW_SCHEMAS["metric_points"]
INTERVAL_S = 10
MAX_BUCKETS = 160  # the OpenTelemetry SDK's default max_size for exponential histograms
BOUNDS = [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10]  # semconv advice


def series_id(*parts: str) -> int:
    return int.from_bytes(hashlib.blake2b("\0".join(parts).encode(), digest_size=8).digest(), "little")


def _list(offsets: np.ndarray, values: np.ndarray, typ: pa.DataType) -> pa.Array:
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(values, typ))


def _empty_lists(n: int, typ: pa.DataType) -> pa.Array:
    return _list(np.zeros(n + 1, np.int32), np.zeros(0), typ)


def _attrs(n: int, attrs: dict[str, str]) -> pa.Array:
    offsets = np.arange(n + 1, dtype=np.int32) * len(attrs)
    keys = pa.array(np.tile(np.array(list(attrs), dtype=object), n), pa.string())
    vals = pa.array(np.tile(np.array(list(attrs.values()), dtype=object), n), pa.string())
    return pa.MapArray.from_arrays(pa.array(offsets, pa.int32()), keys, vals)


def table(n: int, *, ws: str, entity: str, parent: str, metric: str, kind: str, unit: str, replica: str,
          attrs: dict[str, str], ts: np.ndarray, monotonic: bool = False, **cols) -> pa.Table:
    """``n`` metric_points rows of one series (docs/architecture.md); ``cols`` override."""
    ns = pa.timestamp("ns", tz="UTC")
    base = {
        "ws": pa.array([ws] * n, pa.string()), "scope": pa.array(["deployment"] * n, pa.string()),
        "entity": pa.array([entity] * n, pa.string()), "parent": pa.array([parent] * n, pa.string()),
        "metric": pa.array([metric] * n, pa.string()), "kind": pa.array([kind] * n, pa.string()),
        "monotonic": pa.array(np.full(n, monotonic)), "unit": pa.array([unit] * n, pa.string()),
        "series": pa.array(np.full(n, series_id(ws, entity, metric, replica, *map(str, sorted(attrs.items()))),
                                   np.uint64)),
        "replica": pa.array([replica] * n, pa.string()), "node_rank": pa.array(np.full(n, -1, np.int32)),
        "attrs": _attrs(n, attrs),
        "ts": pa.array(ts, pa.int64()).cast(ns), "start_ts": pa.array(ts - INTERVAL_S * 10**9, pa.int64()).cast(ns),
        "value": pa.array(np.zeros(n)), "count": pa.array(np.zeros(n, np.uint64)),
        "sum": pa.array(np.zeros(n)), "min": pa.array(np.full(n, np.nan)), "max": pa.array(np.full(n, np.nan)),
        "bounds": _empty_lists(n, pa.float64()), "buckets": _empty_lists(n, pa.uint64()),
        "scale": pa.array(np.zeros(n, np.int8)), "zero_count": pa.array(np.zeros(n, np.uint64)),
        "pos_offset": pa.array(np.zeros(n, np.int32)), "pos_buckets": _empty_lists(n, pa.uint64()),
        "neg_offset": pa.array(np.zeros(n, np.int32)), "neg_buckets": _empty_lists(n, pa.uint64()),
        "cum_state": pa.array([""] * n, pa.string()), "seq": pa.array(np.arange(n, dtype=np.uint64)),
    }
    for k, v in cols.items():
        base[k] = v if isinstance(v, pa.Array) else pa.array(v, SCHEMA.field(k).type)
    return pa.Table.from_arrays([base[f.name] for f in SCHEMA], schema=SCHEMA)


def _latencies(rng: np.random.Generator, n: int, rate: float, mu: float, sigma: float):
    counts = np.maximum(rng.poisson(rate * INTERVAL_S, n), 1)
    ends = np.cumsum(counts)
    values = rng.lognormal(mu, sigma, int(ends[-1]))
    return counts, ends - counts, values


def exp_histograms(rng: np.random.Generator, n: int, rate: float, mu: float, sigma: float) -> dict:
    """Columns of ``n`` delta exponential histograms of lognormal latencies (s), bucketed
    as the SDK does: the largest scale <= 20 that fits MAX_BUCKETS buckets, bucket i =
    (2^(i/2^scale), 2^((i+1)/2^scale)]."""
    counts, starts, values = _latencies(rng, n, rate, mu, sigma)
    lg = np.log2(values)
    lo, hi = np.minimum.reduceat(lg, starts), np.maximum.reduceat(lg, starts)
    scale = np.full(n, -1, np.int64)
    for s in range(20, -1, -1):
        fits = (np.ceil(hi * 2.0**s) - np.ceil(lo * 2.0**s) + 1 <= MAX_BUCKETS) & (scale < 0)
        scale[fits] = s
    point = np.repeat(np.arange(n), counts)
    idx = np.ceil(lg * 2.0 ** scale[point]).astype(np.int64) - 1
    offset = np.minimum.reduceat(idx, starts)
    span = np.maximum.reduceat(idx, starts) - offset + 1
    boff = np.concatenate([[0], np.cumsum(span)])
    flat = np.zeros(int(boff[-1]), np.uint64)
    np.add.at(flat, boff[point] + idx - offset[point], 1)
    return {"count": counts.astype(np.uint64), "sum": np.add.reduceat(values, starts), "min": np.exp2(lo),
            "max": np.exp2(hi), "scale": scale.astype(np.int8), "pos_offset": offset.astype(np.int32),
            "pos_buckets": _list(boff, flat, pa.uint64())}


def explicit_histograms(rng: np.random.Generator, n: int, rate: float, mu: float, sigma: float) -> dict:
    counts, starts, values = _latencies(rng, n, rate, mu, sigma)
    nb = len(BOUNDS) + 1
    point = np.repeat(np.arange(n), counts)
    flat = np.zeros(n * nb, np.uint64)
    np.add.at(flat, point * nb + np.searchsorted(BOUNDS, values, side="left"), 1)
    offs = np.arange(n + 1) * nb
    return {"count": counts.astype(np.uint64), "sum": np.add.reduceat(values, starts),
            "min": np.minimum.reduceat(values, starts), "max": np.maximum.reduceat(values, starts),
            "bounds": _list(np.arange(n + 1) * len(BOUNDS), np.tile(BOUNDS, n), pa.float64()),
            "buckets": _list(offs, flat, pa.uint64())}


def make_shapes(rng: np.random.Generator, n: int, exponential: bool) -> dict:
    shapes = {
        "active": rng.poisson(3, n).astype(float), "gpu": rng.uniform(0.2, 0.9, n),
        "mem": rng.normal(6e9, 2e8, n), "cpu": rng.uniform(5, 15, n),
        "explicit": {"ok": explicit_histograms(rng, n, 20, np.log(0.05), 0.6),
                     "err": explicit_histograms(rng, n, 0.2, np.log(0.5), 0.3)},
    }
    if exponential:
        shapes["exponential"] = {"ok": exp_histograms(rng, n, 20, np.log(0.05), 0.6),
                                 "err": exp_histograms(rng, n, 0.2, np.log(0.5), 0.3)}
    return shapes


def deployment_tables(rng, shapes, ws: str, d: int, end_ns: int, n: int, replicas: int, hist: str) -> list[pa.Table]:
    ts = end_ns - (n - np.arange(n, dtype=np.int64)) * INTERVAL_S * 10**9
    entity, parent = f"dep{d:03d}", f"model{d:03d}"
    out = []
    for r in range(replicas):
        shift = int(rng.integers(n))
        order = pa.array(np.roll(np.arange(n), shift))
        common = dict(ws=ws, entity=entity, parent=parent, replica=f"{d:03d}{r:02d}",
                      ts=ts + int(rng.integers(10**9)))

        def roll(a):
            return a.take(order) if isinstance(a, pa.Array) else np.roll(a, shift)

        out.append(table(n, metric="sonde.replica.state", kind="gauge", unit="1", attrs={"state": "ready"},
                         value=np.ones(n), **common))
        for status, key in (("200", "ok"), ("500", "err")):
            cols = {k: roll(v) for k, v in shapes[hist][key].items()}
            out.append(table(n, metric="http.server.request.duration", unit="s",
                             kind="exp_histogram" if hist == "exponential" else "histogram",
                             attrs={"http.request.method": "POST", "http.response.status_code": status},
                             **cols, **common))
        out.append(table(n, metric="http.server.active_requests", kind="sum", unit="{request}",
                         attrs={"http.request.method": "POST"}, value=roll(shapes["active"]), **common))
        out.append(table(n, metric="hw.gpu.utilization", kind="gauge", unit="1", attrs={"hw.gpu.index": "0"},
                         value=roll(shapes["gpu"]), **common))
        out.append(table(n, metric="process.memory.usage", kind="sum", unit="By", attrs={},
                         value=roll(shapes["mem"]), **common))
        out.append(table(n, metric="process.cpu.time", kind="sum", unit="s", attrs={"cpu.mode": "user"},
                         monotonic=True, value=roll(shapes["cpu"]), **common))
    return out


def generate(store: Store, ws: str, deployments: int, days: float, replicas: int, end_ns: int,
             target: int, exponential: bool, seed: int = 7) -> int:
    rng = np.random.default_rng(seed)
    n = int(days * 86400 / INTERVAL_S)
    shapes = make_shapes(rng, n, exponential)
    batches = (deployment_tables(rng, shapes, ws, d, end_ns, n, replicas,
                                 "exponential" if exponential and d == target else "explicit")
               for d in range(deployments))
    return submit_pipelined(store, batches, deployments, "deployments")


def submit_pipelined(store, batches, total: int, what: str) -> int:
    """Commit each batch of metric_points tables while the next one is generated (two at
    most in memory); returns the rows."""
    rows, pending = 0, []
    for i, tables in enumerate(batches):
        rows += sum(t.num_rows for t in tables)
        pending.append(store.submit({"metric_points": pa.concat_tables(tables)}))
        if len(pending) >= 2:
            pending.pop(0).result()
        print(f"\r  generated {i + 1}/{total} {what}, {rows:,} rows", end="", flush=True)
    for f in pending:
        f.result()
    print()
    return rows


def percentile(xs: list[float], p: float) -> float:
    return float(np.percentile(np.array(xs) * 1000, p))


def add_store_options(ap: argparse.ArgumentParser) -> None:
    """Options every store benchmark takes: runs, and where its data lives."""
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--data-dir", default=None, help="default: a temporary directory, removed afterwards")
    ap.add_argument("--keep", action="store_true", help="keep the data directory")
    ap.add_argument("--reuse", action="store_true", help="measure the data already in --data-dir")


@contextmanager
def bench_app(args: argparse.Namespace, prefix: str):
    """(store, app, credentials, data dir) of a fresh or reused embedded store with big
    group commits; closed, and removed unless kept, on exit."""
    data_dir = args.data_dir or tempfile.mkdtemp(prefix=prefix)
    os.makedirs(data_dir, exist_ok=True)
    store = Store(ChdbExecutor.open(os.path.join(data_dir, "store")), "bench",
                  batch_max_rows=2_000_000, max_pending_rows=50_000_000)
    app = create_app(Config(data_dir=data_dir), store=store)
    creds = json.load(open(os.path.join(data_dir, "credentials.json")))
    try:
        yield store, app, creds, data_dir
    finally:
        store.close()
        if not args.keep and not args.data_dir:
            shutil.rmtree(data_dir, ignore_errors=True)


def last_ts_ns(store: Store, entity: str) -> int:
    """Just after the newest point of ``entity``: the window end of a reused store."""
    return store.ex.query(f"SELECT toUnixTimestamp64Nano(max(ts)) AS t FROM {store.t('metric_points')}"
                          " WHERE entity = {e:String}", {"e": entity})[0]["t"] + 1


def load(store: Store, generate_rows) -> None:
    """Run ``generate_rows()`` (returns the row count), then merge as a long-running
    server's background merges would have; print both rates."""
    t = time.perf_counter()
    rows = generate_rows()
    gen_s = time.perf_counter() - t
    t = time.perf_counter()
    store.ex.command(f"OPTIMIZE TABLE {store.t('metric_points')} FINAL")
    print(f"  {rows:,} rows in {gen_s:.0f} s ({rows / gen_s:,.0f} rows/s); merged in {time.perf_counter() - t:.0f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--histograms", choices=("explicit", "exponential"), default="explicit")
    ap.add_argument("--deployments", type=int, default=100)
    ap.add_argument("--replicas", type=int, default=2)
    ap.add_argument("--days", type=float, default=7)
    add_store_options(ap)
    args = ap.parse_args()

    target = args.deployments // 2
    end_ns = time.time_ns() // 10**9 * 10**9
    with bench_app(args, "sonde-bench-metrics-") as (store, app, creds, data_dir):
        ws = creds["workspace_id"]
        if args.reuse:
            end_ns = last_ts_ns(store, f"dep{target:03d}")
            print(f"data: {data_dir} (reused)")
        else:
            print(f"data: {data_dir}; {args.deployments} deployments x {args.replicas} replicas x 7 series, "
                  f"every {INTERVAL_S} s for {args.days:g} days; {args.histograms} histograms on dep{target:03d}")
            load(store, lambda: generate(store, ws, args.deployments, args.days, args.replicas, end_ns, target,
                                         args.histograms == "exponential"))
        app.state.inventory.ensure(ws, "model", f"model{target:03d}", "", {})
        app.state.inventory.ensure(ws, "deployment", f"dep{target:03d}", f"model{target:03d}", {})
        url = f"/v1/models/model{target:03d}/deployments/dep{target:03d}/metrics"
        headers = {"Authorization": f"Bearer {creds['management_key']}"}
        end_ms = end_ns // 10**6
        cases = [("SERIES 1h", "SERIES", 3600_000), ("SERIES 7d", "SERIES", 7 * 86400_000),
                 ("SUMMARY 7d", "SUMMARY", 7 * 86400_000)]
        sets = [("default (3)", None), (f"all ({len(CATALOGUE)})", ",".join(CATALOGUE))]

        async def measure():
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://bench") as c:
                print(f"\n{'query':<12} {'metrics':<12} {'p50 ms':>8} {'p99 ms':>8} {'runs':>5}")
                for label, mode, span in cases:
                    for set_label, names in sets:
                        params = {"mode": mode, "start_epoch_millis": end_ms - span, "end_epoch_millis": end_ms}
                        if names:
                            params["metrics"] = names
                        r = await c.get(url, params=params, headers=headers)  # warm-up, and a sanity check
                        assert r.status_code == 200 and r.json()["metric_descriptors"], r.text[:500]
                        times = []
                        for _ in range(args.runs):
                            t0 = time.perf_counter()
                            r = await c.get(url, params=params, headers=headers)
                            times.append(time.perf_counter() - t0)
                            assert r.status_code == 200
                        print(f"{label:<12} {set_label:<12} {percentile(times, 50):>8.1f} "
                              f"{percentile(times, 99):>8.1f} {args.runs:>5}", flush=True)

        asyncio.run(measure())


if __name__ == "__main__":
    main()
