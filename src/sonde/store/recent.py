"""The last hours of some metrics' points, kept in memory by the store's one writer.

A live window (a dashboard's last hour, asked again every few seconds) changes with
every point written into it, so a kept answer (query/cache.py) rarely serves it, and a
statement pays ClickHouse's analysis and planning every time. :class:`Recent` holds,
per entity, every row of ``metrics`` whose ``ts`` is within ``horizon_ns`` of now, so
query/recent.py can answer such a window from memory, exactly as the statement would.

What it holds is what the store holds, and no more:

- rows come in as they are committed (``Store`` calls :meth:`Recent.add` where the
  result cache hears of them); a reader flushes the write-ahead log first, as every
  statement does, so it reads its writes;
- at start it loads the horizon from the store (the log's replay is in by then);
- :meth:`rows` answers only for a window starting within the horizon (every row at or
  after ``now - horizon`` arrived while it was watching, or was loaded), else None and
  the caller reads the store;
- retention dropping partitions empties it, and it answers nothing from before that
  moment (plus the furthest ingest accepts points into the future);
- a commit that fails may have stored some of its tables before failing, unreported:
  it answers nothing reading as far back as that batch's newest point.

Only where this process is the store's one writer (the embedded store): another API
replica's writes to a shared ClickHouse would never reach it.

Commits append their rows to a pending list per entity (the kept metrics' rows, a few
columns; a commit holds its requests' rows one after the other, and a request's rows
entity by entity, so an entity's rows are runs, sliced without copying). Every
sixteenth of the horizon (or ``_SEAL_AT`` rows) the pending rows are sealed into a
segment: each entity's slices joined once, their words (metric, unit, replica...) made
dictionaries. A reader joins its entity's part of each segment and its pending slices.
A segment goes once its newest row is past the horizon, so memory holds at most a
sixteenth more than the horizon.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .memory import ENTITIES, UPTO, Memory, Query, entity_groups
from .views import GPU_ATTRS

#: the columns kept per row (ts as Int64 nanoseconds; gpu as the store's GPU_INDEX)
COLUMNS = ("series", "ts", "value", "unit", "metric", "kind", "monotonic", "replica", "node_rank", "gpu")
_KEY = ("ws", "scope", "entity")
# pending rows sealed into a segment once this many wait (or a sixteenth of the horizon passed)
_SEAL_AT = 500_000

Key = tuple[str, str, str]


def gpu_labels(attrs: pa.ChunkedArray | pa.Array) -> pa.Array:
    """Each point's GPU label from its attributes: store/views.GPU_INDEX, vectorised."""
    return pc.coalesce(*(pc.map_lookup(attrs, pa.scalar(a), "first") for a in GPU_ATTRS), pa.scalar(""))


@dataclass(frozen=True)
class _Segment:
    rows: dict[Key, pa.Table]  # per entity: :data:`COLUMNS`, words as dictionaries
    newest: int  # the latest ts (ns) in it


class Recent(Memory):
    def __init__(self, metrics: Iterable[str], horizon_s: float, *, future_ns: int,
                 clock: Callable[[], int] = time.time_ns):
        super().__init__(metrics, horizon_s, future_ns=future_ns, clock=clock)
        self._pending: dict[Key, list[pa.Table]] = {}
        self._pending_rows = 0
        self._pending_since = clock()
        self._segments: list[_Segment] = []
        # per entity and set of metrics, its parts joined for the last reader, until a
        # write or a seal changes them (a token while a reader joins them)
        self._served: dict[Key, dict[frozenset, tuple[object, pa.Table | None]]] = {}

    def add(self, points: pa.Table) -> None:
        """Rows of ``metric_points`` as ingest builds them (store/schema.ARROW_SCHEMAS),
        committed just now."""
        keep = pc.and_(pc.is_in(points.column("metric"), value_set=self.metrics),
                       pc.greater_equal(points.column("ts").cast(pa.int64()), self._clock() - self.horizon_ns))
        at = np.flatnonzero(keep.to_numpy(zero_copy_only=False))
        if not at.size:
            return
        # only the columns kept: a row's attribute map and bucket arrays cost more to copy
        # than all the rest
        rows = points.select([*_KEY, *(c for c in COLUMNS if c != "gpu")]).take(pa.array(at))
        # a series' attributes are part of its key: its GPU label is worked out once,
        # from any one of its rows
        series = pc.dictionary_encode(rows.column("series")).combine_chunks()
        one = np.empty(len(series.dictionary), dtype=np.int64)
        one[series.indices.to_numpy(zero_copy_only=False)] = at
        gpu = gpu_labels(points.column("attrs").take(pa.array(one))).take(series.indices)
        self._append(rows.append_column("gpu", gpu))

    def load(self, rows: pa.Table) -> None:
        """Rows read from the store at start (the key columns, :data:`COLUMNS`)."""
        if rows.num_rows:
            self._append(rows)

    def load_from(self, query: Query, table: str, upto: int) -> None:
        names, lo = self.metrics.to_pylist(), self.since()
        sql = ("SELECT ws, scope, entity, series, ts, value, unit, metric, toString(kind) AS kind, monotonic, replica,"
               f" node_rank, gpu FROM {table} WHERE {ENTITIES} AND metric IN {{metrics:Array(String)}}"
               f" AND ts >= fromUnixTimestamp64Nano({{lo:Int64}}) AND {UPTO}"
               # the table's order: each entity's rows together, each series' in time
               # order, as query/recent.py finds them cheapest to sort
               " ORDER BY ws, scope, entity, metric, series, ts")
        for group in entity_groups(query, table, names, lo, upto):
            self.load(query(sql, {"metrics": names, "lo": lo, "upto": upto, **group}))

    def _append(self, rows: pa.Table) -> None:
        rows = rows.select([*_KEY, *COLUMNS])
        rows = rows.set_column(rows.schema.get_field_index("ts"), "ts", rows.column("ts").cast(pa.int64()))
        rows = rows.cast(_SCHEMA)  # the store's LowCardinality columns come back as dictionaries
        code = _codes(rows)
        starts = np.flatnonzero(np.append(True, code[1:] != code[:-1]))
        ends = np.append(starts[1:], rows.num_rows)
        keys = list(zip(*(rows.column(name).take(pa.array(starts)).to_pylist() for name in _KEY)))
        body = rows.select(list(COLUMNS))
        with self._lock:
            for key, a, b in zip(keys, starts.tolist(), ends.tolist()):
                self._pending.setdefault(key, []).append(body.slice(a, b - a))
                self._served.pop(key, None)
            self._pending_rows += rows.num_rows
            if self._pending_rows >= _SEAL_AT or self._clock() - self._pending_since >= self.horizon_ns // 16:
                self._seal()

    def _seal(self) -> None:
        cutoff = self._clock() - self.horizon_ns
        self._segments = [seg for seg in self._segments if seg.newest >= cutoff]
        if self._pending:
            rows = {key: _joined(parts) for key, parts in self._pending.items()}
            newest = max(pc.max(t.column("ts")).as_py() for t in rows.values())
            self._segments.append(_Segment(rows, newest))
        self._pending, self._pending_rows, self._pending_since = {}, 0, self._clock()
        self._served = {}

    def rows(self, ws: str, scope: str, entity: str, lo_ns: int, metrics: Iterable[str]) -> pa.Table | None:
        """The entity's rows of ``metrics`` (:data:`COLUMNS`, and ``sid``: each row's
        series ranked among the table's; older than asked too), or None where rows of
        ``metrics`` at or after ``lo_ns`` may be missing here."""
        key, wanted = (ws, scope, entity), frozenset(metrics)
        if not wanted <= self._kept:
            return None
        with self._lock:
            if lo_ns < self.since():
                return None
            rows = self._served.get(key, {}).get(wanted, (None, None))[1]
            if rows is not None:
                return rows
            parts = [t for seg in self._segments if (t := seg.rows.get(key)) is not None]
            pending = self._pending.get(key, [])
            if len(pending) > 1 or (pending and pending[0].schema != _WORDED):
                # the commits' slices, joined once for this reader and the next
                self._pending[key] = pending = [_joined(pending)]
            parts += pending
            if not parts:
                return _ranked(_EMPTY)
            token = object()
            self._served.setdefault(key, {})[wanted] = (token, None)
        # An entity's 2 h can be a dozen segments, of more metrics than asked (GPU
        # memory beside utilisation): joined and filtered outside the lock, and kept for
        # the next reader of these metrics unless a write or seal came meanwhile (and
        # took the token).
        rows = _joined(parts) if len(parts) > 1 else parts[0]
        rows = _ranked(rows.filter(pc.is_in(rows.column("metric"), value_set=pa.array(sorted(wanted), pa.string()))))
        with self._lock:
            if self._served.get(key, {}).get(wanted, (None,))[0] is token:
                self._served[key][wanted] = (token, rows)
        return rows

    def _forget(self) -> None:
        self._pending, self._pending_rows = {}, 0
        self._segments, self._served = [], {}

    def __len__(self) -> int:
        with self._lock:
            return self._pending_rows + sum(t.num_rows for seg in self._segments for t in seg.rows.values())


def _joined(parts: list[pa.Table]) -> pa.Table:
    """Parts of an entity's rows as one table of one chunk, words as dictionaries."""
    return pa.concat_tables([p.cast(_WORDED) for p in parts]).unify_dictionaries().combine_chunks()


def _ranked(rows: pa.Table) -> pa.Table:
    """``rows`` with ``sid``, each row's series ranked by its id among the table's: small
    integers that sort as the ids do (query/recent.py orders rows by them), worked out
    once for every reader of the table instead of by each."""
    enc = pc.dictionary_encode(rows.column("series")).combine_chunks()
    ids = enc.dictionary.to_numpy()
    rank = np.empty(ids.size, dtype=np.int64)
    rank[np.argsort(ids)] = np.arange(ids.size)
    return rows.append_column("sid", pa.array(rank[enc.indices.to_numpy(zero_copy_only=False)], pa.int64()))


def _codes(t: pa.Table) -> np.ndarray:
    """One integer per row, equal where (ws, scope, entity) are."""
    code = np.zeros(t.num_rows, dtype=np.int64)
    for name in _KEY:
        enc = pc.dictionary_encode(t.column(name)).combine_chunks()
        code = code * (len(enc.dictionary) + 1) + enc.indices.to_numpy(zero_copy_only=False)
    return code


_TYPES = {"series": pa.uint64(), "ts": pa.int64(), "value": pa.float64(), "monotonic": pa.bool_(),
          "node_rank": pa.int32()}
_WORDS = [c for c in COLUMNS if c not in _TYPES]  # the string columns
_SCHEMA = pa.schema([(c, pa.string()) for c in _KEY] + [(c, _TYPES.get(c, pa.string())) for c in COLUMNS])
_EMPTY = _SCHEMA.empty_table().select(list(COLUMNS))
# a few distinct values each: 4 bytes a row as a dictionary instead of ~10 as strings
_WORDED = pa.schema([(c, pa.dictionary(pa.int32(), pa.string()) if c in _WORDS else t)
                     for c, t in zip(_EMPTY.schema.names, _EMPTY.schema.types)])
