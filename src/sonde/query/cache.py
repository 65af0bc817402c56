"""Deployment-metrics answers kept for the next identical question, and dropped by any
write that could change them: the answer from the cache is the answer the store gives.

An answer depends only on the deployment's metric points with ``ts`` within its
window widened by ``gauges.LOOK_AROUND_NS`` on both sides (no statement of
``query.metrics`` reads further: the holds' look-around is the widest reach). Every
write of metric points is shown to :meth:`ResultCache.observe` twice, when it is
submitted (before it is acknowledged, so a read after the acknowledgement misses the
cache) and when it is committed (without a write-ahead log a read before the commit
does not see it, and may have been kept): each drops the kept answers of the entities
it writes whose range holds any of its timestamps, and marks answers being computed
meanwhile so they are not kept. Retention's dropped partitions drop everything.

Only where this process is the store's one writer (the embedded store): another API
replica's writes to a shared ClickHouse would never be observed. A window ending in
the future is kept too, and dropped by the first point written into it, so a live
window is answered from the cache only while no point arrives for it.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable

import pyarrow as pa
import pyarrow.compute as pc

_POINTS = "metric_points"


class _Range:
    """What one answer depends on: a workspace's entity and a range of times (ns)."""

    __slots__ = ("ws", "entity", "lo", "hi", "stale")

    def __init__(self, ws: str, entity: str, lo: int, hi: int):
        self.ws, self.entity, self.lo, self.hi = ws, entity, lo, hi
        self.stale = False

    def reached(self, touched: set[tuple[str, str]], lo_ns: int, hi_ns: int) -> bool:
        """Whether a write to ``touched`` (ws, entity) pairs at times [lo_ns, hi_ns] reaches it."""
        return (self.ws, self.entity) in touched and self.lo <= hi_ns and lo_ns < self.hi


class ResultCache:
    """Rendered answers (bytes) of at most ``max_bytes`` in all, least recently used
    dropped first; an answer larger than that alone is not kept."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.bytes = 0
        self._lock = threading.Lock()
        self._kept: OrderedDict[Hashable, tuple[_Range, bytes]] = OrderedDict()
        self._computing: set[_Range] = set()
        # (ws, entity) -> the keys kept for it: a write checks only its entities' answers
        self._by_entity: dict[tuple[str, str], set[Hashable]] = {}

    def get_or_compute(self, key: Hashable, ws: str, entity: str, lo_ns: int, hi_ns: int,
                       compute: Callable[[], bytes], *, lookup: bool = True) -> tuple[bytes, bool]:
        """(the answer, whether it came from the cache). ``lookup=False``: compute it
        anyway (the client asked for no cached answer), keeping the fresh one."""
        with self._lock:
            if lookup and key in self._kept:
                self._kept.move_to_end(key)
                return self._kept[key][1], True
            rng = _Range(ws, entity, lo_ns, hi_ns)
            self._computing.add(rng)
        try:
            value = compute()
        except BaseException:
            with self._lock:
                self._computing.discard(rng)
            raise
        with self._lock:  # one turn of the lock: no write can pass between the two
            self._computing.discard(rng)
            if not rng.stale:
                self._keep(key, rng, value)
        return value, False

    def _keep(self, key: Hashable, rng: _Range, value: bytes) -> None:
        self._drop(key)
        if len(value) > self.max_bytes:
            return
        self._kept[key] = (rng, value)
        self.bytes += len(value)
        self._by_entity.setdefault((rng.ws, rng.entity), set()).add(key)
        while self.bytes > self.max_bytes:
            self._drop(next(iter(self._kept)))

    def _drop(self, key: Hashable) -> None:
        kept = self._kept.pop(key, None)
        if kept is None:
            return
        rng = kept[0]
        self.bytes -= len(kept[1])
        keys = self._by_entity[(rng.ws, rng.entity)]
        keys.discard(key)
        if not keys:
            del self._by_entity[(rng.ws, rng.entity)]

    def observe(self, tables: dict[str, pa.Table] | None) -> None:
        """A write of ``tables`` (by bare table name), or None: anything may have changed."""
        with self._lock:
            if not self._kept and not self._computing:
                return  # nothing to check: the ingest path pays nothing
            if tables is None:
                self._kept.clear()
                self._by_entity.clear()
                self.bytes = 0
                for rng in self._computing:
                    rng.stale = True
                return
        points = tables.get(_POINTS)
        if points is None or points.num_rows == 0:
            return
        # One range per write (its earliest and latest point) and its workspaces and
        # entities: microseconds on ingest's path. An answer the range reaches is dropped
        # even if no point falls in it: that costs a recomputation, never a wrong answer.
        try:
            span = pc.min_max(points.column("ts").cast(pa.timestamp("ns", "UTC")))
            lo_ns, hi_ns = span["min"].value, span["max"].value
            wss, entities = (pc.unique(points.column(c)).to_pylist() for c in ("ws", "entity"))
        except Exception:  # rows of a shape not foreseen: forget everything rather than keep a stale answer
            self.observe(None)
            raise
        touched = {(ws, entity) for ws in wss for entity in entities}
        with self._lock:
            for ws_entity in touched:
                for key in list(self._by_entity.get(ws_entity, ())):
                    if self._kept[key][0].reached(touched, lo_ns, hi_ns):
                        self._drop(key)
            for rng in self._computing:
                rng.stale = rng.stale or rng.reached(touched, lo_ns, hi_ns)

    def __len__(self) -> int:
        return len(self._kept)
