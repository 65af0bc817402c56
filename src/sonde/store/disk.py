"""Room on the store's disk: ingest is refused with 503 while there is none.

A write that fails for lack of space is not the client's fault and not one to retry at
once: ClickHouse refuses it (``NOT_ENOUGH_SPACE``, or ``ENOSPC`` from a file write) and
every waiter of that group commit hears :class:`StorageFull` (503, Retry-After), so
nothing is acknowledged that was not committed. Before that happens, an embedded store
refuses ingest while its data directory's filesystem has less than
``min_free_disk_mb`` free: ClickHouse needs room to merge parts, and the reads
keep working on a disk that is not yet completely full. Both checks are made again for
every request, so ingest resumes by itself once space is freed.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

from .._exceptions import StorageFull

log = logging.getLogger(__name__)

#: what ClickHouse (and the OS under it) says when a write finds no room
_SPACE_ERRORS = ("NOT_ENOUGH_SPACE", "not enough space", "No space left on device", "errno: 28,", "ENOSPC")

#: seconds a client is told to wait; the agent's spool retries after it
RETRY_AFTER_S = 5
#: seconds ingest is refused without a try after a write failed for space: the next
#: write would fail the same way until someone frees space, and that takes a moment
HOLD_S = 1.0


def is_space_error(message: str) -> bool:
    return any(s in message for s in _SPACE_ERRORS)


def storage_full(detail: str) -> StorageFull:
    return StorageFull(f"the store's disk is full ({detail}); ingest resumes by itself once space is freed,"
                       f" reads keep working", retry_after=RETRY_AFTER_S)


class DiskGuard:
    """``path``: the data directory on this machine (None for a remote ClickHouse, whose
    own disk only its refusals tell of)."""

    def __init__(self, path: str | None, min_free_bytes: int, *, clock: Callable[[], float] = time.monotonic):
        self.path = path
        self.min_free = min_free_bytes
        self._clock = clock
        self._lock = threading.Lock()
        #: when a write last failed for space
        self._failed_at: float | None = None
        #: refusing now: the operator hears of a streak once when it starts and once when it ends
        self._full = False

    def free_bytes(self) -> int | None:
        if self.path is None:
            return None
        st = os.statvfs(self.path)
        return st.f_bavail * st.f_frsize

    def check(self) -> None:
        """Raise :class:`StorageFull` while the store has no room for ingest."""
        with self._lock:
            failed_at = self._failed_at
        why = None
        if failed_at is not None and self._clock() - failed_at < HOLD_S:
            why = "a write just failed for lack of space"
        elif self.min_free > 0:
            free = self.free_bytes()
            if free is not None and free < self.min_free:
                why = (f"{free // 2**20} MiB free on the data directory's filesystem, under the"
                       f" min_free_disk_mb floor of {self.min_free // 2**20} MiB")
        if why is not None:
            if not self._full:
                log.warning("store disk full, ingest refused with 503 until space is freed: %s", why)
            self._full = True
            raise storage_full(why)
        if self._full:
            log.warning("store disk has room again; ingest resumed")
            self._full = False

    def failed(self) -> None:
        """A write failed for lack of space."""
        with self._lock:
            self._failed_at = self._clock()
