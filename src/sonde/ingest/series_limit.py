"""The per-workspace series limit (setting ``max_series_per_workspace``).

A series is the ``series`` hash of ``metric_points`` (:func:`.columns.series_hash`):
workspace, entity, metric, replica, node and point attributes. One client that puts a
request id or a timestamp in an attribute makes a new series per point, and every
series costs the store a row group per part and the cumulative state an entry; the
limit stops that at the workspace that sends it. Once a workspace holds the limit, a
point of a series it has not seen is rejected (``partial_success``, the reason names
the setting); points of known series keep coming in.

The count is this process's: the workspace's series in ``metric_points`` when the
ingestor starts, plus those admitted since. Several API replicas each count their
own, so a workspace can reach up to replicas x limit series before every replica
refuses (docs/reliability.md#hostile-input). Memory: one Python int per known series,
at most the limit per workspace.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

SETTING = "max_series_per_workspace"


class SeriesLimit:
    def __init__(self, limit: int, seed: dict[str, Iterable[int]] | None = None):
        self.limit = limit
        self._known: dict[str, set[int]] = {ws: set(hs) for ws, hs in (seed or {}).items()}
        self._lock = threading.Lock()

    @classmethod
    def from_store(cls, store, limit: int) -> SeriesLimit:
        """Seeded with every series ``metric_points`` holds, by workspace: the store's
        own count at start, so a restart does not reopen the budget."""
        table = store.ex.query_arrow(f"SELECT ws, series FROM {store.t('metric_points')} GROUP BY ws, series")
        seed: dict[str, list[int]] = {}
        for ws, h in zip(table.column("ws").to_pylist(), table.column("series").to_pylist()):
            seed.setdefault(ws, []).append(h)
        return cls(limit, seed)

    def count(self, ws: str) -> int:
        return len(self._known.get(ws, ()))

    def admit(self, ws: str, hashes: list[int]) -> list[bool] | None:
        """Per hash, whether its point may be stored; None when all may (the usual
        case, one C-level subset test). New series are admitted in order until the
        workspace is full."""
        known = self._known.get(ws)
        if known is not None and known.issuperset(hashes):
            return None
        with self._lock:
            known = self._known.setdefault(ws, set())
            keep = []
            for h in hashes:
                if h not in known and len(known) < self.limit:
                    known.add(h)
                keep.append(h in known)
        return None if all(keep) else keep

    def reason(self) -> str:
        return (f"new series over the workspace's limit of {self.limit} series ({SETTING}); "
                "points of series already stored are accepted")
