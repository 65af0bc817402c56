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
  moment (plus the furthest ingest accepts points into the future).

Only where this process is the store's one writer (the embedded store): another API
replica's writes to a shared ClickHouse would never reach it.

Commits append their rows to a pending list (a filter and a few columns: ingest pays
microseconds); a reader sorts the pending rows out into per-entity chunks, and an
entity's chunks are joined, and trimmed to the horizon, once there are many.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .views import GPU_ATTRS

#: the columns kept per row (ts as Int64 nanoseconds; gpu as the store's GPU_INDEX)
COLUMNS = ("series", "ts", "value", "unit", "metric", "kind", "monotonic", "replica", "node_rank", "gpu")
_KEY = ("ws", "scope", "entity")
# pending rows sorted out by entity once this many wait (a reader sorts them sooner)
_SORT_AT = 200_000
# an entity's chunks joined (and trimmed to the horizon) once it has this many
_JOIN_AT = 16


def gpu_labels(attrs: pa.ChunkedArray | pa.Array) -> pa.Array:
    """Each point's GPU label from its attributes: store/views.GPU_INDEX, vectorised."""
    return pc.coalesce(*(pc.map_lookup(attrs, pa.scalar(a), "first") for a in GPU_ATTRS), pa.scalar(""))


class Recent:
    def __init__(self, metrics: Iterable[str], horizon_s: float, *, future_ns: int,
                 clock: Callable[[], int] = time.time_ns):
        """``future_ns``: how far ahead of the clock ingest accepts a point, so how far a
        row dropped with a partition may reach (see :meth:`reset`)."""
        self.metrics = pa.array(sorted(set(metrics)), pa.string())
        self.horizon_ns = int(horizon_s * 1e9)
        self._future_ns = future_ns
        self._clock = clock
        self._lock = threading.Lock()
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        self._entities: dict[tuple[str, str, str], list[pa.Table]] = {}
        self._floor = 0  # nothing before this is answered (after a reset)
        self._swept = clock()

    def since(self) -> int:
        """The earliest ``ts`` (ns) from which every stored row of the metrics is here."""
        return max(self._clock() - self.horizon_ns, self._floor)

    def add(self, points: pa.Table) -> None:
        """Rows of ``metric_points`` as ingest builds them (store/schema.ARROW_SCHEMAS),
        committed just now."""
        keep = pc.and_(pc.is_in(points.column("metric"), value_set=self.metrics),
                       pc.greater_equal(points.column("ts").cast(pa.int64()), self._clock() - self.horizon_ns))
        # the columns first: a histogram row's bucket arrays are not worth copying
        points = points.select([*_KEY, *(c for c in COLUMNS if c != "gpu"), "attrs"]).filter(keep)
        if not points.num_rows:
            return
        # a series' attributes are part of its key: its GPU label is worked out once
        series = pc.dictionary_encode(points.column("series")).combine_chunks()
        one = np.empty(len(series.dictionary), dtype=np.int64)
        one[series.indices.to_numpy(zero_copy_only=False)] = np.arange(points.num_rows)  # any row of each
        gpu = gpu_labels(points.column("attrs").take(pa.array(one))).take(series.indices)
        self._append(points.set_column(points.schema.get_field_index("attrs"), "gpu", gpu))

    def load(self, rows: pa.Table) -> None:
        """Rows read from the store at start (the key columns, :data:`COLUMNS`)."""
        if rows.num_rows:
            self._append(rows)

    def _append(self, rows: pa.Table) -> None:
        rows = rows.select([*_KEY, *COLUMNS])
        rows = rows.set_column(rows.schema.get_field_index("ts"), "ts", rows.column("ts").cast(pa.int64()))
        rows = rows.cast(_SCHEMA)  # the store's LowCardinality columns come back as dictionaries
        with self._lock:
            self._pending.append(rows)
            self._pending_rows += rows.num_rows
            if self._pending_rows >= _SORT_AT:
                self._sort_out()

    def _sort_out(self) -> None:
        """The pending rows into their entities' chunks. A commit holds its requests'
        rows one after the other, and a request's rows entity by entity: runs, sliced
        without copying or sorting."""
        self._sweep()
        pending, self._pending, self._pending_rows = self._pending, [], 0
        for t in pending:
            t = t.combine_chunks()
            code = np.zeros(t.num_rows, dtype=np.int64)
            for name in _KEY:
                enc = pc.dictionary_encode(t.column(name)).combine_chunks()
                code = code * (len(enc.dictionary) + 1) + enc.indices.to_numpy(zero_copy_only=False)
            starts = np.flatnonzero(np.append(True, code[1:] != code[:-1]))
            ends = np.append(starts[1:], t.num_rows)
            keys = zip(*(t.column(name).take(pa.array(starts)).to_pylist() for name in _KEY))
            body = t.select(list(COLUMNS))
            for key, a, b in zip(keys, starts.tolist(), ends.tolist()):
                chunks = self._entities.setdefault(key, [])
                chunks.append(body.slice(a, b - a))
                if len(chunks) >= _JOIN_AT:
                    joined = _joined(chunks)
                    cut = pc.greater_equal(joined.column("ts"), self._clock() - self.horizon_ns)
                    self._entities[key] = [joined.filter(cut)]

    def _sweep(self) -> None:
        """Every quarter horizon, drop the chunks wholly older than the horizon: an
        entity that stopped sending gets no new chunk whose join would trim them."""
        now = self._clock()
        if now - self._swept < self.horizon_ns // 4:
            return
        self._swept, cutoff = now, now - self.horizon_ns
        for key, chunks in list(self._entities.items()):
            live = [c for c in chunks if c.num_rows and pc.max(c.column("ts")).as_py() >= cutoff]
            if live:
                self._entities[key] = live
            else:
                del self._entities[key]

    def rows(self, ws: str, scope: str, entity: str, lo_ns: int) -> pa.Table | None:
        """The entity's rows (:data:`COLUMNS`, some maybe older than ``lo_ns``), or
        None where rows at or after ``lo_ns`` may be missing here."""
        with self._lock:
            if lo_ns < self.since():
                return None
            self._sort_out()
            key = (ws, scope, entity)
            chunks = self._entities.get(key)
            if not chunks:
                return _EMPTY
            if len(chunks) > 1 or chunks[0].schema != _JOINED:  # joined once for this reader and the next
                self._entities[key] = chunks = [_joined(chunks)]
            return chunks[0]

    def reset(self) -> None:
        """Forget everything (retention dropped partitions): answer nothing from before
        now, nor from the future a dropped row might have reached."""
        with self._lock:
            self._pending, self._pending_rows = [], 0
            self._entities.clear()
            self._floor = self._clock() + self._future_ns

    def __len__(self) -> int:
        with self._lock:
            return self._pending_rows + sum(c.num_rows for cs in self._entities.values() for c in cs)


def _joined(chunks: list[pa.Table]) -> pa.Table:
    """Chunks as one table of one chunk, its words as dictionaries (a few distinct
    values each: 4 bytes a row instead of ~10)."""
    return pa.concat_tables([c.cast(_JOINED) for c in chunks]).unify_dictionaries().combine_chunks()


_TYPES = {"series": pa.uint64(), "ts": pa.int64(), "value": pa.float64(), "monotonic": pa.bool_(),
          "node_rank": pa.int32()}
_WORDS = [c for c in COLUMNS if c not in _TYPES]  # the string columns
_SCHEMA = pa.schema([(c, pa.string()) for c in _KEY] + [(c, _TYPES.get(c, pa.string())) for c in COLUMNS])
_EMPTY = _SCHEMA.empty_table().select(list(COLUMNS))
_JOINED = pa.schema([(c, pa.dictionary(pa.int32(), pa.string()) if c in _WORDS else t)
                     for c, t in zip(_EMPTY.schema.names, _EMPTY.schema.types)])
