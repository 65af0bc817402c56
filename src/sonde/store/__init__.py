"""The store: one ClickHouse schema behind one narrow executor seam.

``Store`` bundles an :class:`~sonde.store.base.Executor`, the database name, the
group-commit :class:`~sonde.store.writer.BatchWriter` and, where this process is the
store's only writer, its write-ahead log (store/wal.py). ``open_executor`` picks the
executor from the ``store`` URL ('chdb' or ``clickhouse://...``).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from typing import NamedTuple

import pyarrow as pa

from .._exceptions import BadRequest, StorageFull
from .base import Executor
from . import migrations, views
from .disk import DiskGuard
from .gauge_sums import GaugeSums, Sums
from .loading import Loader
from .recent import Recent
from .request_counts import Buckets, RequestCounts, RequestLatency
from .retention import Retention
from .schema import ARROW_SCHEMAS
from .wal import FlushingExecutor, Wal, replay
from .writer import BatchWriter

__all__ = ["Store", "open_store", "open_executor", "Executor", "ARROW_SCHEMAS"]

log = logging.getLogger(__name__)

#: a reservation of sequence numbers still open this long after it was made is taken as
#: lost (a request that died between numbering its rows and queueing them), so the live
#: tail stops waiting for it; a commit never takes this long without failing
STALE_RESERVATION_S = 60.0

#: called after every group commit with the committed rows, by bare table name
CommitListener = Callable[[dict[str, pa.Table]], None]
#: called with rows (by bare table name) once submitted and again once committed, and
#: with None where anything may have changed (retention dropped partitions)
ChangeListener = Callable[[dict[str, pa.Table] | None], None]

#: the tables ingest writes, in the order a group commit flushes them: counter state
#: after the points it follows from
INGEST_TABLES = ("metric_points", "exemplars", "series_state", "logs", "spans")


class Submitted(NamedTuple):
    """``acknowledged``: resolves once the rows are durable, when the client may hear
    so (with the log: at once); ``committed``: once queries can read them."""

    acknowledged: Future
    committed: Future


class Store:
    def __init__(
        self,
        executor: Executor,
        db: str = "sonde",
        *,
        retention_days: int = 30,
        flush_interval_ms: int = 100,
        batch_max_rows: int = 50_000,
        max_pending_rows: int = 2_000_000,
        min_free_disk_mb: int = 0,
        retention_check_seconds: float | None = None,
        migrate: bool = True,
        wal_dir: str | None = None,
        wal_flush_interval_ms: int = 1000,
        wal_live_flush_interval_ms: int = 250,
    ):
        """``migrate``: bring the schema up to date; otherwise refuse a store whose
        schema version is not this build's (a cluster is migrated once, by
        ``sonde migrate``, not by every replica at start). ``retention_check_seconds``:
        drop partitions older than ``retention_days`` this often (store/retention.py);
        None: never (the server passes it; tests and tools opening a store do not).
        ``wal_dir``: acknowledge ingest once it is in a write-ahead log there and commit
        it every ``wal_flush_interval_ms``, or ``wal_live_flush_interval_ms`` while a
        live tail is open (store/wal.py); only for the store's one writer."""
        self.ex = executor
        #: the executor without the write-ahead log's flush, for reads that only want
        #: rows committed already (the live tail, which reads up to committed_seq)
        self.committed = executor
        self.db = db
        self.disk = DiskGuard(executor.local_path, min_free_disk_mb * 2**20)
        if migrate:
            migrations.migrate(executor, db, retention_days)
        else:
            migrations.require(executor, db)
        order = [self.t(t) for t in INGEST_TABLES]
        wal = Wal(wal_dir) if wal_dir is not None else None
        if wal is not None:
            replay(wal, executor, order)  # before anything reads the store: the state, the sequence
        self._loader = Loader(executor.query_arrow, self._reserved, self.committed_seq, lambda: self.writer.flush(),
                              max_rows=max_pending_rows)
        self.writer = BatchWriter(
            executor, order,
            flush_interval_ms=wal_flush_interval_ms if wal is not None else flush_interval_ms,
            prompt_interval_ms=wal_live_flush_interval_ms if wal is not None else flush_interval_ms,
            batch_max_rows=batch_max_rows,
            max_pending_rows=max_pending_rows,
            on_commit=self._committed,
            on_stored=self._stored,
            on_failed=self._not_stored,
            wal=wal,
        )
        if wal is not None:
            self.ex = FlushingExecutor(executor, self.writer.flush)
        self._seq_lock = threading.Lock()
        self._seq = self._max_seq()
        self._open: dict[int, float] = {}  # first seq of a reservation -> when it was made
        self._listeners: list[CommitListener] = []
        self._change_listeners: list[ChangeListener] = []
        #: recent points kept in memory (store/recent.py), once :meth:`keep_recent` asks
        self.recent: Recent | None = None
        #: request counts per five minutes (store/request_counts.py), once :meth:`keep_request_counts` asks
        self.request_counts: RequestCounts | None = None
        self.request_latency: RequestLatency | None = None
        #: gauge holds summed per bucket (store/gauge_sums.py), once :meth:`keep_gauge_sums` asks
        self.gauge_sums: GaugeSums | None = None
        self.retention = Retention(executor, db, retention_days, retention_check_seconds or 0,
                                   on_drop=self._dropped)
        if retention_check_seconds is not None:
            self.retention.start()

    def shared(self, state_sync: str) -> bool:
        """Whether other API replicas write this store too, as the ``state_sync`` setting
        says: ``store`` yes, ``process`` no, ``auto`` unless only this process can open
        it (chDB's executor is ``exclusive``)."""
        return state_sync == "store" or (state_sync == "auto" and not self.ex.exclusive)

    def t(self, table: str) -> str:
        """Qualified name of ``table`` in this store's database."""
        return f"{self.db}.{table}"

    def _max_seq(self) -> int:
        # Sequences follow wall-clock nanoseconds, so only a clock stepped back across a
        # restart could repeat one; yesterday's and today's partitions are enough to
        # guard against that without scanning the whole table.
        recent = "WHERE ts >= now() - INTERVAL 1 DAY"
        rows = self.ex.query(
            "SELECT greatest(" + ", ".join(f"(SELECT max(seq) FROM {self.t(t)} {recent})"
                                           for t in ("logs", "metric_points", "spans")) + ") AS m"
        )
        return int(rows[0]["m"] or 0)

    def _reserved(self) -> int:
        with self._seq_lock:
            return self._seq

    def next_seq(self, n: int) -> int:
        """Reserve ``n`` arrival sequence numbers; returns the first.

        Sequences grow with wall time (nanoseconds) and never repeat, across restarts too.
        """
        with self._seq_lock:
            first = max(self._seq + 1, time.time_ns())
            self._seq = first + n - 1
            self._open[first] = time.monotonic()
            return first

    def require_space(self) -> None:
        """Raise :class:`~sonde._exceptions.StorageFull` (503) while the disk has no room
        for ingest; called before a request writes anything (store/disk.py)."""
        self.disk.check()

    def submit(self, rows: dict[str, pa.Table], *, seq: int | None = None) -> Submitted:
        """Queue rows keyed by bare table name.

        ``seq``: the first number of the reservation these rows were numbered from; it
        stays open (holding back :meth:`committed_seq`) until the commit succeeds or fails."""
        try:
            fut = self.writer.submit({self.t(k): v for k, v in rows.items()})
        except BaseException:
            if seq is not None:
                self._release(seq)
            raise
        if seq is not None:
            fut.add_done_callback(lambda _: self._release(seq))
        fut.add_done_callback(self._space_failure)
        self._changed(rows)  # after the writer has them: a read from now on sees them
        if self.writer.wal is None:
            return Submitted(fut, fut)
        logged: Future = Future()
        logged.set_result(sum(t.num_rows for t in rows.values()))
        return Submitted(logged, fut)

    def _space_failure(self, fut) -> None:
        if not fut.cancelled() and isinstance(fut.exception(), StorageFull):
            self.disk.failed()

    def _release(self, first: int) -> None:
        with self._seq_lock:
            self._open.pop(first, None)

    def committed_seq(self, *, others_until: int | None = None) -> int:
        """Every row this process numbered up to here is committed (or failed and never
        will be): a live tail reads up to it and cannot miss a row committed later.
        ``others_until``: rows other writers (API replicas on one cluster) numbered up
        to it are taken as committed too, and none after it."""
        with self._seq_lock:
            now = time.monotonic()
            for first, at in list(self._open.items()):
                if now - at > STALE_RESERVATION_S:
                    log.error("sequence reservation %d was never committed; the live tail stops waiting", first)
                    del self._open[first]
            if self._open:
                mine = min(self._open) - 1
            elif others_until is None:
                mine = self._seq
            else:  # a reservation made from now on is numbered after the clock, so after others_until
                return others_until
            return mine if others_until is None else min(mine, others_until)

    def repair_views(self) -> None:
        """Add to the materialized views' targets the recent points a crash left them
        short of (store/views.repair). Only where this process is the store's only
        writer, before it takes any: ``open_store`` calls it as the server starts."""
        for v in views.VIEWS:
            self.ex.command(views.repair(v, self.db))

    def keep_recent(self, metrics: Iterable[str], horizon_s: float, *, future_ns: int,
                    background: bool = False) -> None:
        """Keep the last ``horizon_s`` of ``metrics``' points in memory (store/recent.py),
        loading them from the store (:meth:`_keep`): only where this process is the
        store's one writer. ``future_ns``: how far ahead of the clock ingest accepts a
        point."""
        self._keep("recent", Recent(metrics, horizon_s, future_ns=future_ns), background)

    def keep_request_counts(self, metrics: Iterable[str], horizon_s: float, *, future_ns: int,
                            background: bool = False) -> None:
        """Keep the last ``horizon_s`` of the request histograms ``metrics`` per five
        minutes in memory, counted by status class and summed for the latency
        (store/request_counts.py); as :meth:`keep_recent`. Never longer than the
        retention: the tables' TTL deletes older rows in merges, unannounced."""
        horizon_s = min(horizon_s, self.retention.days * 86400)
        self._keep("request_counts", RequestCounts(metrics, horizon_s, future_ns=future_ns), background)
        self._keep("request_latency", RequestLatency(metrics, horizon_s, future_ns=future_ns), background)

    def keep_gauge_sums(self, metrics: Iterable[str], horizon_s: float, *, future_ns: int,
                        background: bool = False) -> None:
        """Keep the holds of the gauges ``metrics`` summed per bucket over the last
        ``horizon_s`` in memory (store/gauge_sums.py); as :meth:`keep_request_counts`."""
        horizon_s = min(horizon_s, self.retention.days * 86400)
        self._keep("gauge_sums", GaugeSums(metrics, horizon_s, future_ns=future_ns), background)

    def _keep(self, name: str, memory: Recent | RequestCounts | RequestLatency | GaugeSums,
              background: bool) -> None:
        """Load ``memory``'s horizon from the store and then read from it as ``name``
        (store/loading.py): now, or on the loader's thread while the server answers
        (``background``; readers read the store until it is in)."""
        self._loader.load(memory, self.t("metric_points"), lambda: setattr(self, name, memory),
                          background=background)

    def wait_loaded(self, timeout: float | None = None) -> bool:
        """Whether every memory asked for is loaded (or its load failed) within ``timeout`` s."""
        return self._loader.wait(timeout)

    def gauge_window(self, ws: str, scope: str, entity: str, t0: int, t1: int, step: int,
                     metrics: Iterable[str]) -> Sums | None:
        """An entity's gauge sums of ``metrics`` over [t0, t1) (``GaugeSums.window``), or
        None where the store must be read."""
        sums = self._reading("gauge_sums")
        return None if sums is None else sums.window(ws, scope, entity, t0, t1, step, metrics)

    def request_window(self, name: str, ws: str, scope: str, entity: str, t0: int, t1: int,
                       metrics: Iterable[str]) -> Buckets | None:
        """An entity's buckets of ``metrics`` over [t0, t1) from the memory ``name``
        (``request_counts``, ``request_latency``: ``FiveMinutes.window``), or None where
        the store must be read."""
        memory = self._reading(name)
        return None if memory is None else memory.window(ws, scope, entity, t0, t1, metrics)

    def recent_rows(self, ws: str, scope: str, entity: str, lo_ns: int, metrics: Iterable[str]) -> pa.Table | None:
        """An entity's points of ``metrics`` kept in memory (:meth:`Recent.rows`), or None
        where the store must be read: they are not kept, or not from as early as ``lo_ns``."""
        recent = self._reading("recent")
        return None if recent is None else recent.rows(ws, scope, entity, lo_ns, metrics)

    def _reading(self, name: str):
        """The memory ``name`` where it is kept, once what was acknowledged is committed,
        as a statement waits for it."""
        memory = getattr(self, name)
        if memory is not None and isinstance(self.ex, FlushingExecutor):
            self.writer.flush()
        return memory

    def on_commit(self, listener: CommitListener) -> None:
        """Call ``listener`` (on the writer's thread) after every group commit."""
        self._listeners.append(listener)

    def on_change(self, listener: ChangeListener) -> None:
        """Call ``listener`` with rows as they are submitted and again once committed,
        before their requests hear of the commit (a read with the write-ahead log sees
        them from their submission, without it from their commit), and with None after
        retention drops partitions."""
        self._change_listeners.append(listener)

    def _committed(self, tables: dict[str, pa.Table]) -> None:
        _tell(self._listeners, _bare(tables))

    def _stored(self, tables: dict[str, pa.Table]) -> None:
        # before the writes are acknowledged (without the log, at their commit): a read
        # after the acknowledgement must not get an answer kept before the commit
        tables = _bare(tables)
        if "metric_points" in tables:
            points = tables["metric_points"]
            with self._loader.lock:  # a memory is either loading or kept, never neither
                self._loader.offer(points)
                memories = self._memories()
            for memory in memories:
                try:
                    memory.add(points)
                except Exception:  # rows it cannot take: it answers nothing it may lack
                    log.exception("keeping %s failed; forgetting it", type(memory).__name__)
                    memory.reset()
        self._changed(tables)

    def _memories(self) -> list[Recent | RequestCounts | RequestLatency | GaugeSums]:
        """The memories kept (those loading are not yet)."""
        return [m for m in (self.recent, self.request_counts, self.request_latency, self.gauge_sums) if m is not None]

    def _not_stored(self, batch: list[dict[str, pa.Table]]) -> None:
        # some of the batch's tables may be stored though none was reported: the
        # points kept in memory may lack its points from here on
        points = [t for rows in batch for name, t in rows.items() if name.rsplit(".", 1)[-1] == "metric_points"]
        for memory in self._memories() + self._loader.loading():
            memory.lost(points)

    def _dropped(self) -> None:
        for memory in self._memories() + self._loader.loading():
            memory.reset()
        self._changed(None)

    def _changed(self, tables: dict[str, pa.Table] | None) -> None:
        _tell(self._change_listeners, tables)

    def close(self, *, executor: bool = True) -> None:
        """Commit what is pending and stop; ``executor=False`` leaves a shared one open."""
        self.retention.stop()
        self._loader.close()
        self.writer.close()
        if executor:
            self.ex.close()


def _bare(tables: dict[str, pa.Table]) -> dict[str, pa.Table]:
    return {name.rsplit(".", 1)[-1]: t for name, t in tables.items()}


def _tell(listeners: list, tables: dict[str, pa.Table] | None) -> None:
    for listener in listeners:
        try:
            listener(tables)
        except Exception:  # neither ingest nor the writer stops for a listener's bug
            log.exception("store listener %r failed", listener)


def open_executor(url: str, data_dir: str) -> tuple[Executor, str | None]:
    """The executor for a ``store`` URL, and the database the URL names (None: default)."""
    if url == "chdb":
        from .chdb import ChdbExecutor

        os.makedirs(data_dir, exist_ok=True)
        return ChdbExecutor.open(os.path.join(data_dir, "store")), None
    if url.startswith(("clickhouse://", "clickhouses://")):
        from .clickhouse import ClickHouseExecutor

        ex = ClickHouseExecutor.from_url(url)
        return ex, ex.url.database
    raise BadRequest(f"unknown store {url.split(':', 1)[0]!r}; use 'chdb' or clickhouse://user:password@host:8123/db",
                     field="store")


def open_store(url: str, data_dir: str, *, db: str = "sonde", auto_migrate: str = "embedded",
               wal: str = "auto", **kwargs) -> Store:
    """Open the store for ``url``; ``auto_migrate`` and ``wal`` are the settings of those names."""
    if wal == "on" and url != "chdb":
        raise BadRequest("wal=on needs the embedded store: with several API replicas writing one ClickHouse, a"
                         " read on one replica cannot flush another's log", field="wal")
    ex, named = open_executor(url, data_dir)
    migrate = auto_migrate == "always" or (auto_migrate == "embedded" and ex.exclusive)
    wal_dir = os.path.join(data_dir, "wal") if wal != "off" and ex.exclusive else None
    try:
        store = Store(ex, named or db, migrate=migrate, wal_dir=wal_dir, **kwargs)
        if ex.exclusive:
            store.repair_views()
        return store
    except Exception:
        ex.close()
        raise
