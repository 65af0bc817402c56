"""Column builders for ``metric_points`` rows: lists per column, never a dict per row.

A request's points land in :class:`Block` s, one per point family (number, explicit
histogram, exponential histogram). Columns that are constant over a metric (ws,
scope, entity, metric, kind, unit, replica, ...) are stored once per *group* and
expanded with Arrow ``take``; ``series`` and ``attrs`` once per distinct series of
the process (:class:`SeriesCache`): each point holds a reference to its series'
cache entry. Per point only timestamps, values and bucket lists are kept, as
Python lists that the cumulative step may still rewrite before :meth:`Block.to_arrow`.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import threading
from collections import namedtuple

import numpy as np
import pyarrow as pa

from ..store.schema import ARROW_SCHEMAS, group_columns
from .proto import decode_kv

SCHEMA = ARROW_SCHEMAS["metric_points"]
_TYPE = {f.name: f.type for f in SCHEMA}
_NAN = float("nan")
MAX_TS = 2**63 - 1  # DateTime64(9) and Arrow timestamps are signed 64-bit nanoseconds

#: the values of the columns constant over a group (the table's group columns), made by
#: name so that the walk cannot put one in another's place
Group = namedtuple("Group", group_columns("metric_points"))


def series_hash(ws: str, scope: str, entity: str, metric: str, replica: str, node_rank: int, attrs: dict) -> int:
    """The ``series`` column: a 64-bit hash that anyone writing rows can recompute."""
    doc = json.dumps([ws, scope, entity, metric, replica, node_rank, sorted(attrs.items())],
                     separators=(",", ":"), ensure_ascii=False)
    return int.from_bytes(hashlib.blake2b(doc.encode(), digest_size=8).digest(), "little")


class SeriesGroup:
    """The cached series of one identity (ws, scope, entity, metric, replica, node):
    raw attributes -> entry ``(hash, index)``, and every entry's attributes as one
    Arrow map array, so a request's ``attrs`` column is a ``take``, not a rebuild."""

    __slots__ = ("entries", "_keys", "_vals", "_offsets", "_arrow", "_lock")

    def __init__(self):
        self.entries: dict[tuple, tuple[int, int]] = {}
        self._keys: list[str] = []
        self._vals: list[str] = []
        self._offsets: list[int] = [0]
        self._arrow: pa.Array | None = None
        self._lock = threading.Lock()

    def add(self, raw: tuple, h: int, attrs: dict[str, str]) -> tuple[int, int]:
        with self._lock:
            entry = self.entries.get(raw)
            if entry is None:
                keys = sorted(attrs)
                self._keys.extend(keys)
                self._vals.extend(attrs[k] for k in keys)
                self._offsets.append(len(self._keys))
                entry = self.entries[raw] = (h, len(self._offsets) - 2)
            return entry

    def attrs(self, need: int) -> pa.Array:
        """The attrs of entries 0 .. ``need`` - 1 at least."""
        arrow = self._arrow
        if arrow is None or len(arrow) < need:
            with self._lock:
                arrow = self._arrow = pa.MapArray.from_arrays(
                    pa.array(np.array(self._offsets, dtype=np.int32)),
                    pa.array(self._keys, _TYPE["attrs"].key_type), pa.array(self._vals, _TYPE["attrs"].item_type),
                ).cast(_TYPE["attrs"])
        return arrow


class SeriesCache:
    """Distinct series seen lately, across requests, by identity and raw attributes,
    so a series exported every 10 s is decoded and hashed once. Cleared whole when
    over ``max_entries``: simple, and bounded."""

    def __init__(self, max_entries: int = 500_000):
        self.max_entries = max_entries
        self._groups: dict[tuple, SeriesGroup] = {}
        self._size = 0

    def group(self, ident: tuple) -> SeriesGroup:
        if self._size > self.max_entries:
            self._groups = {}
            self._size = 0
        g = self._groups.get(ident)
        if g is None:
            g = self._groups.setdefault(ident, SeriesGroup())
        return g

    def resolve(self, ident: tuple, extra: dict[str, str], g: SeriesGroup, raw: tuple) -> tuple[int, int]:
        ws, scope, entity, metric, replica, node_rank, _node_id = ident
        attrs = dict(decode_kv(kv) for kv in raw)
        attrs.update(extra)
        self._size += 1
        return g.add(raw, series_hash(ws, scope, entity, metric, replica, node_rank, attrs), attrs)


def _lists(rows: list, type_) -> pa.Array:
    n = len(rows)
    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(np.fromiter(map(len, rows), dtype=np.int32, count=n), out=offsets[1:])
    dtype = np.float64 if pa.types.is_floating(type_.value_type) else np.uint64
    flat = np.fromiter(itertools.chain.from_iterable(rows), dtype=dtype, count=int(offsets[-1]))
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat), type=type_)


def _distinct_lists(rows: list, type_) -> pa.Array:
    """``_lists`` for rows that mostly share a few (interned) objects: build each once, take."""
    index: dict[int, int] = {}
    idx = [index.setdefault(id(r), len(index)) for r in rows]
    distinct = list({id(r): r for r in rows}.values())
    return _lists(distinct, type_).take(pa.array(np.array(idx, dtype=np.int32)))


def _empty_lists(n: int, type_) -> pa.Array:
    offsets = pa.array(np.zeros(n + 1, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array([], type_.value_type), type=type_)


class Block:
    """Points of one family: ``number`` (gauge, sum), ``hist`` or ``exp``."""

    def __init__(self, family: str):
        self.family = family
        self.groups: list[Group] = []
        self.gidx: list[int] = []
        #: per row, its series' entry (hash, index in its SeriesGroup)
        self.ents: list[tuple[int, int]] = []
        #: (group, first row, end row): the rows whose series live in that SeriesGroup
        self.segments: list[tuple[SeriesGroup, int, int]] = []
        self.ts: list[int] = []
        self.start: list[int] = []
        self.value: list = []
        #: row -> the raw cumulative point as JSON, for rows of stateful series
        self.cum_state: dict[int, str] = {}
        #: (first row, end row, mode) for rows needing series state: 'sum', 'level', 'hist', 'exp'
        self.stateful: list[tuple[int, int, str]] = []
        self.drop: list[int] = []
        if family != "number":
            self.count: list[int] = []
            self.sum: list[float] = []
            self.min: list[float] = []
            self.max: list[float] = []
        if family == "hist":
            self.bounds: list = []
            self.buckets: list = []
        if family == "exp":
            self.scale: list[int] = []
            self.zero: list[int] = []
            self.pos_off: list[int] = []
            self.pos: list = []
            self.neg_off: list[int] = []
            self.neg: list = []

    def __len__(self) -> int:
        return len(self.ts)

    def add_group(self, values: Group, n: int) -> None:
        self.groups.append(values)
        self.gidx.extend([len(self.groups) - 1] * n)

    def to_arrow(self) -> pa.Table:
        n = len(self.ts)
        cols: dict[str, pa.Array] = {}
        gidx = pa.array(np.array(self.gidx, dtype=np.int32))
        for j, name in enumerate(Group._fields):
            cols[name] = pa.array([g[j] for g in self.groups], _TYPE[name]).take(gidx)
        ents = self.ents
        cols["series"] = np.fromiter([e[0] for e in ents], dtype=np.uint64, count=n)
        chunks = []
        for group, r0, r1 in self.segments:
            idx = np.fromiter([e[1] for e in ents[r0:r1]], dtype=np.int32, count=r1 - r0)
            attrs = group.attrs(int(idx.max()) + 1)
            if idx[0] == 0 and idx[-1] == len(idx) - 1 and (len(idx) == 1 or (np.diff(idx) == 1).all()):
                chunks.append(attrs.slice(0, len(idx)))  # the usual export: every series, in first-seen order
            else:
                chunks.append(attrs.take(pa.array(idx)))
        cols["attrs"] = pa.concat_arrays(chunks)
        cols["ts"] = pa.array(np.array(self.ts, dtype=np.int64)).cast(_TYPE["ts"])
        cols["start_ts"] = pa.array(np.array(self.start, dtype=np.int64)).cast(_TYPE["start_ts"])
        zeros_f = np.zeros(n, dtype=np.float64)
        nans = np.full(n, _NAN)
        zeros_u = np.zeros(n, dtype=np.uint64)
        if self.family == "number":
            cols["value"] = pa.array(np.array(self.value, dtype=np.float64))
            cols["count"], cols["sum"], cols["min"], cols["max"] = zeros_u, zeros_f, nans, nans
        else:
            cols["value"] = zeros_f
            cols["count"] = np.array(self.count, dtype=np.uint64)
            cols["sum"] = np.array(self.sum, dtype=np.float64)
            cols["min"] = np.array(self.min, dtype=np.float64)
            cols["max"] = np.array(self.max, dtype=np.float64)
        if self.family == "hist":
            cols["bounds"] = _distinct_lists(self.bounds, _TYPE["bounds"])
            cols["buckets"] = _lists(self.buckets, _TYPE["buckets"])
        else:
            cols["bounds"] = _empty_lists(n, _TYPE["bounds"])
            cols["buckets"] = _empty_lists(n, _TYPE["buckets"])
        if self.family == "exp":
            cols["scale"] = np.array(self.scale, dtype=np.int8)
            cols["zero_count"] = np.array(self.zero, dtype=np.uint64)
            cols["pos_offset"] = np.array(self.pos_off, dtype=np.int32)
            cols["pos_buckets"] = _lists(self.pos, _TYPE["pos_buckets"])
            cols["neg_offset"] = np.array(self.neg_off, dtype=np.int32)
            cols["neg_buckets"] = _lists(self.neg, _TYPE["neg_buckets"])
        else:
            cols["scale"] = np.zeros(n, dtype=np.int8)
            cols["zero_count"] = zeros_u
            cols["pos_offset"] = cols["neg_offset"] = np.zeros(n, dtype=np.int32)
            cols["pos_buckets"] = cols["neg_buckets"] = _empty_lists(n, _TYPE["pos_buckets"])
        cum = [""] * n
        for row, state in self.cum_state.items():
            cum[row] = state
        cols["cum_state"] = pa.array(cum, _TYPE["cum_state"])
        cols["seq"] = zeros_u  # numbered once the request's rows are final
        table = pa.Table.from_arrays([pa.array(cols[f.name], f.type) if not isinstance(cols[f.name], pa.Array)
                                      else cols[f.name] for f in SCHEMA], schema=SCHEMA)
        if self.drop:
            keep = np.ones(n, dtype=bool)
            keep[self.drop] = False
            table = table.filter(pa.array(keep))
        return table
