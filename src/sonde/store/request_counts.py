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

Per entity the buckets sit in a ring as long as the horizon plus the future ingest
accepts: a bucket takes the slot ``bucket % size``, whose stamp says which bucket it
holds; a newer bucket takes a slot over, and one older than the slot's is past the
horizon. 16 bytes per (metric, replica, status class) and bucket: 37 KB for 192 hours.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .memory import Memory
from .views import STATUS_ATTRS

BUCKET_NS = 300 * 10**9
#: the status classes kept apart (2xx-5xx); every other status, or none, is class 0
CLASSES = (2, 3, 4, 5)
_HISTOGRAMS = pa.array(["histogram", "exp_histogram"])
_KEY = ("ws", "scope", "entity")
# an aggregated row: the entity, the (metric, replica, status class) and the bucket
_GROUP = (*_KEY, "metric", "replica", "cls", "b")

Key = tuple[str, str, str]


def status_classes(attrs: pa.ChunkedArray | pa.Array) -> pa.Array:
    """Each point's status class from its attributes, as the store's ``http_status``
    column gives it (store/views.HTTP_STATUS: the first status attribute present, read
    as a UInt16 by ``toUInt16OrZero``, whose text is an optional ``+`` and digits): the
    hundreds for 200-599, else 0."""
    code = pc.coalesce(*(pc.map_lookup(attrs, pa.scalar(a), "first") for a in STATUS_ATTRS), pa.scalar(""))
    digit = pc.struct_field(pc.extract_regex(code, r"^\+?0*(?P<c>[2-5])[0-9][0-9]$"), [0])
    return pc.fill_null(pc.cast(digit, pa.int8()), 0)


@dataclass(frozen=True)
class Counts:
    """An entity's buckets from ``start_ns`` on, one column each, for ``keys`` (metric,
    replica, status class), one row each."""

    keys: list[tuple[str, str, int]]
    start_ns: int
    #: observations in histogram points
    n: np.ndarray
    #: histogram points
    points: np.ndarray
    #: points of any kind
    rows: np.ndarray


class _Ring:
    """One entity's buckets, a row per (metric, replica, status class)."""

    def __init__(self, size: int):
        self.keys: dict[tuple[str, str, int], int] = {}
        self.stamp = np.full(size, -1, dtype=np.int64)
        self.n = np.zeros((0, size), dtype=np.int64)
        self.points = np.zeros((0, size), dtype=np.int32)
        self.rows = np.zeros((0, size), dtype=np.int32)

    def add(self, keys: list[tuple[str, str, int]], bucket: np.ndarray, n: np.ndarray, points: np.ndarray,
            rows: np.ndarray) -> None:
        new = [k for k in dict.fromkeys(keys) if k not in self.keys]
        if new:
            for k in new:
                self.keys[k] = len(self.keys)
            grow = ((len(new), self.stamp.size))
            self.n = np.vstack([self.n, np.zeros(grow, np.int64)])
            self.points = np.vstack([self.points, np.zeros(grow, np.int32)])
            self.rows = np.vstack([self.rows, np.zeros(grow, np.int32)])
        at = np.array([self.keys[k] for k in keys], dtype=np.int64)
        slot = bucket % self.stamp.size
        # a newer bucket takes its slot over; the caller passes none older than the horizon
        newest = np.full(self.stamp.size, -1, dtype=np.int64)
        np.maximum.at(newest, slot, bucket)
        taken = np.flatnonzero(newest > self.stamp)
        self.stamp[taken] = newest[taken]
        for table in (self.n, self.points, self.rows):
            table[:, taken] = 0
        ok = bucket == self.stamp[slot]
        np.add.at(self.n, (at[ok], slot[ok]), n[ok])
        np.add.at(self.points, (at[ok], slot[ok]), points[ok])
        np.add.at(self.rows, (at[ok], slot[ok]), rows[ok])


class RequestCounts(Memory):
    def __init__(self, metrics: Iterable[str], horizon_s: float, *, future_ns: int,
                 clock: Callable[[], int] = time.time_ns):
        """``metrics``: the request histograms' names."""
        super().__init__(metrics, horizon_s, future_ns=future_ns, clock=clock)
        self._size = -(-(self.horizon_ns + future_ns) // BUCKET_NS) + 3
        self._rings: dict[Key, _Ring] = {}
        self._ceiling = 2**63 - 1  # nor anything reaching this (see _merge)

    def add(self, points: pa.Table) -> None:
        """Rows of ``metric_points`` as ingest builds them, committed just now."""
        keep = pc.and_(pc.is_in(points.column("metric"), value_set=self.metrics),
                       pc.greater_equal(points.column("ts").cast(pa.int64()), self._oldest()))
        at = np.flatnonzero(keep.to_numpy(zero_copy_only=False))
        if not at.size:
            return
        rows = points.select([*_KEY, "metric", "replica", "series", "ts", "kind", "count"]).take(pa.array(at))
        hist = pc.is_in(rows.column("kind").cast(pa.string()), value_set=_HISTOGRAMS)
        ts = rows.column("ts").cast(pa.int64()).to_numpy()
        flat = pa.table({
            "series": rows.column("series"), "b": pa.array(ts // BUCKET_NS),
            "n": pc.if_else(hist, pc.fill_null(rows.column("count").cast(pa.int64()), 0), 0),
            "points": pc.cast(hist, pa.int32()), "rows": pa.array(np.ones(len(ts), dtype=np.int32)),
        }).group_by(["series", "b"]).aggregate([("n", "sum"), ("points", "sum"), ("rows", "sum")])
        # the entity, metric, replica and attributes are part of a series' key: its
        # words and status class are worked out once, from any one of its rows
        series = pc.dictionary_encode(rows.column("series")).combine_chunks()
        one = np.empty(len(series.dictionary), dtype=np.int64)
        one[series.indices.to_numpy(zero_copy_only=False)] = np.arange(len(rows))
        firsts = rows.take(pa.array(one)).select([*_KEY, "metric", "replica"])
        firsts = firsts.append_column("cls", status_classes(points.column("attrs").take(pa.array(at[one]))))
        of = pc.index_in(flat.column("series"), value_set=series.dictionary)
        words = firsts.take(of)
        self._merge(pa.table({**{c: words.column(c).cast(pa.string()) for c in (*_KEY, "metric", "replica")},
                              "cls": words.column("cls"), "b": flat.column("b"), "n": flat.column("n_sum"),
                              "points": flat.column("points_sum"), "rows": flat.column("rows_sum")}))

    def load(self, rows: pa.Table) -> None:
        """Counts read from the store at start, already per :data:`_GROUP`."""
        if rows.num_rows:
            self._merge(rows.filter(pc.greater_equal(rows.column("b"), self._oldest() // BUCKET_NS)))

    def _oldest(self) -> int:
        return (self._clock() - self.horizon_ns) // BUCKET_NS * BUCKET_NS

    def _merge(self, agg: pa.Table) -> None:
        if not agg.num_rows:
            return
        agg = agg.sort_by([(c, "ascending") for c in _KEY])
        cols = {c: agg.column(c).to_pylist() for c in (*_KEY, "metric", "replica")}
        cls = agg.column("cls").to_numpy().astype(np.int64)
        b = agg.column("b").to_numpy().astype(np.int64)
        n, pts, rows = (agg.column(c).to_numpy().astype(t) for c, t in
                        (("n", np.int64), ("points", np.int32), ("rows", np.int32)))
        entity = list(zip(*(cols[c] for c in _KEY)))
        keys = list(zip(cols["metric"], cols["replica"], cls.tolist()))
        starts = [i for i in range(len(entity)) if i == 0 or entity[i] != entity[i - 1]] + [len(entity)]
        with self._lock:
            # further ahead than ingest accepts (a clock set back since): such a bucket
            # would take a slot still in use, so it is left out and nothing reaching it
            # is answered
            reach = (self._clock() + self._future_ns) // BUCKET_NS + 1
            ahead = b > reach
            if ahead.any():
                self._ceiling = min(self._ceiling, int(b[ahead].min()) * BUCKET_NS)
            for lo, hi in zip(starts, starts[1:]):
                ok = ~ahead[lo:hi]
                ring = self._rings.setdefault(entity[lo], _Ring(self._size))
                ring.add([k for k, y in zip(keys[lo:hi], ok) if y], b[lo:hi][ok], n[lo:hi][ok], pts[lo:hi][ok],
                         rows[lo:hi][ok])

    def window(self, ws: str, scope: str, entity: str, t0: int, t1: int, metrics: Iterable[str]) -> Counts | None:
        """The entity's counts of ``metrics`` over [t0, t1), both on bucket boundaries, or
        None where they may be missing here (not kept, or not from as early as ``t0``)."""
        wanted = frozenset(metrics)
        if t0 % BUCKET_NS or t1 % BUCKET_NS or t1 < t0 or not wanted <= self._kept:
            return None
        bucket = np.arange(t0 // BUCKET_NS, t1 // BUCKET_NS, dtype=np.int64)
        with self._lock:
            if t0 < self.since() or t1 > self._ceiling:
                return None
            ring = self._rings.get((ws, scope, entity))
            if ring is None:
                empty = np.zeros((0, bucket.size), dtype=np.int64)
                return Counts([], t0, empty, empty, empty)
            slot = bucket % self._size
            held = ring.stamp[slot] == bucket
            rows = [i for k, i in ring.keys.items() if k[0] in wanted]
            keys = [k for k in ring.keys if k[0] in wanted]
            tables = [t[rows][:, slot] * held for t in (ring.n, ring.points, ring.rows)]
        return Counts(keys, t0, *tables)

    def _forget(self) -> None:
        self._rings = {}

    def __len__(self) -> int:
        """Buckets held, over every entity and key."""
        with self._lock:
            return sum(int((ring.rows > 0).sum()) for ring in self._rings.values())
