"""HISTOGRAM metrics: quantiles and the average, merged across replicas and the step.

Two statements, both aggregating per step in ClickHouse:

1. Totals and explicit buckets, per (step, kind, metric, unit, bounds, scale): count,
   sum, min/max (and whether every point sent them), the zero bucket, the index range
   the exponential buckets cover, and ``sumForEach(buckets)``: explicit histograms
   with identical bounds add bucket by bucket.
2. Only when exponential points exist, per side (positive, then negative if any):
   every point downscaled to the smallest scale of its step (index >> (scale -
   min_scale), OTel's downscaling, exact for negative indexes too since the shift is
   arithmetic) and its bucket array placed at that step's lowest index, so arrays of
   one step add element-wise with ``sumForEach``. Adding arrays beats exploding them
   into (index, count) rows (ARRAY JOIN + GROUP BY) or ``sumMap`` by about 3x here.

Python then turns each step's merged buckets into quantiles (``quantiles.py``: the
steps holding one explicit layout all at once, the others one by one) and
converts units (a unit factor per (metric, unit) group); ``avg`` is sum / count. A
step whose points hold no observations is null.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
import pyarrow as pa

from . import recent_counts
from .catalogue import QUANTILES, VendorMetric
from .quantiles import ExpBuckets, ExplicitBuckets, histogram_quantiles, one_layout_quantiles
from ..store.schema import STATUS_COLUMN
from .scan import STEP, Scan


#: a point's HTTP status class (2 for 2xx ... 0 when none or unparsable), from the status
#: code computed at insert: the first of the request sources' status attributes it carries
STATUS_CLASS = f"intDiv({STATUS_COLUMN.name}, 100)"


_HISTOGRAM_ROW = "kind IN ('histogram', 'exp_histogram')"
# statement 1's columns: per group, then (when the groups are per replica) merged
_TOTALS = (("sum(count)", "sum(i_n)", "n"), ("sum(sum)", "sum(i_s)", "s"),
           ("minIf(min, NOT isNaN(min))", "min(i_mn)", "mn"), ("maxIf(max, NOT isNaN(max))", "max(i_mx)", "mx"),
           ("countIf(isNaN(min))", "sum(i_no_min)", "no_min"), ("countIf(isNaN(max))", "sum(i_no_max)", "no_max"),
           ("sum(zero_count)", "sum(i_zero)", "zero"),
           ("countIf(notEmpty(pos_buckets))", "sum(i_with_pos)", "with_pos"),
           ("minIf(pos_offset, notEmpty(pos_buckets))", "minIf(i_pos_lo, i_with_pos > 0)", "pos_lo"),
           ("countIf(notEmpty(neg_buckets))", "sum(i_with_neg)", "with_neg"),
           ("minIf(neg_offset, notEmpty(neg_buckets))", "minIf(i_neg_lo, i_with_neg > 0)", "neg_lo"),
           ("sumForEach(buckets)", "sumForEach(i_buckets)", "buckets"))


def totals(scan: Scan, vm: VendorMetric, by_status: bool = False) -> list[dict]:
    """Statement 1. Split by status class when ``by_status`` (request totals read the
    same points: one scan can serve both, the quantiles merge the classes back).
    Choosing the source in the statement, it groups per replica too, keeps each
    replica's first source and merges the replicas; ``replicas`` then lists a group's
    replicas, which statement 2 reads alone. A window on the five-minute buckets the
    store sums in memory is answered from them unless split by status or holding an
    exponential histogram (query/recent_counts.py)."""
    sums = None if by_status else _kept(scan, vm, "request_latency")
    if sums is not None:
        rows = recent_counts.latency_totals(sums, vm, t0=scan.window.start_ns, step=scan.window.step_ns,
                                            chooses=scan.chooses(vm), excluded=scan.excluded.get(vm.name, {}))
        if rows is not None:
            return rows
    where, params = scan.where(vm.source_names, vm=vm)
    cls = STATUS_CLASS if by_status else "0"
    keys = f"{STEP} AS k, toString(kind) AS kind, toString(metric) AS metric, toString(unit) AS unit, bounds, scale"
    if not scan.chooses(vm):
        sql = f"""
        SELECT {keys}, {cls} AS cls, {", ".join(f"{a} AS {name}" for a, _, name in _TOTALS)}
        FROM {scan.table} {where} AND {_HISTOGRAM_ROW}
        GROUP BY k, kind, metric, unit, bounds, scale, cls
        """
    else:
        first, sparams = scan.first_source(vm)
        params.update(sparams)
        sql = f"""
        SELECT k, kind, metric, unit, bounds, scale, cls, {", ".join(f"{b} AS {name}" for _, b, name in _TOTALS)},
               groupArray(replica) AS replicas
        FROM (
            SELECT {keys}, {cls} AS cls, toString(replica) AS replica,
                   {", ".join(f"{a} AS i_{name}" for a, _, name in _TOTALS)}
            FROM {scan.table} {where}
            GROUP BY k, kind, metric, unit, bounds, scale, cls, replica
            QUALIFY {first}
        )
        WHERE {_HISTOGRAM_ROW}
        GROUP BY k, kind, metric, unit, bounds, scale, cls
        """
    return scan.run(sql, {**scan.params(), **params}).to_pylist()


def _kept(scan: Scan, vm: VendorMetric, memory: str):
    """The store's five-minute buckets of ``vm`` for the scan's window, where they answer it."""
    w = scan.window
    if not recent_counts.aligned(w.start_ns, w.end_ns, w.step_ns) or any(s.match for s in vm.sources):
        return None
    return scan.remembered((memory, vm.source_names), lambda: scan.store.request_window(
        memory, scan.ws, scan.scope, scan.entity, w.start_ns, w.end_ns, vm.source_names))


def in_memory(scan: Scan, vm: VendorMetric) -> bool:
    """Whether the store's memories hold both the request counts and the latency sums
    of ``vm``'s histograms for the scan's window."""
    return counts_in_memory(scan, vm) and _kept(scan, vm, "request_latency") is not None


def counts_in_memory(scan: Scan, vm: VendorMetric) -> bool:
    """Whether the store's request counts hold ``vm``'s histograms for the scan's window:
    all that request totals asked alone read (:func:`status_counts`)."""
    return _kept(scan, vm, "request_counts") is not None


def status_counts(scan: Scan, vm: VendorMetric) -> pa.Table:
    """Rows ``{k, cls, n}``: observations per step and status class, the part of
    statement 1 that request totals use. Asked for alone (no latency of the same
    histograms in the request), it reads no buckets, bounds or extremes: 3x less
    time over a day of one deployment (docs/benchmarks.md). A window on the five-minute
    buckets the store counts in memory is answered from them (query/recent_counts.py),
    for classes 2xx-5xx."""
    counts = _kept(scan, vm, "request_counts")
    if counts is not None:
        return recent_counts.status_counts(counts, vm, t0=scan.window.start_ns, step=scan.window.step_ns,
                                           chooses=scan.chooses(vm), excluded=scan.excluded.get(vm.name, {}))
    where, params = scan.where(vm.source_names, vm=vm)
    cls = STATUS_CLASS
    if not scan.chooses(vm):
        sql = f"""
        SELECT k, {cls} AS cls, sum(count) AS n FROM (
            SELECT {STEP} AS k, count, {STATUS_COLUMN.name} FROM {scan.table} {where} AND {_HISTOGRAM_ROW}
        )
        GROUP BY k, cls
        """
    else:  # per replica and source first, as in statement 1
        first, sparams = scan.first_source(vm)
        params.update(sparams)
        sql = f"""
        SELECT k, cls, sum(n) AS n FROM (
            SELECT k, {cls} AS cls, metric, replica, sumIf(count, {_HISTOGRAM_ROW}) AS n,
                   countIf({_HISTOGRAM_ROW}) AS points
            FROM (SELECT {STEP} AS k, count, {STATUS_COLUMN.name}, metric, replica, kind FROM {scan.table} {where})
            GROUP BY k, cls, metric, replica
            QUALIFY {first} AND points > 0
        )
        GROUP BY k, cls
        """
    return scan.run(sql, {**scan.params(), **params})


def _downscaled(side: str) -> str:
    """A point's ``side`` bucket array at scale ``scale - d`` (d >= 0), starting at
    index ``o = offset >> d``: new bucket t sums the old buckets it covers, a slice."""
    arr, off = f"{side}_buckets", f"{side}_offset"
    first = f"greatest(bitShiftLeft(o + t, d) - {off}, 0)"
    return (f"if(d = 0, {arr}, arrayMap(t -> arraySum(arraySlice({arr}, {first} + 1,"
            f" least(bitShiftLeft(o + t + 1, d) - {off}, length({arr})) - {first})),"
            f" range(toUInt64(bitShiftRight(toInt64({off}) + length({arr}) - 1, d) - o + 1))))")


def _exp_buckets(scan: Scan, vm: VendorMetric, side: str, min_scale: list[int], base: list[int],
                 kept: dict[str, set[str]] | None = None) -> list[dict]:
    """``kept``: when statement 1 chose the sources, the replicas it kept per source."""
    where, params = scan.where(vm.source_names, vm=vm)
    if kept is not None:
        pairs = []
        for i, (metric, replicas) in enumerate(sorted(kept.items())):
            pairs.append(f"(metric = {{km{i}:String}} AND replica IN {{kr{i}:Array(String)}})")
            params[f"km{i}"], params[f"kr{i}"] = metric, sorted(replicas)
        where += f" AND ({' OR '.join(pairs) or 'false'})"
    sql = f"""
    SELECT k, metric, unit,
           sumForEach(arrayConcat(arrayWithConstant(toUInt64(o - {{base:Array(Int64)}}[k + 1]), toUInt64(0)), b))
             AS counts
    FROM (
        SELECT k, metric, unit, o, sumForEach(b) AS b FROM (
            SELECT {STEP} AS k, toString(metric) AS metric, toString(unit) AS unit,
                   toInt64(scale) - {{ms:Array(Int64)}}[k + 1] AS d,
                   bitShiftRight(toInt64({side}_offset), greatest(d, 0)) AS o, {_downscaled(side)} AS b
            FROM {scan.table} {where} AND kind = 'exp_histogram' AND notEmpty({side}_buckets)
              -- Points that arrived after statement 1 may lie below the scale or index
              -- it found; they are not in its totals either, so they are left out here.
              AND d >= 0 AND o >= {{base:Array(Int64)}}[k + 1]
        )
        GROUP BY k, metric, unit, o
    )
    GROUP BY k, metric, unit
    """
    return scan.run(sql, {**scan.params(), **params, "ms": min_scale, "base": base}).to_pylist()


def _source(vm: VendorMetric, metric: str):
    return next(s for s in vm.sources if s.metric == metric)


def quantile_steps(scan: Scan, vm: VendorMetric, groups: list[dict] | None = None) -> dict[int, list[Any]]:
    """Per step index: [q0.5, q0.9, q0.95, q0.99, avg] in the vendor's unit; ``groups``
    are statement 1's rows when the caller already has them."""
    groups = totals(scan, vm) if groups is None else groups
    if not groups:
        return {}
    factors: dict[tuple[str, str], float] = {}
    for r in groups:
        r["f"] = factors.setdefault((r["metric"], r["unit"]), vm.factor_of(r["unit"], _source(vm, r["metric"])))
    exp_rows = [r for r in groups if r["kind"] == "exp_histogram"]
    exp: dict[int, dict[float, ExpBuckets]] = defaultdict(dict)
    if exp_rows:
        n = scan.window.n_steps
        min_scale = [0] * n
        for k in {r["k"] for r in exp_rows}:
            min_scale[k] = min(r["scale"] for r in exp_rows if r["k"] == k)
        # statement 1 chose the sources: statement 2 reads the replicas it kept
        kept: dict[str, set[str]] | None = defaultdict(set) if scan.chooses(vm) else None
        for r in exp_rows:
            h = exp[r["k"]].setdefault(r["f"], ExpBuckets(r["f"], min_scale[r["k"]]))
            h.zero += r["zero"]
            if kept is not None:
                kept[r["metric"]].update(r["replicas"])
        for side in ("pos", "neg"):
            rows = [r for r in exp_rows if r[f"with_{side}"]]
            if not rows:
                continue
            base = [0] * n
            for k in {r["k"] for r in rows}:
                base[k] = min(r[f"{side}_lo"] >> (r["scale"] - min_scale[k]) for r in rows if r["k"] == k)
            for r in _exp_buckets(scan, vm, side, min_scale, base, kept):
                h = exp.get(r["k"], {}).get(factors.get((r["metric"], r["unit"])))
                if h is not None:  # else: the group arrived after statement 1
                    h.add(side, base[r["k"]], r["counts"])
    by_step: dict[int, list[dict]] = defaultdict(list)
    for r in groups:
        by_step[r["k"]].append(r)
    out: dict[int, list[Any]] = {}
    one_layout: dict[tuple, list[tuple[int, list[dict], float | None, float | None]]] = defaultdict(list)
    for k, rows in by_step.items():
        n_obs = sum(r["n"] for r in rows)
        if n_obs == 0:
            continue
        # min/max are facts about the data only when every merged point sent them.
        mn = min(r["mn"] * r["f"] for r in rows) if all(r["no_min"] == 0 for r in rows) else None
        mx = max(r["mx"] * r["f"] for r in rows) if all(r["no_max"] == 0 for r in rows) else None
        out[k] = [None] * len(QUANTILES) + [sum(r["s"] * r["f"] for r in rows) / n_obs]
        layouts = {(tuple(r["bounds"]), r["f"]) for r in rows}
        if k not in exp and len(layouts) == 1 and all(r["kind"] == "histogram" for r in rows):
            one_layout[layouts.pop()].append((k, rows, mn, mx))  # answered below, all steps at once
            continue
        explicit = [ExplicitBuckets(r["f"], r["bounds"], r["buckets"]) for r in rows if r["kind"] == "histogram"]
        qs = histogram_quantiles(list(exp.get(k, {}).values()), explicit, QUANTILES, mn, mx)
        out[k][:len(QUANTILES)] = qs or [None] * len(QUANTILES)
    for (bounds, f), steps in one_layout.items():
        counts = np.array([np.sum([r["buckets"] for r in rows], axis=0) for _, rows, _, _ in steps])
        mn = np.array([np.nan if m is None else m for _, _, m, _ in steps])
        mx = np.array([np.nan if m is None else m for _, _, _, m in steps])
        qs, ok = one_layout_quantiles(np.asarray(bounds, dtype=np.float64) * f, counts, mn, mx, QUANTILES)
        for (k, rows, lo, hi), q, done in zip(steps, qs.tolist(), ok):
            if not done:  # a case of the per-step estimator (one_layout_quantiles says which)
                q = histogram_quantiles([], [ExplicitBuckets(f, list(bounds), r["buckets"]) for r in rows],
                                        QUANTILES, lo, hi) or [None] * len(QUANTILES)
            out[k][:len(QUANTILES)] = q
    return out
