"""The store: one ClickHouse schema behind one narrow executor seam.

``Store`` bundles an :class:`~sonde.store.base.Executor`, the database name, and the
group-commit :class:`~sonde.store.writer.BatchWriter`. ``open_store`` picks the
executor from the ``store`` setting.
"""

from __future__ import annotations

import os
import threading
import time

import pyarrow as pa

from .._exceptions import BadRequest
from .base import Executor
from .schema import ARROW_SCHEMAS, create_all
from .writer import BatchWriter

__all__ = ["Store", "open_store", "Executor", "ARROW_SCHEMAS"]


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
    ):
        self.ex = executor
        self.db = db
        create_all(executor, db, retention_days)
        self.writer = BatchWriter(
            executor,
            [self.t("metric_points"), self.t("series_state"), self.t("logs")],
            flush_interval_ms=flush_interval_ms,
            batch_max_rows=batch_max_rows,
            max_pending_rows=max_pending_rows,
        )
        self._seq_lock = threading.Lock()
        self._seq = self._max_seq()

    def t(self, table: str) -> str:
        """Qualified name of ``table`` in this store's database."""
        return f"{self.db}.{table}"

    def _max_seq(self) -> int:
        # Sequences follow wall-clock nanoseconds, so only a clock stepped back across a
        # restart could repeat one; yesterday's and today's partitions are enough to
        # guard against that without scanning the whole table.
        recent = "WHERE ts >= now() - INTERVAL 1 DAY"
        rows = self.ex.query(
            f"SELECT greatest((SELECT max(seq) FROM {self.t('logs')} {recent}),"
            f" (SELECT max(seq) FROM {self.t('metric_points')} {recent})) AS m"
        )
        return int(rows[0]["m"] or 0)

    def next_seq(self, n: int) -> int:
        """Reserve ``n`` arrival sequence numbers; returns the first.

        Sequences grow with wall time (nanoseconds) and never repeat, across restarts too.
        """
        with self._seq_lock:
            first = max(self._seq + 1, time.time_ns())
            self._seq = first + n - 1
            return first

    def submit(self, rows: dict[str, pa.Table]):
        """Queue rows keyed by bare table name; returns a future resolved on commit."""
        return self.writer.submit({self.t(k): v for k, v in rows.items()})

    def close(self, *, executor: bool = True) -> None:
        """Commit what is pending and stop; ``executor=False`` leaves a shared one open."""
        self.writer.close()
        if executor:
            self.ex.close()


def open_store(url: str, data_dir: str, *, db: str = "sonde", **kwargs) -> Store:
    if url == "chdb":
        from .chdb import ChdbExecutor

        os.makedirs(data_dir, exist_ok=True)
        return Store(ChdbExecutor.open(os.path.join(data_dir, "store")), db, **kwargs)
    raise BadRequest(f"unknown store {url!r}; this build knows 'chdb'", field="store")
