"""psutil sampler for a process tree: CPU time and memory working set.

``pid`` is an int or a callable returning the current root pid (the supervisor's child
changes on every restart); ``process_factory`` builds a psutil-like ``Process`` for a
pid (:class:`LinuxProcess` by default, fixture objects in tests).

``process.cpu.time`` (s) is one cumulative counter for the replica, monotonic across
child restarts and processes that come and go: the last value seen of every process
that has since exited is kept, so a worker exiting does not look like a counter reset.
CPU burnt by a process after its last sample, or by one that lives less than one
interval, is not seen (the cost of sampling instead of cgroup accounting).
``process.memory.usage`` (By) is the sum of the tree's resident set sizes; shared
pages count once per process, as in ``ps``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from typing import Any

import psutil

from .model import Point


class LinuxProcess(psutil.Process):
    """``psutil.Process`` whose ``children`` reads ``/proc/PID/task/TID/children``.

    psutil finds children by reading ``/proc/*/stat`` of every process on the machine:
    ~2 ms per sample with 80 processes, tens of ms on a busy node, which alone would
    break the 1%-of-a-core budget at a 1 s interval. The children files cost one read per
    thread of the tree's processes. Kernels without them (CONFIG_PROC_CHILDREN off) get
    psutil's scan."""

    def children(self, recursive: bool = False) -> list[psutil.Process]:
        try:
            tids = os.listdir(f"/proc/{self.pid}/task")
            kids: list[int] = []
            for tid in tids:
                with open(f"/proc/{self.pid}/task/{tid}/children") as f:
                    kids += [int(x) for x in f.read().split()]
        except FileNotFoundError:
            if not os.path.exists(f"/proc/{self.pid}"):
                raise psutil.NoSuchProcess(self.pid) from None
            return super().children(recursive)  # no children files in this kernel
        except ProcessLookupError:
            raise psutil.NoSuchProcess(self.pid) from None
        out: list[psutil.Process] = []
        for pid in kids:
            try:
                child = LinuxProcess(pid)
            except psutil.Error:
                continue  # exited since the listing
            out.append(child)
            if recursive:
                try:
                    out += child.children(recursive=True)
                except psutil.Error:
                    pass
        return out


def _default_factory(pid: int) -> psutil.Process:
    return LinuxProcess(pid) if os.path.isdir("/proc") else psutil.Process(pid)


class ProcessTreeSampler:
    def __init__(
        self,
        pid: int | Callable[[], int | None],
        *,
        start_ns: int,
        process_factory: Callable[[int], Any] = _default_factory,
    ):
        self._pid = pid if callable(pid) else (lambda: pid)
        self._factory = process_factory
        self._start_ns = start_ns
        self._root: Any = None
        self._last: dict[tuple[int, float], float] = {}  # (pid, create_time) -> cpu seconds
        self._retired = 0.0
        self.processes = 0

    def _tree(self) -> list[Any]:
        pid = self._pid()
        if pid is None:
            self._root = None
            return []
        try:
            if self._root is None or self._root.pid != pid:
                self._root = self._factory(pid)
            return [self._root, *self._root.children(recursive=True)]
        except psutil.Error:
            self._root = None
            return []

    def sample(self) -> list[Point]:
        live: dict[tuple[int, float], float] = {}
        rss = 0
        for proc in self._tree():
            try:
                with getattr(proc, "oneshot", contextlib.nullcontext)():  # one read of /proc/PID/stat
                    key = (proc.pid, proc.create_time())
                    times = proc.cpu_times()
                    mem = proc.memory_info()
            except psutil.Error:  # exited or became a zombie between listing and reading
                continue
            live[key] = times.user + times.system
            rss += mem.rss
        for key, seconds in self._last.items():
            if key not in live:
                self._retired += seconds
        self._last = live
        self.processes = len(live)
        return [
            Point("process.cpu.time", "s", "counter", self._retired + sum(live.values()), {}, self._start_ns),
            Point("process.memory.usage", "By", "gauge", rss),
        ]
