"""GAUGE means over the rows the store keeps in memory (store/recent.py), in numpy.

A live dashboard asks for the last hour again and again, and every point written in
between changes the answer, so a kept answer (query/cache.py) rarely serves it. Where
the store holds every row such a question reads in memory, this module answers it
without a statement: a chDB statement of the time-weighted mean costs 15-20 ms of
analysis and planning before it reads anything (docs/benchmarks.md), the arithmetic
over an hour of one deployment's 32 GPU series 1-2 ms (bench/bench_recent.py).

The arithmetic is :func:`query.gauges.time_weighted`'s, step for step, so both give
one answer (docs/metrics.md, GAUGE; ``tests/test_recent.py`` holds them to it on
random series): the same rows (sources, exclusions, the look-around), the unit factor
per row, the per-replica source choice, each sample's interval and hold, holds cut at
the window and the steps, per-series means, then per label set their sum (their mean
for RATIO gauges). Only the order floating-point sums are added in differs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .catalogue import CATALOGUE, DIMENSIONS, GAUGE, LabelKind, VendorMetric
from ..store.holds import by_series, holds


#: the label kinds answered here: their labels are the replica, the node rank and the
#: GPU column; a mount or an attribute set needs the attribute map, not kept in memory
LABEL_KINDS = frozenset({LabelKind.PLAIN, LabelKind.REPLICA, LabelKind.GPU, LabelKind.NODE, LabelKind.NODE_GPU})


def answers(vm: VendorMetric) -> bool:
    """Whether :func:`time_weighted` can answer ``vm`` (the store's memory permitting)."""
    return vm.kind == GAUGE and vm.labels in LABEL_KINDS and not any(s.match for s in vm.sources)


#: the metrics whose recent points the store keeps in memory: the sources of the
#: catalogue's gauges answered here
METRICS = frozenset(s.metric for vm in CATALOGUE.values() if answers(vm) for s in vm.sources)


def codes(column: pa.ChunkedArray) -> tuple[list, np.ndarray]:
    """A column's distinct values (some maybe unused) and each row's index into them."""
    enc = column.combine_chunks()
    if not pa.types.is_dictionary(enc.type):  # the store keeps its words as dictionaries
        enc = pc.dictionary_encode(enc)
    words, at = enc.dictionary.to_pylist(), enc.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    if len(set(words)) < len(words):  # joined parts' dictionaries may repeat a word
        first: dict = {}
        remap = np.array([first.setdefault(w, len(first)) for w in words], dtype=np.int64)
        words, at = list(first), remap[at]
    return words, at


def time_weighted(rows: pa.Table, vm: VendorMetric, *, t0: int, t1: int, step: int, lo: int, hi: int,
                  chooses: bool, excluded: Mapping[str, Sequence[str]]) -> pa.Table:
    """Rows ``{k, l_host, l_device, v}`` as :func:`query.gauges.time_weighted` gives them,
    from ``rows`` (columns of ``metric_points``: series, ts as Int64 nanoseconds, value,
    unit, metric, kind, monotonic, replica, node_rank, gpu; and ``sid``, the series
    ranked: store/recent.Recent.rows) of one entity."""
    sources = vm.source_names
    ts = rows.column("ts").to_numpy()
    metrics, metric_i = codes(rows.column("metric"))
    rank_of = np.array([sources.index(m) if m in sources else -1 for m in metrics], dtype=np.int64)
    keep = (ts >= lo) & (ts < hi) & (rank_of[metric_i] >= 0)
    replicas, replica_i = codes(rows.column("replica"))
    for metric, left_out in excluded.items():
        if metric in metrics and left_out:
            gone = np.isin(replica_i, [replicas.index(r) for r in left_out if r in replicas])
            keep &= ~((metric_i == metrics.index(metric)) & gone)
    kinds, kind_i = codes(rows.column("kind"))
    gauge = (np.array([k == "gauge" for k in kinds], dtype=bool)[kind_i]
             | (np.array([k == "sum" for k in kinds], dtype=bool)[kind_i]
                & ~rows.column("monotonic").to_numpy(zero_copy_only=False)))
    if not chooses:
        keep &= gauge
    idx = np.flatnonzero(keep)
    # the rows read, by series, then time
    series = rows.column("sid").to_numpy()[idx]
    t = ts[idx]
    order = by_series(series, t)
    idx, series, t = idx[order], series[order], t[order]
    starts = np.flatnonzero(np.append(True, series[1:] != series[:-1])) if idx.size else idx
    sid = np.repeat(np.arange(starts.size), np.diff(np.append(starts, idx.size)))
    # per series its first row stands for it (metric, replica, node rank and GPU are
    # part of the series key, so constant in it)
    first = idx[starts]
    if chooses:
        # a replica's series of a later source are out when it sent an earlier one
        rank = rank_of[metric_i[first]]
        best = np.full(len(replicas), np.iinfo(np.int64).max)
        np.minimum.at(best, replica_i[first], rank)
        live = gauge[idx] & (rank == best[replica_i[first]])[sid]
        idx, t, sid = idx[live], t[live], sid[live]
    if idx.size == 0:
        return _EMPTY
    s = sid
    v = rows.column("value").to_numpy()[idx]
    factors = _factors(rows, vm, metrics, metric_i, idx)
    if factors is not None:
        v = v * factors
    b = holds(s, t)
    b = np.minimum(b, t1)
    a = np.maximum(t, t0)
    held = b > a
    a, b, v, s = a[held], b[held], v[held], s[held]
    if a.size == 0:  # no hold reaches into the window
        return _EMPTY
    # each hold cut at the steps it reaches
    ka = (a - t0) // step
    n = (b - 1 - t0) // step - ka + 1
    piece_of = np.repeat(np.arange(a.size), n)
    kk = ka[piece_of] + (np.arange(piece_of.size) - np.repeat(np.cumsum(n) - n, n))
    piece = (np.minimum(b[piece_of], t0 + (kk + 1) * step) - np.maximum(a[piece_of], t0 + kk * step))
    n_steps = int((t1 - 1 - t0) // step) + 1
    # per (series, step): pieces come sorted by series, then time, so by step
    cell = s[piece_of] * n_steps + kk
    cells = np.flatnonzero(np.append(True, cell[1:] != cell[:-1]))
    covered = np.add.reduceat(piece, cells)
    mean = np.add.reduceat(v[piece_of] * piece, cells) / covered
    cell_series, cell_k = cell[cells] // n_steps, cell[cells] % n_steps
    # per label set: the series' means combined
    label_keys, label_i = _labels(rows, vm, first, replicas, replica_i[first])
    return combine(vm, n_steps, label_keys, label_i[cell_series], cell_k, mean)


def combine(vm: VendorMetric, n_steps: int, label_keys: list[tuple], label_i: np.ndarray, k: np.ndarray,
            mean: np.ndarray) -> pa.Table:
    """Rows ``{k, l_host, l_device, v}`` from per-(series, step) means (each cell's label
    set ``label_i`` into ``label_keys``, its step ``k``): per label set their sum, their
    mean for RATIO gauges."""
    out_key = k * len(label_keys) + label_i
    # (step, label set) pairs are few (steps x label sets): count them densely
    count = np.bincount(out_key, minlength=n_steps * len(label_keys))
    keys = np.flatnonzero(count)
    total = np.bincount(out_key, weights=mean, minlength=count.size)[keys]
    if vm.unit_hint == "RATIO":
        total = total / count[keys]
    ls = pa.array(keys % len(label_keys))
    return pa.table({
        "k": keys // len(label_keys),
        "l_host": pa.DictionaryArray.from_arrays(ls, pa.array([x[0] for x in label_keys], pa.string())),
        "l_device": pa.DictionaryArray.from_arrays(ls, pa.array([x[1] for x in label_keys], pa.string())),
        "v": total,
    })


_EMPTY = pa.table({"k": pa.array([], pa.int64()), "l_host": pa.array([], pa.string()),
                   "l_device": pa.array([], pa.string()), "v": pa.array([], pa.float64())})


def _factors(rows: pa.Table, vm: VendorMetric, metrics: list, metric_i: np.ndarray,
             at: np.ndarray) -> np.ndarray | None:
    """The factor into ``vm``'s unit of each row ``at``: by the unit sent when it is a
    known one, else by its source's documented unit (Scan.factor, row for row); None
    where every factor is 1."""
    if not DIMENSIONS[vm.dimension]:
        return None
    units, unit_i = codes(rows.column("unit"))
    by_metric = {s.metric: s for s in vm.sources}
    # (other metrics' rows are never read: any factor does for them)
    table = np.array([[vm.factor_of(u, by_metric[m]) if m in by_metric else 1.0 for m in metrics] for u in units],
                     dtype=np.float64)
    return None if (table == 1.0).all() else table[unit_i[at], metric_i[at]]


def _labels(rows: pa.Table, vm: VendorMetric, at: np.ndarray, replicas: list,
            replica_i: np.ndarray) -> tuple[list[tuple], np.ndarray]:
    """The distinct (l_host, l_device) of the series whose first rows are ``at``, as
    query.gauges.label_columns makes them, and each series' index into them."""
    kind = vm.labels
    if kind.per_node:
        ranks = rows.column("node_rank").to_numpy()[at]
        hosts, host_i = np.unique(ranks, return_inverse=True)
        hosts = [str(x) for x in hosts.tolist()]
    elif kind is LabelKind.PLAIN:
        hosts, host_i = [""], np.zeros(at.size, dtype=np.int64)
    else:
        hosts, host_i = replicas, replica_i
    if kind.device == "gpu":
        devices, device_i = codes(rows.column("gpu").take(at))
    else:
        devices, device_i = [""], np.zeros(at.size, dtype=np.int64)
    return pairs(hosts, host_i, devices, device_i)


def pairs(firsts: list, first_i: np.ndarray, seconds: list, second_i: np.ndarray) -> tuple[list[tuple], np.ndarray]:
    """The distinct (first, second) word pairs of rows given as :func:`codes`, and each
    row's index into them."""
    found, at = np.unique(first_i * len(seconds) + second_i, return_inverse=True)
    return [(firsts[c // len(seconds)], seconds[c % len(seconds)]) for c in found.tolist()], at
