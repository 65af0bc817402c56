"""COUNTER metrics: the increase over each step.

Stored sums are deltas over (start_ts, ts] (docs/architecture.md), so a step's
increase is the sum of the deltas whose ``ts`` falls in it; a label set with no point
in a step is null there (no data), while points adding up to 0 are a real 0.

- Value counters (CPU seconds, restarts) add up monotonic sums, per replica.
- Request totals count the requests the HTTP duration histograms saw: their ``count``
  deltas by status class, the class being the hundreds of the status code attribute
  (stable or older convention). Codes outside 200-599, or none, fall in no class.
  The histogram statement computes them (``histograms.totals``), so a request for
  both request totals and latency reads those points once.
"""

from __future__ import annotations

from .catalogue import VendorMetric
from .histograms import totals
from .scan import STEP, Scan


def value_increase(scan: Scan, vm: VendorMetric) -> list[dict]:
    """Rows ``{k, l_replica, v}`` for a per-replica counter; for the ``node`` label
    kind ``l_replica`` is the node rank instead (as in ``gauges``)."""
    where, params = scan.where(vm.source_names, vm=vm)
    factor, fparams = scan.factor(vm)
    label = "toString(node_rank)" if vm.labels == "node" else "replica"
    sql = f"""
    SELECT {STEP} AS k, {label} AS l_replica, sum(value * {factor}) AS v
    FROM {scan.table} {where} AND kind = 'sum' AND monotonic
    GROUP BY k, l_replica
    """
    return scan.run(sql, {**scan.params(), **params, **fparams}).to_pylist()


def requests_by_status(scan: Scan, vm: VendorMetric) -> list[dict]:
    """Rows ``{k, l_status, v}``: requests per step and status class ('2xx'...)."""
    scan.memo.setdefault("status_sources", set()).add(vm.source_names)
    by_class: dict[tuple[int, str], int] = {}
    for r in totals(scan, vm):  # grouped by step, status class and histogram layout
        if 2 <= r["cls"] <= 5:
            key = (r["k"], f"{r['cls']}xx")
            by_class[key] = by_class.get(key, 0) + r["n"]
    return [{"k": k, "l_status": cls, "v": v} for (k, cls), v in by_class.items()]
