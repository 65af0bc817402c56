"""Group commit: concurrent ingest requests share one batched INSERT per table.

Every small insert makes a ClickHouse part, so rows wait up to ``flush_interval_ms``
(or until ``batch_max_rows`` are pending) and go in together. A request's future
resolves only after its rows are committed: acknowledged means durable. Tables are
flushed in the order given, so rows a later table depends on (counter state after
the points it describes) are never committed before them.

When more than ``max_pending_rows`` wait, :meth:`BatchWriter.submit` raises
:class:`Overloaded` instead of growing memory without bound.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, InvalidStateError

import pyarrow as pa

from .._exceptions import Overloaded
from .base import Executor


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
    ):
        self._ex = executor
        self._order = list(tables)
        self._interval = flush_interval_ms / 1000
        self._batch_max = batch_max_rows
        self._max_pending = max_pending_rows
        self._clock = clock
        self._on_commit = on_commit
        self._cond = threading.Condition()
        self._pending: list[tuple[dict[str, pa.Table], Future]] = []
        self._pending_rows = 0
        self._first_at: float | None = None
        self._closed = False
        self.commits = 0
        self._thread = threading.Thread(target=self._run, name="sonde-writer", daemon=True)
        self._thread.start()

    @property
    def pending_rows(self) -> int:
        return self._pending_rows

    def submit(self, rows: dict[str, pa.Table]) -> Future:
        """Queue ``{table: rows}``; the future resolves when all are committed."""
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
            self._pending.append((rows, fut))
            self._pending_rows += n
            if self._first_at is None:
                self._first_at = self._clock()
            self._cond.notify()
        return fut

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._due():
                    if self._closed and not self._pending:
                        return
                    timeout = None
                    if self._first_at is not None:
                        timeout = max(0.0, self._first_at + self._interval - self._clock())
                    self._cond.wait(timeout)
                batch, self._pending = self._pending, []
                self._pending_rows = 0
                self._first_at = None
            self._commit(batch)

    def _due(self) -> bool:
        if not self._pending:
            return False
        if self._closed or self._pending_rows >= self._batch_max:
            return True
        return self._clock() >= self._first_at + self._interval

    def _commit(self, batch: list[tuple[dict[str, pa.Table], Future]]) -> None:
        committed: dict[str, pa.Table] = {}
        try:
            for table in self._order:
                parts = [rows[table] for rows, _ in batch if table in rows and rows[table].num_rows]
                if parts:
                    committed[table] = pa.concat_tables(parts, promote_options="default")
                    self._ex.insert_arrow(table, committed[table])
        except BaseException as exc:  # every waiter hears of it; nothing is acknowledged
            for _, fut in batch:
                _settle(fut, exception=exc)
            return
        self.commits += 1
        for rows, fut in batch:
            _settle(fut, result=sum(t.num_rows for t in rows.values()))
        # after the futures: their callbacks release the rows' sequence numbers, so a
        # listener (the live tail) already sees them as committed
        if self._on_commit is not None:
            self._on_commit(committed)

    def close(self) -> None:
        """Commit what is pending, then stop."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join()
