"""Request counts per five minutes, kept in memory by the store's one writer.

Requests by status class over a day or a week read every histogram point of the window
in a statement: 20-50 ms here, most of it reading and filtering rows
(docs/benchmarks.md). A window whose edges and step fall on five-minute boundaries (the
step ladder's rungs from 300 s up; dashboards that align their windows to the step, as
Grafana does) is a sum of whole five-minute buckets. So the store keeps, per entity and
per (metric, replica, status class), each bucket's observations (the histogram
points' ``count``), its histogram points and its points of any kind (the per-replica
source choice counts those), and query/recent_counts.py answers such a window from
them, exactly as the statement would. Other windows read the store.

What it holds is what the store holds, with the life cycle of store/memory.py shared
with store/recent.py's points: committed rows come in through
:meth:`RequestCounts.add`, the start loads the horizon from the store (already counted
per bucket), a failed commit raises the floor, retention empties it.

:class:`RequestLatency` keeps, beside them, per (metric, replica, kind, unit, bucket
bounds), what statement 1 of query/histograms.py adds up for the latency quantiles:
observations, sums, minima, maxima and the explicit buckets, so the p99 over such a
window is read from memory too, unless an exponential histogram is in it.

Both keep their buckets in store/five_minutes.py's rings. Counts cost 16 bytes per
(metric, replica, status class) and bucket, 37 KB for 192 hours; latency 48 bytes plus
8 a histogram bucket per (metric, replica, layout) and bucket, 250 KB for 192 hours of
a 12-bucket histogram.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .five_minutes import BUCKET_NS, Buckets, Field, FiveMinutes
from .memory import ENTITIES, UPTO
from .views import STATUS_ATTRS

__all__ = ["BUCKET_NS", "Buckets", "CLASSES", "RequestCounts", "RequestLatency", "status_classes"]

#: the status classes kept apart (2xx-5xx); every other status, or none, is class 0
CLASSES = (2, 3, 4, 5)
_HISTOGRAMS = pa.array(["histogram", "exp_histogram"])
_ENTITY = ("ws", "scope", "entity")
# the load's pieces: a point's status class as the store's http_status gives it, its
# bucket, histogram points, the rows of the horizon
_CLASS = "if(http_status BETWEEN 200 AND 599, intDiv(http_status, 100), 0)"
_BUCKET = "intDiv(toUnixTimestamp64Nano(ts), {bucket:Int64})"
_HIST = "kind IN ('histogram', 'exp_histogram')"
_WHERE = (f"WHERE {ENTITIES} AND metric IN {{metrics:Array(String)}} AND ts >= fromUnixTimestamp64Nano({{lo:Int64}})"
          f" AND {UPTO}")


def status_classes(attrs: pa.ChunkedArray | pa.Array) -> pa.Array:
    """Each point's status class from its attributes, as the store's ``http_status``
    column gives it (store/views.HTTP_STATUS: the first status attribute present, read
    as a UInt16 by ``toUInt16OrZero``, whose text is an optional ``+`` and digits): the
    hundreds for 200-599, else 0."""
    code = pc.coalesce(*(pc.map_lookup(attrs, pa.scalar(a), "first") for a in STATUS_ATTRS), pa.scalar(""))
    digit = pc.struct_field(pc.extract_regex(code, r"^\+?0*(?P<c>[2-5])[0-9][0-9]$"), [0])
    return pc.fill_null(pc.cast(digit, pa.int8()), 0)


def _per_series(points: pa.Table, at: np.ndarray, columns: list[str]) -> tuple[pa.Table, np.ndarray, np.ndarray]:
    """The kept rows ``at`` (``columns``), each row's series index, and each series' first
    row among them: the entity, metric, replica and attributes are part of a series' key,
    so its words are worked out once, from any one of its rows."""
    rows = points.select(columns).take(pa.array(at))
    series = pc.dictionary_encode(rows.column("series")).combine_chunks()
    code = series.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    one = np.empty(len(series.dictionary), dtype=np.int64)
    one[code] = np.arange(len(rows))
    return rows, code, one


class RequestCounts(FiveMinutes):
    """Per (metric, replica, status class): observations in histogram points, histogram
    points, points of any kind (the source choice counts those)."""

    KEY = ("metric", "replica", "cls")
    FIELDS = (Field("n", np.int64), Field("points", np.int32), Field("rows", np.int32))

    @staticmethod
    def load_sql(table: str) -> str:
        """The horizon's counts from the store (binds metrics, lo, bucket, upto and the entities)."""
        return (f"SELECT ws, scope, entity, metric, replica, toInt8({_CLASS}) AS cls, {_BUCKET} AS b,"
                f" toInt64(sumIf(count, {_HIST})) AS n, toInt32(countIf({_HIST})) AS points,"
                f" toInt32(count()) AS rows FROM {table} {_WHERE} GROUP BY ws, scope, entity, metric, replica, cls, b")

    def add(self, points: pa.Table) -> None:
        """Rows of ``metric_points`` as ingest builds them, committed just now."""
        at = self._kept_rows(points)
        if not at.size:
            return
        rows, code, one = _per_series(points, at, ["series", "ts", "kind", "count"])
        hist = pc.is_in(rows.column("kind").cast(pa.string()), value_set=_HISTOGRAMS)
        ts = rows.column("ts").cast(pa.int64()).to_numpy()
        flat = pa.table({
            "s": pa.array(code), "b": pa.array(ts // BUCKET_NS),
            "n": pc.if_else(hist, pc.fill_null(rows.column("count").cast(pa.int64()), 0), 0),
            "points": pc.cast(hist, pa.int32()), "rows": pa.array(np.ones(len(ts), dtype=np.int32)),
        }).group_by(["s", "b"]).aggregate([("n", "sum"), ("points", "sum"), ("rows", "sum")])
        firsts = points.select([*_ENTITY, "metric", "replica"]).take(pa.array(at[one]))
        firsts = firsts.append_column("cls", status_classes(points.column("attrs").take(pa.array(at[one]))))
        words = firsts.take(flat.column("s"))
        self._merge(pa.table({**{c: words.column(c).cast(pa.string()) for c in (*_ENTITY, "metric", "replica")},
                              "cls": words.column("cls"), "b": flat.column("b"), "n": flat.column("n_sum"),
                              "points": flat.column("points_sum"), "rows": flat.column("rows_sum")}))


class RequestLatency(FiveMinutes):
    """Per (metric, replica, kind, unit, bounds): statement 1's sums for the latency."""

    KEY = ("metric", "replica", "kind", "unit", "bounds")
    FIELDS = (Field("n", np.int64), Field("s", np.float64), Field("mn", np.float64, "min"),
              Field("mx", np.float64, "max"), Field("no_min", np.int32), Field("no_max", np.int32),
              Field("rows", np.int32), Field("buckets", np.int64, vector=True))

    @staticmethod
    def load_sql(table: str) -> str:
        """The horizon's sums from the store (binds metrics, lo, bucket, upto and the entities)."""
        ex = "kind = 'histogram'"
        return (f"SELECT ws, scope, entity, metric, replica, toString(kind) AS kind, toString(unit) AS unit, bounds,"
                f" {_BUCKET} AS b, toInt64(sumIf(count, {ex})) AS n, sumIf(sum, {ex}) AS s,"
                f" if(countIf({ex} AND NOT isNaN(min)) = 0, inf, minIf(min, {ex} AND NOT isNaN(min))) AS mn,"
                f" if(countIf({ex} AND NOT isNaN(max)) = 0, -inf, maxIf(max, {ex} AND NOT isNaN(max))) AS mx,"
                f" toInt32(countIf({ex} AND isNaN(min))) AS no_min, toInt32(countIf({ex} AND isNaN(max))) AS no_max,"
                f" toInt32(count()) AS rows, CAST(sumForEach(buckets), 'Array(Int64)') AS buckets"
                f" FROM {table} {_WHERE} GROUP BY ws, scope, entity, metric, replica, kind, unit, bounds, b")

    def add(self, points: pa.Table) -> None:
        """Rows of ``metric_points`` as ingest builds them, committed just now."""
        at = self._kept_rows(points)
        if not at.size:
            return
        rows, code, one = _per_series(points, at, ["series", "ts", "kind", "unit", "count", "sum", "min", "max"])
        kinds, kind_i = _codes(rows.column("kind"))
        explicit = (np.array(kinds, dtype=object) == "histogram")[kind_i]
        # the list columns read in place, by offsets: taking them costs more than the rest
        bounds = _Lists(points.column("bounds"), at)
        layout = _layouts(bounds, code, one)
        unit, unit_i = _codes(rows.column("unit"))
        b = rows.column("ts").cast(pa.int64()).to_numpy() // BUCKET_NS
        # one int64 per (layout, unit, kind, bucket): a commit spans a few buckets
        b0 = int(b.min())
        group = ((layout * (len(unit) + 1) + unit_i) * (len(kinds) + 1) + kind_i) * (int(b.max()) - b0 + 1) + (b - b0)
        uniq, first, inv = np.unique(group, return_index=True, return_inverse=True)
        inv = inv.ravel()
        g = len(uniq)
        n = np.zeros(g, np.int64)
        np.add.at(n, inv, np.where(explicit, pc.fill_null(rows.column("count").cast(pa.int64()), 0).to_numpy(), 0))
        mins, maxs = (np.where(explicit, pc.fill_null(rows.column(c).cast(pa.float64()), np.nan).to_numpy(), np.nan)
                      for c in ("min", "max"))
        mn, mx = np.full(g, np.inf), np.full(g, -np.inf)
        np.minimum.at(mn, inv, np.where(np.isnan(mins), np.inf, mins))
        np.maximum.at(mx, inv, np.where(np.isnan(maxs), -np.inf, maxs))
        sums = np.where(explicit, pc.fill_null(rows.column("sum").cast(pa.float64()), 0.0).to_numpy(), 0.0)
        words = list(zip(*(points.column(c).take(pa.array(at[first])).cast(pa.string()).to_pylist()
                           for c in (*_ENTITY, "metric", "replica"))))
        keys = [(w[3], w[4], kinds[kind_i[i]], unit[unit_i[i]], bounds.row(i)) for w, i in zip(words, first.tolist())]
        self._add_rows([w[:3] for w in words], keys, b[first], {
            "n": n, "s": np.bincount(inv, weights=sums, minlength=g), "mn": mn, "mx": mx,
            "no_min": np.bincount(inv, weights=(explicit & np.isnan(mins)), minlength=g).astype(np.int32),
            "no_max": np.bincount(inv, weights=(explicit & np.isnan(maxs)), minlength=g).astype(np.int32),
            "rows": np.bincount(inv, minlength=g).astype(np.int32),
            "buckets": _bucket_sums(_Lists(points.column("buckets"), at), explicit, inv, g),
        })


class _Lists:
    """A list column's rows ``at`` read in place: each row's offset and length into the
    flat values."""

    def __init__(self, column: pa.ChunkedArray, at: np.ndarray):
        arr = column.combine_chunks()
        off = arr.offsets.to_numpy()
        self.start, self.length = off[at], off[at + 1] - off[at]
        if arr.null_count:  # a null list has length 0 here
            self.length = np.where(arr.is_null().to_numpy(zero_copy_only=False)[at], 0, self.length)
        self.values = arr.values.to_numpy(zero_copy_only=False)

    def row(self, i: int) -> tuple:
        return tuple(self.values[self.start[i]:self.start[i] + self.length[i]].tolist())


def _codes(column: pa.ChunkedArray) -> tuple[list, np.ndarray]:
    enc = pc.dictionary_encode(pc.fill_null(column.cast(pa.string()), "")).combine_chunks()
    return enc.dictionary.to_pylist(), enc.indices.to_numpy(zero_copy_only=False).astype(np.int64)


def _layouts(bounds: _Lists, code: np.ndarray, one: np.ndarray) -> np.ndarray:
    """Per row, an id equal where (series, bounds) are: the series' index where all its
    rows have its first row's bounds (as a series nearly always does)."""
    length, ref = bounds.length, one[code]
    same = length == length[ref]
    idx = np.flatnonzero(same & (length > 0))
    if idx.size:
        reps = length[idx]
        inside = np.arange(reps.sum()) - np.repeat(np.cumsum(reps) - reps, reps)
        equal = (bounds.values[np.repeat(bounds.start[idx], reps) + inside]
                 == bounds.values[np.repeat(bounds.start[ref[idx]], reps) + inside])
        same[idx] = np.logical_and.reduceat(equal, np.cumsum(reps) - reps)
    if same.all():
        return code
    # some series changed bounds within the commit: ids from the values themselves
    ids: dict[tuple, int] = {}
    return np.array([ids.setdefault((c, bounds.row(i)), len(ids)) for i, c in enumerate(code.tolist())],
                    dtype=np.int64)


def _bucket_sums(buckets: _Lists, explicit: np.ndarray, inv: np.ndarray, g: int) -> list[np.ndarray]:
    """Per group, the element-wise sum of its explicit rows' bucket counts (a group's rows
    share their bounds, so their bucket arrays one length); empty for the others."""
    out = [np.zeros(0, np.int64)] * g
    flat = buckets.values.astype(np.int64)
    for w in np.unique(buckets.length[explicit]).tolist():
        rows = np.flatnonzero(explicit & (buckets.length == w))
        mat = flat[buckets.start[rows][:, None] + np.arange(w)]
        groups, local = np.unique(inv[rows], return_inverse=True)
        total = np.zeros((len(groups), w), np.int64)
        np.add.at(total, local.ravel(), mat)
        for gi, t in zip(groups.tolist(), total):
            out[gi] = t
    return out
