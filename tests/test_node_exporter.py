"""Debian's ``prometheus-node-exporter``, scraped by ``sonde agent watch --scrape``: its
series are custom metrics of the deployment, under their names as sent, with the kinds
their Prometheus types give (docs/model-servers.md, "Node exporter").

Everything is real: the exporter reads this machine's /proc, a ``sonde serve`` child
stores what a ``sonde agent watch`` child scrapes, and the API answers. What the agent
saw is checked against the exporter's own page, read by this test all along (the load
average moves, so its mean must lie among the values the page showed), against
/proc/meminfo, and, for the CPU counters, against the wall-clock time they cover.

``./run test`` installs the package when missing; without it this test fails, saying
so, unless ``SONDE_SKIP_NODE_EXPORTER=1``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from live_server import LiveServer, free_port
from test_agent_e2e import wait_until

pytestmark = pytest.mark.e2e

MODEL, DEP, REPLICA = "m-node", "d-node", "r0001"
URL = f"/v1/models/{MODEL}/deployments/{DEP}/metrics"
# Only the collectors this test reads: the others probe hardware, filesystems and
# services that containers lack or that are slow there, and add hundreds of series.
COLLECTORS = ("loadavg", "cpu", "meminfo")
# Several seconds of scrapes after the first one, so that the CPU counters' increases
# cover enough time for a ratio to wall-clock time to mean something on a busy machine.
COVERED_S = 15


def now_ms() -> int:
    return time.time_ns() // 10**6


class Exporter:
    """The node exporter on a free loopback port, and its page read every 0.25 s from
    before the agent starts until after it stops.

    The load average changes every 5 s, so reading the page four times a second sees
    every value the agent can have scraped, even on a busy machine."""

    def __init__(self, binary: str, log_path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/metrics"
        self.log_path = log_path
        self.log = open(log_path, "wb")
        self.proc = subprocess.Popen(
            [binary, f"--web.listen-address=127.0.0.1:{self.port}", "--collector.disable-defaults",
             *(f"--collector.{c}" for c in COLLECTORS), "--web.disable-exporter-metrics"],
            stdout=self.log, stderr=subprocess.STDOUT)
        self.loads: list[float] = []
        self.page: dict[str, list] = {}
        self.http = httpx.Client(timeout=5)  # one client: a new one per read costs more than the read
        self._stop = threading.Event()
        self._reader = threading.Thread(target=self._read_all_along, daemon=True)

    def read(self) -> dict[str, list]:
        """The page's samples by name."""
        text = self.http.get(self.url).raise_for_status().text
        page: dict[str, list] = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                page.setdefault(s.name, []).append(s)
        self.loads.append(page["node_load1"][0].value)
        return page

    def answers(self) -> bool:
        if self.proc.poll() is not None:
            pytest.fail(f"prometheus-node-exporter exited with {self.proc.returncode}: "
                        + self.log_path.read_text()[-2000:])
        try:
            self.page = self.read()
            return True
        except httpx.HTTPError:
            return False

    def start_reading(self) -> None:
        self._reader.start()

    def _read_all_along(self) -> None:
        while not self._stop.wait(0.25):
            try:
                self.page = self.read()
            except httpx.HTTPError:
                continue

    def stop(self) -> None:
        self._stop.set()
        if self._reader.is_alive():
            self._reader.join(10)
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.http.close()
        self.log.close()


@pytest.fixture
def exporter(tmp_path):
    if os.environ.get("SONDE_SKIP_NODE_EXPORTER") == "1":
        pytest.skip("SONDE_SKIP_NODE_EXPORTER=1")
    binary = shutil.which("prometheus-node-exporter") or "/usr/bin/prometheus-node-exporter"
    if not os.access(binary, os.X_OK):
        pytest.fail(f"{binary} not found: install Debian's prometheus-node-exporter (`./run test` does), "
                    "or set SONDE_SKIP_NODE_EXPORTER=1 to skip this test")
    exp = Exporter(binary, tmp_path / "node-exporter.log")
    try:
        wait_until(exp.answers, 30, "the node exporter's page")
        exp.start_reading()
        yield exp
    finally:
        exp.stop()


@pytest.fixture
def server(tmp_path):
    (tmp_path / "data").mkdir()
    srv = LiveServer(tmp_path / "data")
    try:
        yield srv.start()
    finally:
        srv.stop()


@pytest.fixture
def agent(tmp_path, server, exporter):
    """``sonde agent watch`` on the exporter's process, scraping its page every second."""
    key_file = tmp_path / "ingest.key"
    key_file.write_text(server.creds["ingest_key"])
    err_path = tmp_path / "agent.stderr"
    cmd = [sys.executable, "-m", "sonde", "agent", "watch", "--server", server.url, "--key-file", str(key_file),
           "--model-id", MODEL, "--deployment-id", DEP, "--replica", REPLICA, "--interval", "1",
           "--scrape", exporter.url, "--spool-dir", str(tmp_path / "spool"), "--pid", str(exporter.proc.pid)]
    env = {k: v for k, v in os.environ.items() if k != "SONDE_API_KEY"}
    with open(err_path, "wb") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=env)
        proc.err_path = err_path
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def query(server: LiveServer, names: list[str], start_ms: int, end_ms: int) -> httpx.Response:
    return httpx.get(server.url + URL, headers=server.headers(), timeout=30, params={
        "mode": "SUMMARY", "metrics": ",".join(names), "start_epoch_millis": start_ms, "end_epoch_millis": end_ms})


def by_name(body: dict) -> dict[str, tuple[dict, list]]:
    """name -> (descriptor, values aligned to its label sets), of the one value set."""
    (step,) = body["metric_values"]
    return {d["name"]: (d, v) for d, v in zip(body["metric_descriptors"], step["values"])}


def meminfo_total_bytes() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024  # the kernel's "kB" is KiB
    raise AssertionError("no MemTotal in /proc/meminfo")


NAMES = ["node_load1", "node_cpu_seconds_total", "node_memory_MemTotal_bytes"]


def test_node_exporter_series_are_custom_metrics(server, exporter, agent):
    t0 = now_ms() - 1000

    def polled(cond):
        def check() -> bool:
            assert agent.poll() is None, agent.err_path.read_text()[-3000:]
            time.sleep(0.5)  # a query per half second leaves the two cores to the agent and the server
            return cond()
        return check

    def cpu_data_since(start_ms: int) -> bool:
        r = query(server, ["node_cpu_seconds_total"], start_ms, now_ms() + 60_000)
        return r.status_code == 200 and bool(r.json()["metric_descriptors"])  # a name without data is left out

    # a name is a 400 until the deployment has sent it
    wait_until(polled(lambda: query(server, NAMES, t0, now_ms() + 60_000).status_code == 200), 120,
               "the node exporter's series in the store")
    # Every point stored so far, among them the first sight of each counter, is before
    # this; the window below starts here, so its increases are between later scrapes.
    covered_from = now_ms()
    time.sleep(COVERED_S)
    covered_until = now_ms()
    # The agent sends its scrapes in order, spooling them while the server is slow: once
    # a scrape made after the window is stored, every one made in it is too.
    wait_until(polled(lambda: cpu_data_since(covered_until)), 120, "a scrape after the window")
    r = query(server, NAMES, covered_from, covered_until)
    assert r.status_code == 200, r.text
    got = by_name(r.json())
    page = exporter.page

    d, values = got["node_load1"]
    assert (d["kind"], d["unit_hint"], d["label_sets"]) == ("GAUGE", "COUNT", [{"replica": REPLICA}])
    # the time-weighted mean of what the agent scraped lies among the values the page showed
    assert exporter.loads and min(exporter.loads) - 0.005 <= values[0] <= max(exporter.loads) + 0.005, (
        values, sorted(set(exporter.loads)))

    d, values = got["node_memory_MemTotal_bytes"]
    assert (d["kind"], d["unit_hint"], d["label_sets"]) == ("GAUGE", "BYTES", [{"replica": REPLICA}])
    assert values == [pytest.approx(meminfo_total_bytes(), rel=1e-12)]
    assert page["node_memory_MemTotal_bytes"][0].value == meminfo_total_bytes()

    d, values = got["node_cpu_seconds_total"]
    assert (d["kind"], d["unit_hint"]) == ("COUNTER", "SECONDS")
    assert all(ls.keys() == {"replica", "cpu", "mode"} and ls["replica"] == REPLICA for ls in d["label_sets"])
    on_page = {(s.labels["cpu"], s.labels["mode"]) for s in page["node_cpu_seconds_total"]}
    assert {(ls["cpu"], ls["mode"]) for ls in d["label_sets"]} == on_page
    assert all(v is not None and v >= 0 for v in values), values
    # Summed over its modes, a CPU's time is wall-clock time. The deltas in the window
    # span from the last scrape before it to the last one in it: the window's length,
    # give or take the time between two scrapes.
    seconds = (covered_until - covered_from) / 1000
    per_cpu: dict[str, float] = {}
    for ls, v in zip(d["label_sets"], values):
        per_cpu[ls["cpu"]] = per_cpu.get(ls["cpu"], 0.0) + v
    assert per_cpu and all(0.5 * seconds <= s <= 1.5 * seconds for s in per_cpu.values()), (seconds, per_cpu)

    # a collector left off sent nothing: its names are unknown to the deployment
    r = query(server, ["node_filesystem_avail_bytes"], t0, now_ms() + 1)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["field"] == "metrics" and "node_filesystem_avail_bytes" in r.json()["message"]

    agent.send_signal(signal.SIGTERM)
    assert agent.wait(60) == 0, agent.err_path.read_text()[-3000:]
