"""Training-job metrics: the vendor's GetTrainingJobMetricsResponseV1 from stored points.

Rows are scope ``training_job``, entity = job id (docs/architecture.md). Each series'
step values come from ``training_values`` (raw points, or the training rollup for long
steps); this module combines series into label sets per node rank the way the shared
building blocks do (``gauges.time_weighted``, ``counters.value_increase`` with the
``node*`` label kinds), and writes the vendor's JSON itself: ~50k points are too many
for dicts and a generic encoder (docs/training.md, Benchmark). A raw window longer than
RAW_MAX_MS at a short step (or one the rollup does not cover), or with more than
RAW_MAX_POINTS points, is computed by those building blocks in ClickHouse instead, so
its points never come to Python.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .._exceptions import BadRequest
from ..store import Store
from . import counters, gauges, nodes
from . import training_values as tv
from . import window as windows
from .catalogue import COUNTER, GAUGE, gpu_key
from .scan import Scan
from .sources import choose_sources, pick_sources

SCOPE = "training_job"
#: step ladder when ``step_seconds`` is omitted: the smallest rung giving <= 360 steps
#: (a 1 h window gives 10 s steps, the agent's default sampling interval).
STEP_LADDER_S = (10, 30, 60, 300, 900, 1800, 3600)
#: an explicit step may give at most this many points per series
MAX_STEP_S = windows.MAX_WINDOW_MS // 1000

METRICS = nodes.METRICS


def resolve(start_ms: int | None, end_ms: int | None, step_s: int | None, now_ms: int | None = None) -> windows.Window:
    """The window: the shared start/end rules (``window.resolve`` in SERIES mode: end =
    now, start = end - 1 h, end <= start / over 7 days / start in the future: 400) and
    the step: ``step_seconds`` when given (1 .. 7 days, at most MAX_POINTS steps),
    else the smallest rung of STEP_LADDER_S giving at most 360 steps."""
    if step_s is not None and step_s > MAX_STEP_S:
        raise BadRequest(f"step_seconds must be at most {MAX_STEP_S} (7 days)", field="step_seconds")
    return windows.resolve_stepped(start_ms, end_ms, step_s, now_ms, ladder=STEP_LADDER_S)


#: every source name, and each one's metric
_SOURCE_NAMES = [s for vm in METRICS for s in vm.source_names]
_SOURCE_VM = {s: vm for vm in METRICS for s in vm.source_names}
#: sources whose presence matters: for the node ids, and where a source has alternatives
_TRACKED = nodes.NODE_ID_SOURCES | {s for vm in METRICS if len(vm.sources) > 1 for s in vm.source_names}
#: the most raw points brought to Python (6 h of 8 x 8 GPUs at 10 s: ~400k), and the
#: longest window that may bring them; past either, ClickHouse computes per metric
RAW_MAX_MS = 6 * 3600_000
RAW_MAX_POINTS = 3_000_000

Key = tuple[int, int, str]  # (metric index or UTILIZATION, node rank, GPU or mount or '')
UTILIZATION = -1


def _factor(metric: str, unit: str) -> float:
    vm = _SOURCE_VM.get(metric)
    return vm.factor_of(unit, vm.sources[vm.source_names.index(metric)]) if vm else 1.0


def _excluded(lab: tv.Labels, val: tv.Values) -> set[tuple[str, str]]:
    """(source, replica) pairs left out: per replica, the first source of a metric that
    sent data wins (query/sources.py)."""
    around: dict[str, set[str]] = {}
    inside: dict[str, set[str]] = {}
    for j in np.flatnonzero(val.around).tolist():
        around.setdefault(lab.metric[j], set()).add(lab.replica[j])
        if val.inside[j]:
            inside.setdefault(lab.metric[j], set()).add(lab.replica[j])
    picked = pick_sources([vm for vm in METRICS if len(vm.sources) > 1], around, inside)
    return {(m, r) for by in picked.excluded.values() for m, reps in by.items() for r in reps}


def _ids(lab: tv.Labels, val: tv.Values) -> dict[int, str]:
    """Per node rank, its id (``nodes.node_ids``' rule) from the series already read:
    the id is part of a series' identity."""
    latest: dict[int, tuple[int, int]] = {}
    for j in np.flatnonzero(val.around).tolist():
        if lab.metric[j] in nodes.NODE_ID_SOURCES and lab.node_id[j]:
            rank, t = int(lab.rank[j]), int(val.latest[j])
            if rank not in latest or t > latest[rank][0]:
                latest[rank] = (t, j)
    return {rank: lab.node_id[j] for rank, (_, j) in latest.items()}


def _series_sets(scan: Scan, window: windows.Window, covered: bool, bucket: int | None):
    """(per label set its raw values, node ids) from ``training_values``."""
    lab = tv.labels(scan, _SOURCE_NAMES, covered)
    if not len(lab.series):
        return {}, {}
    if bucket is None and lab.points > RAW_MAX_POINTS:
        return _statement_sets(scan, window)
    lab.tracked = np.array([m in _TRACKED for m in lab.metric])
    # A series keeps its unit: scale its values once, unless one changed unit in the window.
    mixed = any(lab.units)
    factor = tv.factor_sql(METRICS) if mixed else ("toFloat64(1)", {})
    if bucket is None:
        val = tv.raw_values(scan, lab, _SOURCE_NAMES, factor)
    else:
        val = tv.rollup_values(scan, lab, _SOURCE_NAMES, factor, bucket)
    if not mixed:
        scale = np.array([_factor(m, u) for m, u in zip(lab.metric, lab.unit)])[:, None]
        val.gauges, val.counters = val.gauges * scale, val.counters * scale
    excluded = _excluded(lab, val)
    groups: dict[Key, list[int]] = {}
    for j, (m, rep, rank, gpu, mount) in enumerate(zip(lab.metric, lab.replica, lab.rank, lab.gpu, lab.mount)):
        vm = _SOURCE_VM.get(m)
        if vm is not None and (m, rep) not in excluded:
            l2 = {"gpu": gpu, "mount": mount}.get(vm.labels.device, "")
            groups.setdefault((METRICS.index(vm), int(rank), l2 or ""), []).append(j)
    out: dict[Key, np.ndarray] = {}
    with np.errstate(invalid="ignore", divide="ignore"):
        for key, rows in groups.items():
            vm = METRICS[key[0]]
            values = (val.counters if vm.kind == COUNTER else val.gauges)[rows]
            if len(rows) == 1:
                out[key] = values[0]
                continue
            count = np.sum(~np.isnan(values), axis=0)
            total = np.nansum(values, axis=0)
            out[key] = np.where(count > 0, total / count if vm.unit_hint == "RATIO" else total, np.nan)
    return out, _ids(lab, val)


def _statement_sets(scan: Scan, window: windows.Window):
    """(per label set its raw values, node ids) from the deployment metrics' building
    blocks, one statement per metric, each combining its label sets in ClickHouse."""
    sources = choose_sources(scan, METRICS)
    scan = scan.with_sources(sources)
    out: dict[Key, np.ndarray] = {}
    for i, vm in enumerate(METRICS):
        if vm.name not in sources.present:
            continue
        rows = gauges.time_weighted(scan, vm) if vm.kind == GAUGE else counters.value_increase(scan, vm)
        for r in rows.to_pylist():
            if r["v"] is not None and 0 <= r["k"] < window.n_steps:
                key = (i, int(r["l_host"]), r["l_device"])
                out.setdefault(key, np.full(window.n_steps, np.nan))[r["k"]] = r["v"]
    return out, (nodes.node_ids(scan) if out else {})


def _label_sets(scan: Scan, window: windows.Window) -> tuple[dict[Key, np.ndarray], dict[int, str]]:
    """Per label set, its value in each step (NaN: none), series combined as the
    deployment metrics combine them (RATIO gauges averaged, others added up), CPU
    seconds as cores, filesystem utilisation under UTILIZATION; and the node ids."""
    # Points older than the rollup in or around the window: raw points only.
    covered = tv.rollup_covers(scan, _SOURCE_NAMES)
    bucket = tv.rollup_level(window) if covered else None
    if bucket is None and window.end_ms - window.start_ms > RAW_MAX_MS:
        sets, ids = _statement_sets(scan, window)
    else:
        sets, ids = _series_sets(scan, window, covered, bucket)
    starts = np.arange(window.n_steps, dtype=np.int64) * window.step_ms + window.start_ms
    seconds = (np.minimum(starts + window.step_ms, window.end_ms) - starts) / 1000
    cpu, usage, limit = (METRICS.index(vm) for vm in (nodes.CPU, nodes.FS_USAGE, nodes.FS_LIMIT))
    with np.errstate(invalid="ignore", divide="ignore"):
        for (i, rank, l2), v in list(sets.items()):
            if i == cpu:
                sets[(i, rank, l2)] = v / seconds
            elif i == usage and (limit, rank, l2) in sets:
                lim = sets[(limit, rank, l2)]
                sets[(UTILIZATION, rank, l2)] = np.where(lim > 0, v / lim, np.nan)
    return {k: v for k, v in sets.items() if np.isfinite(v).any()}, ids


class Raw(bytes):
    """JSON text (UTF-8) placed as is by :func:`_dump`."""


def _dump(v: Any, out: list[bytes]) -> list[bytes]:
    """Append ``v`` as JSON to ``out``; joined once, the megabytes of points are copied once."""
    if isinstance(v, Raw):
        out.append(v)
    elif isinstance(v, dict):
        sep = "{"
        for k, x in v.items():
            out.append(f"{sep}{json.dumps(k)}:".encode())
            _dump(x, out)
            sep = ","
        out.append(b"}" if sep == "," else b"{}")
    elif isinstance(v, list):
        sep = "["
        for x in v:
            out.append(sep.encode())
            _dump(x, out)
            sep = ","
        out.append(b"]" if sep == "," else b"[]")
    else:
        out.append(json.dumps(v, separators=(",", ":")).encode())
    return out


def _points(sets: dict[Key, np.ndarray], window: windows.Window) -> dict[Key, Raw]:
    """Each label set's finite points as JSON, formatted by Arrow (Python's float repr
    costs ~0.5 us a value here, ten times Arrow's; both write text that reads back as
    the same double). The timestamp is the step's start as :func:`iso` writes it."""
    if not sets:
        return {}
    ms = np.arange(window.n_steps, dtype=np.int64) * window.step_ms + window.start_ms
    stamps = np.where(ms % 1000 == 0, np.datetime_as_string(ms.astype("datetime64[ms]"), unit="s"),
                      np.datetime_as_string(ms.astype("datetime64[ms]").astype("datetime64[us]"), unit="us"))
    suffix = pa.array([f',"timestamp":"{t}Z"}}' for t in stamps.tolist()])
    keys = list(sets)
    values = np.stack([sets[k] for k in keys])
    finite = np.isfinite(values)
    rows, steps = np.nonzero(finite)
    points = pc.binary_join_element_wise('{"value":', pc.cast(pa.array(values[finite]), pa.string()),
                                         suffix.take(pa.array(steps)), "")
    offsets = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=len(keys)))]).astype(np.int32)
    text = pc.binary_join_element_wise("[", pc.binary_join(pa.ListArray.from_arrays(pa.array(offsets), points), ","),
                                       "]", "")
    return {k: Raw(t) for k, t in zip(keys, text.cast(pa.binary()).to_pylist())}  # bytes: no UTF-8 round trip


def training_job_metrics(store: Store, ws: str, job_id: str, window: windows.Window, job: dict) -> bytes:
    """The GetTrainingJobMetricsResponseV1 body as JSON (``job`` is the TrainingJobV1 view)."""
    scan = Scan(store, ws, SCOPE, job_id, window)
    sets, ids = _label_sets(scan, window)
    gpu_mem, gpu_util, cpu, cpu_mem, fs = (METRICS.index(vm) for vm in (nodes.GPU_MEMORY, nodes.GPU_UTIL, nodes.CPU,
                                                                        nodes.MEMORY, nodes.FS_USAGE))
    ranks = sorted({rank for _, rank, _ in sets})
    leader = nodes.leader(ranks)
    # The read-write cache: the lowest-ranked node reporting a cache mount (the leader when it does).
    cache = next((r for r in ([leader] if leader is not None else []) + ranks if (fs, r, "cache") in sets), None)
    # Only what the answer shows is formatted (not limits, nor other mounts).
    shown = {k for k in sets if k[0] in (gpu_mem, gpu_util, cpu, cpu_mem) or k[2] == "ephemeral"
             or (k[2] == "cache" and k[1] == cache and k[0] != METRICS.index(nodes.FS_LIMIT))}
    text = _points({k: v for k, v in sets.items() if k in shown}, window)
    none = Raw(b"[]")

    def storage(rank: int, mount: str) -> dict:
        return {"usage_bytes": text.get((fs, rank, mount), none), "utilization": text.get((UTILIZATION, rank, mount), none)}

    def node(rank: int) -> dict:
        def per_gpu(i: int) -> dict[str, Raw]:
            return {g: text[(i, rank, g)] for g in sorted((g for j, r, g in sets if j == i and r == rank), key=gpu_key)}

        return {
            "gpu_memory_usage_bytes": per_gpu(gpu_mem),
            "gpu_utilization": per_gpu(gpu_util),
            "cpu_usage": text.get((cpu, rank, ""), none),
            "cpu_memory_usage_bytes": text.get((cpu_mem, rank, ""), none),
            "ephemeral_storage": storage(rank, "ephemeral"),
        }

    per_node = {rank: node(rank) for rank in ranks}
    empty: dict[str, Any] = {"gpu_memory_usage_bytes": {}, "gpu_utilization": {}, "cpu_usage": none,
                             "cpu_memory_usage_bytes": none, "ephemeral_storage": storage(-2, "")}
    body = {
        **(per_node[leader] if leader is not None else empty),
        "training_job": job,
        "cache": storage(cache, "cache") if cache is not None else None,
        "per_node_metrics": [
            {"node_id": ids.get(rank) or (f"node-{rank}" if rank >= 0 else "node-0"), "metrics": per_node[rank]}
            for rank in ranks
        ],
    }
    return b"".join(_dump(body, []))
