"""The three servers as child processes on loopback, each with its data in a temp dir.

Debian's ``prometheus`` and ``victoria-metrics`` (``./run test`` installs them; so does
``apt-get install prometheus victoria-metrics``) and a real ``sonde serve``. Every
server exposes ``cpu()`` (user + system seconds of the process, all its threads, plus
its children), ``settle()`` (wait until background work after a load has quieted, so
that merges started by the load are paid by it), ``disk_bytes()`` after its own
flush, and ``stop()``.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys
import time

import httpx
import psutil

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.append(str(ROOT / "tests"))  # after bench/peers: its module names win

from live_server import LiveServer, free_port  # noqa: E402

BINARIES = {"prometheus": "SONDE_SKIP_PROMETHEUS", "victoria-metrics": "SONDE_SKIP_VICTORIA"}


def missing_binaries() -> list[str]:
    return [name for name in BINARIES if not shutil.which(name)]


def tree_bytes(path: pathlib.Path) -> int:
    """Sum of file sizes under ``path`` (hard links counted where they appear)."""
    return sum((pathlib.Path(d) / f).stat().st_size for d, _, files in os.walk(path) for f in files)


class Server:
    name = ""
    url = ""
    proc: subprocess.Popen | None = None

    def cpu(self) -> float:
        p = psutil.Process(self.proc.pid)
        own = p.cpu_times()
        total = own.user + own.system + own.children_user + own.children_system
        for child in p.children(recursive=True):
            try:
                t = child.cpu_times()
                total += t.user + t.system
            except psutil.NoSuchProcess:
                pass
        return total

    def settle(self, quiet: float = 0.1, longest: float = 60) -> float:
        """Wait (at most ``longest`` s) until the server uses under ``quiet`` of a core
        over half a second; returns the seconds waited."""
        t0 = time.monotonic()
        last = self.cpu()
        while time.monotonic() - t0 < longest:
            time.sleep(0.5)
            now = self.cpu()
            if now - last < quiet * 0.5:
                break
            last = now
        return time.monotonic() - t0

    def _wait_ready(self, path: str, log: pathlib.Path, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}: {log.read_text()[-2000:]}")
            try:
                if httpx.get(self.url + path, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} not ready in {timeout} s: {log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


class Prometheus(Server):
    name = "prometheus"

    def __init__(self, workdir: pathlib.Path):
        self.dir = workdir / "prometheus"
        self.dir.mkdir(parents=True)
        (self.dir / "prometheus.yml").write_text("global: {}\n")
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        log = self.dir / "log.txt"
        # the receiver takes remote write at /api/v1/write; the admin API's snapshot
        # persists the head as a block, which is how its bytes on disk are measured
        self.proc = subprocess.Popen(
            ["prometheus", f"--config.file={self.dir / 'prometheus.yml'}", f"--storage.tsdb.path={self.dir / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}", "--web.enable-remote-write-receiver",
             "--web.enable-admin-api", "--storage.tsdb.retention.time=30d"],
            stdout=log.open("wb"), stderr=subprocess.STDOUT)
        self._wait_ready("/-/ready", log)
        self.write_url = self.url + "/api/v1/write"
        self.write_headers: dict = {}

    def disk_bytes(self) -> tuple[int, str]:
        r = httpx.post(self.url + "/api/v1/admin/tsdb/snapshot", timeout=600).raise_for_status()
        snap = self.dir / "data" / "snapshots" / r.json()["data"]["name"]
        return tree_bytes(snap), "blocks of a TSDB snapshot (the head written as a block)"


class VictoriaMetrics(Server):
    name = "victoria-metrics"

    def __init__(self, workdir: pathlib.Path):
        self.dir = workdir / "victoria-metrics"
        self.dir.mkdir(parents=True)
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        log = self.dir / "log.txt"
        self.proc = subprocess.Popen(
            ["victoria-metrics", f"-storageDataPath={self.dir / 'data'}", f"-httpListenAddr=127.0.0.1:{port}",
             "-retentionPeriod=1y", "-loggerLevel=WARN"],
            stdout=log.open("wb"), stderr=subprocess.STDOUT)
        self._wait_ready("/health", log)
        self.write_url = self.url + "/api/v1/write"
        self.write_headers = {}

    def flush(self) -> None:
        # VictoriaMetrics acknowledges a write once buffered; make it searchable
        httpx.get(self.url + "/internal/force_flush", timeout=120).raise_for_status()

    def disk_bytes(self) -> tuple[int, str]:
        # a graceful stop writes every in-memory part out (force_flush alone leaves
        # recent parts in memory for up to -inmemoryDataFlushInterval)
        self.flush()
        self.settle()
        self.stop()
        return tree_bytes(self.dir / "data"), "data dir after /internal/force_flush, merges and a graceful stop"


class Sonde(Server):
    def __init__(self, workdir: pathlib.Path, name: str, path: str):
        self.name = name
        self.dir = workdir / name
        self.dir.mkdir(parents=True)
        self.live = LiveServer(str(self.dir)).start()
        self.proc, self.url = self.live.proc, self.live.url
        self.write_url = self.url + path
        self.write_headers = self.live.headers("ingest_key")
        self.query_headers = self.live.headers("management_key")
        self.stopped = False

    def stop(self) -> None:
        if not self.stopped:
            self.live.stop()
            self.stopped = True

    def disk_bytes(self) -> tuple[int, str]:
        """Stops the server (chDB allows one process per data dir), then merges every
        table (OPTIMIZE FINAL) and sums the active parts' ``bytes_on_disk``, in a child
        process so that this one never holds a chDB session."""
        self.stop()
        script = (
            "import json, sys\n"
            "from sonde.store.chdb import ChdbExecutor\n"
            "ex = ChdbExecutor.open(sys.argv[1])\n"
            "t = ex.query_arrow(\"SELECT name FROM system.tables WHERE database = 'sonde' AND engine LIKE '%MergeTree'\")\n"
            "for name in t.column('name').to_pylist():\n"
            "    ex.command(f'OPTIMIZE TABLE sonde.`{name}` FINAL')\n"
            "r = ex.query_arrow(\"SELECT sum(bytes_on_disk) AS b FROM system.parts WHERE database = 'sonde' AND active\")\n"
            "print(json.dumps(int(r.column('b')[0].as_py())))\n")
        out = subprocess.run([sys.executable, "-c", script, str(self.dir / "store")], check=True,
                             capture_output=True, text=True, timeout=900)
        return json.loads(out.stdout.strip().splitlines()[-1]), "active parts' bytes_on_disk after OPTIMIZE FINAL"
