"""A workspace's current values, shaped as Prometheus families (``GET /metrics``, docs/export.md).

Every deployment series that sent a point in the last :data:`STALE_S` seconds: gauges
(and up-down counters) with their latest value, read from those recent points;
counters with their running total and histograms with their summed counts per bucket
layout, read from ``series_totals``, which a materialized view keeps at every insert
(store/schema.py). A counter's total runs from when Sonde first stored the series; a
replica's counter reset or a Sonde restart cannot lower it, because ingest stores the
increase across a reset, never a negative delta, and the TTL that drops old points
leaves the totals alone. Python then names and labels
the series as the vendor's catalogue does, adds up the series that fall on one label
set, and re-buckets histograms whose layouts differ (exponential ones always) onto
:data:`FIXED_BOUNDS`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from ..store import Store
from ..store.inventory import Inventory
from ..store.schema import GPU_INDEX
from .catalogue import CATALOGUE, COUNTER, GAUGE, HISTOGRAM, LabelKind, Source, VendorMetric
from .presence import active_replicas
from .scan import QUERY_TIMEOUT_S
from .sources import pick_sources

#: a series silent this long leaves the export (Prometheus's own lookback)
STALE_S = 300
#: the ``le`` layout of re-bucketed histograms: powers of two from 2^-20 to 2^40 in the
#: exported unit (about a microsecond to 35 years in seconds, a byte to a terabyte)
FIXED_BOUNDS = tuple(2.0**k for k in range(-20, 41))
#: label kinds the export writes under the vendor's name; the others are ratios and
#: replica counts of a step, whose sources are exported under their own names instead
_EXPORTED = {LabelKind.PLAIN, LabelKind.STATUS, LabelKind.REPLICA, LabelKind.GPU, LabelKind.MOUNT,
             LabelKind.HISTOGRAM}
PLACEMENT = ("model_id", "model_name", "deployment_id", "environment")


@dataclass
class Hist:
    """Counts per bucket as (upper bound, count) pairs, plus the totals."""

    uppers: list[float] = field(default_factory=list)
    counts: list[float] = field(default_factory=list)
    sum: float = 0.0
    count: float = 0.0
    #: every part came with the same explicit bounds (then they are the layout)
    bounds: tuple[float, ...] | None = None
    mixed: bool = False

    def add(self, other: "Hist") -> None:
        if self.count == 0 and not self.uppers:
            self.bounds, self.mixed = other.bounds, other.mixed
        elif other.bounds != self.bounds or other.mixed:
            self.mixed = True
        self.uppers += other.uppers
        self.counts += other.counts
        self.sum += other.sum
        self.count += other.count

    def cumulative(self) -> list[tuple[float, float]]:
        """(le, cumulative count) pairs ending with +Inf: exact on a shared explicit
        layout; otherwise each bucket counts under the first fixed bound at or above its
        upper edge, so no ``le`` ever counts an observation that may exceed it."""
        layout = self.bounds if self.bounds is not None and not self.mixed else FIXED_BOUNDS
        edges = np.asarray(layout, dtype=float)
        uppers = np.asarray(self.uppers, dtype=float)
        counts = np.asarray(self.counts, dtype=float)
        slot = np.searchsorted(edges, uppers, side="left")  # len(edges): only under +Inf
        per = np.bincount(slot, weights=counts, minlength=len(edges) + 1)
        cum = np.cumsum(per)
        out = [(float(le), float(c)) for le, c in zip(edges, cum[:-1])]
        return out + [(float("inf"), float(self.count))]


@dataclass
class Family:
    name: str
    kind: str  # GAUGE | COUNTER | HISTOGRAM
    unit_hint: str
    #: label set (sorted tuple of pairs) -> (total, series added) or a Hist
    samples: dict[tuple, object] = field(default_factory=dict)
    #: gauges of one label set are averaged, not added (utilisations of one GPU)
    average: bool = False


#: the catalogue's metrics exported under their vendor names
_VENDOR = [vm for vm in CATALOGUE.values() if vm.labels in _EXPORTED]
#: the sources the catalogue exports under vendor names, and the only attributes read of
#: their points (the rest never reach a label: fewer map entries to convert)
_CLAIMED = sorted({s.metric for vm in _VENDOR for s in vm.sources})
_KEPT = sorted({"sonde.mount"} | {s.status_attr for vm in CATALOGUE.values() for s in vm.sources if s.status_attr}
               | {k for vm in CATALOGUE.values() for s in vm.sources for k, _ in s.match})


_ATTRS = ("any(if(metric IN {claimed:Array(String)}, mapFilter((k, v) -> k IN {kept:Array(String)}, attrs), attrs))"
          " AS point_attrs")
_KEY = "entity, toString(metric) AS metric, toString(kind) AS kind, toString(unit) AS unit, toString(replica) AS replica"


def _series_rows(store: Store, ws: str) -> list[dict]:
    """Three statements: gauges and up-down counters (their latest value, from the points
    of the last :data:`STALE_S` seconds), then counters and histograms (their running
    totals in ``series_totals``, one row per series and bucket layout), each series only
    while it sent a point within :data:`STALE_S`."""
    params = {"ws": ws, "stale": STALE_S, "claimed": _CLAIMED, "kept": _KEPT}
    fresh = "now64(9) - toIntervalSecond({stale:UInt32})"
    totals = store.t("series_totals")
    statements = (
        f"SELECT {_KEY}, monotonic, {_ATTRS}, any({GPU_INDEX}) AS gpu, argMax(value, ts) AS last"
        f" FROM {store.t('metric_points')} WHERE ws = {{ws:String}} AND scope = 'deployment' AND ts >= {fresh}"
        " AND (kind = 'gauge' OR (kind = 'sum' AND NOT monotonic))"
        " GROUP BY entity, metric, kind, monotonic, unit, replica, series",
        f"SELECT {_KEY}, true AS monotonic, {_ATTRS}, sum(total) AS total FROM {totals}"
        f" WHERE ws = {{ws:String}} AND kind = 'sum' GROUP BY entity, series, layout, metric, kind, unit, replica"
        f" HAVING max(last_ts) >= {fresh}",
        f"SELECT {_KEY}, false AS monotonic, {_ATTRS}, sum(n) AS n, sum(s) AS s, sum(low) AS low,"
        " any(bounds) AS bounds, any(scale) AS scale, sumMap(buckets) AS bm, mapKeys(bm) AS keys, mapValues(bm) AS vals"
        f" FROM {totals} WHERE ws = {{ws:String}} AND kind IN ('histogram', 'exp_histogram')"
        f" GROUP BY entity, series, layout, metric, kind, unit, replica HAVING max(last_ts) >= {fresh}",
    )
    rows = []
    for sql in statements:
        rows += store.ex.query_arrow(f"{sql} SETTINGS max_execution_time = {QUERY_TIMEOUT_S}", params).to_pylist()
    for r in rows:
        r["attrs"] = dict(r.pop("point_attrs"))
        r.setdefault("gpu", "")
    return rows


def _hist(r: dict, factor: float) -> Hist:
    if r["kind"] == "histogram":
        bounds = tuple(b * factor for b in r["bounds"])
        counts = [0] * (len(bounds) + 1)
        for k, v in zip(r["keys"], r["vals"]):
            counts[k] = v
        return Hist(list(bounds) + [float("inf")], counts, r["s"] * factor, r["n"], bounds)
    base = 2.0 ** (2.0 ** -r["scale"])
    # bucket i of scale s holds (base^i, base^(i+1)]; zero and negative values lie
    # below every positive bound
    uppers = [base ** (k + 1) * factor for k in r["keys"]]
    return Hist([0.0] + uppers, [r["low"]] + list(r["vals"]), r["s"] * factor, r["n"], None, True)


def _label_set(place: tuple, extra: Iterable[tuple[str, str]]) -> tuple:
    """The deployment's labels, then the series' own (empty ones left out). Only a key:
    the writer orders label names itself, so the pairs need no sorting here."""
    return place + tuple(e for e in extra if e[1] != "")


def _prom_name(name: str) -> str:
    """A legal Prometheus name: OTel's dots and other characters become underscores."""
    out = "".join(c if c.isalnum() or c in "_:" else "_" for c in name)
    return out if out and not out[0].isdigit() else "_" + out


def _custom_labels(attrs: dict[str, str]) -> list[tuple[str, str]]:
    return [(_prom_name(k).replace(":", "_"), v) for k, v in attrs.items()
            if not k.startswith("sonde.") and _prom_name(k) not in PLACEMENT and k not in ("replica",)]


def _add(fam: Family, labels: tuple, value) -> None:
    if isinstance(value, Hist):
        fam.samples.setdefault(labels, Hist()).add(value)
        return
    if labels in fam.samples:
        old, n = fam.samples[labels]
        fam.samples[labels] = (old + value, n + 1)
    else:
        fam.samples[labels] = (value, 1)


def _source_of(vm: VendorMetric, r: dict) -> Source | None:
    for s in vm.sources:
        if s.metric == r["metric"] and (not s.match or all(r["attrs"].get(k) == v for k, v in s.match)):
            return s
    return None


def workspace_families(store: Store, ws: str) -> list[Family]:
    """Every exported family of the workspace, vendor names first, then custom metrics."""
    inventory = Inventory(store)
    models = {m["id"]: m["doc"].get("name") or m["id"] for m in inventory.list(ws, "model")}
    places: dict[str, tuple] = {}
    for d in inventory.list(ws, "deployment"):
        place = {"model_id": d["parent"], "model_name": models.get(d["parent"], d["parent"]),
                 "deployment_id": d["id"], "environment": d["doc"].get("environment") or ""}
        places[d["id"]] = tuple((k, v) for k, v in place.items() if v != "")
    rows = [r for r in _series_rows(store, ws) if r["entity"] in places]
    by_metric: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_metric[r["metric"]].append(r)

    # per deployment and replica, the source the API reads of each metric (query/sources.py);
    # every exported series is current, so "around" and "inside" the window are the same
    sent: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for r in rows:
        sent[r["entity"]][r["metric"]].add(r["replica"])
    excluded = {entity: pick_sources(_VENDOR, metrics, metrics).excluded for entity, metrics in sent.items()}

    families: dict[str, Family] = {}
    for vm in _VENDOR:
        fam = families.setdefault(vm.name, Family(vm.name, vm.kind, vm.unit_hint))
        for src in vm.sources:
            for r in by_metric.get(src.metric, ()):
                if r["replica"] in excluded[r["entity"]].get(vm.name, {}).get(src.metric, ()) \
                        or _source_of(vm, r) is not src:
                    continue
                _add_vendor(fam, vm, src, r, places[r["entity"]])
    active = active_replicas(store, ws, "deployment", list(places))
    fam = families.setdefault("baseten_replicas_active", Family("baseten_replicas_active", GAUGE, "COUNT"))
    for dep, place in places.items():
        _add(fam, _label_set(place, ()), float(active.get(dep, 0)))

    for metric, mrows in sorted(by_metric.items()):
        if metric in _CLAIMED or metric.startswith("sonde."):  # sonde.*: Sonde's own bookkeeping
            continue
        name = _prom_name(metric)
        if name in CATALOGUE:
            continue  # never shadow a vendor name with a custom series of that name
        for r in mrows:
            kind = _kind_of(r)
            fam = families.get(name) or families.setdefault(name, Family(name, kind, "COUNT"))
            if fam.kind != kind:
                continue  # one name, one type: the first kind seen wins
            # attribute names can meet once made legal (a.b, a_b): one label each
            own = dict([("replica", r["replica"]), *_custom_labels(r["attrs"])])
            labels = _label_set(places[r["entity"]], sorted(own.items()))
            _add(fam, labels, _value(r, kind, 1.0))
    return [f for f in families.values() if f.samples]


def _kind_of(r: dict) -> str:
    if r["kind"] in ("histogram", "exp_histogram"):
        return HISTOGRAM
    return COUNTER if r["kind"] == "sum" and r["monotonic"] else GAUGE


def _value(r: dict, kind: str, factor: float):
    if kind == HISTOGRAM:
        return _hist(r, factor)
    if r["kind"] == "sum" and r["monotonic"]:  # the running total of its increases
        return r["total"] * factor
    return r["last"] * factor  # gauges, and up-down counters (whose points are levels)


def _add_vendor(fam: Family, vm: VendorMetric, src: Source, r: dict, place: tuple) -> None:
    kind = _kind_of(r)
    if vm.kind == COUNTER and kind == HISTOGRAM:  # requests: the observations of a latency histogram
        value = float(r["n"])
    elif (vm.kind == HISTOGRAM) != (kind == HISTOGRAM) or (vm.kind == COUNTER and kind != COUNTER):
        return  # a source sent as another type than the catalogue reads cannot be this metric
    else:
        value = _value(r, kind, vm.factor_of(r["unit"], src))
    extra: list[tuple[str, str]] = [("replica", r["replica"])]
    if vm.labels is LabelKind.GPU:
        extra.append(("gpu", r["gpu"]))
    elif vm.labels is LabelKind.MOUNT:
        extra.append(("mount", r["attrs"].get("sonde.mount", "")))
    elif vm.labels is LabelKind.STATUS:
        code = next((r["attrs"][s.status_attr] for s in vm.sources if s.status_attr in r["attrs"]), "")
        extra.append(("status_code", code))
    fam.average = vm.dimension == "ratio"
    _add(fam, _label_set(place, extra), value)


def finished(fam: Family) -> dict[tuple, object]:
    """The family's samples with added-up gauges made final (ratios averaged)."""
    out: dict[tuple, object] = {}
    for labels, v in fam.samples.items():
        if isinstance(v, Hist):
            out[labels] = v
        else:
            total, n = v
            out[labels] = total / n if fam.average else total
    return out
