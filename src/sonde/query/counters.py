"""COUNTER metrics: the increase over each step.

Stored sums are deltas over (start_ts, ts] (docs/architecture.md), so a step's
increase is the sum of the deltas whose ``ts`` falls in it; a label set with no point
in a step is null there (no data), while points adding up to 0 are a real 0.

- Value counters (CPU seconds, restarts) add up monotonic sums, per replica.
- Request totals count the requests the HTTP duration histograms saw: their ``count``
  deltas by status class, the class being the hundreds of the status code attribute
  (stable or older convention). Codes outside 200-599, or none, fall in no class.
  The histogram statement computes them (``histograms.totals``); a request for both
  request totals and latency reads those points once (query/metrics.py).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from .catalogue import VendorMetric
from .gauges import label_columns
from .scan import STEP, Scan


_COUNTER_ROW = "kind = 'sum' AND monotonic"


def value_increase(scan: Scan, vm: VendorMetric) -> pa.Table:
    """Rows ``{k, l_host, l_device, v}`` for a counter, by the label columns of its
    label kind (``gauges.label_columns``)."""
    where, params = scan.where(vm.source_names, vm=vm)
    factor, fparams = scan.factor(vm)
    if scan.chooses(vm):
        # per replica and source first, to keep each replica's first source (of
        # whatever kind, as the discovery counts them), then per label set
        first, sparams = scan.first_source(vm)
        sql = f"""
        SELECT k, l_host, l_device, sum(v) AS v FROM (
            SELECT {STEP} AS k, {label_columns(vm.labels)}, metric, replica,
                   sumIf(value * {factor}, {_COUNTER_ROW}) AS v, countIf({_COUNTER_ROW}) AS points
            FROM {scan.table} {where}
            GROUP BY k, l_host, l_device, metric, replica
            QUALIFY {first} AND points > 0
        )
        GROUP BY k, l_host, l_device
        """
        params.update(sparams)
    else:
        sql = f"""
        SELECT {STEP} AS k, {label_columns(vm.labels)}, sum(value * {factor}) AS v
        FROM {scan.table} {where} AND {_COUNTER_ROW}
        GROUP BY k, l_host, l_device
        """
    return scan.run(sql, {**scan.params(), **params, **fparams})


def requests_by_status(totals: pa.Table | list[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Requests per step and status class, as arrays: the step, the class (2 for 2xx
    ... 5) and the count, one entry a (step, class) with any histogram point. From the
    duration histograms' counts by status (``histograms.status_counts``, a table) or
    their totals split by status (``histograms.totals``, grouped by layout too)."""
    if isinstance(totals, pa.Table):
        k, cls, n = (totals.column(c).to_numpy().astype(np.int64) for c in ("k", "cls", "n"))
    else:
        k, cls, n = (np.fromiter((r[c] for r in totals), dtype=np.int64, count=len(totals)) for c in ("k", "cls", "n"))
    keep = (cls >= 2) & (cls <= 5)
    k, cls, n = k[keep], cls[keep], n[keep]
    if not k.size:
        return k, cls, n
    order = np.lexsort((cls, k))
    k, cls, n = k[order], cls[order], n[order]
    starts = np.flatnonzero(np.append(True, (k[1:] != k[:-1]) | (cls[1:] != cls[:-1])))
    return k[starts], cls[starts], np.add.reduceat(n, starts)
