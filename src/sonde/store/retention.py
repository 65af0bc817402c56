"""Retention: whole day partitions of telemetry older than ``retention_days`` are dropped.

The tables' TTL (store/schema.py) alone is not enough: ClickHouse applies it in TTL
merges, at most every ``merge_with_ttl_timeout`` (4 hours) per partition and only when
a merge is scheduled, and the TTL is fixed in the DDL when the table is created, so a
later ``retention_days`` would never reach it. Telemetry is partitioned by day, so the
server drops every partition whose newest day is older than the retention: a metadata
operation that removes whole parts at once, leaving the parts being written and read
alone. Partitions are listed from ``system.parts`` (every replica's on a cluster) and
dropped on the local tables.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable

from .base import Executor
from .schema import TABLES

log = logging.getLogger(__name__)

#: tables with a day partition and a TTL
TELEMETRY = tuple(t.name for t in TABLES if t.telemetry)

#: seconds after start before the first pass: the server answers first
FIRST_PASS_AFTER_S = 60.0

_PARTITION_ID = re.compile(r"^[0-9A-Za-z_-]+$")


class Retention:
    def __init__(self, ex: Executor, db: str, days: int, every_s: float, on_drop: Callable[[], None] = lambda: None):
        """``on_drop``: called after a pass that dropped (or tried to drop) partitions."""
        self.ex, self.db, self.days, self.every_s = ex, db, int(days), every_s
        self.on_drop = on_drop
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.dropped = 0

    def expired(self) -> list[tuple[str, str]]:
        """(table, partition id) of every partition wholly older than the retention."""
        cluster = self.ex.cluster
        suffix = "_local" if cluster else ""
        parts = f"clusterAllReplicas('{cluster}', system.parts)" if cluster else "system.parts"
        rows = self.ex.query(
            # the partition is the day, toDate(ts), ts in UTC; system.parts' min_date and
            # max_date are not filled for a key computed from a DateTime64
            f"SELECT DISTINCT table, partition_id FROM {parts}"
            " WHERE database = {db:String} AND active AND table IN {tables:Array(String)}"
            " AND toDateOrNull(partition) < toDate(now('UTC')) - {days:UInt32}"
            " ORDER BY table, partition_id",
            {"db": self.db, "tables": [t + suffix for t in TELEMETRY], "days": self.days},
        )
        return [(r["table"], r["partition_id"]) for r in rows]

    def run(self) -> int:
        """One pass; returns the partitions dropped."""
        on = f" ON CLUSTER '{self.ex.cluster}'" if self.ex.cluster else ""
        n = tried = 0
        try:
            for table, pid in self.expired():
                if not _PARTITION_ID.match(pid):  # from system.parts; never formatted unchecked
                    continue
                tried += 1
                self.ex.command(f"ALTER TABLE {self.db}.{table}{on} DROP PARTITION ID '{pid}'")
                log.info("retention: dropped partition %s of %s (older than %d days)", pid, table, self.days)
                n += 1
        finally:  # a drop that failed may have happened all the same
            self.dropped += n
            if tried:
                self.on_drop()
        return n

    def _loop(self) -> None:
        wait = min(FIRST_PASS_AFTER_S, self.every_s)
        while not self._stop.wait(wait):
            try:
                self.run()
            except Exception:  # the store is failing now; the next pass tries again
                log.exception("retention pass failed")
            wait = self.every_s

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="sonde-retention", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
