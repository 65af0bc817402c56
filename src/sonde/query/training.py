"""Training-job metrics: the vendor's GetTrainingJobMetricsResponseV1 from stored points.

Rows are scope ``training_job``, entity = job id (docs/architecture.md). Every series is
computed per node rank with the shared building blocks (``gauges.time_weighted`` and
``counters.value_increase`` with the ``node*`` label kinds), one statement per metric;
this module resolves the window and lays results out in the vendor's shape.
docs/training.md explains each choice.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Any

from .._exceptions import BadRequest
from ..store import Store
from . import counters, gauges
from . import window as windows
from .catalogue import COUNTER, GAUGE, Source, VendorMetric
from .metrics import choose_sources
from .scan import Scan

SCOPE = "training_job"
#: step ladder when ``step_seconds`` is omitted: the smallest rung giving <= 360 steps
#: (a 1 h window gives 10 s steps, the agent's default sampling interval).
STEP_LADDER_S = (10, 30, 60, 300, 900, 1800, 3600)
#: an explicit step may give at most this many points per series
MAX_STEP_S = windows.MAX_WINDOW_MS // 1000

_V = VendorMetric
GPU_MEMORY = _V("training_gpu_memory_usage_bytes", GAUGE, "BYTES", "bytes",
                (Source("hw.gpu.memory.usage", "By"),), "node_gpu")
GPU_UTIL = _V("training_gpu_utilization", GAUGE, "RATIO", "ratio", (Source("hw.gpu.utilization", "1"),), "node_gpu")
CPU_TIME = _V("training_cpu_seconds", COUNTER, "SECONDS", "time",
              (Source("process.cpu.time", "s"), Source("container.cpu.time", "s")), "node")
CPU_MEMORY = _V("training_cpu_memory_usage_bytes", GAUGE, "BYTES", "bytes",
                (Source("process.memory.usage", "By"), Source("container.memory.working_set", "By")), "node")
FS_USAGE = _V("training_filesystem_usage", GAUGE, "BYTES", "bytes", (Source("system.filesystem.usage", "By"),),
              "node_mount")
FS_LIMIT = _V("training_filesystem_limit", GAUGE, "BYTES", "bytes", (Source("system.filesystem.limit", "By"),),
              "node_mount")
METRICS = (GPU_MEMORY, GPU_UTIL, CPU_TIME, CPU_MEMORY, FS_USAGE, FS_LIMIT)


def resolve(start_ms: int | None, end_ms: int | None, step_s: int | None, now_ms: int | None = None) -> windows.Window:
    """The window: the shared start/end rules (``window.resolve`` in SERIES mode: end =
    now, start = end - 1 h, end <= start / over 7 days / start in the future: 400) and
    the step: ``step_seconds`` when given (1 .. 7 days, at most MAX_POINTS steps),
    else the smallest rung of STEP_LADDER_S giving at most 360 steps."""
    if step_s is not None and step_s > MAX_STEP_S:
        raise BadRequest(f"step_seconds must be at most {MAX_STEP_S} (7 days)", field="step_seconds")
    return windows.resolve_stepped(start_ms, end_ms, step_s, now_ms, ladder=STEP_LADDER_S)


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).isoformat().replace("+00:00", "Z")


def _node_ids(scan: Scan) -> dict[int, str]:
    """Per node rank, the latest ``sonde.node_id`` it sent in (or around) the window.
    Read from the per-node series only (CPU, memory, filesystems), not the GPU ones."""
    w = scan.window
    names = [s for vm in (CPU_TIME, CPU_MEMORY, FS_USAGE) for s in vm.source_names]
    where, params = scan.where(names, w.start_ns - gauges.LOOK_AROUND_NS, w.end_ns + gauges.LOOK_AROUND_NS)
    rows = scan.run(
        f"SELECT node_rank, argMax(attrs['sonde.node_id'], ts) AS node_id FROM {scan.table} {where}"
        " GROUP BY node_rank", {**scan.params(), **params}).to_pylist()
    return {int(r["node_rank"]): r["node_id"] for r in rows}


Series = dict[int, float]  # step index -> value


def _collect(scan: Scan, vm: VendorMetric, present: set[str]) -> dict[tuple[int, str], Series]:
    """(node rank, second label) -> per-step values, nulls and non-finite values left out."""
    if vm.name not in present:
        return {}
    rows = gauges.time_weighted(scan, vm) if vm.kind == GAUGE else counters.value_increase(scan, vm)
    n = scan.window.n_steps
    out: dict[tuple[int, str], Series] = {}
    for r in rows:
        v = r["v"]
        if v is None or not math.isfinite(v) or not 0 <= r["k"] < n:
            continue
        out.setdefault((int(r["l_replica"]), r.get("l_gpu", "") or ""), {})[r["k"]] = float(v)
    return out


def _points(series: Series, starts: list[int]) -> list[dict]:
    return [{"value": series[k], "timestamp": iso(starts[k])} for k in sorted(series)]


def _gpu_key(g: str) -> tuple:
    return (int(g), g) if g.isdigit() else (math.inf, g)


def _storage(usage: Series | None, limit: Series | None, starts: list[int]) -> dict:
    usage = usage or {}
    limit = limit or {}
    util = {k: u / limit[k] for k, u in usage.items() if limit.get(k)}
    return {"usage_bytes": _points(usage, starts), "utilization": _points(util, starts)}


def training_job_metrics(store: Store, ws: str, job_id: str, window: windows.Window, job: dict) -> dict:
    """The GetTrainingJobMetricsResponseV1 body (``job`` is the TrainingJobV1 view)."""
    scan = Scan(store, ws, SCOPE, job_id, window)
    present = choose_sources(scan, list(METRICS))
    data = {vm.name: _collect(scan, vm, present) for vm in METRICS}
    starts = window.step_starts_ms()
    # Each step covers [start, min(start + step, end)): CPU cores = CPU seconds / that length.
    lengths = [(min(s + window.step_ms, window.end_ms) - s) / 1000 for s in starts]
    ranks = sorted({rank for by in data.values() for rank, _ in by})

    def node(rank: int) -> dict:
        def per_gpu(vm: VendorMetric) -> dict[str, list[dict]]:
            gpus = sorted((g for r, g in data[vm.name] if r == rank), key=_gpu_key)
            return {g: _points(data[vm.name][(rank, g)], starts) for g in gpus}

        cpu = data[CPU_TIME.name].get((rank, ""), {})
        fs = (data[FS_USAGE.name].get((rank, "ephemeral")), data[FS_LIMIT.name].get((rank, "ephemeral")))
        return {
            "gpu_memory_usage_bytes": per_gpu(GPU_MEMORY),
            "gpu_utilization": per_gpu(GPU_UTIL),
            "cpu_usage": _points({k: v / lengths[k] for k, v in cpu.items()}, starts),
            "cpu_memory_usage_bytes": _points(data[CPU_MEMORY.name].get((rank, ""), {}), starts),
            "ephemeral_storage": _storage(*fs, starts),
        }

    nodes = {rank: node(rank) for rank in ranks}
    # The leader is rank 0; a job whose telemetry names no rank (-1) is one node, the leader.
    leader = 0 if 0 in nodes else (ranks[0] if ranks else None)
    empty: dict[str, Any] = {"gpu_memory_usage_bytes": {}, "gpu_utilization": {}, "cpu_usage": [],
                             "cpu_memory_usage_bytes": [], "ephemeral_storage": _storage(None, None, starts)}
    top = dict(nodes[leader]) if leader is not None else empty
    # The read-write cache: the lowest-ranked node reporting a cache mount (the leader when it does).
    cache_ranks = [r for r in ([leader] if leader is not None else []) + ranks if (r, "cache") in data[FS_USAGE.name]]
    cache = (_storage(data[FS_USAGE.name][(cache_ranks[0], "cache")],
                      data[FS_LIMIT.name].get((cache_ranks[0], "cache")), starts) if cache_ranks else None)
    ids = _node_ids(scan) if ranks else {}
    return {
        **top,
        "training_job": job,
        "cache": cache,
        "per_node_metrics": [
            {"node_id": ids.get(rank) or (f"node-{rank}" if rank >= 0 else "node-0"), "metrics": nodes[rank]}
            for rank in ranks
        ],
    }
