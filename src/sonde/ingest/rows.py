"""What the logs and spans walks share: attribute maps kept as flat lists (one Arrow
MapArray at the end, never a dict per row in the table), and group columns expanded
from one value per group."""

from __future__ import annotations

from collections.abc import Sequence

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

    def to_arrow(self, type_: pa.MapType) -> pa.Array:
        return pa.MapArray.from_arrays(
            pa.array(np.array(self.offsets, dtype=np.int32)),
            pa.array(self.keys, type_.key_type), pa.array(self.vals, type_.item_type),
        ).cast(type_)


def expand_groups(groups: Sequence[tuple], gidx: Sequence[int], fields: Sequence[str],
                  types: dict[str, pa.DataType]) -> dict[str, pa.Array]:
    """Group columns for every row: one value per group, taken by each row's group index."""
    take = pa.array(np.array(gidx, dtype=np.int32))
    return {name: pa.array([g[j] for g in groups], types[name]).take(take) for j, name in enumerate(fields)}
