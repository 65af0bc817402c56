"""Deployment metrics: the vendor's GetDeploymentMetricsResponseV1 from stored points.

:func:`deployment_metrics` runs one discovery statement (which sources sent data, per
replica) and then one or two statements per requested metric that has any source
data, each aggregated per step in ClickHouse (``gauges``, ``counters``,
``histograms``); this module only lays the results out: descriptors in the order
asked, one value set per step, each metric's values aligned to its label sets, null
where a label set has no data in a step, and metrics with no data at all left out.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from ..store import Store
from . import counters, gauges, histograms
from .catalogue import HISTOGRAM_LABEL_SETS, STATUS_CLASSES, VendorMetric
from .scan import QUERY_TIMEOUT_S, Scan
from .window import Window

Labels = dict[str, str]
# label sets, and per step the values aligned to them
Result = tuple[list[Labels], list[list[Any]]]


def _num(v: Any) -> Any:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return None
    return v


def _matrix(scan: Scan, rows: list[dict], key: Callable[[dict], tuple], label_sets: list[Labels],
            keys: list[tuple], value: str = "v") -> Result:
    """Lay rows {k, ..., value} out as steps x label sets (null where absent)."""
    n = scan.window.n_steps
    index = {k: i for i, k in enumerate(keys)}
    out: list[list[Any]] = [[None] * len(keys) for _ in range(n)]
    for r in rows:
        i = index.get(key(r))
        if i is not None and 0 <= r["k"] < n:
            out[r["k"]][i] = _num(r[value])
    return label_sets, out


def _gpu_order(key: tuple) -> tuple:
    replica, gpu = key
    return (replica, int(gpu) if gpu.isdigit() else math.inf, gpu)


def _by_labels(scan: Scan, vm: VendorMetric, rows: list[dict], names: tuple[str, ...]) -> Result:
    """Label sets from the distinct label values in ``rows``: column ``l_replica`` holds
    the first label, ``l_gpu`` the second (a GPU, or a mount for filesystem gauges)."""
    columns = ("l_replica", "l_gpu")[: len(names)]

    def key(r: dict) -> tuple:
        return tuple(r[c] for c in columns)

    keys = sorted({key(r) for r in rows}, key=_gpu_order if names == ("replica", "gpu") else None)
    # A GPU series without a GPU attribute is labelled by replica alone.
    label_sets = [{n: v for n, v in zip(names, k) if v != "" or n == "replica"} for k in keys]
    return _matrix(scan, rows, key, label_sets, keys)


def _gauge(scan: Scan, vm: VendorMetric) -> Result:
    rows = gauges.time_weighted(scan, vm)
    if vm.labels == "plain":
        return _matrix(scan, rows, lambda r: (), [{}], [()])
    names = {"gpu": ("replica", "gpu"), "mount": ("replica", "mount")}.get(vm.labels, ("replica",))
    return _by_labels(scan, vm, rows, names)


def _replicas(scan: Scan, vm: VendorMetric) -> Result:
    column = "active" if vm.labels == "replicas_active" else "starting"
    if "replicas" not in scan.memo:
        scan.memo["replicas"] = gauges.replica_counts(scan)
    return _matrix(scan, scan.memo["replicas"], lambda r: (), [{}], [()], value=column)


def _counter(scan: Scan, vm: VendorMetric) -> Result:
    if vm.labels == "status":
        rows = counters.requests_by_status(scan, vm)
        return _matrix(scan, rows, lambda r: (r["l_status"],), [{"status": s} for s in STATUS_CLASSES],
                       [(s,) for s in STATUS_CLASSES])
    return _by_labels(scan, vm, counters.value_increase(scan, vm), ("replica",))


def _histogram(scan: Scan, vm: VendorMetric) -> Result:
    steps = histograms.quantile_steps(scan, vm)
    out = [[None] * len(HISTOGRAM_LABEL_SETS) for _ in range(scan.window.n_steps)]
    for k, values in steps.items():
        if 0 <= k < len(out):
            out[k] = [_num(v) for v in values]
    return HISTOGRAM_LABEL_SETS, out


def choose_sources(scan: Scan, metrics: list[VendorMetric]) -> set[str]:
    """Which requested metrics have any source data; fills ``scan.excluded`` so that
    per replica only the first source (in catalogue order) that sent data is read.

    Gauges read around the window (see ``gauges``), so their sources count there;
    counters and histograms only inside it.
    """
    present = {vm.name for vm in metrics if vm.labels.startswith("replicas_")}  # any telemetry: own query
    names = sorted({s for vm in metrics if vm.name not in present for s in vm.source_names})
    if not names:
        return present
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
    return pick_sources(scan, metrics, around, inside, present)


def pick_sources(scan: Scan, metrics: list[VendorMetric], around: dict[str, set[str]],
                 inside: dict[str, set[str]], present: set[str] | None = None) -> set[str]:
    """:func:`choose_sources`' decision from {source metric: replicas that sent data}
    around and inside the window (training metrics learn these from the rows they read)."""
    present = set() if present is None else present
    for vm in metrics:
        if vm.name in present:
            continue
        seen = around if vm.kind == "GAUGE" else inside
        if not any(seen.get(s) for s in vm.source_names):
            continue
        present.add(vm.name)
        taken: set[str] = set()
        for s in vm.source_names:
            replicas = seen.get(s, set())
            if replicas & taken:
                scan.excluded.setdefault(vm.name, {})[s] = sorted(replicas & taken)
            taken |= replicas
    return present


_BY_KIND: dict[str, Callable[[Scan, VendorMetric], Result]] = {
    "GAUGE": _gauge, "COUNTER": _counter, "HISTOGRAM": _histogram,
}


def deployment_metrics(store: Store, ws: str, deployment_id: str, window: Window,
                       metrics: list[VendorMetric], timeout_s: int = QUERY_TIMEOUT_S) -> dict:
    """The GetDeploymentMetricsResponseV1 body for one deployment."""
    scan = Scan(store, ws, "deployment", deployment_id, window, timeout_s)
    present = choose_sources(scan, metrics)
    # Request totals come from the duration histograms' points: split that scan by
    # status class up front, so latency and totals share it.
    scan.memo["status_sources"] = {vm.source_names for vm in metrics if vm.labels == "status"}
    descriptors, columns = [], []
    for vm in metrics:
        if vm.name not in present:
            continue
        compute = _replicas if vm.labels.startswith("replicas_") else _BY_KIND[vm.kind]
        label_sets, values = compute(scan, vm)
        if not any(v is not None for step in values for v in step):
            continue  # valid name, no data for this deployment in the window
        descriptors.append({"name": vm.name, "unit_hint": vm.unit_hint, "kind": vm.kind, "label_sets": label_sets})
        columns.append(values)
    return {
        "start_epoch_millis": window.start_ms,
        "end_epoch_millis": window.end_ms,
        "mode": window.mode,
        "step_seconds": window.step_s,
        "metric_descriptors": descriptors,
        "metric_values": [
            {"start_epoch_millis": start, "values": [col[k] for col in columns]}
            for k, start in enumerate(window.step_starts_ms())
        ],
    }
