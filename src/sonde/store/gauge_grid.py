"""What store/gauge_sums.py keeps per entity: its sums per key in two rings of buckets
(:class:`Grid`), each series' newest sample (:class:`Entity`), and beside them the rows
per (metric, replica) and five minutes that the source choice reads
(:class:`GaugePresence`)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from .five_minutes import BUCKET_NS, Field, FiveMinutes
from .memory import ENTITIES, UPTO

FINE_NS, COARSE_NS = BUCKET_NS, 1800 * 10**9
#: per key: (metric, series, unit, replica, node_rank, gpu)
Key = tuple[str, int, str, str, int, str]


class GaugePresence(FiveMinutes):
    """Rows of any kind per (metric, replica) and five minutes: the per-replica source
    choice counts those, as the statement's does. GaugeSums counts a commit's rows as it
    reads them (``_present``) and adds them here."""

    KEY = ("metric", "replica")
    FIELDS = (Field("rows", np.int32),)

    @staticmethod
    def load_sql(table: str) -> str:
        return ("SELECT ws, scope, entity, metric, replica, intDiv(toUnixTimestamp64Nano(ts), {bucket:Int64}) AS b,"
                f" toInt32(count()) AS rows FROM {table} WHERE metric IN {{metrics:Array(String)}}"
                f" AND ts >= fromUnixTimestamp64Nano({{lo:Int64}}) AND {UPTO} AND {ENTITIES}"
                " GROUP BY ws, scope, entity, metric, replica, b")


class Grid:
    """One entity's sums per key in buckets of ``width`` ns: a ring of ``size`` slots, a
    bucket in slot ``bucket % size`` (its stamp says which), arrays (keys, slots)."""

    def __init__(self, width: int, size: int):
        self.width, self.size = width, size
        self.stamp = np.full(size, -1, dtype=np.int64)
        self.i = np.zeros((0, size))
        self.c = np.zeros((0, size), dtype=np.int64)

    def grow(self, n: int) -> None:
        if n > self.i.shape[0]:
            more = max(n, 2 * self.i.shape[0]) - self.i.shape[0]
            self.i = np.vstack([self.i, np.zeros((more, self.size))])
            self.c = np.vstack([self.c, np.zeros((more, self.size), dtype=np.int64)])

    def add(self, key: np.ndarray, bucket: np.ndarray, integral: np.ndarray, covered: np.ndarray) -> None:
        slot = bucket % self.size
        newest = np.full(self.size, -1, dtype=np.int64)
        np.maximum.at(newest, slot, bucket)
        taken = np.flatnonzero(newest > self.stamp)
        self.stamp[taken] = newest[taken]
        self.i[:, taken], self.c[:, taken] = 0.0, 0
        ok = bucket == self.stamp[slot]  # older than the slot's bucket: past the horizon
        flat = key[ok] * self.size + slot[ok]
        np.add.at(self.i.reshape(-1), flat, integral[ok])
        np.add.at(self.c.reshape(-1), flat, covered[ok])

    def window(self, b0: int, b1: int, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        bucket = np.arange(b0, b1, dtype=np.int64)
        slot = bucket % self.size
        held = self.stamp[slot] == bucket
        return (np.where(held, self.i[keys][:, slot], 0.0), np.where(held, self.c[keys][:, slot], 0))


class Entity:
    def __init__(self, fine: int, coarse: int):
        self.fine, self.coarse = Grid(FINE_NS, fine), Grid(COARSE_NS, coarse)
        self.keys: list[Key] = []
        self.index: dict[tuple[int, str], int] = {}
        # per series: its newest sample
        self.series: dict[int, int] = {}
        self.t = np.zeros(0, dtype=np.int64)
        self.v = np.zeros(0)
        self.e = np.zeros(0, dtype=np.int64)
        self.k = np.zeros(0, dtype=np.int64)  # its key (series, unit)
        self.dirty: list[tuple[int, int]] = []

    def key_of(self, keys: list[Key]) -> np.ndarray:
        out = np.empty(len(keys), dtype=np.int64)
        for j, key in enumerate(keys):
            at = self.index.get((key[1], key[2]))
            if at is None:
                at = self.index[(key[1], key[2])] = len(self.keys)
                self.keys.append(key)
            out[j] = at
        self.fine.grow(len(self.keys))
        self.coarse.grow(len(self.keys))
        return out

    def forget_before(self, cutoff: int) -> bool:
        """Drop the series whose newest sample is older than ``cutoff`` (none of their
        holds is in a bucket still read) and their keys; False when none is left."""
        n = len(self.series)
        fresh = np.flatnonzero(self.t[:n] >= cutoff)
        ids = list(self.series)  # in index order: an index is the count before it
        kept = {ids[i]: j for j, i in enumerate(fresh.tolist())}
        if len(kept) == n and all(key[1] in kept for key in self.keys):
            return True
        keep = np.array([j for j, key in enumerate(self.keys) if key[1] in kept], dtype=np.int64)
        remap = np.full(len(self.keys), -1, dtype=np.int64)
        remap[keep] = np.arange(keep.size)
        self.keys = [self.keys[j] for j in keep.tolist()]
        self.index = {(key[1], key[2]): j for j, key in enumerate(self.keys)}
        for grid in (self.fine, self.coarse):
            grid.i, grid.c = grid.i[keep], grid.c[keep]
        self.series = kept
        self.t, self.v, self.e, self.k = self.t[fresh], self.v[fresh], self.e[fresh], remap[self.k[fresh]]
        return bool(kept)

    def series_of(self, ids: list[int]) -> np.ndarray:
        out = np.empty(len(ids), dtype=np.int64)
        for j, s in enumerate(ids):
            at = self.series.get(s)
            if at is None:
                at = self.series[s] = len(self.series)
            out[j] = at
        if len(self.series) > self.t.size:
            more = max(len(self.series), 2 * self.t.size) - self.t.size
            self.t = np.append(self.t, np.full(more, -1, dtype=np.int64))
            self.v, self.e = np.append(self.v, np.zeros(more)), np.append(self.e, np.zeros(more, np.int64))
            self.k = np.append(self.k, np.zeros(more, np.int64))
        return out


def numbers(column: pa.ChunkedArray) -> np.ndarray:
    """A numeric column as one numpy array (each chunk's buffer, then one copy)."""
    chunks = [c.to_numpy(zero_copy_only=False) for c in column.chunks]
    return np.concatenate(chunks) if len(chunks) != 1 else chunks[0]
