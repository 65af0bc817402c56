"""Log search benchmark: 10M synthetic lines, then the log filters timed over one day.

    .venv/bin/python bench/bench_logs.py [--lines 10000000] [--deployments 8] [--runs 7]

Not a test and not run in CI. Loads ``--lines`` lines into a fresh embedded store (half of
them one day of the "hot" deployment d0, the rest spread over seven other deployments and
two days, so d0's day shares its partitions with other rows), then times each query of
``queries()`` through ``sonde.query.logs.query_logs`` (the SQL and row shaping the endpoints
run; HTTP not included) and prints p50/p90 latency and lines per second.

"lines/s" is the lines of the searched window divided by the p50 latency; "CPU ms" is the
process CPU time the query took (chDB's threads are this process's), and "M/CPU-s" the
lines per CPU-second, which holds up when other work shares the cores. Where a query
returns fewer lines than its limit, ClickHouse had to examine every line of the window,
so it is the scan rate ("full scan" = yes); where the limit is reached first, the read
stops early (newest first) and the figure only says how cheap that was.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sonde.query.logs import LogQuery, Target, query_logs
from sonde.store import ARROW_SCHEMAS, Store
from sonde.store.chdb import ChdbExecutor

WS = "ws_bench"
DAY_NS = 86_400 * 10**9
BATCH = 1_000_000

TEMPLATES = [
    "GET /v1/models/predict HTTP/1.1 status=200 latency_ms=",
    "POST /v1/models/predict HTTP/1.1 status=200 latency_ms=",
    "POST /v1/models/predict HTTP/1.1 status=503 latency_ms=",
    "INFO:     127.0.0.1:50012 - \"POST /predict HTTP/1.1\" 200 OK bytes=",
    "Loading shard model-00003-of-00008.safetensors progress=",
    "prefill tokens=512 decode tokens=128 batch_size=",
    "kv cache usage 0.73 free_blocks=",
    "Completed request in seconds ms=",
    "health check ok uptime_s=",
    "worker heartbeat pid=",
    "WARNING: slow tokenizer call took ms=",
    "scheduler queue depth=",
]
# Rare lines (share of all lines), so the selective searches have something to find
# and, finding fewer lines than the limit, must examine the whole window.
RARE = [
    (1e-5, "panic: segfault at 0xdeadbeef in libcuda.so worker="),
    (5e-5, "torch.cuda.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB id="),
    (8e-5, "Traceback (most recent call last): File \"/app/model.py\", line 42 id="),
]
WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"]
REPLICAS = ["a1b2c", "d3e4f", "g5h6i", "j7k8l"]
COMPONENTS = ["server", "model", "sidecar"]
ENVS = ["production", "staging"]
LEVEL_P = [0.10, 0.30, 0.45, 0.10, 0.05]  # none, DEBUG, INFO, WARNING, ERROR


def batch(rng: np.random.Generator, n: int, entity: str, env: str, t0: int, span_ns: int, seq0: int) -> pa.Table:
    pick = rng.integers(0, len(TEMPLATES), n)
    messages = pa.array(TEMPLATES).take(pa.array(pick))
    u, low = rng.random(n), 0.0
    for p, text in RARE:  # disjoint slices of u: a line is at most one rare kind
        messages = pc.if_else(pa.array((u >= low) & (u < low + p)), pa.scalar(text), messages)
        low += p
    numbers = pc.cast(pa.array(rng.integers(0, 100_000, n)), pa.string())
    words = pa.array(WORDS).take(pa.array(rng.integers(0, len(WORDS), n)))
    messages = pc.binary_join_element_wise(messages, numbers, words, "")
    request_ids = pc.binary_join_element_wise(
        pa.scalar("req-"), pc.cast(pa.array(rng.integers(0, 2**40, n)), pa.string()), "")
    no_request = pa.array(rng.random(n) < 0.4)
    cols = {
        "ws": pa.repeat(WS, n),
        "scope": pa.repeat("deployment", n),
        "entity": pa.repeat(entity, n),
        "parent": pa.repeat("m1", n),
        "environment": pa.repeat(env, n),
        "ts": pa.array(t0 + np.sort(rng.integers(0, span_ns, n)), type=pa.timestamp("ns", tz="UTC")),
        "seq": pa.array(np.arange(seq0, seq0 + n, dtype=np.uint64)),
        "replica": pa.array(REPLICAS).take(pa.array(rng.integers(0, len(REPLICAS), n))),
        "request_id": pc.if_else(no_request, pa.scalar(""), request_ids),
        "component": pa.array(COMPONENTS).take(pa.array(rng.integers(0, len(COMPONENTS), n))),
        "level": pa.array(rng.choice(5, n, p=LEVEL_P).astype(np.uint8)),
        "message": messages,
        "attrs": pa.MapArray.from_arrays(np.zeros(n + 1, np.int32), pa.array([], pa.string()),
                                         pa.array([], pa.string())),
    }
    return pa.table(cols, schema=ARROW_SCHEMAS["logs"])


def load(store: Store, lines: int, deployments: int, day0: int) -> tuple[int, float]:
    """Write the data set; returns (lines of d0's day, load seconds)."""
    rng = np.random.default_rng(42)
    hot = lines // 2
    plan = [("d0", "production", day0, DAY_NS, hot)]
    rest = lines - hot
    for i in range(1, deployments):
        n = rest // (deployments - 1) + (1 if i <= rest % (deployments - 1) else 0)
        plan.append((f"d{i}", ENVS[i % 2], day0 - DAY_NS, 2 * DAY_NS, n))
    seq, t = 1, time.perf_counter()
    for entity, env, t0, span, n in plan:
        # One deployment's lines in time order, in 1M-line batches, as a live stream would arrive.
        edges = np.linspace(0, span, -(-n // BATCH) + 1).astype(np.int64)
        sizes = np.diff(np.linspace(0, n, len(edges)).astype(np.int64))
        for (a, b), k in zip(zip(edges[:-1], edges[1:]), sizes):
            store.ex.insert_arrow(store.t("logs"), batch(rng, int(k), entity, env, t0 + int(a), int(b - a), seq))
            seq += int(k)
    return hot, time.perf_counter() - t


def queries(day0: int) -> list[tuple[str, Target, dict]]:
    """(name, target, LogQuery fields); windows are d0's day unless given."""
    d0 = Target("deployment", entity="d0")
    production = Target("deployment", parent="m1", environment="production")
    day = {"start_ns": day0, "end_ns": day0 + DAY_NS}
    two_days = {"start_ns": day0 - DAY_NS, "end_ns": day0 + DAY_NS}
    rare = r"panic: .* at 0x[0-9a-f]+"
    plan = [
        ("latest 500, no filter", d0, {}),
        (f"regex {rare}", d0, {"search_pattern": rare}),
        ("regex (?i)out of memory", d0, {"search_pattern": "(?i)out of memory"}),
        (r"regex status=5\d\d latency_ms=9999\d", d0, {"search_pattern": r"status=5\d\d latency_ms=9999\d"}),
        (r"regex asc, limit 1000: line \d+ id=1234\d", d0,
         {"search_pattern": r"line \d+ id=1234\d", "descending": False, "limit": 1000}),
        ("includes [segfault, libcuda]", d0, {"includes": ("segfault", "libcuda")}),
        ("includes [Traceback] excludes [alpha, bravo]", d0,
         {"includes": ("Traceback",), "excludes": ("alpha", "bravo")}),
        ("min_level ERROR + includes [OutOfMemoryError]", d0,
         {"min_level": 4, "includes": ("OutOfMemoryError",)}),
        ("min_level ERROR (many matches)", d0, {"min_level": 4}),
        ("replica + component + regex 0xdead", d0,
         {"replica": "a1b2c", "component": "model", "search_pattern": "0xdead"}),
        (f"environment, 2 days, regex {rare}", production, {**two_days, "search_pattern": rare}),
    ]
    return [(name, target, {**day, **kw}) for name, target, kw in plan]


def window_lines(store: Store, target: Target, q: LogQuery) -> int:
    """Lines of the target in the window: what a full scan examines."""
    where, params = ["ws = {ws:String}", "scope = {scope:String}"], {"ws": WS, "scope": target.scope}
    for col in ("entity", "parent", "environment"):
        if getattr(target, col) is not None:
            where.append(f"{col} = {{{col}:String}}")
            params[col] = getattr(target, col)
    where.append("ts >= fromUnixTimestamp64Nano({a:Int64}, 'UTC') AND ts < fromUnixTimestamp64Nano({b:Int64}, 'UTC')")
    params.update(a=q.start_ns, b=q.end_ns)
    sql = f"SELECT count() AS n FROM {store.t('logs')} WHERE {' AND '.join(where)}"
    return int(store.ex.query(sql, params)[0]["n"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lines", type=int, default=10_000_000)
    ap.add_argument("--deployments", type=int, default=8)
    ap.add_argument("--runs", type=int, default=7, help="timed runs per query, after one warm-up")
    ap.add_argument("--data-dir", help="store directory (default: a temporary one, removed at the end)")
    ap.add_argument("--no-optimize", action="store_true", help="skip OPTIMIZE TABLE ... FINAL after loading")
    ap.add_argument("--condition-cache", action="store_true",
                    help="leave ClickHouse's query condition cache on (repeated identical searches then skip"
                         " granules that matched nothing before, which is not a scan rate)")
    args = ap.parse_args()

    tmp = args.data_dir or tempfile.mkdtemp(prefix="sonde-bench-logs-")
    store = Store(ChdbExecutor.open(str(Path(tmp) / "store")), "bench_logs", retention_days=30)
    try:
        store.ex.command(f"TRUNCATE TABLE {store.t('logs')}")
        day0 = (time.time_ns() // DAY_NS - 2) * DAY_NS  # two days ago, UTC midnight
        hot, secs = load(store, args.lines, args.deployments, day0)
        print(f"loaded {args.lines:,} lines in {secs:.1f} s ({args.lines / secs / 1e6:.2f} M lines/s);"
              f" d0's day: {hot:,} lines")
        if not args.no_optimize:
            t = time.perf_counter()
            store.ex.command(f"OPTIMIZE TABLE {store.t('logs')} FINAL")
            print(f"OPTIMIZE FINAL: {time.perf_counter() - t:.1f} s")
        parts = store.ex.query(
            "SELECT count() AS n FROM system.parts WHERE database = {db:String} AND table = 'logs' AND active",
            {"db": store.db})[0]["n"]
        print(f"active parts: {parts}")
        if not args.condition_cache:
            store.ex.command("SET use_query_condition_cache = 0")
        print(f"query condition cache: {'on' if args.condition_cache else 'off'}\n")

        head = (f"{'query':<50} {'window lines':>12} {'returned':>8} {'full scan':>9} {'p50 ms':>8} {'p90 ms':>8}"
                f" {'M lines/s':>10} {'CPU ms':>8} {'M/CPU-s':>10}")
        print(head)
        print("-" * len(head))
        for name, target, kw in queries(day0):
            q = LogQuery(**kw)
            n = window_lines(store, target, q)
            query_logs(store, WS, target, q)  # warm-up
            times, cpu, got = [], [], []
            for _ in range(args.runs):
                t, c = time.perf_counter(), time.process_time()
                got = query_logs(store, WS, target, q)
                times.append(time.perf_counter() - t)
                cpu.append(time.process_time() - c)
            p50, cpu50 = statistics.median(times), statistics.median(cpu)
            p90 = sorted(times)[min(len(times) - 1, int(round(0.9 * (len(times) - 1))))]
            full = "yes" if len(got) < q.limit else "no"
            print(f"{name:<50} {n:>12,} {len(got):>8} {full:>9} {p50 * 1e3:>8.1f} {p90 * 1e3:>8.1f}"
                  f" {n / p50 / 1e6:>10.1f} {cpu50 * 1e3:>8.1f} {n / max(cpu50, 1e-9) / 1e6:>10.1f}")
    finally:
        store.close()
        if not args.data_dir:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
