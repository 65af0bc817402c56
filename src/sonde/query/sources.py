"""Which source feeds a vendor metric, per replica.

A vendor metric may have several sources (the stable and the older HTTP semantic
conventions, ``process.*`` and ``container.*``; query/catalogue.py). They are
alternatives, never added together: per replica, the first source in catalogue order
that sent anything wins, and the others are left out of that replica's reads. Gauges
read around the window (query/gauges.py), so their sources count there; counters and
histograms only inside it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from . import gauges
from .catalogue import GAUGE, LabelKind, VendorMetric
from .scan import Scan


# Two metrics choosing in their statements cost at most one statement more than the
# discovery would (when neither was sent), and save one when both were.
IN_STATEMENT_AT_MOST = 2


@dataclass(frozen=True)
class Sources:
    #: names of the vendor metrics with any source data
    present: frozenset[str]
    #: per vendor metric, {source metric: replicas} its reads leave out
    excluded: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    #: the vendor metrics whose sources the discovery statement chose
    discovered: frozenset[str] = frozenset()


def choose_sources(scan: Scan, metrics: Iterable[VendorMetric],
                   remembered: Callable[[VendorMetric], bool] = lambda vm: False) -> Sources:
    """One statement: which sources sent data, per replica, around and inside the
    window; then :func:`pick_sources`. Replica counts read any telemetry (their own
    query), so they count as present. So does a metric with one source: it has no
    alternative to leave out, and its own statement finds the same rows the discovery
    would (a metric whose values are all null is left out of the answer either way).
    Metrics whose statements choose their sources themselves
    (``VendorMetric.chooses_in_statement``) skip it too when there are at most
    ``IN_STATEMENT_AT_MOST`` of them and nothing else needs it: asking for one
    deployment's GPU utilisation or requests by status costs one statement. With more,
    the discovery's one statement saves those a metric nobody sent would cost. A metric
    the store's memories answer over the window (``remembered``) chooses there, at no
    statement's cost: it is not counted, and needs no discovery."""
    metrics = list(metrics)
    always = {vm.name for vm in metrics if vm.labels.replica_count or len(vm.source_names) == 1}
    always |= {vm.name for vm in metrics if vm.name not in always and vm.chooses_in_statement and remembered(vm)}
    rest = [vm for vm in metrics if vm.name not in always]
    if len(rest) <= IN_STATEMENT_AT_MOST and all(vm.chooses_in_statement for vm in rest):
        always |= {vm.name for vm in rest}
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
    return Sources(picked.present | always, picked.excluded, frozenset(vm.name for vm in metrics) - always)


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
