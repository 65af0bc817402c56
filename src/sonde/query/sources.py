"""Which source feeds a vendor metric, per replica.

A vendor metric may have several sources (the stable and the older HTTP semantic
conventions, ``process.*`` and ``container.*``; query/catalogue.py). They are
alternatives, never added together: per replica, the first source in catalogue order
that sent anything wins, and the others are left out of that replica's reads. Gauges
read around the window (query/gauges.py), so their sources count there; counters and
histograms only inside it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from . import gauges
from .catalogue import GAUGE, LabelKind, VendorMetric
from .scan import Scan


@dataclass(frozen=True)
class Sources:
    #: names of the vendor metrics with any source data
    present: frozenset[str]
    #: per vendor metric, {source metric: replicas} its reads leave out
    excluded: dict[str, dict[str, list[str]]] = field(default_factory=dict)


def choose_sources(scan: Scan, metrics: Iterable[VendorMetric]) -> Sources:
    """One statement: which sources sent data, per replica, around and inside the
    window; then :func:`pick_sources`. Replica counts read any telemetry (their own
    query), so they count as present. So does a metric with one source: it has no
    alternative to leave out, and its own statement finds the same rows the discovery
    would (a metric whose values are all null is left out of the answer either way).
    Time-weighted gauges make the same choice in their own statement
    (``gauges.time_weighted``): asking only for those and one-source metrics (GPU
    utilisation, say) costs no discovery. Where other metrics need it anyway, the
    gauges stay in it, so that a gauge no replica sent costs no statement."""
    metrics = list(metrics)
    always = {vm.name for vm in metrics if vm.labels.replica_count or len(vm.source_names) == 1}
    if all(_chooses(vm) for vm in metrics if vm.name not in always):
        always |= {vm.name for vm in metrics}
    names = sorted({s for vm in metrics if vm.name not in always for s in vm.source_names})
    if not names:
        return Sources(frozenset(always))
    w = scan.window
    where, params = scan.where(names, w.start_ns - gauges.LOOK_AROUND_NS, w.end_ns + gauges.LOOK_AROUND_NS)
    rows = scan.run(
        "SELECT metric, groupUniqArray(replica) AS around, groupUniqArrayIf(replica,"
        " ts >= fromUnixTimestamp64Nano({t0:Int64}) AND ts < fromUnixTimestamp64Nano({t1:Int64})) AS inside"
        f" FROM {scan.table} {where} GROUP BY metric",
        {**scan.params(), **params},
    ).to_pylist()
    around = {r["metric"]: set(r["around"]) for r in rows}
    inside = {r["metric"]: set(r["inside"]) for r in rows}
    picked = pick_sources([vm for vm in metrics if vm.name not in always], around, inside)
    return Sources(picked.present | always, picked.excluded)


def _chooses(vm: VendorMetric) -> bool:
    """Whether the metric's own statement chooses its sources: a time-weighted gauge."""
    return vm.kind == GAUGE and not vm.labels.replica_count and vm.labels is not LabelKind.COUNTER_RATIO


def pick_sources(metrics: Iterable[VendorMetric], around: Mapping[str, set[str]],
                 inside: Mapping[str, set[str]]) -> Sources:
    """The decision from {source metric: replicas that sent data} around and inside the
    window (training metrics learn these from the rows they read)."""
    present: set[str] = set()
    excluded: dict[str, dict[str, list[str]]] = {}
    for vm in metrics:
        # a ratio of counter increases reads both its sources, inside the window
        ratio = vm.labels is LabelKind.COUNTER_RATIO
        seen = around if vm.kind == GAUGE and not ratio else inside
        if not any(seen.get(s) for s in vm.source_names):
            continue
        present.add(vm.name)
        if ratio:
            continue
        taken: set[str] = set()
        for s in vm.source_names:
            replicas = seen.get(s, set())
            if replicas & taken:
                excluded.setdefault(vm.name, {})[s] = sorted(replicas & taken)
            taken |= replicas
    return Sources(frozenset(present), excluded)
