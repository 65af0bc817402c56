"""One ingest request, decoded message in, queued rows out.

:class:`Ingestor` is the per-process ingest side of the server: it owns the series
cache, the cumulative state and the registrar, and queues rows on the store's group
commit. It returns the commit future; the caller acknowledges the client only once
that future has resolved (acknowledged means durable).
"""

from __future__ import annotations

import time
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from ..store import Store
from .columns import SeriesCache
from .cumulative import SeriesState
from .logs import LogsWalk
from .metrics import MetricsWalk
from .registrar import Registrar
from .series_limit import SeriesLimit
from .traces import SpanRows, TracesWalk


@dataclass
class Queued:
    """Rows queued for commit: ``future`` resolves when they are durable (in the
    write-ahead log, or committed where there is none)."""

    future: Future
    rows: int
    rejected: int
    message: str


class Ingestor:
    def __init__(self, store: Store, inventory, *, shared_state: bool = False, max_series: int | None = None):
        self.store = store
        self.registrar = Registrar(inventory, remember_hardware=not shared_state)
        self.cache = SeriesCache()
        self.state = SeriesState(store, shared=shared_state)
        self.series_limit = SeriesLimit.from_store(store, max_series) if max_series else None

    @classmethod
    def for_store(cls, store: Store, inventory, state_sync: str, max_series: int | None = None) -> Ingestor:
        """The ingestor the ``state_sync`` setting asks for: ``process`` keeps cumulative
        state in memory (this process is the store's only writer), ``store`` reads it from
        the store for every request (API replicas share the store), ``auto`` the first
        on a store only this process can open (chDB's executor is ``exclusive``), else
        the second. Loading the in-memory state reads the store: call it once it is open."""
        return cls(store, inventory, shared_state=store.shared(state_sync), max_series=max_series)

    def metrics(self, ws: str, req) -> Queued:
        self.store.require_space()  # before the registrar writes inventory of its own
        walk = MetricsWalk(ws, self.cache, self.registrar, self.series_limit).walk(req)
        message = walk.rejects.message("data points")
        blocks = [b for b in walk.blocks.values() if len(b)]
        if not blocks:
            return Queued(_done(), 0, walk.rejects.count, message)
        # exemplars go in the same group commit as their points: acknowledged together
        extra = {"exemplars": walk.exemplars.to_arrow()} if len(walk.exemplars) else {}
        state = self.state
        with state.lock:
            change = state.apply(ws, blocks) if any(b.stateful for b in blocks) else None
            tables = [b.to_arrow() for b in blocks]
            table = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
            n = table.num_rows
            if n == 0:
                return Queued(_done(), 0, walk.rejects.count, message)
            first = self.store.next_seq(n)
            table = table.set_column(
                table.schema.get_field_index("seq"), "seq", pa.array(np.arange(first, first + n, dtype=np.uint64))
            )
            rows = {"metric_points": table, **extra}
            if change is not None and change.new:
                rows["series_state"] = state.rows(ws, change, first + n - 1)
            sub = self.store.submit(rows, seq=first)  # raises Overloaded before anything is queued
            if change is not None:
                state.commit(change)
        if change is not None:
            # Outside the lock: a future already resolved runs the callback right here.
            # Registered before the request awaits it, so it runs first: a client hears
            # of a failed commit only once the state is settled.
            sub.committed.add_done_callback(lambda f: state.settle(change) if f.exception() is not None else None)
        return Queued(sub.acknowledged, n, walk.rejects.count, message)

    def logs(self, ws: str, req) -> Queued:
        self.store.require_space()
        walk = LogsWalk(ws, self.registrar, now_ns=time.time_ns()).walk(req)
        message = walk.rejects.message("log records")
        n = walk.rows
        if n == 0:
            return Queued(_done(), 0, walk.rejects.count, message)
        first = self.store.next_seq(n)
        future = self.store.submit({"logs": walk.to_arrow(first)}, seq=first).acknowledged
        for job_exit in walk.job_exits:
            self.registrar.job_exit(ws, *job_exit)
        return Queued(future, n, walk.rejects.count, message)


    def traces(self, ws: str, req) -> Queued:
        return self.spans(ws, TracesWalk(ws).walk(req).result())

    def spans(self, ws: str, rows: SpanRows) -> Queued:
        """Walked spans (here or in a decoding process, :mod:`.offload`) placed and queued."""
        self.store.require_space()
        if rows.n == 0:
            return Queued(_done(), 0, rows.rejected, rows.message)
        parents = [self.registrar(ws, pl) for pl in rows.placements]
        first = self.store.next_seq(rows.n)
        future = self.store.submit({"spans": rows.finish(parents, first)}, seq=first).acknowledged
        return Queued(future, rows.n, rows.rejected, rows.message)


def _done() -> Future:
    f: Future = Future()
    f.set_result(0)
    return f
