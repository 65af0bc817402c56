"""Request totals by step and status class, from the request rollup where it is exact.

``request_rollup`` (store/schema.py), filled at insert by a materialized view, holds per
series and bucket of 1, 5 or 30 minutes the observations of the HTTP duration
histograms' points (``n``) and how many points there were. A step's request total is
the sum of the count deltas whose ``ts`` falls in it (query/counters.py), so a bucket
adds up exactly into a step when it lies wholly inside it: when the window starts on a
bucket boundary and the step is a whole number of buckets (or the window is one step).
The largest such bucket is read, up to the last whole bucket before the window's end;
the points after it are read raw. Any other window is read raw, with the same answer.
Late points go into their own bucket as they arrive, so nothing is ever recomputed.

Both sources give rows ``(k, cls, metric, replica, n, points)`` for one statement
(query/histograms.status_counts), which chooses each replica's source over them.
"""

from __future__ import annotations

from typing import Any

from ..store.schema import REQUEST_LEVELS_S, REQUEST_METRICS, STATUS_COLUMN
from .catalogue import VendorMetric
from .scan import STEP, Scan
from .window import Window

TABLE = "request_rollup"
#: a point's HTTP status class (2 for 2xx ... 0 when none or unparsable), from the status
#: code computed at insert: the first of the request sources' status attributes it carries
STATUS_CLASS = f"intDiv({STATUS_COLUMN.name}, 100)"
HISTOGRAM_ROW = "kind IN ('histogram', 'exp_histogram')"


def level(window: Window) -> int | None:
    """The longest bucket (seconds) whose buckets each fall in one step of ``window``
    and of which the window holds at least one whole; None: read raw points."""
    for b in reversed(REQUEST_LEVELS_S):
        b_ms = b * 1000
        if (window.start_ms % b_ms == 0 and (window.n_steps == 1 or window.step_ms % b_ms == 0)
                and window.end_ms // b_ms * b_ms > window.start_ms):
            return b
    return None


def rows(scan: Scan, vm: VendorMetric) -> tuple[str, dict[str, Any]]:
    """A subquery of rows ``(k, cls, metric, replica, n, points)`` over the window: the
    rollup's buckets where :func:`level` allows, raw points for the rest."""
    w = scan.window
    b = level(w) if set(vm.source_names) <= set(REQUEST_METRICS) and not any(s.match for s in vm.sources) else None
    # points from here to the window's end are read raw: all of them without a level
    cut_ns = w.start_ns if b is None else w.end_ms // (b * 1000) * b * 1000 * 1_000_000
    more, params = scan.exclusions(vm)
    parts = []
    if b is not None:
        parts.append(
            "SELECT intDiv(toInt64(toUnixTimestamp(ts)) * 1000000000 - {t0:Int64}, {step:Int64}) AS k, cls, metric,"
            f" replica, n, points FROM {scan.store.t(TABLE)} WHERE ws = {{ws:String}} AND scope = {{scope:String}}"
            " AND entity = {entity:String} AND res = {r_res:UInt32} AND metric IN {metrics:Array(String)}"
            " AND ts >= toDateTime({r_lo:Int64}, 'UTC') AND ts < toDateTime({r_hi:Int64}, 'UTC')" + more)
        params.update(r_res=b, r_lo=w.start_ms // 1000, r_hi=cut_ns // 10**9, metrics=list(vm.source_names))
    if cut_ns < w.end_ns:
        where, raw = scan.where(vm.source_names, lo_ns=cut_ns, vm=vm)
        parts.append(f"SELECT {STEP} AS k, {STATUS_CLASS} AS cls, metric, replica, if({HISTOGRAM_ROW}, count, 0) AS n,"
                     f" toUInt64({HISTOGRAM_ROW}) AS points FROM {scan.table} {where}")
        params.update(raw)
    return "(" + " UNION ALL ".join(parts) + ")", params
