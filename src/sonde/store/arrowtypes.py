"""The Arrow type ingest builds a column of each ClickHouse type with (``schema.ARROW_SCHEMAS``).

Wrappers are unwrapped: LowCardinality and an aggregate's function only change how
ClickHouse stores the values, and Enum8 columns are written by label.
"""

from __future__ import annotations

import pyarrow as pa

_PLAIN = {
    "String": pa.string(), "Bool": pa.bool_(), "Float64": pa.float64(),
    "Int8": pa.int8(), "Int32": pa.int32(), "Int64": pa.int64(),
    "UInt8": pa.uint8(), "UInt16": pa.uint16(), "UInt32": pa.uint32(), "UInt64": pa.uint64(),
}
#: DateTime64's precision (digits after the second) -> Arrow's unit
_PRECISION = {"9": "ns", "6": "us", "3": "ms", "0": "s"}


def _args(inner: str) -> list[str]:
    """Top-level arguments of a type: ``"LowCardinality(String), String"`` -> two."""
    out, depth, begin = [], 0, 0
    for i, ch in enumerate(inner):
        depth += (ch == "(") - (ch == ")")
        if ch == "," and depth == 0:
            out.append(inner[begin:i].strip())
            begin = i + 1
    return [*out, inner[begin:].strip()]


def arrow_type(ch_type: str) -> pa.DataType:
    if ch_type in _PLAIN:
        return _PLAIN[ch_type]
    head, _, rest = ch_type.partition("(")
    if head.startswith("Enum"):
        return pa.string()
    args = _args(rest.removesuffix(")"))
    if head == "DateTime" and args == ["'UTC'"]:
        return pa.timestamp("s", tz="UTC")
    if head == "DateTime64" and args[1:] == ["'UTC'"] and args[0] in _PRECISION:
        return pa.timestamp(_PRECISION[args[0]], tz="UTC")
    if head == "LowCardinality":
        return arrow_type(args[0])
    if head == "SimpleAggregateFunction":
        return arrow_type(args[1])
    if head == "Array":
        return pa.list_(arrow_type(args[0]))
    if head == "Map":
        return pa.map_(arrow_type(args[0]), arrow_type(args[1]))
    raise ValueError(f"no Arrow type for the ClickHouse type {ch_type!r}: add it to store/arrowtypes.py")
