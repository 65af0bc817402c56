"""What the store's one writer keeps in memory of its committed points, and when that
may be trusted: the life cycle :class:`~sonde.store.recent.Recent` (recent gauge points)
and the five-minute sums of store/five_minutes.py (``RequestCounts``, ``RequestLatency``)
share.

A memory holds the last ``horizon_ns`` of some metrics' points, as committed (``Store``
feeds it after each commit and loads the horizon at start). It answers only from
:meth:`Memory.since` on: points older than the horizon are not kept, a failed commit
may have stored points it never saw (:meth:`lost` raises the floor past them), and
retention dropping partitions empties it (:meth:`reset`).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterable, Iterator

import pyarrow as pa
import pyarrow.compute as pc


#: the load's statements read the rows numbered up to ``upto`` alone (store/loading.py)
UPTO = "seq <= {upto:UInt64}"
#: and the entities of one group (:func:`entity_groups`)
ENTITIES = "ws = {ws:String} AND scope = {scope:String} AND entity IN {entities:Array(String)}"
#: entities a load reads in one statement: the embedded store runs one call at a time,
#: so reads and commits wait behind a load's statement (~0.3 s here), not its horizon's
GROUP = 8

Query = Callable[[str, dict], pa.Table]


def entity_groups(query: Query, table: str, metrics: list[str], lo: int, upto: int,
                  size: int = GROUP) -> Iterator[dict]:
    """Parameters naming up to ``size`` entities of one workspace and scope (``ws``,
    ``scope``, ``entities``), every entity with rows of ``metrics`` from ``lo`` (ns)
    numbered up to ``upto`` in one group: a load reads a group a statement (``ENTITIES``)."""
    t = query(f"SELECT DISTINCT ws, scope, entity FROM {table} WHERE metric IN {{metrics:Array(String)}}"
              f" AND ts >= fromUnixTimestamp64Nano({{lo:Int64}}) AND {UPTO} ORDER BY ws, scope, entity",
              {"metrics": metrics, "lo": lo, "upto": upto})
    rows = zip(*(t.column(c).to_pylist() for c in ("ws", "scope", "entity")))
    for (ws, scope), group in itertools.groupby(rows, key=lambda r: r[:2]):
        names = [r[2] for r in group]
        for i in range(0, len(names), size):
            yield {"ws": ws, "scope": scope, "entities": names[i:i + size]}


class Memory:
    def __init__(self, metrics: Iterable[str], horizon_s: float, *, future_ns: int,
                 clock: Callable[[], int] = time.time_ns):
        """``future_ns``: how far ahead of the clock ingest accepts a point, so how far a
        point dropped with a partition may reach (see :meth:`reset`)."""
        self._kept = frozenset(metrics)
        self.metrics = pa.array(sorted(self._kept), pa.string())
        self.horizon_ns = int(horizon_s * 1e9)
        self._future_ns = future_ns
        self._clock = clock
        self._lock = threading.Lock()
        self._floor = 0  # nothing before this is answered (after a reset or a lost commit)

    def load_from(self, query: Query, table: str, upto: int) -> None:
        """Load the horizon from ``table`` (``query``: the executor's query_arrow), the
        rows numbered up to ``upto`` alone (store/loading.py), a group of entities a
        statement (:func:`entity_groups`): at start, before :meth:`add` takes the
        commits after them."""
        raise NotImplementedError

    def add(self, points: pa.Table) -> None:
        """Rows of ``metric_points`` as ingest builds them, committed just now."""
        raise NotImplementedError

    def since(self) -> int:
        """The earliest ``ts`` (ns) from which every stored point of the metrics is here."""
        return max(self._clock() - self.horizon_ns, self._floor)

    def lost(self, points: list[pa.Table]) -> None:
        """Points a failed commit may have stored, unseen here: answer nothing that reads
        as far back as the newest of them."""
        newest = max((pc.max(t.column("ts").cast(pa.int64())).as_py() or 0 for t in points if t.num_rows),
                     default=None)
        if newest is not None:
            with self._lock:
                self._floor = max(self._floor, newest + 1)

    def reset(self) -> None:
        """Forget everything (retention dropped partitions): answer nothing from before
        now, nor from the future a dropped point might have reached."""
        with self._lock:
            self._forget()
            self._floor = self._clock() + self._future_ns

    def clear(self) -> None:
        """Drop what is held, the floor kept: its load starts again (store/loading.py)."""
        with self._lock:
            self._forget()

    def _forget(self) -> None:
        """Drop what is held (under the lock)."""
        raise NotImplementedError
