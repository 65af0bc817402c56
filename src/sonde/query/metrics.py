"""Deployment metrics: the vendor's GetDeploymentMetricsResponseV1 from stored points.

:func:`deployment_metrics` runs one discovery statement (which sources sent data, per
replica) and then one or two statements per requested metric that has any source
data, each aggregated per step in ClickHouse (``gauges``, ``counters``,
``histograms``); this module only lays the results out: descriptors in the order
asked, one value set per step, each metric's values aligned to its label sets, null
where a label set has no data in a step, and metrics with no data at all left out.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa

from ..store import Store
from . import counters, gauges, histograms
from .cache import ResultCache
from .catalogue import COUNTER, HISTOGRAM, HISTOGRAM_LABEL_SETS, STATUS_CLASSES, LabelKind, VendorMetric, gpu_key
from .scan import QUERY_TIMEOUT_S, Scan
from .recent import codes, pairs
from .sources import choose_sources
from .window import Window

Labels = dict[str, str]
# label sets, and per step the values aligned to them
Result = tuple[list[Labels], list[list[Any]]]


def _num(v: Any) -> Any:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return None
    return v


def _step_values(rows: pa.Table | list[dict], value: str = "v") -> tuple[np.ndarray, np.ndarray]:
    """Each row's step and value as arrays; values keep their type (a count stays an
    int in the JSON), a missing one is NaN or None."""
    if isinstance(rows, pa.Table):
        k, col = rows.column("k").to_numpy(), rows.column(value)
        if col.null_count == 0 or pa.types.is_floating(col.type):
            return k, col.to_numpy()
        return k, np.array(col.to_pylist(), dtype=object)
    k = np.fromiter((r["k"] for r in rows), dtype=np.int64, count=len(rows))
    return k, np.array([r[value] for r in rows], dtype=object)


def _matrix(scan: Scan, k: np.ndarray, at: np.ndarray, v: np.ndarray, label_sets: list[Labels]) -> Result:
    """Values ``v`` laid out as steps x label sets, row i at step ``k[i]`` under label
    set ``at[i]`` (-1: none); null where no row is, or its value is missing or not finite."""
    n = scan.window.n_steps
    ok = (k >= 0) & (k < n) & (at >= 0)
    if v.dtype.kind == "f":
        ok &= np.isfinite(v)
    elif v.dtype == object:
        ok &= np.fromiter((_num(x) is not None for x in v), dtype=bool, count=v.size)
    out = np.full((n, len(label_sets)), None, dtype=object)
    out[k[ok], at[ok]] = v[ok]  # numpy scalars become Python ints and floats
    return label_sets, out.tolist()


def _one_set(scan: Scan, rows: pa.Table | list[dict], value: str = "v") -> Result:
    """Rows of a metric with a single, empty label set."""
    k, v = _step_values(rows, value)
    return _matrix(scan, k, np.zeros(k.size, dtype=np.int64), v, [{}])


def _gpu_order(key: tuple) -> tuple:
    host, gpu = key
    return (host, *gpu_key(gpu))


def _by_labels(scan: Scan, vm: VendorMetric, rows: pa.Table, names: tuple[str, ...]) -> Result:
    """Label sets from the distinct label values in ``rows``: column ``l_host`` holds
    the first label, ``l_device`` the second (a GPU, or a mount for filesystem gauges)."""
    found, row_pair = _label_pairs(rows, len(names))
    found = [pair[:len(names)] for pair in found]
    order = sorted(range(len(found)), key=lambda j: _gpu_order(found[j]) if names == ("replica", "gpu") else found[j])
    keys = [found[j] for j in order]
    position = np.empty(len(order), dtype=np.int64)
    position[order] = np.arange(len(order))
    if vm.labels is LabelKind.ATTRIBUTES:  # l_device: the point's attributes as JSON
        label_sets = [{**({"replica": k[0]} if k[0] else {}), **json.loads(k[1])} for k in keys]
    else:
        # A GPU series without a GPU attribute is labelled by replica alone.
        label_sets = [{n: v for n, v in zip(names, k) if v != "" or n == "replica"} for k in keys]
    k, v = _step_values(rows)
    return _matrix(scan, k, position[row_pair], v, label_sets)


def _label_pairs(rows: pa.Table, n_names: int) -> tuple[list[tuple], np.ndarray]:
    """The distinct (l_host, l_device) pairs of ``rows`` and each row's index into them.
    Where both columns are dictionaries on one index (query/recent.combine makes them
    so), that index numbers the pairs already; else they are found as codes (a day of
    GPUs is tens of thousands of rows over a few dozen label sets)."""
    host, device = rows.column("l_host").combine_chunks(), rows.column("l_device").combine_chunks()
    if (n_names == 2 and pa.types.is_dictionary(host.type) and pa.types.is_dictionary(device.type)
            and host.indices.equals(device.indices)):
        found = list(zip(host.dictionary.to_pylist(), device.dictionary.to_pylist()))
        if len(set(found)) == len(found):
            at = host.indices.to_numpy(zero_copy_only=False).astype(np.int64)
            used = np.flatnonzero(np.bincount(at, minlength=len(found)))
            number = np.full(len(found), -1, dtype=np.int64)
            number[used] = np.arange(used.size)
            return [found[j] for j in used.tolist()], number[at]
    hosts, host_i = codes(rows.column("l_host"))
    devices, device_i = codes(rows.column("l_device")) if n_names == 2 else ([""], np.zeros_like(host_i))
    return pairs(hosts, host_i, devices, device_i)


def _names(vm: VendorMetric) -> tuple[str, ...]:
    """What the label columns hold: the replica, then the device or the attributes (JSON)."""
    second = "attributes" if vm.labels is LabelKind.ATTRIBUTES else vm.labels.device
    return ("replica", second) if second else ("replica",)


def _counter_ratio(scan: Scan, vm: VendorMetric) -> Result:
    """Per step, the first source's increase over the second's (null where the second
    did not increase): a hit rate from hit and query counters, over all replicas."""
    increases = []
    for source in vm.sources:
        part = VendorMetric(vm.name, COUNTER, "COUNT", "count", (source,), LabelKind.PLAIN)
        increases.append({r["k"]: r["v"] for r in counters.value_increase(scan, part).to_pylist()})
    hits, total = increases
    rows = [{"k": k, "v": hits.get(k, 0.0) / n} for k, n in total.items() if n and n > 0]
    return _one_set(scan, rows)


class _Request:
    """One metrics request: its scan, and the statements several metrics share (replica
    counts for active and starting; the duration histograms' totals for request totals
    and latency, read once, split by status class when request totals are asked for;
    request totals without the latency read only counts)."""

    def __init__(self, scan: Scan, metrics: list[VendorMetric]):
        self.scan = scan
        self.status_split = {vm.source_names for vm in metrics if vm.labels is LabelKind.STATUS}
        self.latency = {vm.source_names for vm in metrics if vm.kind == HISTOGRAM}
        self._replicas: list[dict] | None = None
        self._totals: dict[tuple, list[dict]] = {}

    def replicas(self) -> list[dict]:
        if self._replicas is None:
            self._replicas = gauges.replica_counts(self.scan)
        return self._replicas

    def totals(self, vm: VendorMetric) -> list[dict]:
        excluded = sorted((m, tuple(r)) for m, r in self.scan.excluded.get(vm.name, {}).items())
        # requests and latency of the same histograms share one statement, split by
        # status, unless the store's memories answer the window: then each reads its own
        shared = (vm.source_names in self.status_split and vm.source_names in self.latency
                  and not histograms.in_memory(self.scan, vm))
        key = (vm.source_names, tuple(excluded), None if shared else vm.kind == HISTOGRAM)
        if key not in self._totals:
            if vm.kind != HISTOGRAM and not shared:  # counts are all it needs
                self._totals[key] = histograms.status_counts(self.scan, vm)
            else:
                self._totals[key] = histograms.totals(self.scan, vm, by_status=shared)
        return self._totals[key]


def _gauge(req: _Request, vm: VendorMetric) -> Result:
    scan = req.scan
    if vm.labels.replica_count:
        column = "active" if vm.labels is LabelKind.REPLICAS_ACTIVE else "starting"
        return _one_set(scan, req.replicas(), value=column)
    if vm.labels is LabelKind.COUNTER_RATIO:
        return _counter_ratio(scan, vm)
    rows = gauges.time_weighted(scan, vm)
    if vm.labels is LabelKind.PLAIN:
        return _one_set(scan, rows)
    return _by_labels(scan, vm, rows, _names(vm))


def _counter(req: _Request, vm: VendorMetric) -> Result:
    scan = req.scan
    if vm.labels is LabelKind.STATUS:
        k, cls, n = counters.requests_by_status(req.totals(vm))
        # STATUS_CLASSES are 2xx ... 5xx in order
        return _matrix(scan, k, cls - 2, n, [{"status": s} for s in STATUS_CLASSES])
    return _by_labels(scan, vm, counters.value_increase(scan, vm), _names(vm))


def _histogram(req: _Request, vm: VendorMetric) -> Result:
    steps = histograms.quantile_steps(req.scan, vm, req.totals(vm))
    out = [[None] * len(HISTOGRAM_LABEL_SETS) for _ in range(req.scan.window.n_steps)]
    for k, values in steps.items():
        if 0 <= k < len(out):
            out[k] = [_num(v) for v in values]
    return HISTOGRAM_LABEL_SETS, out


def _in_memory(scan: Scan, vm: VendorMetric) -> bool:
    """Whether the store's memories answer ``vm`` over the scan's window (its source
    choice made there: query/sources.choose_sources)."""
    if vm.labels is LabelKind.STATUS:  # request totals read the counts alone
        return histograms.counts_in_memory(scan, vm)
    if vm.kind == HISTOGRAM:
        return histograms.in_memory(scan, vm)
    return vm.kind != COUNTER and gauges.in_memory(scan, vm)


_BY_KIND: dict[str, Callable[[_Request, VendorMetric], Result]] = {
    "GAUGE": _gauge, "COUNTER": _counter, "HISTOGRAM": _histogram,
}


def deployment_metrics(store: Store, ws: str, deployment_id: str, window: Window,
                       metrics: list[VendorMetric], timeout_s: int = QUERY_TIMEOUT_S) -> dict:
    """The GetDeploymentMetricsResponseV1 body for one deployment."""
    scan = Scan(store, ws, "deployment", deployment_id, window, timeout_s)
    sources = choose_sources(scan, metrics, lambda vm: _in_memory(scan, vm))
    req = _Request(scan.with_sources(sources), metrics)
    descriptors, columns = [], []
    for vm in metrics:
        if vm.name not in sources.present:
            continue
        label_sets, values = _BY_KIND[vm.kind](req, vm)
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


def cached_deployment_metrics(cache: ResultCache, render: Callable[[dict], bytes], store: Store, ws: str,
                              deployment_id: str, window: Window, metrics: list[VendorMetric], *,
                              lookup: bool = True) -> tuple[bytes, bool]:
    """:func:`deployment_metrics` rendered by ``render``, through ``cache``
    (query/cache.py): (the bytes, whether they were kept from an earlier identical
    question). ``lookup=False``: compute them anyway."""
    # the metrics themselves, not their names: a custom metric's kind comes from its data
    key = ("deployment", ws, deployment_id, window.mode, window.start_ms, window.end_ms, window.step_ms, tuple(metrics))
    return cache.get_or_compute(key, ws, deployment_id, window.start_ns - gauges.LOOK_AROUND_NS,
                                window.end_ns + gauges.LOOK_AROUND_NS,
                                lambda: render(deployment_metrics(store, ws, deployment_id, window, metrics)),
                                lookup=lookup)
