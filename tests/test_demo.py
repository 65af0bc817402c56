"""``sonde demo``: its model server and load mix in process, then the whole demo end to end.

End to end, ``python -m sonde demo --duration 35`` starts a real server, two real model servers
under real agents and the load generator. While it runs, the three printed ``curl``
commands are run as printed (through bash, with the printed ``KEY=`` line) until they
return data; then the deployment's metrics and logs are checked through the API with
the management key. After ``--duration`` the demo must exit 0 and leave no process of
its tree behind.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import shutil
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import psutil
import pytest

from live_server import free_port
from sonde.demo import loadgen
from sonde.demo.model import load_or_fit, target
from sonde.demo.model_server import Loader, build_app

MODEL, DEPLOYMENT, REPLICAS = "demo-model", "demo-v1", ["r0001", "r0002"]
DURATION = 35


def test_model_learns_and_is_cached(tmp_path):
    model, source = load_or_fit(str(tmp_path))
    assert source == "fit"
    x = np.random.default_rng(5).standard_normal((500, 8))
    rmse = float(np.sqrt(np.mean((model.predict(x) - target(x)) ** 2)))
    assert rmse < 0.45 * float(target(x).std())  # it learned the function, not its mean
    again, source = load_or_fit(str(tmp_path))
    assert source == "cache"
    np.testing.assert_array_equal(again.predict(x), model.predict(x))
    mean, std = again.predict_with_std(x[:10])
    assert np.allclose(mean, model.predict(x[:10])) and (std > 0).all()
    with pytest.raises(FloatingPointError):
        model.predict(np.array([[loadgen.GLITCH] + [0.0] * 7]))


class _Records(logging.Handler):
    def __init__(self):
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)


def test_model_server_answers_every_kind_of_request(tmp_path):
    """Each kind of request the load generator sends gets the status it is meant to
    get, and the server's lines carry the id the middleware put on the response."""
    from sonde.instrument import RequestIdFilter

    loader = Loader(str(tmp_path), min_load_seconds=0)
    app = build_app(loader)  # no telemetry: the middleware records on the global provider
    records = _Records()
    records.addFilter(RequestIdFilter())
    logging.getLogger("sonde.demo").addHandler(records)
    logging.getLogger("sonde.demo").setLevel(logging.DEBUG)
    expected = {"predict": {200}, "slow": {200}, "info": {200}, "bad": {400, 422}, "glitch": {500}}

    async def go():
        transport = httpx.ASGITransport(app=app)  # runs no lifespan: the test loads the model
        async with httpx.AsyncClient(transport=transport, base_url="http://demo") as c:
            assert (await c.get("/health")).status_code == 503
            assert (await c.post("/predict", json={"instances": [[0.0] * 8]})).status_code == 503
            loader._load()
            assert (await c.get("/health")).json() == {"status": "ready"}
            rng = random.Random(3)
            for kind in list(expected) * 4:
                method, path, body = loadgen.make_request(kind, rng)
                r = await c.request(method, path, json=body)
                assert r.status_code in expected[kind], (kind, r.status_code, r.text)
                rid = r.headers["x-request-id"]
                mine = [rec for rec in records.records if getattr(rec, "request_id", None) == rid]
                if kind == "slow":
                    assert len(r.json()["std"]) == len(body["instances"])
                if kind == "bad":
                    assert any(rec.levelno == logging.WARNING for rec in mine)
                if kind == "glitch":
                    assert any(rec.levelno == logging.ERROR and rec.exc_info for rec in mine)

    try:
        asyncio.run(go())
    finally:
        logging.getLogger("sonde.demo").removeHandler(records)


class Demo:
    def __init__(self, tmp_path):
        self.port = free_port()
        self.data = tmp_path / "demo"
        self.url = f"http://127.0.0.1:{self.port}"
        self.lines: list[str] = []
        self.err_path = tmp_path / "demo.stderr"
        self.started_ms = int(time.time() * 1000)
        err = self.err_path.open("wb")  # the child keeps its own descriptor once started
        # --interval 2 (hidden): samples and exports every 2 s instead of 5, so there are
        # several of each well inside the 35 s.
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sonde", "demo", "--duration", str(DURATION), "--port", str(self.port),
             "--data-dir", str(self.data), "--replicas", "2", "--interval", "2"],
            stdout=subprocess.PIPE, stderr=err, text=True,
        )
        err.close()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def printed(self, prefix: str) -> list[str]:
        return [ln.strip() for ln in self.lines if ln.strip().startswith(prefix)]

    def tree(self) -> list[psutil.Process]:
        try:
            return psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.Error:
            return []

    def diagnostics(self) -> str:
        logs = ""
        for name in ("server.log", "r0001.log", "r0002.log"):
            path = self.data / "logs" / name
            if path.exists():
                logs += f"\n--- {name} (tail)\n" + "\n".join(path.read_text(errors="replace").splitlines()[-15:])
        return "stdout:\n" + "\n".join(self.lines) + "\nstderr:\n" + self.err_path.read_text(errors="replace") + logs


def _run_printed(key_line: str, curl: str) -> dict | None:
    """Run one printed curl exactly as a user would paste it, after the KEY= line."""
    out = subprocess.run(["bash", "-c", f"{key_line}\n{curl}"], capture_output=True, text=True, timeout=30)
    try:
        return json.loads(out.stdout)
    except ValueError:
        return None


def _values(body: dict) -> dict[str, dict[str, object]]:
    """{metric: {label set as "k=v,...": value}} of a SUMMARY/CURRENT answer (one value set)."""
    out: dict[str, dict[str, object]] = {}
    values = body["metric_values"][0]["values"]
    for desc, vals in zip(body["metric_descriptors"], values):
        out[desc["name"]] = {",".join(f"{k}={v}" for k, v in ls.items()): v for ls, v in zip(desc["label_sets"], vals)}
    return out


def _curls_answer(key_line: str, curls: list[str]) -> bool:
    summary, current, logs = (_run_printed(key_line, c) for c in curls)
    if not (summary and current and logs and logs.get("logs")):
        return False
    s, c = _values(summary), _values(current)
    requests = s.get("baseten_inference_requests_total", {})
    return (bool(requests.get("status=2xx")) and s.get("baseten_replicas_active", {}).get("") == 2
            and all(c.get("baseten_container_cpu_memory_working_set_bytes", {}).get(f"replica={r}") for r in REPLICAS)
            and {"ERROR", "WARNING"} <= {ln["level"] for ln in logs["logs"]})


@pytest.mark.e2e
@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("curl") is None, reason="needs bash and curl")
def test_demo_end_to_end(tmp_path):
    demo = Demo(tmp_path)
    t0 = time.monotonic()
    seen: set[int] = set()
    try:
        while not demo.printed("curl") and time.monotonic() - t0 < 30:
            assert demo.proc.poll() is None, demo.diagnostics()
            time.sleep(0.2)
        key_lines, curls = demo.printed("KEY="), demo.printed("curl")
        assert len(key_lines) == 1 and len(curls) == 3, demo.diagnostics()
        creds = json.loads((demo.data / "credentials.json").read_text())
        printed_key = subprocess.run(["bash", "-c", f'{key_lines[0]}\nprintf %s "$KEY"'],
                                     capture_output=True, text=True, timeout=30).stdout
        assert printed_key == creds["management_key"]

        # The printed commands, run as printed, until they show traffic, both replicas
        # ready, per-replica memory, and warnings and errors.
        while not _curls_answer(key_lines[0], curls):
            seen |= {p.pid for p in demo.tree()}
            assert time.monotonic() - t0 < DURATION - 3, "printed curls never showed the data\n" + demo.diagnostics()
            time.sleep(1.0)
        up_s = time.monotonic() - t0
        seen |= {p.pid for p in demo.tree()}

        # The same endpoints, over the demo's own window, with the management key.
        mgmt = {"Authorization": f"Bearer {creds['management_key']}"}
        base = f"{demo.url}/v1/models/{MODEL}/deployments/{DEPLOYMENT}"
        r = httpx.get(f"{base}/metrics", headers=mgmt, timeout=30, params={
            "mode": "SUMMARY", "start_epoch_millis": demo.started_ms - 1000,
            "end_epoch_millis": int(time.time() * 1000) + 1000,
            "metrics": "baseten_inference_requests_total,baseten_end_to_end_response_time_seconds,"
                       "baseten_replicas_active,baseten_container_cpu_usage_seconds_total,"
                       "baseten_container_cpu_memory_working_set_bytes"})
        assert r.status_code == 200, r.text
        v = _values(r.json())
        requests = v["baseten_inference_requests_total"]
        assert requests["status=2xx"] > 0
        assert (requests["status=4xx"] or 0) + (requests["status=5xx"] or 0) > 0, requests
        latency = v["baseten_end_to_end_response_time_seconds"]
        assert all(latency[k] is not None and latency[k] > 0 for k in
                   ("quantile=0.5", "quantile=0.9", "quantile=0.99", "stat=avg")), latency
        assert latency["quantile=0.5"] <= latency["quantile=0.99"]
        assert v["baseten_replicas_active"][""] == 2
        for replica in REPLICAS:
            assert v["baseten_container_cpu_usage_seconds_total"][f"replica={replica}"] > 0
            assert v["baseten_container_cpu_memory_working_set_bytes"][f"replica={replica}"] > 10 * 2**20

        # The inventory the demo registered, completed from live telemetry: both replicas
        # active, and the instance type the server derived from the agents' hardware.
        dep = httpx.get(base, headers=mgmt, timeout=30).json()
        assert dep["is_production"] and dep["environment"] == "production"
        assert dep["active_replica_count"] == 2
        assert dep["instance_type_name"], dep

        logs = httpx.get(f"{base}/logs", headers=mgmt, timeout=30,
                         params={"min_level": "WARNING", "limit": 1000}).json()["logs"]
        for level in ("ERROR", "WARNING"):
            hits = [ln for ln in logs if ln["level"] == level and ln["request_id"]]
            assert hits, f"no {level} line with a request id"
            assert all(f"request_id={ln['request_id']}" in ln["message"] for ln in hits)
            assert {ln["replica"] for ln in hits} <= set(REPLICAS)
        errors = [ln for ln in logs if ln["level"] == "ERROR" and ln["request_id"]]
        assert any("prediction failed" in ln["message"] for ln in errors)
        # One request's lines, by its id: the DEBUG line before its ERROR.
        rid = errors[0]["request_id"]
        one = httpx.get(f"{base}/logs", headers=mgmt, timeout=30, params={"request_id": rid}).json()["logs"]
        assert {"DEBUG", "ERROR"} <= {ln["level"] for ln in one}
        # Lines the agent read from the model servers' stdout: uvicorn's access lines and
        # the model's start-up, from both replicas.
        access = httpx.get(f"{base}/logs", headers=mgmt, timeout=30, params={
            "search_pattern": r'"POST /predict HTTP/1\.1" 200', "limit": 1000}).json()["logs"]
        assert {ln["replica"] for ln in access} == set(REPLICAS)
        assert all(ln["level"] == "INFO" for ln in access)
        ready = httpx.get(f"{base}/logs", headers=mgmt, timeout=30,
                          params={"includes": "model ready after", "limit": 10}).json()["logs"]
        assert {ln["replica"] for ln in ready} == set(REPLICAS)

        # --duration ends it: exit 0, nothing of the tree left.
        code = demo.proc.wait(timeout=DURATION + 40)
        assert code == 0, demo.diagnostics()
    finally:
        if demo.proc.poll() is None:  # a failed assertion above: do not leave the demo behind
            demo.proc.terminate()
            demo.proc.wait(timeout=60)
    total_s = time.monotonic() - t0
    assert len(seen) >= 6, seen  # server, 2 agents, 2 model servers, load generator
    left = []
    for p in psutil.process_iter(["pid", "cmdline", "status"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if p.info["status"] != psutil.STATUS_ZOMBIE and (p.info["pid"] in seen or str(demo.data) in cmd):
            left.append(cmd)
    assert not left, left
    assert "loadgen: stopped after" in "\n".join(demo.lines)
    print(f"demo data visible through the printed curls after {up_s:.1f} s; exited after {total_s:.1f} s")
