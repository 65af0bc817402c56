"""Training-job metric values per series and step: two plain reads, arithmetic in numpy.

ClickHouse plans an expression tree at about 60 us a node on the project's 2-core
machine, so one statement doing the whole time-weighted computation spent more time
planning than reading (docs/training.md, Benchmark). Here SQL selects rows; numpy does
the rest.

- **Raw points** (steps under 3 minutes, or windows the rollup does not fully cover):
  the exact hold rule of ``gauges`` (a sample holds until the next one if that comes
  within two of its intervals, else one interval; its interval is the time since the
  previous sample, or 60 s where that is over 5 minutes; the rows read reach
  ``LOOK_AROUND_NS`` past the window) and the counter increases of ``counters``, per series.
- **The rollup** (``training_rollup``, store/schema.py), filled at insert time by a
  materialized view: per series and bucket of 1, 5 or 10 minutes, the samples' count,
  sum, and first and last time. The bucket is the largest that is at most a third of
  the step (and of the window). A bucket stands for its samples spread evenly over
  ``[first, last + spacing)``, spacing = (last - first) / (count - 1) (for a lone
  sample, the series' spacing in its other buckets, else one bucket length), holding
  their mean; a step boundary that cuts a bucket splits it in proportion of time
  (gauges) or of its spread samples (counters). For a series sampled evenly this is the
  time-weighted mean except in the buckets that step boundaries cut; docs/training.md
  gives the bounds, tests/test_training_rollup.py checks them.

Labels (metric, replica, node rank, GPU, mount, node id) are read once per series: from
the rollup's daily rows when it covers the window, else from the points' attribute maps.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..store.schema import GPU_INDEX, ROLLUP_FROM_SEQ, ROLLUP_LEVELS_S, ROLLUP_METRICS
from .catalogue import DIMENSIONS, VendorMetric
from .gauges import LOOK_AROUND_NS
from ..store.holds import holds
from .scan import Scan

ROLLUP = "training_rollup"
#: rollup buckets (seconds) values are read from; the daily one gives each series' labels
LEVELS_S, LABEL_LEVEL_S = ROLLUP_LEVELS_S[:-1], ROLLUP_LEVELS_S[-1]
# Per store: the rollup's mark (points with a lower seq may be missing from it). Written
# once by the migration; a re-run only raises it, so an older value stays safe to use.
_marks: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def rollup_level(window) -> int | None:
    """The rollup bucket (seconds) for ``window``: the largest of LEVELS_S at most a
    third of the step and of the window; None: read raw points."""
    span_s = min(window.step_ms, window.end_ms - window.start_ms) // 1000
    fit = [b for b in LEVELS_S if 3 * b <= span_s]
    return fit[-1] if fit else None


def factor_sql(metrics: Sequence[VendorMetric]) -> tuple[str, dict[str, Any]]:
    """SQL for the factor turning a row's value (columns ``metric``, ``unit``) into its
    metric's vendor unit: by the unit sent when it belongs to the metric's dimension,
    else by the source's own unit. Each transform reads one LowCardinality column, so
    it runs once per distinct value; a unit may name only one of the dimensions."""
    dims = sorted({vm.dimension for vm in metrics if DIMENSIONS[vm.dimension]})
    units = [(u, d, f) for d, dim in enumerate(dims) for u, f in DIMENSIONS[dim].items()]
    if len({u for u, _, _ in units}) != len(units):
        raise ValueError("a unit belongs to two of the metrics' dimensions")
    srcs = [(src, vm) for vm in metrics for src in vm.sources]
    sql = ("if(transform(unit, {f_u:Array(String)}, {f_udim:Array(Int8)}, toInt8(-1))"
           " = transform(metric, {f_m:Array(String)}, {f_dim:Array(Int8)}, toInt8(-2)),"
           " transform(unit, {f_u:Array(String)}, {f_f:Array(Float64)}, toFloat64(1)),"
           " transform(metric, {f_m:Array(String)}, {f_d:Array(Float64)}, toFloat64(1)))")
    return sql, {"f_m": [src.metric for src, _ in srcs], "f_d": [vm.factor_of("", src) for src, vm in srcs],
                 "f_dim": [dims.index(vm.dimension) if vm.dimension in dims else -1 for _, vm in srcs],
                 "f_u": [u for u, _, _ in units], "f_udim": [d for _, d, _ in units], "f_f": [f for _, _, f in units]}


def _rollup_where(scan: Scan, names: list[str], final: bool = False) -> str:
    """FROM and WHERE for the rollup rows of one level; ``final``: one row per key (the
    rows of one bucket from several inserts, summed as merges would sum them)."""
    # The rollup holds only ROLLUP_METRICS: filtering rows on them would only cost time.
    some = "" if set(names) >= set(ROLLUP_METRICS) else " AND metric IN {names:Array(String)}"
    return (f"FROM {scan.store.t(ROLLUP)}{' FINAL' if final else ''} WHERE ws = {{ws:String}} AND entity = {{entity:String}}"
            " AND res = {res:UInt32} AND ts >= toDateTime({r_lo:Int64}, 'UTC') AND ts < toDateTime({r_hi:Int64}, 'UTC')"
            + some)


def rollup_covers(scan: Scan, names: list[str]) -> bool:
    """Whether the rollup holds every raw point of these metrics around the window: none
    of them there arrived before its materialized view existed (``seq`` below the mark
    recorded then; the ``seq_idx`` skip index passes over newer granules). A store made
    with the rollup has mark 1, below every seq: nothing to check."""
    mark = _marks.get(scan.store)
    if mark is None:
        rows = scan.run(f"SELECT max(toUInt64OrZero(value)) AS m FROM {scan.store.t('meta')} WHERE key = {{k:String}}",
                        {"k": ROLLUP_FROM_SEQ}).to_pylist()
        mark = _marks[scan.store] = int(rows[0]["m"] or 0)
    if mark <= 1:
        return True
    w = scan.window
    where, params = scan.where(names, w.start_ns - LOOK_AROUND_NS, w.end_ns + LOOK_AROUND_NS)
    rows = scan.run(f"SELECT count() AS n FROM (SELECT 1 FROM {scan.table} {where} AND seq < {{mark:UInt64}} LIMIT 1)",
                    {**scan.params(), **params, "mark": mark}).to_pylist()
    return not rows[0]["n"]


@dataclass
class Labels:
    """One entry per series (sorted by id): what it feeds, its unit (``units``: whether
    it sent several over the days read, so each point needs its own factor), and its
    node's id (part of a series' identity, docs/architecture.md)."""

    series: np.ndarray  # uint64, sorted
    metric: list[str]
    replica: list[str]
    rank: list[int]
    gpu: list[str]
    mount: list[str]
    unit: list[str]
    units: list[bool]
    node_id: list[str]
    #: about how many points the series have around the window
    points: int = 0
    #: the series whose presence around / inside the window is asked (None: all)
    tracked: np.ndarray | None = None


def labels(scan: Scan, names: list[str], covered: bool) -> Labels:
    """Each series' labels: from the rollup's daily rows around the window, or (when
    the rollup may lack points) from the points themselves, whose attribute maps are
    the costliest column to read."""
    w = scan.window
    lo, hi = w.start_ns - LOOK_AROUND_NS, w.end_ns + LOOK_AROUND_NS
    common = ("SELECT series, any(metric) AS m, any(replica) AS r, any(node_rank) AS k, min(unit) AS un,"
              " min(unit) != max(unit) AS us")
    if covered:
        day = LABEL_LEVEL_S
        params = {"res": day, "r_lo": lo // 10**9 // day * day, "r_hi": -(-hi // 10**9)}
        sql = (f"{common}, any(gpu) AS g, any(mount) AS u, any(node_id) AS i, sum(n) AS c"
               f" {_rollup_where(scan, names)} GROUP BY series")
        share = (hi - lo) / ((params["r_hi"] - params["r_lo"]) * 10**9)  # the window's part of the days
    else:
        where, params = scan.where(names, lo, hi)
        sql = (f"{common}, any(attrs) AS a, {GPU_INDEX.replace('attrs', 'a')} AS g, a['sonde.mount'] AS u,"
               f" a['sonde.node_id'] AS i, count() AS c FROM {scan.table} {where}"
               " GROUP BY series")
        share = 1.0
    t = scan.run(f"{sql} ORDER BY series", {**scan.params(), **params, "names": names})
    return Labels(t.column("series").to_numpy(), *(t.column(c).to_pylist() for c in ("m", "r", "k", "g", "u", "un",
                                                                                         "us", "i")),
                  points=int(sum(t.column("c").to_pylist()) * share))


def _cells(idx: np.ndarray, weights: np.ndarray | None, size: int) -> np.ndarray:
    return np.bincount(idx, weights, minlength=size)


@dataclass
class Values:
    """Per series (the order of :class:`Labels`) and step: gauge means and counter
    increases (NaN: none); and per series whether it sent a point around / inside the
    window, and the time of its latest one there."""

    gauges: np.ndarray
    counters: np.ndarray
    around: np.ndarray
    inside: np.ndarray
    latest: np.ndarray


def _read(scan: Scan, sql: str, params: dict[str, Any], lab: Labels) -> dict[str, np.ndarray]:
    """Run ``sql`` (columns series, ...); ``i``: each row's index in ``lab`` (rows of
    series without labels are dropped)."""
    t = scan.run(sql, {**scan.params(), **params})
    cols = {c: t.column(c).to_numpy() for c in t.column_names}
    i = np.minimum(np.searchsorted(lab.series, cols["series"]), len(lab.series) - 1)
    known = lab.series[i] == cols["series"]
    return {"i": i[known], **{c: v[known] for c, v in cols.items()}}


def _presence(lab: Labels, i: np.ndarray, around, inside, latest) -> tuple[np.ndarray, ...]:
    """Per series: a point around the window, one inside it, the latest one's time; for
    the series of ``lab.tracked`` only (the others' are never asked). ``around``,
    ``inside`` and ``latest`` take the rows they are for."""
    s = len(lab.series)
    rows = np.flatnonzero(lab.tracked[i]) if lab.tracked is not None else np.arange(len(i))
    i = i[rows]
    a = around(rows)
    last = np.full(s, np.iinfo(np.int64).min)
    np.maximum.at(last, i[a], latest(rows)[a])
    return _cells(i[a], None, s) > 0, _cells(i[inside(rows)], None, s) > 0, last


def raw_values(scan: Scan, lab: Labels, names: list[str], factor: tuple[str, dict]) -> Values:
    """Step values from the raw points: the hold rule of ``gauges.time_weighted`` and
    the sums of ``counters.value_increase``; ``factor``: SQL scaling each point (and its
    parameters), "1" when the caller scales whole series."""
    w = scan.window
    t0, t1, step, n, s = w.start_ns, w.end_ns, w.step_ns, w.n_steps, len(lab.series)
    where, params = scan.where(names, t0 - LOOK_AROUND_NS, t1 + LOOK_AROUND_NS)
    r = _read(scan, f"SELECT series, toUnixTimestamp64Nano(ts) AS t, value * {factor[0]} AS v, monotonic AS c"
                    f" FROM {scan.table} {where} AND kind IN ('gauge', 'sum')", {**params, **factor[1]}, lab)
    within = (r["t"] >= t0) & (r["t"] < t1)
    presence = _presence(lab, r["i"], lambda k: np.ones(len(k), bool), lambda k: within[k], lambda k: r["t"][k])
    # counters: the sum of the deltas whose time falls in the step
    c = r["c"] & within
    cell = r["i"][c] * n + (r["t"][c] - t0) // step
    inc, seen = _cells(cell, r["v"][c], s * n), _cells(cell, None, s * n)
    counters = np.where(seen > 0, inc, np.nan).reshape(s, n)
    # gauges: each series' samples in time order
    g = ~r["c"]
    order = np.lexsort((r["t"][g], r["i"][g]))
    i, t, v = r["i"][g][order], r["t"][g][order], r["v"][g][order]
    a, b = np.maximum(t, t0), np.minimum(holds(i, t), t1)
    keep = b > a
    i, v, a, b = i[keep], v[keep], a[keep], b[keep]
    # each hold split over the steps it spans
    ka = (a - t0) // step
    span = (b - 1 - t0) // step - ka + 1
    rep = np.repeat(np.arange(len(a)), span)
    k = ka[rep] + np.arange(len(rep)) - np.repeat(np.cumsum(span) - span, span)
    ov = (np.minimum(b[rep], t0 + (k + 1) * step) - np.maximum(a[rep], t0 + k * step)).astype(np.float64)
    cell = i[rep] * n + k
    covered, integral = _cells(cell, ov, s * n), _cells(cell, v[rep] * ov, s * n)
    with np.errstate(invalid="ignore", divide="ignore"):
        gauges = np.where(covered > 0, integral / covered, np.nan).reshape(s, n)
    return Values(gauges, counters, *presence)


def _before(x, f, c, d):
    """How many of a bucket's c samples, spread at f + j * d, come before time x."""
    return np.where(x <= f, 0, np.minimum(c, (x - f - 1) // d + 1))


def rollup_values(scan: Scan, lab: Labels, names: list[str], factor: tuple[str, dict], bucket_s: int) -> Values:
    """Step values as :func:`raw_values`, from the rollup's buckets (module docstring)."""
    w = scan.window
    t0, t1, step, n, s = w.start_ns, w.end_ns, w.step_ns, w.n_steps, len(lab.series)
    lo, hi = t0 - LOOK_AROUND_NS, t1 + LOOK_AROUND_NS
    if any(lab.units):
        # A series that changed unit has a row for each in a bucket: add them up.
        sql = (f"SELECT series, monotonic AS c, sum(n) AS n, sum(total * {factor[0]}) AS total, min(first_ns) AS f,"
               f" max(last_ns) AS l {_rollup_where(scan, names)} GROUP BY series, ts, monotonic")
    else:
        sql = (f"SELECT series, monotonic AS c, n, total * {factor[0]} AS total, first_ns AS f, last_ns AS l"
               f" {_rollup_where(scan, names, final=True)}")
    r = _read(scan, sql,
              {**factor[1], "names": names, "res": bucket_s, "r_lo": lo // 10**9 // bucket_s * bucket_s,
               "r_hi": -(-hi // 10**9)}, lab)
    cnt, f, last, i = r["n"].astype(np.int64), r["f"], r["l"], r["i"]
    # A bucket shorter than a range has a point in it exactly when its first or last has.
    presence = _presence(lab, i, lambda k: ((f[k] >= lo) & (f[k] < hi)) | ((last[k] >= lo) & (last[k] < hi)),
                         lambda k: ((f[k] >= t0) & (f[k] < t1)) | ((last[k] >= t0) & (last[k] < t1)),
                         lambda k: np.minimum(last[k], hi - 1))
    mean = r["total"] / cnt
    # A lone sample in a bucket (a series' first or last, one after a gap) holds the
    # series' spacing within its other buckets; one bucket length if it has none.
    # (Samples sharing one time count as a lone one.)
    many = (cnt > 1) & (last > f)
    gaps = _cells(i[many], (cnt - 1)[many], s)
    spacing = np.where(gaps > 0, _cells(i[many], (last - f)[many], s) / np.maximum(gaps, 1),
                       bucket_s * 10**9).astype(np.int64)
    d = np.where(many, (last - f) // np.maximum(cnt - 1, 1), spacing[i])
    # gauges: the span [f, l + d) clipped to the window, cut at its first step's end e
    a, b = np.maximum(f, t0), np.minimum(last + d, t1)
    g = np.flatnonzero(~r["c"] & (b > a))
    gi, gm, a, b = i[g], mean[g], a[g], b[g]
    ka = (a - t0) // step
    e = t0 + (ka + 1) * step
    own, spill = (np.minimum(b, e) - a).astype(np.float64), np.maximum(b - e, 0).astype(np.float64)
    cell = np.concatenate([gi * n + ka, gi * n + np.minimum(ka + 1, n - 1)])  # spill is 0 at the end
    cov = _cells(cell, np.concatenate([own, spill]), s * n)
    integral = _cells(cell, np.concatenate([gm * own, gm * spill]), s * n)
    with np.errstate(invalid="ignore", divide="ignore"):
        gauges = np.where(cov > 0, integral / cov, np.nan).reshape(s, n)
    # counters: the samples before the window, before the first step's end, before its end
    c = np.flatnonzero(r["c"])
    ci, cf, cc, cd, per = i[c], f[c], cnt[c], d[c], mean[c]
    c0, c1 = _before(t0, cf, cc, cd), _before(t1, cf, cc, cd)
    k = np.flatnonzero(c1 > c0)
    ci, cf, cc, cd, per, c0, c1 = ci[k], cf[k], cc[k], cd[k], per[k], c0[k], c1[k]
    ka = (cf + c0 * cd - t0) // step
    ce = np.minimum(_before(t0 + (ka + 1) * step, cf, cc, cd), c1)
    own, spill = (ce - c0).astype(np.float64), (c1 - ce).astype(np.float64)
    cell = np.concatenate([ci * n + ka, ci * n + np.minimum(ka + 1, n - 1)])
    seen = _cells(cell, np.concatenate([own, spill]), s * n)
    inc = _cells(cell, np.concatenate([per * own, per * spill]), s * n)
    counters = np.where(seen > 0, inc, np.nan).reshape(s, n)
    return Values(gauges, counters, *presence)
