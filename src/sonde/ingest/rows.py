"""What the logs and spans walks share: attribute maps kept as flat lists (one Arrow
MapArray at the end, never a dict per row in the table), and group columns expanded
from one value per group."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import chain

import numpy as np
import pyarrow as pa

from .proto import decode_kv


class AttrRows:
    """Per row, its attributes; each distinct raw KeyValue decoded once (ingest/proto.py)."""

    def __init__(self):
        self.keys: list[str] = []
        self.vals: list[str] = []
        self.offsets: list[int] = [0]
        self._kv: dict[bytes, tuple[str, str]] = {}

    def decode(self, raws) -> dict[str, str]:
        """The raw KeyValues of a view message as ``{key: value}``; the last of a key wins."""
        attrs = {}
        cache = self._kv
        for raw in raws:
            kv = cache.get(raw)
            if kv is None:
                kv = cache[raw] = decode_kv(raw)
            attrs[kv[0]] = kv[1]
        return attrs

    def append(self, attrs: dict[str, str]) -> None:
        """The next row's map, keys sorted (one order for equal maps)."""
        if attrs:
            keys = sorted(attrs)
            self.keys.extend(keys)
            self.vals.extend(attrs[k] for k in keys)
        self.offsets.append(len(self.keys))

    @staticmethod
    def sorted_pairs(attrs: dict[str, str]) -> tuple[list[str], list[str]]:
        """A map as :func:`map_column` takes it: keys sorted, values in their order."""
        keys = sorted(attrs)
        return keys, [attrs[k] for k in keys]

    def to_arrow(self, type_: pa.MapType) -> pa.Array:
        return _map_array(np.array(self.offsets, dtype=np.int32), self.keys, self.vals, type_)


def map_column(rows: Sequence[tuple[list[str], list[str]]], type_: pa.MapType) -> pa.Array:
    """One map per row from ``(keys, values)`` pairs (:meth:`AttrRows.sorted_pairs`); rows
    may share a pair: the flat lists are made here, in C, not row by row in Python."""
    offsets = np.zeros(len(rows) + 1, np.int32)
    np.cumsum(np.fromiter((len(k) for k, _ in rows), np.int32, len(rows)), out=offsets[1:])
    keys = list(chain.from_iterable(k for k, _ in rows))
    vals = list(chain.from_iterable(v for _, v in rows))
    return _map_array(offsets, keys, vals, type_)


def _map_array(offsets: np.ndarray, keys: list[str], vals: list[str], type_: pa.MapType) -> pa.Array:
    return pa.MapArray.from_arrays(
        pa.array(offsets), pa.array(keys, type_.key_type), pa.array(vals, type_.item_type)).cast(type_)


def expand_groups(groups: Sequence[tuple], gidx: Sequence[int], fields: Sequence[str],
                  types: dict[str, pa.DataType]) -> dict[str, pa.Array]:
    """Group columns for every row: one value per group, taken by each row's group index."""
    take = pa.array(np.array(gidx, dtype=np.int32))
    return {name: pa.array([g[j] for g in groups], types[name]).take(take) for j, name in enumerate(fields)}


def hex_strings(ids: list[bytes]) -> pa.Array:
    """Binary ids as one Arrow string column of lower-case hex: one ``bytes.hex`` over
    all of them, not a Python string per id (an empty id is an empty string)."""
    lengths = np.fromiter(map(len, ids), np.int64, len(ids))
    offsets = np.zeros(len(ids) + 1, np.int32)
    np.cumsum(lengths * 2, out=offsets[1:])
    data = b"".join(ids).hex().encode()
    return pa.Array.from_buffers(pa.string(), len(ids), [None, pa.py_buffer(offsets), pa.py_buffer(data)])
