"""One node model for training jobs and loops deployments.

Both answer per node rank (``sonde.node_rank``; -1 when the resource sent none) with
the same six metrics from the agent's samplers: CPU time, memory, GPU utilisation
and memory per GPU, and filesystem usage and limit per mount. Each metric's
alternatives (``process.*`` / ``container.*``) are chosen per replica as for
deployments (query/sources.py).

- The **leader** is node rank 0; a job or deployment whose telemetry names no rank is
  one node, and that node (rank -1) is its leader. Without rank 0, the lowest rank
  leads.
- A node's **id** is the latest non-empty ``sonde.node_id`` its own series (CPU,
  memory, filesystems; not the GPUs') sent in or around the window.
"""

from __future__ import annotations

from collections.abc import Iterable

from . import gauges
from .catalogue import COUNTER, GAUGE, LabelKind, Source, VendorMetric
from .scan import Scan

_V = VendorMetric
CPU = _V("node_cpu_seconds", COUNTER, "SECONDS", "time",
         (Source("process.cpu.time", "s"), Source("container.cpu.time", "s")), LabelKind.NODE)
MEMORY = _V("node_memory_bytes", GAUGE, "BYTES", "bytes",
            (Source("process.memory.usage", "By"), Source("container.memory.working_set", "By")), LabelKind.NODE)
GPU_UTIL = _V("node_gpu_utilization", GAUGE, "RATIO", "ratio", (Source("hw.gpu.utilization", "1"),),
              LabelKind.NODE_GPU)
GPU_MEMORY = _V("node_gpu_memory_bytes", GAUGE, "BYTES", "bytes", (Source("hw.gpu.memory.usage", "By"),),
                LabelKind.NODE_GPU)
FS_USAGE = _V("node_fs_usage_bytes", GAUGE, "BYTES", "bytes", (Source("system.filesystem.usage", "By"),),
              LabelKind.NODE_MOUNT)
FS_LIMIT = _V("node_fs_limit_bytes", GAUGE, "BYTES", "bytes", (Source("system.filesystem.limit", "By"),),
              LabelKind.NODE_MOUNT)
METRICS = (GPU_MEMORY, GPU_UTIL, CPU, MEMORY, FS_USAGE, FS_LIMIT)

#: the series a node's id is read from: its own, not its GPUs'
NODE_ID_SOURCES = frozenset(s for vm in (CPU, MEMORY, FS_USAGE) for s in vm.source_names)


def leader(ranks: Iterable[int]) -> int | None:
    """The leading node rank among ``ranks`` (None when there are none)."""
    ranks = sorted(ranks)
    return 0 if 0 in ranks else (ranks[0] if ranks else None)


def node_ids(scan: Scan) -> dict[int, str]:
    """Per node rank, its id (the module's rule); ranks that sent none are left out."""
    w = scan.window
    where, params = scan.where(sorted(NODE_ID_SOURCES), w.start_ns - gauges.LOOK_AROUND_NS,
                               w.end_ns + gauges.LOOK_AROUND_NS)
    rows = scan.run(
        "SELECT node_rank, argMaxIf(attrs['sonde.node_id'], ts, attrs['sonde.node_id'] != '') AS node_id"
        f" FROM {scan.table} {where} GROUP BY node_rank",
        {**scan.params(), **params},
    ).to_pylist()
    return {int(r["node_rank"]): r["node_id"] for r in rows if r["node_id"]}
