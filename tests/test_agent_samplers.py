"""Samplers against injected OS boundaries (NVML, psutil, disk usage), and the real psutil once."""

from __future__ import annotations

import gzip
import json
import logging
import os
import pathlib
import subprocess
import sys
import time
from collections import namedtuple

import psutil
import pynvml
import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

from sonde.agent import hardware
from sonde.agent.core import Agent, resource_attrs
from sonde.agent.export import Exporter
from sonde.agent.gpu import GpuSampler
from sonde.agent.model import Counter
from sonde.agent.node import NodeSampler
from sonde.agent.process import ProcessTreeSampler
from sonde.spool import Spool

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "agent"
MiB = 1024 * 1024


# -- NVML ------------------------------------------------------------------------------------
class FixtureNvml:
    """The part of pynvml the sampler uses, answering recorded H200 values."""

    NVML_TEMPERATURE_GPU = pynvml.NVML_TEMPERATURE_GPU

    def __init__(self, devices: list[dict], init_error: Exception | None = None):
        self.devices = devices
        self.init_error = init_error
        self.calls: list[str] = []

    def nvmlInit(self):
        if self.init_error:
            raise self.init_error

    def nvmlShutdown(self):
        self.calls.append("shutdown")

    def nvmlDeviceGetCount(self):
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, i):
        return self.devices[i]

    def nvmlDeviceGetName(self, h):
        return h["name"]

    def nvmlDeviceGetUtilizationRates(self, h):
        return namedtuple("Utilization", "gpu memory")(**h["utilization"])

    def nvmlDeviceGetMemoryInfo(self, h):
        return namedtuple("Memory", "total used free")(**h["memory"])

    def nvmlDeviceGetPowerUsage(self, h):
        if h["power_mw"] is None:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return h["power_mw"]

    def nvmlDeviceGetTemperature(self, h, sensor):
        assert sensor == pynvml.NVML_TEMPERATURE_GPU
        return h["temperature_c"]


def h200() -> FixtureNvml:
    return FixtureNvml(json.loads((FIXTURES / "nvml_h200.json").read_text())["devices"])


def as_tuples(points):
    return [(p.name, p.unit, p.kind, p.value, p.attrs) for p in points]


def test_gpu_sampler_reports_every_gpu_with_exact_values(caplog):
    caplog.set_level(logging.INFO, "sonde.agent")
    s = GpuSampler(h200())
    first = s.sample()
    assert as_tuples(first) == [
        ("hw.gpu.utilization", "1", "gauge", 0.87, {"hw.gpu.index": 0}),
        ("hw.gpu.memory.usage", "By", "gauge", 120413601792, {"hw.gpu.index": 0}),
        ("hw.gpu.memory.limit", "By", "gauge", 150754820096, {"hw.gpu.index": 0}),
        ("hw.power", "W", "gauge", 612.345, {"hw.gpu.index": 0, "hw.type": "gpu"}),
        ("hw.temperature", "Cel", "gauge", 61.0, {"hw.gpu.index": 0, "hw.type": "gpu"}),
        ("hw.gpu.utilization", "1", "gauge", 0.0, {"hw.gpu.index": 1}),
        ("hw.gpu.memory.usage", "By", "gauge", 565182464, {"hw.gpu.index": 1}),
        ("hw.gpu.memory.limit", "By", "gauge", 150754820096, {"hw.gpu.index": 1}),
        ("hw.temperature", "Cel", "gauge", 33.0, {"hw.gpu.index": 1, "hw.type": "gpu"}),
    ]
    assert as_tuples(s.sample()) == as_tuples(first)
    # GPU 1 has no power reading: said once, not every interval
    assert [r.getMessage() for r in caplog.records].count("sonde agent: GPU 1: no power (Not Supported)") == 1
    assert s.describe() == {"gpu_count": 2, "gpu_type": "NVIDIA H200", "gpu_memory_mib": 143771}


def test_gpu_sampler_without_nvml_reports_nothing_and_says_so_once(caplog):
    caplog.set_level(logging.INFO, "sonde.agent")
    lib = FixtureNvml([], init_error=pynvml.NVMLError(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND))
    s = GpuSampler(lib)
    assert not s.available and s.sample() == [] and s.sample() == []
    assert s.describe() == {"gpu_count": 0}
    msgs = [r.getMessage() for r in caplog.records if "no GPU metrics" in r.getMessage()]
    assert len(msgs) == 1 and "NVML Shared Library Not Found" in msgs[0]


def test_gpu_sampler_with_zero_gpus_is_unavailable():
    s = GpuSampler(FixtureNvml([]))
    assert not s.available and s.reason == "NVML reports no GPUs" and s.sample() == []


def test_gpu_close_shuts_nvml_down():
    lib = h200()
    s = GpuSampler(lib)
    s.close()
    assert lib.calls == ["shutdown"] and s.sample() == []


# -- process tree ----------------------------------------------------------------------------
CpuTimes = namedtuple("CpuTimes", "user system")
MemInfo = namedtuple("MemInfo", "rss")


class FixtureProcess:
    """A psutil.Process look-alike over a dict of processes the test edits as time passes."""

    def __init__(self, table: dict[int, dict], pid: int):
        self.table, self.pid = table, pid

    def _row(self) -> dict:
        row = self.table.get(self.pid)
        if row is None:
            raise psutil.NoSuchProcess(self.pid)
        return row

    def create_time(self):
        return self._row()["create_time"]

    def cpu_times(self):
        r = self._row()
        return CpuTimes(r["user"], r["system"])

    def memory_info(self):
        return MemInfo(self._row()["rss"])

    def children(self, recursive=False):
        out = []
        for c in self._row()["children"]:
            if c in self.table:
                child = FixtureProcess(self.table, c)
                out.append(child)
                if recursive:
                    out += child.children(recursive=True)
        return out


def proc_table() -> tuple[int, dict[int, dict]]:
    doc = json.loads((FIXTURES / "proc_tree.json").read_text())
    return doc["root"], {int(k): v for k, v in doc["processes"].items()}


def values(points) -> dict[str, float]:
    return {p.name: p.value for p in points}


def test_process_tree_sums_cpu_and_memory_of_every_process():
    root, table = proc_table()
    s = ProcessTreeSampler(root, start_ns=1_000, process_factory=lambda pid: FixtureProcess(table, pid))
    points = s.sample()
    assert as_tuples(points) == [
        ("process.cpu.time", "s", "counter", 656.75, {}),
        ("process.memory.usage", "By", "gauge", 17681088512, {}),
    ]
    assert points[0].start_ns == 1_000 and s.processes == 4


def test_process_cpu_counter_stays_monotonic_when_processes_exit_and_restart():
    root, table = proc_table()
    pid = {"now": root}
    s = ProcessTreeSampler(lambda: pid["now"], start_ns=0, process_factory=lambda p: FixtureProcess(table, p))
    assert values(s.sample())["process.cpu.time"] == 656.75
    # the grandchild exits after using 0.5 s more; the workers keep working
    table[4260]["user"] += 0.5
    s.sample()
    del table[4260]
    table[4250]["user"] += 10
    assert values(s.sample())["process.cpu.time"] == 656.75 + 0.5 + 10
    # a worker vanishes between listing and reading: skipped, its last value kept
    class Vanishing(FixtureProcess):
        def children(self, recursive=False):
            kids = super().children(recursive)
            table.pop(4251, None)
            return kids
    s._root = Vanishing(table, root)
    assert values(s.sample())["process.cpu.time"] == 656.75 + 0.5 + 10
    # the supervised process restarts: new pid, new tree, the counter carries on
    table.clear()
    table[5000] = {"create_time": 2.0, "user": 0.25, "system": 0.25, "rss": 1000, "children": []}
    pid["now"] = 5000
    v = values(s.sample())
    assert v["process.cpu.time"] == 656.75 + 0.5 + 10 + 0.5
    assert v["process.memory.usage"] == 1000
    # between restarts: no process, memory 0, the counter holds
    pid["now"] = None
    assert values(s.sample()) == {"process.cpu.time": 656.75 + 0.5 + 10 + 0.5, "process.memory.usage": 0}


def test_process_sampler_with_real_psutil_on_this_process():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        s = ProcessTreeSampler(os.getpid(), start_ns=time.time_ns())
        first = values(s.sample())
        deadline = time.process_time() + 0.3
        while time.process_time() < deadline:  # burn CPU so the counter must move
            sum(i * i for i in range(1000))
        second = values(s.sample())
        assert s.processes >= 2  # this process and the sleeping child
        assert second["process.cpu.time"] >= first["process.cpu.time"] + 0.25
        assert 10 * MiB < second["process.memory.usage"] < 64 * 1024 * MiB
    finally:
        child.kill()
        child.wait()


def test_process_sampler_for_a_pid_that_does_not_exist():
    s = ProcessTreeSampler(2**22 + 12345, start_ns=0)
    assert values(s.sample()) == {"process.cpu.time": 0.0, "process.memory.usage": 0}


# -- node ------------------------------------------------------------------------------------
DiskUsage = namedtuple("DiskUsage", "total used free")
VirtualMemory = namedtuple("VirtualMemory", "total available")


def test_node_sampler_cpu_memory_and_both_mounts(caplog):
    disks = {"/": DiskUsage(100 * 2**30, 37 * 2**30, 63 * 2**30), "/models": DiskUsage(2**40, 2**39, 2**39)}
    readings = iter([0.0, 37.5, 50.0, 62.5])
    s = NodeSampler({"ephemeral": "/", "cache": "/models"}, disk_usage=lambda p: disks[p],
                    cpu_percent=lambda: next(readings), virtual_memory=lambda: VirtualMemory(64 * 2**30, 48 * 2**30))
    assert as_tuples(s.sample()) == [
        ("system.cpu.utilization", "1", "gauge", 0.375, {}),
        ("system.memory.usage", "By", "gauge", 16 * 2**30, {"system.memory.state": "used"}),
        ("system.memory.limit", "By", "gauge", 64 * 2**30, {}),
        ("system.filesystem.usage", "By", "gauge", 37 * 2**30, {"sonde.mount": "ephemeral", "system.filesystem.mountpoint": "/"}),
        ("system.filesystem.limit", "By", "gauge", 100 * 2**30, {"sonde.mount": "ephemeral", "system.filesystem.mountpoint": "/"}),
        ("system.filesystem.usage", "By", "gauge", 2**39, {"sonde.mount": "cache", "system.filesystem.mountpoint": "/models"}),
        ("system.filesystem.limit", "By", "gauge", 2**40, {"sonde.mount": "cache", "system.filesystem.mountpoint": "/models"}),
    ]
    # the cache volume goes away: skipped, warned once
    caplog.set_level(logging.WARNING, "sonde.agent")

    def gone(p):
        if p == "/models":
            raise FileNotFoundError(2, "No such file or directory", p)
        return disks[p]

    s._disk_usage = gone
    names = [(p.name, p.attrs.get("sonde.mount")) for p in s.sample()]
    s.sample()
    assert ("system.filesystem.usage", "cache") not in names and ("system.filesystem.usage", "ephemeral") in names
    assert sum("no cache filesystem metrics" in r.getMessage() for r in caplog.records) == 1


def test_node_sampler_with_the_real_os(tmp_path):
    s = NodeSampler({"ephemeral": str(tmp_path)})
    v = {p.name: p.value for p in s.sample()}
    assert 0.0 <= v["system.cpu.utilization"] <= 1.0
    assert 0 < v["system.memory.usage"] < v["system.memory.limit"]
    assert 0 < v["system.filesystem.usage"] < v["system.filesystem.limit"]


# -- hardware --------------------------------------------------------------------------------
def test_hardware_prefers_cgroup_limits():
    files = {"/sys/fs/cgroup/cpu.max": "350000 100000", "/sys/fs/cgroup/memory.max": str(32 * 2**30)}
    attrs = hardware.detect(GpuSampler(h200()).describe(), read=files.get, cpu_count=lambda: 64,
                            memory_total=lambda: 512 * 2**30)
    assert attrs == {"sonde.hw.gpu_count": 2, "sonde.hw.gpu_type": "NVIDIA H200", "sonde.hw.gpu_memory_mib": 143771,
                     "sonde.hw.cpu_millicores": 3500, "sonde.hw.memory_mib": 32 * 1024}


def test_hardware_without_limits_or_gpus():
    v1 = {"/sys/fs/cgroup/cpu/cpu.cfs_quota_us": "-1", "/sys/fs/cgroup/cpu/cpu.cfs_period_us": "100000",
          "/sys/fs/cgroup/memory/memory.limit_in_bytes": str(2**63 - 4096)}
    attrs = hardware.detect({"gpu_count": 0}, read=v1.get, cpu_count=lambda: 8, memory_total=lambda: 16 * 2**30)
    assert attrs == {"sonde.hw.gpu_count": 0, "sonde.hw.cpu_millicores": 8000, "sonde.hw.memory_mib": 16 * 1024}
    v2 = {"/sys/fs/cgroup/cpu.max": "max 100000", "/sys/fs/cgroup/memory.max": "max"}
    assert hardware.detect({}, read=v2.get, cpu_count=lambda: 2, memory_total=lambda: 2**30)["sonde.hw.cpu_millicores"] == 2000


# -- one tick on the wire --------------------------------------------------------------------
def decode_metrics(gz: bytes) -> tuple[dict, dict]:
    req = ExportMetricsServiceRequest.FromString(gzip.decompress(gz))
    (rm,) = req.resource_metrics
    res = {kv.key: getattr(kv.value, kv.value.WhichOneof("value")) for kv in rm.resource.attributes}
    out = {}
    for sm in rm.scope_metrics:
        assert sm.scope.name == "sonde.agent"
        for m in sm.metrics:
            data = getattr(m, m.WhichOneof("data"))
            for dp in data.data_points:
                attrs = tuple(sorted((kv.key, getattr(kv.value, kv.value.WhichOneof("value"))) for kv in dp.attributes))
                out[(m.name, attrs)] = (m.unit, m.WhichOneof("data"), getattr(dp, dp.WhichOneof("value")),
                                         dp.time_unix_nano, dp.start_time_unix_nano,
                                         getattr(data, "is_monotonic", None))
    return res, out


def test_a_tick_on_the_wire(tmp_path):
    hw = hardware.detect(GpuSampler(h200()).describe(), read=lambda p: None, cpu_count=lambda: 16,
                         memory_total=lambda: 128 * 2**30)
    attrs = resource_attrs(placement={"sonde.model_id": "m1", "sonde.deployment_id": "d1"}, replica="ab3de",
                           environment="production", hardware=hw, host_name="node-7")
    spool = Spool(str(tmp_path / "spool"))
    exporter = Exporter("http://127.0.0.1:9", "k", spool, attrs)  # never started: the tick only queues
    restarts = Counter(2)

    class Clock:
        def time_ns(self):
            return 1_714_564_800_000_000_000

        def monotonic(self):
            return 1.0

        def sleep(self, s):
            pass

    agent = Agent(exporter, [GpuSampler(h200())], interval=1, clock=Clock(), restarts=restarts, start_ns=5)
    agent.state.set("ready")
    agent.tick()
    ((kind, body, n),) = exporter._queue
    res, points = decode_metrics(body)
    assert res == {"sonde.model_id": "m1", "sonde.deployment_id": "d1", "sonde.replica": "ab3de",
                   "service.instance.id": "ab3de", "sonde.environment": "production", "host.name": "node-7",
                   "sonde.hw.gpu_count": 2, "sonde.hw.gpu_type": "NVIDIA H200", "sonde.hw.gpu_memory_mib": 143771,
                   "sonde.hw.cpu_millicores": 16000, "sonde.hw.memory_mib": 131072}
    ts = 1_714_564_800_000_000_000
    assert points[("hw.gpu.utilization", (("hw.gpu.index", 0),))] == ("1", "gauge", 0.87, ts, 0, None)
    assert points[("sonde.replica.state", (("state", "ready"),))] == ("1", "gauge", 1, ts, 0, None)
    assert points[("sonde.replica.state", (("state", "starting"),))] == ("1", "gauge", 0, ts, 0, None)
    assert points[("sonde.process.restarts", ())] == ("{restart}", "sum", 2, ts, 5, True)
    assert points[("sonde.agent.spool.usage", ())] == ("By", "gauge", 0, ts, 0, None)
    assert kind == "metrics" and n == len(points) == 9 + 2 + 1 + 2
    spool.close()


def test_linux_children_files_find_the_same_tree_as_psutil():
    from sonde.agent.process import LinuxProcess

    code = ("import subprocess, sys, time; "
            "ps = [subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)']) for _ in range(2)]; "
            "print('up', flush=True); time.sleep(30)")
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    try:
        assert parent.stdout.readline() == b"up\n"
        ours = sorted(p.pid for p in LinuxProcess(parent.pid).children(recursive=True))
        theirs = sorted(p.pid for p in psutil.Process(parent.pid).children(recursive=True))
        assert len(ours) == 2 and ours == theirs
        assert sorted(p.pid for p in LinuxProcess(os.getpid()).children(recursive=True)) == sorted(
            p.pid for p in psutil.Process().children(recursive=True))
    finally:
        for p in psutil.Process(parent.pid).children(recursive=True):
            p.kill()
        parent.kill()
        parent.wait()
    with pytest.raises(psutil.NoSuchProcess):
        LinuxProcess(parent.pid).children()
