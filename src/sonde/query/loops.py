"""Trainer (loops) deployment metrics: GetLoopsDeploymentMetricsResponseV1 from stored points.

Every number comes from the building blocks the deployment metrics use (docs/chains-loops.md):

- service fields read the HTTP instrumentation of the trainer pods: the duration
  histograms' counts (``histograms.totals``, split by status class) give the inference
  volume, a rate per ``time_divisor_seconds``; ``histograms.quantile_steps`` gives
  p50/p95/p99 (converted to milliseconds); ``http.server.active_requests`` is the
  time-weighted gauge of ``gauges`` (replicas added up);
- compute fields read the agent's process, GPU and filesystem metrics per node rank
  (the ``node*`` label kinds of ``gauges`` / ``counters``): CPU usage in cores is the
  ``process.cpu.time`` increase over the step divided by the step's length, memory and
  GPU figures are time-weighted means, ephemeral utilisation is mean usage / mean limit
  of the ``sonde.mount=ephemeral`` filesystem. The top-level compute fields are the
  leader's (query/nodes.py: the node model and leader rule shared with training
  jobs); ``per_node_metrics`` lists every node.

Each series lists only the steps that have data (the schema's values are numbers, never
null); timestamps are the steps' starts, ISO 8601 UTC.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

from ..store import Store
from . import counters, gauges, histograms, nodes
from .catalogue import CATALOGUE, gpu_key
from .scan import QUERY_TIMEOUT_S, Scan
from .sources import choose_sources
from .window import Window, iso, resolve_stepped

DURATION = CATALOGUE["baseten_end_to_end_response_time_seconds"]
CONCURRENT = CATALOGUE["baseten_concurrent_requests"]

COMPUTE = nodes.METRICS


def resolve_window(start_ms: int | None, end_ms: int | None, step_s: int | None,
                   now_ms: int | None = None) -> Window:
    """The request's window: the shared rules, with the deployment metrics' step ladder."""
    return resolve_stepped(start_ms, end_ms, step_s, now_ms)


def _finite(v: Any) -> bool:
    return v is not None and not (isinstance(v, float) and not math.isfinite(v))


class _Series:
    """Per step values -> [{value, timestamp}] for the steps that have data."""

    def __init__(self, window: Window):
        self.starts = window.step_starts_ms()

    def points(self, by_step: dict[int, float]) -> list[dict]:
        return [{"value": float(by_step[k]), "timestamp": iso(self.starts[k])}
                for k in sorted(by_step) if 0 <= k < len(self.starts) and _finite(by_step[k])]


def _step_seconds(window: Window, k: int) -> float:
    """Length of step ``k`` in seconds; the last one may be partial."""
    start = window.start_ms + k * window.step_ms
    return (min(start + window.step_ms, window.end_ms) - start) / 1000


def _service(scan: Scan, divisor: int, present: frozenset[str]) -> dict:
    w, s = scan.window, _Series(scan.window)
    volume: dict[int, float] = {}
    by_status: dict[int, dict[int, float]] = defaultdict(lambda: {2: 0.0, 4: 0.0, 5: 0.0})
    times: list[dict] = []
    if DURATION.name in present:
        # One scan of the duration histograms serves volume, status split and quantiles.
        totals = histograms.totals(scan, DURATION, by_status=True)
        counts: dict[int, int] = defaultdict(int)
        for r in totals:
            counts[r["k"]] += r["n"]
            if r["cls"] in (2, 4, 5):
                by_status[r["k"]][r["cls"]] += r["n"]
            else:
                _ = by_status[r["k"]]  # a step with data has all three classes, 0 where none
        volume = {k: n * divisor / _step_seconds(w, k) for k, n in counts.items()}
        for k, cls in by_status.items():
            for c in cls:
                cls[c] = cls[c] * divisor / _step_seconds(w, k)
        quantiles = histograms.quantile_steps(scan, DURATION, totals)
        for k in sorted(counts):
            q = quantiles.get(k)
            ms = [v * 1000 if _finite(v) else None for v in q[:4]] if q else [None] * 4
            times.append({"timestamp": iso(s.starts[k]), "p50": ms[0], "p95": ms[2], "p99": ms[3]})
    concurrent: dict[int, float] = {}
    if CONCURRENT.name in present:
        concurrent = {r["k"]: r["v"] for r in gauges.time_weighted(scan, CONCURRENT).to_pylist()}
    return {
        "inference_volume": s.points(volume),
        "concurrent_requests": s.points(concurrent),
        "response_time_stats": times,
        "inference_volume_by_status": [
            {"timestamp": iso(s.starts[k]), "status_2xx": v[2], "status_4xx": v[4], "status_5xx": v[5]}
            for k, v in sorted(by_status.items())
        ],
    }


def _empty_node() -> dict:
    return {"gpu_memory_usage_bytes": {}, "gpu_utilization": {}, "cpu_usage": [], "cpu_memory_usage_bytes": [],
            "ephemeral_storage": {"usage_bytes": [], "utilization": []}}


def _compute(scan: Scan, present: frozenset[str]) -> dict[int, dict]:
    """Per node rank: the LoopsDeploymentNodeMetricsV1 fields (less node_id)."""
    w, s = scan.window, _Series(scan.window)
    # rank -> field -> step -> value (GPU fields: -> gpu -> step -> value)
    acc: dict[int, dict[str, Any]] = defaultdict(lambda: defaultdict(dict))

    def rank(r: dict) -> int:
        return int(r["l_host"])

    if nodes.CPU.name in present:
        for r in counters.value_increase(scan, nodes.CPU).to_pylist():
            acc[rank(r)]["cpu"][r["k"]] = r["v"] / _step_seconds(w, r["k"])
    if nodes.MEMORY.name in present:
        for r in gauges.time_weighted(scan, nodes.MEMORY).to_pylist():
            acc[rank(r)]["memory"][r["k"]] = r["v"]
    for vm, field in ((nodes.GPU_UTIL, "gpu_util"), (nodes.GPU_MEMORY, "gpu_memory")):
        if vm.name in present:
            for r in gauges.time_weighted(scan, vm).to_pylist():
                acc[rank(r)][field].setdefault(r["l_device"], {})[r["k"]] = r["v"]
    for vm, field in ((nodes.FS_USAGE, "fs_usage"), (nodes.FS_LIMIT, "fs_limit")):
        if vm.name in present:
            for r in gauges.time_weighted(scan, vm).to_pylist():
                if r["l_device"] == "ephemeral":
                    acc[rank(r)][field][r["k"]] = r["v"]
    out: dict[int, dict] = {}
    for node, f in acc.items():
        usage, limit = f["fs_usage"], f["fs_limit"]
        util = {k: usage[k] / limit[k] for k in usage if k in limit and _finite(limit[k]) and limit[k] > 0}
        out[node] = {
            "gpu_memory_usage_bytes": {g: s.points(v) for g, v in sorted(f["gpu_memory"].items(),
                                                                        key=lambda x: gpu_key(x[0]))},
            "gpu_utilization": {g: s.points(v) for g, v in sorted(f["gpu_util"].items(),
                                                                 key=lambda x: gpu_key(x[0]))},
            "cpu_usage": s.points(f["cpu"]),
            "cpu_memory_usage_bytes": s.points(f["memory"]),
            "ephemeral_storage": {"usage_bytes": s.points(usage), "utilization": s.points(util)},
        }
    return out


def loops_metrics(store: Store, ws: str, deployment_id: str, window: Window, time_divisor_s: int = 1,
                  timeout_s: int = QUERY_TIMEOUT_S) -> dict:
    """The GetLoopsDeploymentMetricsResponseV1 body for one loops deployment."""
    scan = Scan(store, ws, "loops", deployment_id, window, timeout_s)
    sources = choose_sources(scan, [DURATION, CONCURRENT, *COMPUTE])
    scan = scan.with_sources(sources)
    metrics = _service(scan, time_divisor_s, sources.present)
    per_node = _compute(scan, sources.present)
    ids = nodes.node_ids(scan) if per_node else {}
    leader = nodes.leader(per_node)
    metrics.update(per_node[leader] if leader is not None else _empty_node())
    metrics["per_node_metrics"] = [
        {"node_id": ids.get(r) or str(max(r, 0)), **per_node[r]} for r in sorted(per_node)
    ]
    return {"deployment_id": deployment_id, "metrics": metrics}
