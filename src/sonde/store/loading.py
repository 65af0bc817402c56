"""Loading the store's memories from the store while the server answers.

A memory (store/memory.py) holds what the store holds of some metrics over its horizon,
so a server starting reads the horizon back: one statement per entity for the gauge
sums, ~40 s for the side-by-side's 6,400 GPU series over a day (docs/benchmarks.md).
Waiting for that before serving would keep ingest and reads out as long. Instead
:class:`Loader` loads on a thread of its own while the server runs; a memory is handed
to its readers (``ready``) only once it holds everything, and until then they read the
store, as they do for a window the memory does not cover.

Every row is seen once, by sequence number (``Store.next_seq``):

- when a load is asked, the commits from then on are set aside for the memory
  (:meth:`Loader.offer`, under the lock the writer takes);
- the load then takes ``upto``, the last number reserved, and waits until every row
  numbered up to it is committed (or failed);
- it reads only rows numbered up to ``upto``, and of the commits set aside adds only
  the rows numbered after it.

A row numbered up to ``upto`` was reserved before the load took it, so it is committed
before the load reads; if its commit came after the commits were set aside, it is
skipped there. A row numbered after ``upto`` was reserved after the commits were set
aside, so its commit is among them, and the load's statements skip it. The last of the
commits set aside are added under the writer's lock, as the memory is handed over, so
none falls between the two.

Commits set aside are cut to the memory's metrics. Past ``max_rows`` of them (ingest
outrunning the load) the memory is emptied, nothing is set aside, and the load starts
again after ``retry_s``, then twice as long each time (logged); its readers read the
store meanwhile.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from .memory import Memory, Query

log = logging.getLogger(__name__)

#: commits set aside up to this many rows are added to a loaded memory under the
#: writer's lock (a few ms); more are added outside it, and the writer goes on
_LAST_ROWS = 50_000


class Closed(Exception):
    """The store closed while a memory was loading."""


@dataclass
class _Aside:
    """The commits set aside for one memory while it loads."""

    memory: Memory
    tables: list[pa.Table] = field(default_factory=list)
    rows: int = 0
    overflow: bool = False


class Loader:
    def __init__(self, query: Query, reserved: Callable[[], int], committed: Callable[[], int],
                 flush: Callable[[], None], *, max_rows: int, retry_s: float = 30.0):
        """``query``: the executor's query_arrow; ``reserved``: the last sequence number
        reserved; ``committed``: the last one up to which every row is committed or
        failed (``Store.committed_seq``); ``flush``: commit what waits; ``max_rows``:
        rows set aside for a memory past which its load starts again after ``retry_s``
        (doubling each time, at most 10 minutes)."""
        self._query = query
        self._reserved, self._committed, self._flush = reserved, committed, flush
        self._max_rows, self.retry_s = max_rows, retry_s
        #: taken by the writer offering a commit and by a memory being handed over
        self.lock = threading.Lock()
        self._aside: dict[int, _Aside] = {}
        self._closing = threading.Event()
        self._pool: ThreadPoolExecutor | None = None
        self._loads: list[Future] = []

    def load(self, memory: Memory, table: str, ready: Callable[[], None], *, background: bool) -> None:
        """Load ``memory`` from ``table`` (its ``load_from``) and call ``ready`` once it
        holds every committed row; on this thread (errors raised) or on the loader's own,
        one memory after another (errors logged, the memory left unkept)."""
        with self.lock:
            self._aside[id(memory)] = _Aside(memory)
        if not background:
            self._run(memory, table, ready, raising=True)
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="sonde-memory-load")
        self._loads.append(self._pool.submit(self._run, memory, table, ready, raising=False))

    def _run(self, memory: Memory, table: str, ready: Callable[[], None], *, raising: bool) -> None:
        name, began = type(memory).__name__, time.monotonic()
        try:
            for attempt in itertools.count():
                upto = self._settled()
                memory.load_from(self._guarded, table, upto)
                if self._catch_up(memory, upto, ready):
                    log.info("%s loaded from the store in %.1f s", name, time.monotonic() - began)
                    return
                # ingest outran the load (a fleet's spools replaying after an outage):
                # nothing is set aside meanwhile, and the load starts again once it eases
                delay = min(self.retry_s * 2**attempt, 600)
                log.warning("%s: more than %d rows committed while it loaded; loading it again in %.0f s", name,
                            self._max_rows, delay)
                memory.clear()
                if self._closing.wait(delay):
                    raise Closed()
                with self.lock:
                    self._aside[id(memory)] = _Aside(memory)
        except Closed:
            self._drop(memory)
        except Exception:
            self._drop(memory)
            if raising:
                raise
            log.exception("loading %s from the store failed; its readers read the store", name)

    def _settled(self) -> int:
        """The last sequence number reserved, once every row numbered up to it is
        committed (or failed)."""
        upto = self._reserved()
        while self._committed() < upto:
            self.check()
            self._flush()
            time.sleep(0.005)  # a reservation whose rows are not submitted yet
        return upto

    def _guarded(self, sql: str, params: dict) -> pa.Table:
        self.check()
        return self._query(sql, params)

    def check(self) -> None:
        """Raise :class:`Closed` once the store is closing."""
        if self._closing.is_set():
            raise Closed()

    def _catch_up(self, memory: Memory, upto: int, ready: Callable[[], None]) -> bool:
        """Add the commits set aside, then hand the memory over; False where they were
        too many (``max_rows``)."""
        while True:
            with self.lock:
                aside = self._aside[id(memory)]
                if aside.overflow:
                    del self._aside[id(memory)]
                    return False
                tables, rows = aside.tables, aside.rows
                aside.tables, aside.rows = [], 0
                if rows <= _LAST_ROWS:  # the last few: added as the writer waits
                    _add(memory, tables, upto)
                    del self._aside[id(memory)]
                    ready()
                    return True
            _add(memory, tables, upto)

    def _drop(self, memory: Memory) -> None:
        with self.lock:
            self._aside.pop(id(memory), None)

    def offer(self, points: pa.Table) -> None:
        """A commit's ``metric_points`` rows, for the memories loading (under :attr:`lock`)."""
        for aside in self._aside.values():
            if aside.overflow:
                continue
            kept = points.filter(pc.is_in(points.column("metric"), value_set=aside.memory.metrics))
            if kept.num_rows:
                aside.tables.append(kept)
                aside.rows += kept.num_rows
                if aside.rows > self._max_rows:
                    aside.overflow, aside.tables = True, []

    def loading(self) -> list[Memory]:
        """The memories loading now."""
        with self.lock:
            return [a.memory for a in self._aside.values()]

    def wait(self, timeout: float | None = None) -> bool:
        """Whether every load asked so far is over (the memory kept, or its load failed) within
        ``timeout`` s."""
        _, pending = wait(list(self._loads), timeout)
        return not pending

    def close(self) -> None:
        """Stop loading (a load stops before its next statement) and wait for it."""
        self._closing.set()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)


def _add(memory: Memory, tables: list[pa.Table], upto: int) -> None:
    for t in tables:
        t = t.filter(pc.greater(t.column("seq"), pa.scalar(upto, pa.uint64())))
        if t.num_rows:
            memory.add(t)
