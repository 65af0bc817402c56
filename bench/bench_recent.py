"""Recent gauge points kept in memory (store/recent.py), and request counts per five
minutes (store/request_counts.py): what a window costs answered from them against the
statement, and what keeping them costs ingest.

    .venv/bin/python bench/bench_recent.py
    .venv/bin/python bench/bench_recent.py --minutes 110 --runs 50 --count-hours 24

The points are the peers harness's (bench/peers/workload.py, its ``small`` fleet: 4
deployments x 4 replicas x 8 GPUs of utilisation and memory, latency histograms, at
10 s), the last ``--minutes`` up to now, sent through Sonde's own ingest pipeline into
a store on disk that keeps them (``Store.keep_recent``, as the server does). One
deployment's GPU utilisation is then asked for over the last 15 min, 1 h and 90 min
windows (``query.metrics.deployment_metrics``, in process: no HTTP), from memory and
with the memory set aside so the statement answers; both answers must be equal. The
ingest side: process CPU of ``Recent.add`` per kept point, fed the committed tables
(median of five feeds, each into a fresh one). The same for the request histograms'
sums per five minutes: the deployment's requests by status and p99 latency over
``--count-hours`` and its half, windows on five-minute boundaries in 300 s steps, from
memory and from the statement, and process CPU of ``RequestCounts.add`` and
``RequestLatency.add`` per committed row. And the gauges' holds summed per bucket
(store/gauge_sums.py): the deployment's GPU utilisation over the same windows in 300 s
and 1800 s steps from the sums and from the statement, and ``GaugeSums.add`` per
committed row.
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench" / "peers"))

import wire  # noqa: E402
from workload import SCALES, Fleet  # noqa: E402

from sonde.ingest.metrics import MAX_AHEAD_NS  # noqa: E402
from sonde.ingest.pipeline import Ingestor  # noqa: E402
from sonde.ingest.proto import ViewMetricsRequest  # noqa: E402
from sonde.query import catalogue, recent, recent_counts  # noqa: E402
from sonde.query.metrics import deployment_metrics  # noqa: E402
from sonde.query.window import Window  # noqa: E402
from sonde.store import open_store  # noqa: E402
from sonde.store.inventory import Inventory  # noqa: E402
from sonde.store.gauge_sums import COARSE_NS, GaugeSums  # noqa: E402
from sonde.store.recent import Recent  # noqa: E402
from sonde.store.request_counts import BUCKET_NS, RequestCounts, RequestLatency  # noqa: E402

STEP_S = 10


def load(store, minutes: int) -> tuple[list, int]:
    """The fleet's last ``minutes`` through the ingest pipeline; the committed tables."""
    end_ns = time.time_ns() // 10**9 // STEP_S * STEP_S * 10**9
    fleet = Fleet(SCALES["small"], 1, end_ns)
    last = int(SCALES["small"].hours * 3600 / STEP_S)
    first = last - minutes * 60 // STEP_S
    committed: list = []
    store.on_commit(lambda tables: committed.append(tables.get("metric_points")))
    ingestor = Ingestor(store, Inventory(store))
    for k in range(first, last, 30):  # five minutes a request, as an exporter batching them
        for d in [fleet.replica(*dr) for dr in fleet.replicas()]:
            ingestor.metrics("bench", ViewMetricsRequest.FromString(wire.otlp(fleet, [d], k, min(k + 30, last))))
    store.writer.flush()
    return [t for t in committed if t is not None], end_ns


def timed(f, runs: int) -> tuple[float, float]:
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        f()
        out.append(time.perf_counter() - t)
    out.sort()
    return statistics.median(out) * 1000, out[int(len(out) * 0.99) - 1] * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=int, default=100, help="minutes of points up to now (within 120)")
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--count-hours", type=int, default=8, help="hours of points for the request counts' windows")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store("chdb", str(pathlib.Path(tmp) / "sonde"))
        store.keep_recent(recent.METRICS, 120 * 60, future_ns=MAX_AHEAD_NS)
        store.keep_request_counts(recent_counts.METRICS, 192 * 3600, future_ns=MAX_AHEAD_NS)
        store.keep_gauge_sums(recent.METRICS, 192 * 3600, future_ns=MAX_AHEAD_NS)
        tables, end_ns = load(store, max(args.minutes, args.count_hours * 60))
        rows = sum(t.num_rows for t in tables)
        cpu, side = feed(lambda: Recent(recent.METRICS, 120 * 60, future_ns=MAX_AHEAD_NS), tables)
        print(f"{rows:,} rows committed in {len(tables)} commits, {len(side):,} kept: Recent.add {cpu / len(side) * 1e9:.0f} ns a kept point"
              f" ({cpu / rows * 1e9:.0f} ns a committed row)\n")
        vm = catalogue.CATALOGUE["baseten_gpu_utilization"]
        ws = store.ex.query("SELECT any(ws) AS ws FROM " + store.t("metric_points"))[0]["ws"]
        entity = store.ex.query("SELECT min(entity) AS e FROM " + store.t("metric_points"))[0]["e"]
        end_ms = end_ns // 10**6
        print("| window | step s | from memory p50 / p99 ms | statement p50 / p99 ms | statement / memory | equal |")
        print("|---|---|---|---|---|---|")
        for minutes, step in ((15, 60), (60, 60), (90, 60)):
            w = Window("SERIES", end_ms - minutes * 60_000, end_ms, step)
            print(f"| {minutes} min | {step} | " + both_ways(store, "recent", lambda: deployment_metrics(store, ws, entity, w, [vm]), args.runs))
        counts(store, tables, ws, entity, end_ns, args)
        sums(store, tables, ws, entity, end_ns, args)
        store.close()


def feed(make, tables: list):
    """Process CPU seconds to add ``tables`` to a fresh memory (median of five: the first
    pays pyarrow's one-time costs), and the last memory fed."""
    cpus = []
    for _ in range(5):
        side = make()
        cpu = time.process_time()
        for t in tables:
            side.add(t)
        cpus.append(time.process_time() - cpu)
    return statistics.median(cpus), side


def counts(store, tables: list, ws: str, entity: str, end_ns: int, args) -> None:
    """Requests by status and the p99 latency from the sums kept per five minutes, and
    from the statement."""
    rows = sum(t.num_rows for t in tables)
    for kind in (RequestCounts, RequestLatency):
        cpu, side = feed(lambda: kind(recent_counts.METRICS, 192 * 3600, future_ns=MAX_AHEAD_NS), tables)
        print(f"\n{kind.__name__}.add {cpu / rows * 1e9:.0f} ns a committed row ({len(side):,} buckets held)")
    end_ms = end_ns // BUCKET_NS * BUCKET_NS // 10**6
    print("\n| metric | window | step s | from memory p50 / p99 ms | statement p50 / p99 ms | statement / memory | equal |")
    print("|---|---|---|---|---|---|---|")
    for name, memory in (("baseten_inference_requests_total", "request_counts"),
                         ("baseten_end_to_end_response_time_seconds", "request_latency")):
        vm = catalogue.CATALOGUE[name]
        for hours in (args.count_hours // 2, args.count_hours):
            w = Window("SERIES", end_ms - hours * 3_600_000, end_ms, 300)
            print(f"| {name} | {hours} h | 300 | " + both_ways(
                store, memory, lambda: deployment_metrics(store, ws, entity, w, [vm]), args.runs))


def sums(store, tables: list, ws: str, entity: str, end_ns: int, args) -> None:
    """GPU utilisation from the holds summed per bucket, and from the statement."""
    rows = sum(t.num_rows for t in tables)
    cpu, side = feed(lambda: GaugeSums(recent.METRICS, 192 * 3600, future_ns=MAX_AHEAD_NS), tables)
    print(f"\nGaugeSums.add {cpu / rows * 1e9:.0f} ns a committed row ({len(side):,} series held)")
    end_ms = end_ns // COARSE_NS * COARSE_NS // 10**6
    vm = catalogue.CATALOGUE["baseten_gpu_utilization"]
    print("\n| metric | window | step s | from memory p50 / p99 ms | statement p50 / p99 ms | statement / memory | equal |")
    print("|---|---|---|---|---|---|---|")
    kept = store.recent
    store.recent = None  # the recent points would answer the shorter windows otherwise
    try:
        for hours, step in ((args.count_hours // 2, 300), (args.count_hours, 300), (args.count_hours, 1800)):
            w = Window("SERIES", end_ms - hours * 3_600_000, end_ms, step)
            print(f"| baseten_gpu_utilization | {hours} h | {step} | " + both_ways(
                store, "gauge_sums", lambda: deployment_metrics(store, ws, entity, w, [vm]), args.runs))
    finally:
        store.recent = kept


def both_ways(store, memory: str, ask, runs: int) -> str:
    """A table row's timings: ``ask`` answered from the store's ``memory``, then with it
    set aside (the statement), and whether the answers are equal."""
    fast = ask()
    mem = timed(ask, runs)
    kept = getattr(store, memory)
    setattr(store, memory, None)
    try:
        slow = ask()
        stmt = timed(ask, runs)
    finally:
        setattr(store, memory, kept)
    return (f"{mem[0]:.1f} / {mem[1]:.1f} | {stmt[0]:.1f} / {stmt[1]:.1f} | {stmt[0] / mem[0]:.1f}x"
            f" | {'yes' if _equal(fast, slow) else 'NO'} |")


def _equal(a: dict, b: dict) -> bool:
    if a["metric_descriptors"] != b["metric_descriptors"] or len(a["metric_values"]) != len(b["metric_values"]):
        return False
    for x, y in zip(a["metric_values"], b["metric_values"]):
        for gx, gy in zip(x["values"], y["values"]):
            if [v is None for v in gx] != [v is None for v in gy]:
                return False
            if any(abs(p - q) > 1e-12 * max(abs(p), abs(q)) for p, q in zip(gx, gy) if p is not None):
                return False
    return True


if __name__ == "__main__":
    main()
