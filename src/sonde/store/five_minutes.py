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
    """One entity's buckets. A scalar field is one (keys, slots) array, a row per key, so
    a window reads every key of a field in one gather; a vector field is an array per
    key (its length is the key's). Every memory has a ``rows`` field: a key with no rows
    in the buckets held is dropped."""

    def __init__(self, size: int, fields: tuple[Field, ...]):
        self.stamp = np.full(size, -1, dtype=np.int64)
        self.fields = fields
        self.index: dict[tuple, int] = {}  # each key's row
        self.scalars = {f.name: np.empty((0, size), f.dtype) for f in fields if not f.vector}
        self.vectors: dict[str, list[np.ndarray]] = {f.name: [] for f in fields if f.vector}

    def add(self, keys: list[tuple], bucket: np.ndarray, values: dict[str, np.ndarray | list]) -> None:
        size = self.stamp.size
        slot = bucket % size
        # a newer bucket takes its slot over; the caller passes none older than the horizon
        newest = np.full(size, -1, dtype=np.int64)
        np.maximum.at(newest, slot, bucket)
        taken = np.flatnonzero(newest > self.stamp)
        self.stamp[taken] = newest[taken]
        for f in self.fields:
            if f.vector:
                for arr in self.vectors[f.name]:
                    arr[taken] = f.empty
            else:
                self.scalars[f.name][:, taken] = f.empty
        ok = np.flatnonzero(bucket == self.stamp[slot])
        row = np.array([self._row(keys[i], values, i) for i in ok.tolist()], dtype=np.int64)
        for f in self.fields:
            if f.vector:
                arrays = self.vectors[f.name]
                for i, r in zip(ok.tolist(), row.tolist()):
                    arrays[r][slot[i]] = f.ufunc(arrays[r][slot[i]], values[f.name][i])
            else:
                f.ufunc.at(self.scalars[f.name], (row, slot[ok]), values[f.name][ok])

    def _row(self, key: tuple, values: dict, i: int) -> int:
        """``key``'s row, made (empty buckets) if it has none; ``values[...][i]`` gives a
        vector field's length."""
        r = self.index.get(key)
        if r is not None:
            return r
        r = self.index[key] = len(self.index)
        size = self.stamp.size
        for f in self.fields:
            if f.vector:
                self.vectors[f.name].append(np.full((size, len(values[f.name][i])), f.empty, f.dtype))
            else:
                held = self.scalars[f.name]
                if r == held.shape[0]:  # room for twice as many keys
                    grown = np.full((max(4, 2 * r), size), f.empty, f.dtype)
                    grown[:r] = held
                    self.scalars[f.name] = grown
        return r

    def prune(self, oldest: int) -> None:
        """Drop the keys with no rows in a bucket from ``oldest`` on (a replica gone for
        longer than the horizon): nothing can read them any more."""
        held = self.stamp >= oldest
        n = len(self.index)
        live = self.scalars["rows"][:n][:, held].any(axis=1)
        if live.all():
            return
        keep = np.flatnonzero(live)
        keys = list(self.index)
        self.index = {keys[r]: j for j, r in enumerate(keep.tolist())}
        self.scalars = {name: arr[keep] for name, arr in self.scalars.items()}
        self.vectors = {name: [arrays[r] for r in keep.tolist()] for name, arrays in self.vectors.items()}

    def read(self, wanted: frozenset, bucket: np.ndarray) -> tuple[list[tuple], dict]:
        """The keys whose first column is in ``wanted``, and per field their buckets
        ``bucket`` (an empty bucket where the slot holds another)."""
        keys = [k for k in self.index if k[0] in wanted]
        rows = np.array([self.index[k] for k in keys], dtype=np.int64)
        size = self.stamp.size
        # the window's slots run on from its first bucket's, around the ring's end (more
        # than once only for a window reaching far past what ingest accepts): slices,
        # not a gather of each slot
        parts, at, left = [], int(bucket[0]) % size if bucket.size else 0, bucket.size
        while left or not parts:
            parts.append(slice(at, at + min(left, size - at)))
            left -= parts[-1].stop - at
            at = 0
        held = np.concatenate([self.stamp[p] for p in parts]) == bucket
        values: dict = {}
        for f in self.fields:
            if f.vector:
                got = [np.concatenate([self.vectors[f.name][r][p] for p in parts]) for r in rows.tolist()]
                values[f.name] = got if held.all() else [np.where(held[:, None], g, f.empty) for g in got]
            else:
                arr = self.scalars[f.name]
                got = np.concatenate([arr[rows, p] for p in parts], axis=1)
                values[f.name] = got if held.all() else np.where(held, got, f.empty)
        return keys, values

    def __len__(self) -> int:
        """Buckets held with any row, over every key."""
        return int((self.scalars["rows"][:len(self.index)] > 0).sum())


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
                    if not ring.index:
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
            if ring is not None:
                keys, values = ring.read(wanted, bucket)
            else:
                keys, values = [], {f.name: [] if f.vector else np.zeros((0, bucket.size), f.dtype)
                                    for f in self.FIELDS}
        return Buckets(keys, t0, values)

    def _forget(self) -> None:
        self._rings = {}

    def __len__(self) -> int:
        """Buckets held with any row, over every entity and key."""
        with self._lock:
            return sum(len(ring) for ring in self._rings.values())


def _words(column: pa.ChunkedArray) -> list:
    """A key column's values as hashable Python values (lists become tuples)."""
    values = column.to_pylist()
    if pa.types.is_list(column.type) or pa.types.is_large_list(column.type):
        return [tuple(v) if v is not None else () for v in values]
    return values
