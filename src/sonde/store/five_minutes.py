"""Points summed per five minutes in memory, per entity and key: what the store's request
memories (store/request_counts.py) share.

A window whose edges and step fall on five-minute boundaries (the step ladder's rungs
from 300 s up) is a union of whole buckets, so an answer that only adds, takes minima or
maxima of its points can be read from per-bucket sums exactly. A subclass names its key
columns and its :class:`Field` s and turns committed rows into per-bucket rows.

Per entity the buckets sit in a ring as long as the horizon plus the future ingest
accepts: a bucket takes the slot ``bucket % size``, whose stamp says which bucket it
holds; a newer bucket takes a slot over, and one older than the slot's is past the
horizon. The life cycle (floor, reset) is store/memory.py's.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .memory import Memory, Query, entity_groups

BUCKET_NS = 300 * 10**9
_ENTITY = ("ws", "scope", "entity")

Key = tuple[str, str, str]


@dataclass(frozen=True)
class Field:
    name: str
    dtype: type
    #: how a bucket's rows combine: "sum", "min" or "max"
    op: str = "sum"
    #: one array a row, of one length within a key (histogram buckets)
    vector: bool = False

    @property
    def empty(self):
        """The value of a bucket with no rows."""
        if self.op == "sum":
            return 0
        big = np.inf if np.dtype(self.dtype).kind == "f" else np.iinfo(self.dtype).max
        return big if self.op == "min" else -big

    @property
    def ufunc(self) -> np.ufunc:
        return {"sum": np.add, "min": np.minimum, "max": np.maximum}[self.op]


@dataclass(frozen=True)
class Buckets:
    """An entity's buckets from ``start_ns`` on for ``keys``: per field, a (keys, buckets)
    array, or for a vector field one (buckets, length) array a key."""

    keys: list[tuple]
    start_ns: int
    values: dict[str, np.ndarray | list[np.ndarray]]


class _Ring:
    """One entity's buckets, arrays per key and field (every memory has a ``rows`` field:
    a key with no rows in the buckets held is dropped)."""

    def __init__(self, size: int, fields: tuple[Field, ...]):
        self.stamp = np.full(size, -1, dtype=np.int64)
        self.fields = fields
        self.keys: dict[tuple, dict[str, np.ndarray]] = {}

    def add(self, keys: list[tuple], bucket: np.ndarray, values: dict[str, np.ndarray | list]) -> None:
        size = self.stamp.size
        slot = bucket % size
        # a newer bucket takes its slot over; the caller passes none older than the horizon
        newest = np.full(size, -1, dtype=np.int64)
        np.maximum.at(newest, slot, bucket)
        taken = np.flatnonzero(newest > self.stamp)
        self.stamp[taken] = newest[taken]
        for arrays in self.keys.values():
            for f in self.fields:
                arrays[f.name][taken] = f.empty
        ok = bucket == self.stamp[slot]
        at: dict[tuple, list[int]] = {}
        for i, k in enumerate(keys):
            if ok[i]:
                at.setdefault(k, []).append(i)
        for k, rows in at.items():
            arrays = self.keys.get(k)
            if arrays is None:
                arrays = self.keys[k] = {
                    f.name: np.full((size, len(values[f.name][rows[0]])) if f.vector else size, f.empty, f.dtype)
                    for f in self.fields}
            idx = np.array(rows)
            for f in self.fields:
                v = np.stack([values[f.name][i] for i in rows]) if f.vector else values[f.name][idx]
                f.ufunc.at(arrays[f.name], slot[idx], v)

    def prune(self, oldest: int) -> None:
        """Drop the keys with no rows in a bucket from ``oldest`` on (a replica gone for
        longer than the horizon): nothing can read them any more."""
        held = self.stamp >= oldest
        self.keys = {k: a for k, a in self.keys.items() if a["rows"][held].any()}


class FiveMinutes(Memory):
    #: the key columns beside the entity, in the rows :meth:`_merge` takes
    KEY: tuple[str, ...] = ()
    FIELDS: tuple[Field, ...] = ()

    def __init__(self, metrics: Iterable[str], horizon_s: float, *, future_ns: int,
                 clock: Callable[[], int] = time.time_ns):
        super().__init__(metrics, horizon_s, future_ns=future_ns, clock=clock)
        self._size = -(-(self.horizon_ns + future_ns) // BUCKET_NS) + 3
        self._rings: dict[Key, _Ring] = {}
        self._ceiling = 2**63 - 1  # nor anything reaching this (see _merge)
        self._pruned = -1  # the bucket of the last pass dropping what the horizon left

    def load(self, rows: pa.Table) -> None:
        """Rows read from the store at start, already per entity, key and bucket ``b``."""
        if rows.num_rows:
            self._merge(rows.filter(pc.greater_equal(rows.column("b"), self._oldest() // BUCKET_NS)))

    def load_from(self, query: Query, table: str, upto: int, *, lo: int | None = None) -> None:
        """``lo``: from when (ns), if not from the horizon's first bucket."""
        lo = self.since() // BUCKET_NS * BUCKET_NS if lo is None else lo
        names = self.metrics.to_pylist()
        sql = self.load_sql(table)
        for group in entity_groups(query, table, names, lo, upto):
            self.load(query(sql, {"metrics": names, "upto": upto, "lo": lo, "bucket": BUCKET_NS, **group}))

    @staticmethod
    def load_sql(table: str) -> str:
        """The horizon's rows per entity, key and bucket ``b`` of a group of entities
        (binds metrics, lo, bucket, upto, ws, scope, entities)."""
        raise NotImplementedError

    def _kept_rows(self, points: pa.Table) -> np.ndarray:
        """The committed rows to count: of the kept metrics, within the horizon."""
        keep = pc.and_(pc.is_in(points.column("metric"), value_set=self.metrics),
                       pc.greater_equal(points.column("ts").cast(pa.int64()), self._oldest()))
        return np.flatnonzero(keep.to_numpy(zero_copy_only=False))

    def _oldest(self) -> int:
        return (self._clock() - self.horizon_ns) // BUCKET_NS * BUCKET_NS

    def _merge(self, agg: pa.Table) -> None:
        """Add rows per entity, :attr:`KEY`, bucket ``b`` and :attr:`FIELDS`."""
        if not agg.num_rows:
            return
        entity = list(zip(*(agg.column(c).to_pylist() for c in _ENTITY)))
        keys = list(zip(*(_words(agg.column(c)) for c in self.KEY)))
        values = {f.name: [np.asarray(x, dtype=f.dtype) for x in agg.column(f.name).to_pylist()] if f.vector
                  else agg.column(f.name).to_numpy(zero_copy_only=False).astype(f.dtype) for f in self.FIELDS}
        self._add_rows(entity, keys, agg.column("b").to_numpy().astype(np.int64), values)

    def _add_rows(self, entity: list[Key], keys: list[tuple], b: np.ndarray, values: dict) -> None:
        """Add rows given as their entities, keys, buckets and per field an array (a list
        of arrays for a vector field)."""
        order = sorted(range(len(entity)), key=entity.__getitem__)
        starts = [j for j in range(len(order)) if j == 0 or entity[order[j]] != entity[order[j - 1]]] + [len(order)]
        order = np.array(order, dtype=np.int64)
        with self._lock:
            # further ahead than ingest accepts (a clock set back since): such a bucket
            # would take a slot still in use, so it is left out and nothing reaching it
            # is answered
            ahead = b > (self._clock() + self._future_ns) // BUCKET_NS + 1
            if ahead.any():
                self._ceiling = min(self._ceiling, int(b[ahead].min()) * BUCKET_NS)
            now = self._clock() // BUCKET_NS
            if now != self._pruned:  # once a bucket: keys and entities past the horizon go
                self._pruned = now
                for key, ring in list(self._rings.items()):
                    ring.prune(self._oldest() // BUCKET_NS)
                    if not ring.keys:
                        del self._rings[key]
            for lo, hi in zip(starts, starts[1:]):
                ok = order[lo:hi][~ahead[order[lo:hi]]]
                ring = self._rings.setdefault(entity[order[lo]], _Ring(self._size, self.FIELDS))
                ring.add([keys[i] for i in ok], b[ok], {
                    f.name: [values[f.name][i] for i in ok] if f.vector else values[f.name][ok] for f in self.FIELDS})

    def window(self, ws: str, scope: str, entity: str, t0: int, t1: int, metrics: Iterable[str]) -> Buckets | None:
        """The entity's buckets over [t0, t1) of keys whose first column is one of
        ``metrics``, or None where they may be missing here (not kept, not on bucket
        boundaries, or not from as early as ``t0``)."""
        wanted = frozenset(metrics)
        if t0 % BUCKET_NS or t1 % BUCKET_NS or t1 < t0 or not wanted <= self._kept:
            return None
        bucket = np.arange(t0 // BUCKET_NS, t1 // BUCKET_NS, dtype=np.int64)
        with self._lock:
            if t0 < self.since() or t1 > self._ceiling:
                return None
            ring = self._rings.get((ws, scope, entity))
            keys = [k for k in ring.keys if k[0] in wanted] if ring is not None else []
            values: dict = {}
            if ring is not None:
                slot = bucket % self._size
                held = ring.stamp[slot] == bucket
                for f in self.FIELDS:
                    got = [np.where(held[:, None] if f.vector else held, ring.keys[k][f.name][slot], f.empty)
                           for k in keys]
                    values[f.name] = got if f.vector else (np.stack(got) if got else
                                                           np.zeros((0, bucket.size), f.dtype))
            else:
                values = {f.name: [] if f.vector else np.zeros((0, bucket.size), f.dtype) for f in self.FIELDS}
        return Buckets(keys, t0, values)

    def _forget(self) -> None:
        self._rings = {}

    def __len__(self) -> int:
        """Buckets held with any row, over every entity and key."""
        with self._lock:
            return sum(int((ring.keys[k]["rows"] > 0).sum()) for ring in self._rings.values() for k in ring.keys)


def _words(column: pa.ChunkedArray) -> list:
    """A key column's values as hashable Python values (lists become tuples)."""
    values = column.to_pylist()
    if pa.types.is_list(column.type) or pa.types.is_large_list(column.type):
        return [tuple(v) if v is not None else () for v in values]
    return values
