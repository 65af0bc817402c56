"""The group commit's INSERT into ``metric_points`` alone: what it costs per statement
and per row, by batch size, with the table's materialized views and without them.

    .venv/bin/python bench/bench_insert.py
    .venv/bin/python bench/bench_insert.py --batch 1 --batch 50000 --rounds 5

The rows are the peers harness's samples (bench/peers/workload.py: per replica and
10 s, 16 GPU gauges and a 12-bucket latency histogram by status code) made into
``metric_points`` rows by Sonde's own path (protobuf view, metrics walk, cumulative
state, Arrow), as requests make them. Each batch goes in through the store's executor
(``insert_arrow``, the writer's call) with merges stopped, so a figure is the INSERT
alone: process CPU, chDB's threads included, per statement. "Without the views" is
the same store with its materialized views (store/views.py) dropped: the difference
is what they add to every insert. A least-squares line over the batch sizes splits
each column into a cost per statement and a cost per row.

This measures the store, not a server: a request's Python path, the write-ahead log
and the merges come on top (docs/benchmarks.md, "Next to VictoriaMetrics and
Prometheus").
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import sys
import tempfile
import time

import pyarrow as pa

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from bench_protobuf_input import requests  # noqa: E402

from sonde.ingest.columns import SeriesCache  # noqa: E402
from sonde.ingest.cumulative import SeriesState  # noqa: E402
from sonde.ingest.metrics import MetricsWalk  # noqa: E402
from sonde.ingest.proto import ViewMetricsRequest  # noqa: E402
from sonde.ingest.registrar import Registrar  # noqa: E402
from sonde.store import Store, open_store  # noqa: E402
from sonde.store.inventory import Inventory  # noqa: E402
from sonde.settings import setting  # noqa: E402
from sonde.store.views import VIEWS  # noqa: E402

#: the writer's default batch
WRITER_BATCH = setting("batch_max_rows").default


def rows(store: Store, want: int) -> tuple[pa.Table, float]:
    """At least ``want`` metric_points rows as requests make them, and the samples a
    row carries on average (Prometheus' count: a bucket, _sum and _count each one)."""
    cache, registrar, state = SeriesCache(), Registrar(Inventory(store)), SeriesState(store)
    # 16 replicas, ~3,400 rows a 30-minute request each
    per_replica, samples = requests(180, want // 50_000 + 2)
    tables = []
    for k in range(len(per_replica[0])):
        for bodies in per_replica:
            walk = MetricsWalk("bench", cache, registrar).walk(ViewMetricsRequest.FromString(bodies[k]))
            blocks = [b for b in walk.blocks.values() if len(b)]
            with state.lock:
                change = state.apply("bench", blocks)
                tables += [b.to_arrow() for b in blocks]
                state.commit(change)
    data = pa.concat_tables(tables).combine_chunks()
    assert data.num_rows >= want, (data.num_rows, want)
    per_request = data.num_rows / (len(per_replica) * len(per_replica[0]))
    return data, samples / per_request


def timed(store: Store, data: pa.Table, batch: int, rounds: int) -> float:
    """Median process CPU seconds of one INSERT of ``batch`` rows."""
    table, cpu = store.t("metric_points"), []
    for i in range(rounds):
        part = data.slice((i * batch) % max(1, data.num_rows - batch + 1), batch)
        t = time.process_time()
        store.ex.insert_arrow(table, part)
        cpu.append(time.process_time() - t)
    return statistics.median(cpu)


def fit(points: list[tuple[int, float]]) -> tuple[float, float]:
    """(seconds a statement, seconds a row): least squares over (rows, seconds)."""
    n = len(points)
    mx, my = sum(x for x, _ in points) / n, sum(y for _, y in points) / n
    slope = sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x, _ in points)
    return my - slope * mx, slope


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, action="append", help="rows an INSERT (repeatable)")
    ap.add_argument("--rounds", type=int, default=7, help="INSERTs timed per batch size and store")
    args = ap.parse_args()
    batches = sorted(set(args.batch or [1, 1_000, 10_000, WRITER_BATCH, 200_000]))
    results: dict[str, dict[int, float]] = {}
    with tempfile.TemporaryDirectory() as d:
        store = open_store("chdb", str(pathlib.Path(d) / "sonde"))
        try:
            data, per_row = rows(store, max(batches))
            for label in ("with the views", "without the views"):
                if label == "without the views":
                    for v in VIEWS:
                        store.ex.command(f"DROP VIEW {store.t(v.name)}")
                store.ex.command("SYSTEM STOP MERGES")
                timed(store, data, min(batches), 2)  # off the clock: the first statement's setup
                results[label] = {b: timed(store, data, b, args.rounds) for b in batches}
        finally:
            store.close()
    print(f"{data.num_rows:,} rows made by Sonde's ingest path, {per_row:.2f} samples a row\n")
    print("| rows an INSERT | with the views: ms | us a row | without: ms | us a row | the views' share |")
    print("|---|---|---|---|---|---|")
    for b in batches:
        w, wo = results["with the views"][b], results["without the views"][b]
        print(f"| {b:,} | {w * 1e3:.1f} | {w / b * 1e6:.2f} | {wo * 1e3:.1f} | {wo / b * 1e6:.2f} | {1 - wo / w:.0%} |")
    print()
    for label, by in results.items() if len(batches) > 1 else ():  # a line needs two sizes
        fixed, per = fit(list(by.items()))
        print(f"{label}: {fixed * 1e3:.1f} ms a statement + {per * 1e6:.2f} us a row;"
              f" at the writer's {WRITER_BATCH:,}-row batch {(fixed / WRITER_BATCH + per) * 1e6:.2f} us a row,"
              f" {(fixed / WRITER_BATCH + per) / per_row * 1e6:.2f} us a sample")


if __name__ == "__main__":
    main()
