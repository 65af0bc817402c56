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

Then the same rows again, commit by commit at the writer's batch, into
``metric_points`` and into a table of chunks (one row per series and commit, each
point's columns as arrays: the layout a store of chunks would write; docs/benchmarks.md,
"Why the ingest target is out of reach"), with merges running and both tables merged
into one part at the end: the CPU of building the chunks, of the INSERTs and of the
merges, per sample.

The chunk table leaves out the exponential histograms' columns (the harness sends
none) and the label columns ``metric_points`` computes at insert: a store of chunks
would keep both once a chunk.

This measures the store, not a server: a request's Python path and the write-ahead
log come on top, and the merges too in the first table (docs/benchmarks.md, "Next to
VictoriaMetrics and Prometheus").
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import sys
import tempfile
import time

import numpy as np
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


#: a chunk's columns kept once (constant in a series), and those kept as an array a point
CHUNK_ONCE = ("ws", "scope", "entity", "parent", "metric", "kind", "monotonic", "unit", "series",
              "replica", "node_rank", "attrs", "bounds")
CHUNK_POINTS = ("ts", "start_ts", "value", "count", "sum", "min", "max", "buckets", "seq")


def chunks(batch: pa.Table) -> pa.Table:
    """``batch``'s rows as one row per series: the constant columns once, each point's
    columns as time-sorted arrays, the newest point's ``cum_state``: the layout a
    store of chunks would insert at a commit."""
    rows = batch.sort_by([("series", "ascending"), ("ts", "ascending")])
    series = rows.column("series").to_numpy()
    starts = np.flatnonzero(np.r_[True, series[1:] != series[:-1]])
    offsets = pa.array(np.r_[starts, series.size].astype(np.int32))
    first, last = pa.array(starts), pa.array(np.r_[starts[1:], series.size] - 1)
    cols = {c: rows.column(c).take(first) for c in CHUNK_ONCE}
    cols.update({f"p_{c}": pa.ListArray.from_arrays(offsets, rows.column(c).combine_chunks()) for c in CHUNK_POINTS})
    cols["cum_state"] = rows.column("cum_state").take(last)
    cols["t_min"] = rows.column("ts").take(first)
    return pa.table(cols)


def chunked(store: Store, data: pa.Table, batch: int) -> dict[str, float]:
    """The same rows through a chunk table, commit by commit of ``batch`` rows, against
    ``metric_points`` (views dropped on both sides: what the layout changes): process
    CPU seconds of the INSERTs, of building the chunks, and of merging each table's
    parts into one (OPTIMIZE FINAL); merges run as they would."""
    t = store.t("metric_points")
    types = {r["name"]: r["type"] for r in store.ex.query_arrow(f"DESCRIBE {t}").to_pylist()}
    ddl = ", ".join([f"{c} {types[c]}" for c in CHUNK_ONCE] + [f"p_{c} Array({types[c]})" for c in CHUNK_POINTS]
                    + ["cum_state String", "t_min DateTime64(9, 'UTC')"])
    chunk_t = store.t("bench_chunks")
    store.ex.command(f"CREATE TABLE {chunk_t} ({ddl}) ENGINE = MergeTree PARTITION BY toDate(t_min)"
                     " ORDER BY (ws, scope, entity, metric, series, t_min)")
    store.ex.command(f"TRUNCATE TABLE {t}")
    store.ex.command("SYSTEM START MERGES")
    cpu = dict.fromkeys(("rows: insert", "chunks: build", "chunks: insert", "rows: merge", "chunks: merge"), 0.0)

    def clocked(key: str, work, *args):
        c = time.process_time()
        out = work(*args)
        cpu[key] += time.process_time() - c
        return out

    for i in range(data.num_rows // batch):
        part = data.slice(i * batch, batch)
        clocked("rows: insert", store.ex.insert_arrow, t, part)
        clocked("chunks: insert", store.ex.insert_arrow, chunk_t, clocked("chunks: build", chunks, part))
    clocked("rows: merge", store.ex.command, f"OPTIMIZE TABLE {t} FINAL")
    clocked("chunks: merge", store.ex.command, f"OPTIMIZE TABLE {chunk_t} FINAL")
    return cpu


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
            data, per_row = rows(store, max(*batches, 8 * WRITER_BATCH))
            for label in ("with the views", "without the views"):
                if label == "without the views":
                    for v in VIEWS:
                        store.ex.command(f"DROP VIEW {store.t(v.name)}")
                store.ex.command("SYSTEM STOP MERGES")
                timed(store, data, min(batches), 2)  # off the clock: the first statement's setup
                results[label] = {b: timed(store, data, b, args.rounds) for b in batches}
            layouts = chunked(store, data, WRITER_BATCH)
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
    done = data.num_rows // WRITER_BATCH * WRITER_BATCH * per_row
    print(f"\nThe same {done:,.0f} samples in commits of {WRITER_BATCH:,} rows, as rows and as chunks"
          " (one row a series and commit), the views dropped: process CPU, us a sample\n")
    print("| step | rows | chunks |")
    print("|---|---|---|")
    for step in ("build", "insert", "merge"):
        cells = [layouts.get(f"{layout}: {step}") for layout in ("rows", "chunks")]
        print(f"| {step} | " + " | ".join("-" if v is None else f"{v / done * 1e6:.3f}" for v in cells) + " |")
    r, c = (sum(v for k, v in layouts.items() if k.startswith(p)) for p in ("rows", "chunks"))
    print(f"| all | {r / done * 1e6:.3f} | {c / done * 1e6:.3f} |")


if __name__ == "__main__":
    main()
