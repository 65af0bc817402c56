"""Node sampler: CPU, memory, and the ephemeral and cache filesystems.

Every OS boundary is a constructor argument: ``cpu_percent`` (psutil's, non-blocking:
percent since the previous call), ``virtual_memory`` (psutil's), and ``disk_usage``
(``shutil.disk_usage``'s shape: ``total``, ``used``, ``free``).

| name | unit | attributes |
|---|---|---|
| ``system.cpu.utilization`` | ``1`` (0..1) | |
| ``system.memory.usage`` | ``By`` | ``system.memory.state=used`` (total - available: what cannot be reclaimed) |
| ``system.memory.limit`` | ``By`` | |
| ``system.filesystem.usage`` | ``By`` | ``sonde.mount`` = ``ephemeral``/``cache``, ``system.filesystem.mountpoint`` |
| ``system.filesystem.limit`` | ``By`` | the same |

A filesystem that cannot be read (the cache dir not mounted yet) is skipped, said once.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from typing import Any

import psutil

from .model import Point

log = logging.getLogger("sonde.agent")


class NodeSampler:
    def __init__(
        self,
        mounts: dict[str, str],
        *,
        disk_usage: Callable[[str], Any] = shutil.disk_usage,
        cpu_percent: Callable[[], float] = lambda: psutil.cpu_percent(interval=None),
        virtual_memory: Callable[[], Any] = psutil.virtual_memory,
        logger: logging.Logger = log,
    ):
        """``mounts``: role (``ephemeral``, ``cache``) -> a path on that filesystem."""
        self._mounts = dict(mounts)
        self._disk_usage = disk_usage
        self._cpu_percent = cpu_percent
        self._virtual_memory = virtual_memory
        self._log = logger
        self._unreadable: set[str] = set()
        self._cpu_percent()  # psutil's first non-blocking call has no previous reading: prime it

    def sample(self) -> list[Point]:
        out = [Point("system.cpu.utilization", "1", "gauge", self._cpu_percent() / 100.0)]
        vm = self._virtual_memory()
        out.append(Point("system.memory.usage", "By", "gauge", int(vm.total - vm.available),
                         {"system.memory.state": "used"}))
        out.append(Point("system.memory.limit", "By", "gauge", int(vm.total)))
        for role, path in self._mounts.items():
            try:
                du = self._disk_usage(path)
            except OSError as exc:
                if path not in self._unreadable:
                    self._unreadable.add(path)
                    self._log.warning("sonde agent: no %s filesystem metrics for %s: %s", role, path, exc)
                continue
            self._unreadable.discard(path)
            attrs = {"sonde.mount": role, "system.filesystem.mountpoint": path}
            out.append(Point("system.filesystem.usage", "By", "gauge", int(du.used), attrs))
            out.append(Point("system.filesystem.limit", "By", "gauge", int(du.total), dict(attrs)))
        return out
