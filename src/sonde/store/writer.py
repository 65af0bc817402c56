"""Group commit: concurrent ingest requests share one batched INSERT per table.

Every small insert makes a ClickHouse part, so rows wait up to ``flush_interval_ms``
(or until ``batch_max_rows`` are pending) and go in together. Tables are flushed in the
order given, so rows a later table depends on (counter state after the points it
describes) are never committed before them. A submission's future resolves once its
rows are committed.

Without a write-ahead log the client is acknowledged on that future (acknowledged means
committed) and a failed commit fails every waiter. With one (store/wal.py) the rows are
in the log when :meth:`BatchWriter.submit` returns, the client is acknowledged then, and
a failed commit is retried after a pause, each table keeping only the rows it does not
hold yet, until it goes in; a batch refused three times in a row for any cause but a
full disk is committed request by request, and a request still refused alone after ten
is moved out of the log and its future fails. :meth:`BatchWriter.flush` commits what is
waiting now and returns once it is in: readers call it so that what was acknowledged is
what they see.

When more than ``max_pending_rows`` wait, :meth:`BatchWriter.submit` raises
:class:`Overloaded` instead of growing memory without bound.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass

import pyarrow as pa

from .._exceptions import Overloaded, StorageFull
from .base import Executor
from .wal import Wal, insert

log = logging.getLogger(__name__)

#: seconds before a failed commit of logged rows is tried again, growing up to the last
RETRY_S = (0.5, 1.0, 2.0, 5.0)
#: failures in a row after which a batch is committed request by request, and after
#: which a request the store still refuses alone is set aside (~40 s: a transient
#: refusal such as too many parts passes sooner)
ISOLATE_AFTER, REJECT_AFTER = 3, 10


def _settle(fut: Future, *, result=None, exception: BaseException | None = None) -> None:
    # A waiter may have cancelled its future (a client hung up); its rows are committed
    # anyway, and the writer must go on settling the others.
    try:
        if exception is not None:
            fut.set_exception(exception)
        else:
            fut.set_result(result)
    except InvalidStateError:
        pass


@dataclass
class _Item:
    rows: dict[str, pa.Table]
    future: Future
    n: int
    file: str | None = None  # its file in the write-ahead log


class BatchWriter:
    def __init__(
        self,
        executor: Executor,
        tables: Sequence[str],
        *,
        flush_interval_ms: int = 100,
        batch_max_rows: int = 50_000,
        max_pending_rows: int = 2_000_000,
        clock: Callable[[], float] = time.monotonic,
        on_commit: Callable[[dict[str, pa.Table]], None] | None = None,
        on_stored: Callable[[dict[str, pa.Table]], None] | None = None,
        on_failed: Callable[[list[dict[str, pa.Table]]], None] | None = None,
        wal: Wal | None = None,
        prompt_interval_ms: int | None = None,
        retry_s: Sequence[float] = RETRY_S,
    ):
        """``prompt_interval_ms``: the interval while a live reader is open (:meth:`watch`).
        ``on_stored``: called with the committed rows before their requests hear of the
        commit (kept answers drop what it reaches, docs/architecture.md); ``on_commit``
        after, once their sequence numbers are released (the live tail). ``on_failed``:
        called with a batch's requests' rows when its commit fails, some of its tables
        perhaps stored already."""
        self._ex = executor
        self._order = list(tables)
        self._interval = flush_interval_ms / 1000
        self._prompt = prompt_interval_ms / 1000 if prompt_interval_ms is not None else self._interval
        self._watchers = 0
        self._batch_max = batch_max_rows
        self._max_pending = max_pending_rows
        self._clock = clock
        self._on_commit = on_commit
        self._on_stored = on_stored
        self._on_failed = on_failed
        self.wal = wal
        self._retry_s = tuple(retry_s)
        self._cond = threading.Condition()
        self._pending: list[_Item] = []
        self._pending_rows = 0  # rows submitted and not settled, a retried batch's too
        self._first_at: float | None = None
        self._retry: list[_Item] | None = None  # a batch whose commit failed (logged rows only)
        self._retry_at = 0.0
        self._failures = 0  # of the batch in _retry, in a row
        self._submitted = self._settled = 0  # submissions, in order; settled ones come first
        self._force = False
        self._closed = False
        self.commits = 0
        self._thread = threading.Thread(target=self._run, name="sonde-writer", daemon=True)
        self._thread.start()

    @property
    def pending_rows(self) -> int:
        return self._pending_rows

    def submit(self, rows: dict[str, pa.Table]) -> Future:
        """Queue ``{table: rows}``; the future resolves when all are committed. With a
        log, the rows are in it on return (or this raises and nothing was queued)."""
        unknown = set(rows) - set(self._order)
        if unknown:  # rows it would never flush: a programming error, not load
            raise ValueError(f"the writer does not commit to {sorted(unknown)}")
        fut: Future = Future()
        n = sum(t.num_rows for t in rows.values())
        with self._cond:
            if self._closed:
                raise Overloaded("server is shutting down", retry_after=5)
            if n and self._pending_rows + n > self._max_pending:
                raise Overloaded(f"{self._pending_rows} rows waiting for commit; retry later", retry_after=1)
            if n == 0:
                fut.set_result(0)
                return fut
            # under the lock: the log's order is the queue's, and no commit can take
            # rows whose file is not whole yet
            file = self.wal.append(rows) if self.wal is not None else None
            self._pending.append(_Item(rows, fut, n, file))
            self._pending_rows += n
            self._submitted += 1
            if self._first_at is None:
                self._first_at = self._clock()
            self._cond.notify_all()
        return fut

    def flush(self, timeout: float = 30.0) -> None:
        """Commit what was submitted before this call and return once it is in; returns
        early when a commit fails (the reader then sees what is stored) or after
        ``timeout`` seconds."""
        if threading.current_thread() is self._thread:
            return  # a commit listener reading: everything before it is in
        with self._cond:
            target, failures = self._submitted, self._failures
            if self._settled >= target:
                return
            self._force = True
            self._cond.notify_all()
            self._cond.wait_for(lambda: self._settled >= target or self._failures > failures, timeout)

    def watch(self, delta: int) -> None:
        """A live reader opened (+1) or closed (-1). While any is open, commits come every
        ``prompt_interval_ms``: a live tail sees a line once it is committed, and with a
        log the interval that makes commits large would otherwise be its latency."""
        with self._cond:
            self._watchers += delta
            self._cond.notify_all()

    def _interval_now(self) -> float:
        return self._prompt if self._watchers > 0 else self._interval

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._due():
                    if self._closed and self._retry is not None:
                        self._retry = None  # still failing at close: its rows stay in the log for the next start
                    if self._closed and not self._pending:
                        return
                    self._cond.wait(self._wait_s())
                if self._retry is not None:
                    batch, retry, self._retry = self._retry, True, None
                else:
                    batch, retry, self._pending = self._pending, False, []
                    self._first_at = None
                    self._force = False
            self._commit(batch, retry)

    def _wait_s(self) -> float | None:
        if self._retry is not None:
            return max(0.0, self._retry_at - self._clock())
        if self._first_at is not None:
            return max(0.0, self._first_at + self._interval_now() - self._clock())
        return None

    def _due(self) -> bool:
        if self._retry is not None:
            return not self._closed and self._clock() >= self._retry_at
        if not self._pending:
            return False
        if self._closed or self._force or self._pending_rows >= self._batch_max:
            return True
        return self._clock() >= self._first_at + self._interval_now()

    def _insert(self, batch: list[_Item], retry: bool) -> dict[str, pa.Table]:
        # a retry: an earlier try may have stored some tables before it failed
        try:
            return insert(self._ex, self._order, [it.rows for it in batch], missing_only=retry)
        except BaseException:
            if self._on_failed is not None:
                try:
                    self._on_failed([it.rows for it in batch])
                except Exception:  # the commit's own failure is what its waiters must hear
                    log.exception("commit failure listener failed")
            raise

    def _commit(self, batch: list[_Item], retry: bool) -> None:
        try:
            committed = self._insert(batch, retry)
        except BaseException as exc:
            if self.wal is None:  # every waiter hears of it; nothing is acknowledged
                self._done(batch, exception=exc)
            else:
                self._failed(batch, exc)
            return
        self._done(batch, committed=committed)

    def _failed(self, batch: list[_Item], exc: BaseException) -> None:
        with self._cond:
            self._failures += 1
            failures = self._failures
            self._cond.notify_all()  # readers waiting in flush() read what is stored
        if failures >= ISOLATE_AFTER and not isinstance(exc, StorageFull):
            # one request's rows the store refuses must not hold back everyone else's
            batch = self._isolate(batch, reject=failures >= REJECT_AFTER)
            if not batch:
                return
        log.warning("group commit of %d logged requests failed (try %d), retrying: %s", len(batch), failures, exc)
        with self._cond:
            self._retry = batch
            self._retry_at = self._clock() + self._retry_s[min(failures, len(self._retry_s)) - 1]

    def _isolate(self, batch: list[_Item], *, reject: bool) -> list[_Item]:
        """Commit each request alone; returns those still refused (none if ``reject``)."""
        left = []
        for it in batch:
            try:
                committed = self._insert([it], True)
            except BaseException as exc:
                if not reject:
                    left.append(it)
                    continue
                self.wal.reject(it.file, exc)
                self._done([it], exception=exc)
            else:
                self._done([it], committed=committed)
        return left

    def _done(self, batch: list[_Item], *, committed: dict[str, pa.Table] | None = None,
              exception: BaseException | None = None) -> None:
        if exception is None:
            self.commits += 1
            if committed and self._on_stored is not None:
                self._on_stored(committed)
            if self.wal is not None:
                self.wal.remove([it.file for it in batch])
        for it in batch:
            if exception is not None:
                _settle(it.future, exception=exception)
            else:
                _settle(it.future, result=it.n)
        with self._cond:
            self._settled += len(batch)
            self._pending_rows -= sum(it.n for it in batch)
            if exception is None:
                self._failures = 0
            if self._settled >= self._submitted:
                self._force = False  # a flush that found its rows in flight leaves no early commit behind
            self._cond.notify_all()
        # after the futures: their callbacks release the rows' sequence numbers, so a
        # listener (the live tail) already sees them as committed
        if committed and self._on_commit is not None:
            self._on_commit(committed)

    def close(self) -> None:
        """Commit what is pending, then stop (with a log, what fails to commit stays in it)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join()
