"""What the replica runs on, as resource attributes, so the server can fill instance types.

| attribute | value |
|---|---|
| ``sonde.hw.gpu_count`` | GPUs NVML sees (0 without NVML) |
| ``sonde.hw.gpu_type`` | the first GPU's NVML name, e.g. ``NVIDIA H200`` (absent without GPUs) |
| ``sonde.hw.gpu_memory_mib`` | memory of one GPU, MiB (absent without GPUs) |
| ``sonde.hw.cpu_millicores`` | the cgroup CPU quota if one is set, else usable CPUs x 1000 |
| ``sonde.hw.memory_mib`` | the cgroup memory limit if lower than the node's memory, else the node's |

Containers see the node's CPUs and memory through ``/proc``; the cgroup limits are
what the replica was actually given (the instance type), so they win when set.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import psutil


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def cgroup_cpu_millicores(read: Callable[[str], str | None]) -> int | None:
    v2 = read("/sys/fs/cgroup/cpu.max")  # "max 100000" or "<quota> <period>"
    if v2:
        quota, _, period = v2.partition(" ")
        if quota != "max" and period:
            return int(int(quota) * 1000 / int(period))
        return None
    quota, period = read("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"), read("/sys/fs/cgroup/cpu/cpu.cfs_period_us")
    if quota and period and int(quota) > 0:
        return int(int(quota) * 1000 / int(period))
    return None


def cgroup_memory_bytes(read: Callable[[str], str | None]) -> int | None:
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        value = read(path)
        if value and value != "max":
            return int(value)
    return None


def detect(
    gpu: dict[str, Any],
    *,
    read: Callable[[str], str | None] = _read,
    cpu_count: Callable[[], int] = _usable_cpus,
    memory_total: Callable[[], int] = lambda: psutil.virtual_memory().total,
) -> dict[str, Any]:
    """Resource attributes from ``gpu`` (:meth:`GpuSampler.describe`) and the cgroup/node."""
    attrs: dict[str, Any] = {"sonde.hw.gpu_count": int(gpu.get("gpu_count", 0))}
    if gpu.get("gpu_count"):
        attrs["sonde.hw.gpu_type"] = gpu["gpu_type"]
        attrs["sonde.hw.gpu_memory_mib"] = int(gpu["gpu_memory_mib"])
    millicores = cgroup_cpu_millicores(read)
    attrs["sonde.hw.cpu_millicores"] = millicores if millicores else cpu_count() * 1000
    total = memory_total()
    limit = cgroup_memory_bytes(read)
    attrs["sonde.hw.memory_mib"] = min(total, limit if limit else total) // (1024 * 1024)
    return attrs
