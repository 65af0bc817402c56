"""Prometheus data as Sonde stores it, shared by the agent's scrape (``agent/scrape.py``)
and the server's remote-write receiver (``ingest/remote_write.py``).

Both read Prometheus series and must land on the very same rows for the same series:
the unit a name implies, and what a classic histogram's cumulative ``le`` counts are as
an explicit-bucket histogram, are decided here once.
"""

from __future__ import annotations

import math
import re

#: unit from a name's suffix (``_seconds``, ``_bytes_total``...), as OTLP spells it
UNITS = {"seconds": "s", "bytes": "By", "ratio": "1", "celsius": "Cel", "watts": "W", "joules": "J",
         "percent": "%"}

# How exposition formats write an ``le`` bound (Go's strconv and Python's float repr):
# a decimal or exponent number, or an infinity. Python's float() also takes "1_000",
# " 1 " and "nan", which are not bounds.
_LE = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|[+-]?(?i:inf(?:inity)?)")


def unit_of(name: str, declared: str = "") -> str:
    """The OTLP unit of a Prometheus name: the declared unit (``# UNIT``, remote-write
    metadata) if any, else the name's last word before ``_total``; '' when unknown."""
    base = name[:-6] if name.endswith("_total") else name
    suffix = declared or base.rsplit("_", 1)[-1]
    return UNITS.get(suffix, "")


def parse_le(text: str) -> float | None:
    """An ``le`` label's bound, or None when it is not a number or infinity (NaN is not a bound)."""
    return float(text) if _LE.fullmatch(text) else None


def explicit_histogram(le: dict[float, float], count: float | None) -> tuple[tuple[float, ...], tuple[int, ...], float] | None:
    """Cumulative ``le`` counts (and ``_count``) as (bounds, per-bucket counts, total).

    Bounds are the finite ``le`` values in order; the last bucket counts what lies above
    them. The total is the ``+Inf`` bucket, else ``_count``. None when the series is not a
    histogram: no total, a count that is not finite, or counts that decrease with ``le``.
    """
    bounds = sorted(b for b in le if math.isfinite(b))
    total = le.get(math.inf, count)
    if total is None:
        return None
    cum = [le[b] for b in bounds] + [total]
    if not all(map(math.isfinite, cum)) or any(a > b for a, b in zip(cum, cum[1:])) or cum[0] < 0:
        return None
    buckets = tuple(int(round(b - a)) for a, b in zip([0.0] + cum, cum))
    return tuple(bounds), buckets, total
