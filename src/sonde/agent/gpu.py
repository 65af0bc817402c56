"""NVML sampler: per GPU utilisation, memory used/total, power and temperature.

The NVML library is a constructor argument (``nvml``): by default the real ``pynvml``
module from ``nvidia-ml-py``, in tests a fixture object with the same functions. A
machine without NVML (no driver, no GPU) reports no GPU metrics and says so once.

Emitted (OTel hardware semantic conventions; ``hw.gpu.index`` on every point):

| name | unit | kind | source |
|---|---|---|---|
| ``hw.gpu.utilization`` | ``1`` | gauge, 0..1 | ``nvmlDeviceGetUtilizationRates().gpu / 100`` |
| ``hw.gpu.memory.usage`` | ``By`` | gauge | ``nvmlDeviceGetMemoryInfo().used`` |
| ``hw.gpu.memory.limit`` | ``By`` | gauge | ``nvmlDeviceGetMemoryInfo().total`` |
| ``hw.power`` | ``W`` | gauge | ``nvmlDeviceGetPowerUsage()`` (mW) / 1000, ``hw.type=gpu`` |
| ``hw.temperature`` | ``Cel`` | gauge | ``nvmlDeviceGetTemperature(h, NVML_TEMPERATURE_GPU)``, ``hw.type=gpu`` |

``python -m sonde.agent.gpu`` prints one sample and the per-sample cost.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from .model import Point

log = logging.getLogger("sonde.agent")

NVML_TEMPERATURE_GPU = 0  # the constant's value in nvml.h, for fixtures that lack it


def load_pynvml() -> Any:
    import pynvml

    return pynvml


class GpuSampler:
    def __init__(self, nvml: Any = None, *, logger: logging.Logger = log):
        self._log = logger
        self._nvml = None
        self._handles: list[Any] = []
        self._failed: set[tuple[int, str]] = set()
        self.available = False
        self.reason = ""
        try:
            lib = nvml if nvml is not None else load_pynvml()
            lib.nvmlInit()
            count = int(lib.nvmlDeviceGetCount())
            self._handles = [lib.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
            self._nvml = lib
            self.available = count > 0
            self.reason = "" if count else "NVML reports no GPUs"
        except Exception as exc:  # ImportError, NVMLError_LibraryNotFound, driver errors
            self.reason = f"NVML unavailable ({type(exc).__name__}: {exc})"
        if not self.available:
            self._log.info("sonde agent: no GPU metrics: %s", self.reason or "no NVML")

    @property
    def count(self) -> int:
        return len(self._handles)

    def describe(self) -> dict[str, Any]:
        """GPU count, type (the first GPU's name) and per-GPU memory in MiB, for resource attributes."""
        if not self.available:
            return {"gpu_count": 0}
        lib, h = self._nvml, self._handles[0]
        name = lib.nvmlDeviceGetName(h)
        if isinstance(name, bytes):
            name = name.decode()
        return {
            "gpu_count": len(self._handles),
            "gpu_type": str(name),
            "gpu_memory_mib": int(lib.nvmlDeviceGetMemoryInfo(h).total) // (1024 * 1024),
        }

    def _read(self, index: int, what: str, fn) -> Any:
        try:
            return fn()
        except Exception as exc:  # e.g. NVMLError_NotSupported for power on some boards
            if (index, what) not in self._failed:
                self._failed.add((index, what))
                self._log.info("sonde agent: GPU %d: no %s (%s)", index, what, exc)
            return None

    def sample(self) -> list[Point]:
        if not self.available:
            return []
        lib, out = self._nvml, []
        temp_sensor = getattr(lib, "NVML_TEMPERATURE_GPU", NVML_TEMPERATURE_GPU)
        for i, h in enumerate(self._handles):
            idx = {"hw.gpu.index": i}
            util = self._read(i, "utilization", lambda: lib.nvmlDeviceGetUtilizationRates(h))
            if util is not None:
                out.append(Point("hw.gpu.utilization", "1", "gauge", util.gpu / 100.0, idx))
            mem = self._read(i, "memory", lambda: lib.nvmlDeviceGetMemoryInfo(h))
            if mem is not None:
                out.append(Point("hw.gpu.memory.usage", "By", "gauge", int(mem.used), dict(idx)))
                out.append(Point("hw.gpu.memory.limit", "By", "gauge", int(mem.total), dict(idx)))
            power = self._read(i, "power", lambda: lib.nvmlDeviceGetPowerUsage(h))
            if power is not None:
                out.append(Point("hw.power", "W", "gauge", power / 1000.0, {**idx, "hw.type": "gpu"}))
            temp = self._read(i, "temperature", lambda: lib.nvmlDeviceGetTemperature(h, temp_sensor))
            if temp is not None:
                out.append(Point("hw.temperature", "Cel", "gauge", float(temp), {**idx, "hw.type": "gpu"}))
        return out

    def close(self) -> None:
        if self._nvml is not None:
            try:
                self._nvml.nvmlShutdown()
            except Exception:
                pass
            self._nvml = None
            self.available = False


def probe(samples: int = 200, nvml: Any = None) -> int:
    """Print one sample and the mean per-sample cost (wall and CPU) over ``samples`` runs."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    sampler = GpuSampler(nvml)
    if not sampler.available:
        print(f"no GPU: {sampler.reason}")
        return 1
    print(f"hardware: {sampler.describe()}")
    for p in sampler.sample():
        print(f"{p.name:22} {p.unit:4} {p.value!r:>16}  {p.attrs}")
    wall0, cpu0 = time.perf_counter(), time.process_time()
    for _ in range(samples):
        sampler.sample()
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    print(f"per sample over {samples}: {wall / samples * 1e6:.0f} us wall, {cpu / samples * 1e6:.0f} us CPU "
          f"({sampler.count} GPU(s))")
    sampler.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(probe())
