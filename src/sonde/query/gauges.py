"""GAUGE metrics: time-weighted means per step, and replica counts.

Time-weighted mean (docs/metrics.md#gauge-time-weighted-mean): each sample of a series
holds its value until the next sample of that series if that one comes within two of
the sample's intervals, else for one interval (a gap, or the series' newest sample).
A sample's interval is the time since the previous sample of its series if that is at
most ``MAX_INTERVAL_NS`` (5 minutes), else ``DEFAULT_INTERVAL_NS`` (60 s, the
OpenTelemetry SDK's default export interval: a series' first sample, one after a
longer gap). Holds are clipped to the step; the step's mean is integral / covered time,
and a step no hold reaches is null. The rule is local, so a sample's hold does not
depend on the window asked: rows up to ``LOOK_AROUND_NS`` (15 minutes) before the
window and after it are read, which holds every sample whose hold can reach into the
window, its predecessor within an interval, and its successor within two. So a step's value is the same in every window holding it,
and it can be summed ahead of the question (store/gauge_sums.py).

A label set fed by several series (deployment totals, or several attribute sets per
replica) adds the series' means up; for RATIO gauges it averages them instead, since
utilisations of one GPU do not add.

Everything is one ClickHouse statement over the rows: per series, its samples become
time-sorted arrays (``groupArray``), from which array functions give each sample's
successor and its interval;
one ``ARRAY JOIN`` makes a row per sample and its hold, a second a row per step the
hold reaches, cut at the step's edges; two GROUP BYs make per-series then
per-label-set means. This measured 1.5-2.5x faster than the same computation with
window functions (``leadInFrame`` / ``OVER``), which sort every column they carry,
8-15% faster over 24 hours and 7 days than the same arrays taken apart over six nested
levels, and 2-9% faster than computing the holds and their pieces inside the arrays
with nested lambdas (docs/benchmarks.md).
A series' labels are worked out once per series, from ``any()`` of its replica, node
rank and attributes (all three are part of the series key, so constant in it), not
per row: evaluating the GPU index rule on every row's attribute map cost a fifth of
a GPU utilisation query (docs/benchmarks.md, "Next to VictoriaMetrics and Prometheus").

Gauge sources are OTel gauges and non-monotonic sums (UpDownCounters, whose stored
value is the level); monotonic sums are counters and never feed a gauge.
"""

from __future__ import annotations

import pyarrow as pa

from . import gauge_sums, recent
from .catalogue import LabelKind, VendorMetric
from ..store.holds import DEFAULT_INTERVAL_NS, LOOK_AROUND_NS, MAX_INTERVAL_NS
from ..store.schema import GPU_COLUMN
from .scan import STEP, Scan

# the rows that feed a gauge: OTel gauges and UpDownCounters
_GAUGE_ROW = "(kind = 'gauge' OR (kind = 'sum' AND NOT monotonic))"


def label_columns(kind: LabelKind) -> str:
    """SQL selecting a row's label columns ``l_host`` and ``l_device`` (catalogue.LabelKind)."""
    if kind.per_node:
        host = "toString(node_rank)"
    elif kind is LabelKind.PLAIN:
        host = "''"
    else:
        host = "replica"
    return f"{host} AS l_host, {_device(kind)[0]} AS l_device"


def label_inputs(kind: LabelKind) -> str:
    """The stored column :func:`label_columns` reads besides replica and node rank, if
    any: the series' values carry only it (a point's attribute map is the costliest
    column of a read, so a GPU question leaves it unread)."""
    return _device(kind)[1]


def _device(kind: LabelKind) -> tuple[str, str]:
    """(SQL of ``l_device``, the stored column it reads; '' for none)."""
    if kind is LabelKind.ATTRIBUTES:  # the point's own attributes, as a JSON object
        return "toJSONString(mapSort(mapFilter((k, v) -> NOT startsWith(k, 'sonde.'), attrs)))", "attrs"
    return {"gpu": (GPU_COLUMN.name, GPU_COLUMN.name),
            "mount": ("attrs['sonde.mount']", "attrs")}.get(kind.device, ("''", ""))


def _summed(scan: Scan, vm: VendorMetric):
    """The store's gauge sums of ``vm`` for the scan's window, where they answer it."""
    if not recent.answers(vm):
        return None
    w = scan.window
    return scan.remembered(("gauge_sums", vm.source_names), lambda: scan.store.gauge_window(
        scan.ws, scan.scope, scan.entity, w.start_ns, w.end_ns, w.step_ns, vm.source_names))


def _recent(scan: Scan, vm: VendorMetric):
    """The store's recent points of ``vm`` for the scan's window and look-around, where
    it has every one."""
    if not recent.answers(vm):
        return None
    return scan.remembered(("recent", vm.source_names), lambda: scan.store.recent_rows(
        scan.ws, scan.scope, scan.entity, scan.window.start_ns - LOOK_AROUND_NS, vm.source_names))


def in_memory(scan: Scan, vm: VendorMetric) -> bool:
    """Whether the store's memories (the gauge sums, else the recent points) answer
    :func:`time_weighted` of ``vm`` for the scan's window."""
    return _summed(scan, vm) is not None or _recent(scan, vm) is not None


def time_weighted(scan: Scan, vm: VendorMetric) -> pa.Table:
    """Rows ``{k, l_host, l_device, v}``: the step, the label set and its mean. From the
    points the store keeps in memory where it has every one the window reads
    (query/recent.py), else from one statement."""
    w = scan.window
    lo, hi = w.start_ns - LOOK_AROUND_NS, w.end_ns + LOOK_AROUND_NS
    summed = _summed(scan, vm)
    if summed is not None:
        return gauge_sums.time_weighted(summed, vm, t0=w.start_ns, t1=w.end_ns, step=w.step_ns,
                                        chooses=scan.chooses(vm), excluded=scan.excluded.get(vm.name, {}))
    kept = _recent(scan, vm)
    if kept is not None:
        return recent.time_weighted(kept, vm, t0=w.start_ns, t1=w.end_ns, step=w.step_ns, lo=lo, hi=hi,
                                    chooses=scan.chooses(vm),
                                    excluded=scan.excluded.get(vm.name, {}))
    where, params = scan.where(vm.source_names, lo, hi, vm)
    factor, fparams = scan.factor(vm)
    labels_from = label_inputs(vm.labels)
    carried, any_carried = (f", {labels_from}", f", any({labels_from}) AS {labels_from}") if labels_from else ("", "")
    combine = "avg" if vm.unit_hint == "RATIO" else "sum"
    if not scan.chooses(vm):
        collect, gauge_arg, gauge_where, choice = "groupArray", "", f" AND {_GAUGE_ROW}", ""
    else:
        # The source choice (query/sources.py) made here, per series: a replica's series
        # of a later source are left out when it has any point of an earlier one around
        # the window, of whatever kind, as the discovery counts them.
        collect, gauge_arg, gauge_where = "groupArrayIf", f", {_GAUGE_ROW}", ""
        first, sparams = scan.first_source(vm, "any(metric)")
        # after the choice, series with no gauge row: no samples, no holds
        choice = f" QUALIFY {first} AND notEmpty(samples)"
        params.update(sparams)
    # Innermost to outermost: per series, its samples as time-sorted arrays (a time
    # array and a value array: one array of pairs cost an eighth more over 7 days) and
    # its interval; one row per sample with its hold [a, b) clipped to the window (ARRAY
    # JOIN of the arrays side by side, each sample beside its successor); one row per
    # step a hold reaches (ARRAY JOIN of the steps' range), where it is cut at the step's
    # edges; per (step, series) integral and covered time; per (step, label set) the
    # combined means, labelled from the series' key columns.
    sql = f"""
    SELECT k, {label_columns(vm.labels)}, {combine}(integral / covered) AS v FROM (
        SELECT kk AS k, series, any(replica) AS replica, any(node_rank) AS node_rank{any_carried},
               sum((least(b, {{t0:Int64}} + (kk + 1) * {{step:Int64}})
                    - greatest(a, {{t0:Int64}} + kk * {{step:Int64}})) AS piece) AS covered,
               sum(hv * piece) AS integral
        FROM (
            SELECT series, replica, node_rank{carried}, hv, greatest(t, {{t0:Int64}}) AS a,
                   least(if(n != 0 AND n - t <= 2 * e, n, t + e), {{t1:Int64}}) AS b
            FROM (
                SELECT series, any(replica) AS replica, any(node_rank) AS node_rank{any_carried},
                       {collect}(toUnixTimestamp64Nano(ts){gauge_arg}) AS samples,
                       arraySort(samples) AS times,
                       arraySort((v, t) -> t, {collect}(value * {factor}{gauge_arg}), samples) AS vals,
                       -- each sample's interval: the time since the one before, unless
                       -- that is beyond the cap (the first's difference from 0 is)
                       arrayMap(d -> if(d <= {{cap:Int64}}, d, {{dgap:Int64}}),
                                arrayPopFront(arrayDifference(arrayPushFront(times, 0)))) AS intervals
                FROM (  -- the rows alone: the aggregates' aliases above shadow their columns
                    SELECT series, replica, node_rank{carried}, ts, value, unit, metric, kind, monotonic
                    FROM {scan.table} {where}{gauge_where}
                )
                GROUP BY series{choice}
            )
            ARRAY JOIN times AS t, arrayPushBack(arrayPopFront(times), 0) AS n, vals AS hv, intervals AS e
            WHERE b > a
        )
        ARRAY JOIN range(intDiv(a - {{t0:Int64}}, {{step:Int64}}), intDiv(b - 1 - {{t0:Int64}}, {{step:Int64}}) + 1) AS kk
        GROUP BY k, series
    )
    GROUP BY k, l_host, l_device
    """
    return scan.run(sql, {**scan.params(cap=MAX_INTERVAL_NS, dgap=DEFAULT_INTERVAL_NS), **params, **fparams})


def replica_counts(scan: Scan) -> list[dict]:
    """Rows ``{k, active, starting}``: replicas seen in each step (any metric point
    with a replica id), split by their latest ``sonde.replica.state`` in the step.

    The state gauge carries ``state`` = starting | ready and value 1 for the current
    state; a replica whose latest such point in the step says ``starting`` is starting,
    every other replica seen is active.
    """
    base = ("WHERE ws = {ws:String} AND scope = {scope:String} AND entity = {entity:String}"
            " AND ts >= fromUnixTimestamp64Nano({t0:Int64}) AND ts < fromUnixTimestamp64Nano({t1:Int64})"
            " AND replica != ''")
    sql = f"""
    SELECT k, countIf(state != 'starting') AS active, countIf(state = 'starting') AS starting FROM (
        SELECT k, replica, argMax(state, t) AS state FROM (
            SELECT {STEP} AS k, replica, '' AS state, toInt64(0) AS t
            FROM {scan.table} {base} GROUP BY k, replica
            UNION ALL
            SELECT {STEP} AS k, replica, attrs['state'] AS state, toUnixTimestamp64Nano(ts) AS t
            FROM {scan.table} {base} AND metric = 'sonde.replica.state' AND value > 0
        )
        GROUP BY k, replica
    )
    GROUP BY k
    """
    return scan.run(sql, scan.params()).to_pylist()
