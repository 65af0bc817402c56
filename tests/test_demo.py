"""``sonde demo``: its model server and load mix in process, then the whole demo end to end.

End to end, ``python -m sonde demo`` starts a real server, two real model servers
under real agents, a two-node training run, a two-chainlet chain, a two-node trainer
(loops) deployment and the text-generation service (its agent scraping its vLLM-style
``/metrics``) under agents too, and the load generator. While it runs, the printed
``curl`` commands are run as printed (through bash, with the printed ``KEY=`` line) until
they return data; then the deployment's metrics and logs, the training job, the chain,
the loops deployment and the text-generation deployment's LLM metrics are checked
through the API with the management key.
Then Ctrl-C (SIGINT) must end the demo with exit 0 and leave no process of its tree behind.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from live_server import free_port
from sonde.demo import loadgen, loops, trainer
from sonde.demo.chain import build_predict, build_preprocess
from sonde.demo.model import load_or_fit, target
from sonde.demo.model_server import Loader, build_app

MODEL, DEPLOYMENT, REPLICAS = "demo-model", "demo-v1", ["r0001", "r0002"]
PROJECT, JOB, CHAIN, CHAIN_DEPLOYMENT = "demo-project", "demo-job-1", "demo-chain", "demo-chain-v1"
LOOPS, LOOPS_REPLICAS = "demo-loops-v1", {"l0001", "l0002"}
TEXTGEN, TEXTGEN_DEPLOYMENT = "demo-textgen", "demo-textgen-v1"
# Sixteen processes start on two CPUs before the data can show: 25-30 s alone, 50-65 s
# beside another test worker. The test stops the demo with Ctrl-C (SIGINT), as the
# printed text says, once everything is checked; --duration is only a ceiling.
DURATION = 240
CHECKS_S = 180  # for the data to show
TRAINING_STEPS = 60  # at the default 0.25 s a step: 15 s, well inside the demo


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


def test_trainer_learns_checkpoints_and_resumes(tmp_path, capsys):
    """Loss goes down; a run stopped half way resumes from its checkpoint and ends
    where an uninterrupted run ends; a finished run's checkpoint starts a new run over."""
    p = trainer.init_params(7)
    x, y = trainer.batch(7, 0, 0, 64)
    loss, grads = trainer.loss_and_grads(p, x, y)
    eps, k = 1e-6, (3, 5)  # one weight's gradient against a finite difference
    p2 = {n: a.copy() for n, a in p.items()}
    p2["w2"][k] += eps
    assert abs((trainer.loss_and_grads(p2, x, y)[0] - loss) / eps - grads["w2"][k]) < 1e-3

    def run(cache, steps):
        return trainer.main(["--steps", str(steps), "--step-interval", "0", "--checkpoint-every", "20",
                             "--cache-dir", str(cache), "--lr", "0.1"])

    with pytest.raises(SystemExit) as done:
        run(tmp_path / "a", 120)
    assert done.value.code == 0
    out = capsys.readouterr().out
    losses = [float(m.group(1)) for m in re.finditer(r"step \d+/120 loss ([0-9.]+)", out)]
    assert len(losses) == 120 and np.mean(losses[-20:]) < 0.5 * np.mean(losses[:20])
    assert "training finished: 120 steps" in out
    assert [s for s, _ in trainer.checkpoints(str(tmp_path / "a"))] == [100, 120]  # the last two kept
    # A run that stopped at step 100 (its checkpoint says so) resumes there.
    step, steps, params, vel = trainer.load_checkpoint(trainer.checkpoints(str(tmp_path / "a"))[0][1])
    (tmp_path / "b").mkdir()
    trainer.save_checkpoint(str(tmp_path / "b"), 100, 120, params, vel)
    with pytest.raises(SystemExit):
        run(tmp_path / "b", 120)
    out = capsys.readouterr().out
    assert "resumed from checkpoint ckpt-000100.npz at step 100" in out
    assert len(re.findall(r"step \d+/120 loss", out)) == 20
    final_a = trainer.load_checkpoint(trainer.checkpoints(str(tmp_path / "a"))[-1][1])[2]
    final_b = trainer.load_checkpoint(trainer.checkpoints(str(tmp_path / "b"))[-1][1])[2]
    for name in final_a:  # the same batches from the same state: the same weights
        np.testing.assert_allclose(final_b[name], final_a[name])
    with pytest.raises(SystemExit):
        run(tmp_path / "a", 120)
    assert "starting over" in capsys.readouterr().out


def test_chain_preprocess_calls_predict(tmp_path):
    """preprocess cleans the rows and calls predict with its request id; a short row is
    400, and predict failing is 502 at preprocess."""
    predict_app, pstate = build_predict(str(tmp_path))
    pstate.model, _ = load_or_fit(str(tmp_path))
    pstate.ready = True
    records = _Records()
    from sonde.instrument import RequestIdFilter
    records.addFilter(RequestIdFilter())
    logging.getLogger("sonde.demo.chain").addHandler(records)
    logging.getLogger("sonde.demo.chain").setLevel(logging.DEBUG)

    async def go():
        pre_app, state = build_preprocess("http://predict", transport=httpx.ASGITransport(app=predict_app))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=pre_app), base_url="http://pre") as c:
            assert (await c.get("/health")).status_code == 503
            state.ready = True
            rows = [[0.1] * 8, [None] + [0.2] * 7, [loadgen.GLITCH] + [0.0] * 7]
            r = await c.post("/run", json={"rows": rows})
            assert r.status_code == 200, r.text
            body = r.json()
            assert len(body["predictions"]) == 3 and body["imputed"] == 1 and body["clipped"] == 1
            rid = r.headers["x-request-id"]
            mine = {rec.getMessage().split(":")[0] for rec in records.records
                    if getattr(rec, "request_id", None) == rid}
            assert mine == {"preprocess", "predict"}, mine  # predict saw the same id
            assert (await c.post("/run", json={"rows": [[1.0] * 3]})).status_code == 400
            assert (await c.post("/run", json={"rows": []})).status_code == 400
            pstate.model = None  # predict answers 503: preprocess says 502
            assert (await c.post("/run", json={"rows": [[0.0] * 8]})).status_code == 502
            rng = random.Random(1)
            bodies = [loadgen.make_chain_request(rng) for _ in range(50)]
            assert any(any(v is None for row in b["rows"] for v in row) for b in bodies)

    try:
        asyncio.run(go())
    finally:
        logging.getLogger("sonde.demo.chain").removeHandler(records)


def test_loops_trainer_serves_and_learns():
    """The trainer node answers every kind of request the load generator sends it with
    the status it is meant to get, its WARNING and ERROR lines carry the request id, and
    its policy gets better at the bandit."""
    from sonde.instrument import RequestIdFilter

    node = loops.Trainer(0, None, step_interval=0, batch_size=256)
    app = loops.build_app(node)
    records = _Records()
    records.addFilter(RequestIdFilter())
    logging.getLogger("sonde.demo.loops").addHandler(records)
    logging.getLogger("sonde.demo.loops").setLevel(logging.DEBUG)

    async def go():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://loops") as c:
            assert (await c.get("/health")).status_code == 503
            start = node.greedy()
            node.start()  # ASGITransport runs no lifespan: start (and later stop) by hand
            assert (await c.get("/health")).status_code == 200
            rng, statuses = random.Random(2), set()
            for _ in range(300):
                method, path, body = loadgen.make_loops_request(rng)
                r = await c.request(method, path, json=body)
                statuses.add(r.status_code)
                rows = body["observations"] if body else []
                values = [v for row in rows for v in row]
                expected = (422 if any(isinstance(v, str) for v in values)
                            else 400 if any(len(row) != 8 for row in rows)
                            else 500 if loadgen.GLITCH in values else 200)
                assert r.status_code == expected, (body, r.status_code, r.text)
                if path == "/sample" and r.status_code == 200:
                    out = r.json()
                    assert len(out["actions"]) == len(body["observations"])
                    assert all(0 <= a < loops.N_ACTIONS for a in out["actions"])
                    assert np.allclose(np.sum(out["probs"], axis=1), 1.0)
                if r.status_code >= 400:
                    level = logging.ERROR if r.status_code == 500 else logging.WARNING
                    rid = r.headers["x-request-id"]
                    assert any(rec.levelno == level and getattr(rec, "request_id", None) == rid
                               for rec in records.records), (r.status_code, rid)
            assert statuses == {200, 400, 422, 500}
            return start

    try:
        start = asyncio.run(go())
        deadline = time.monotonic() + 30
        while node.policy.step < 60 and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        node.stop()
        logging.getLogger("sonde.demo.loops").removeHandler(records)
    assert node.policy.step >= 60
    assert node.greedy() > start + 0.5 and node.greedy() > 0.8 * node.best, (start, node.greedy(), node.best)


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
        # several of each well inside the run.
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sonde", "demo", "--duration", str(DURATION), "--port", str(self.port),
             "--data-dir", str(self.data), "--replicas", "2", "--interval", "2",
             "--training-steps", str(TRAINING_STEPS)],
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
        for name in ("server.log", "r0001.log", "r0002.log", "node-0.log", "node-1.log", "predict.log",
                     "preprocess.log", "loops-node-0.log", "loops-node-1.log", "textgen.log"):
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


def _live_answer(key_line: str, clis: list[str], stream: str) -> bool:
    """The printed live commands: `sonde logs -f --since 10m` prints lines and keeps
    following, the metrics table has sparklines, the stream sends events."""
    follow, table = clis[-2], clis[-1]
    out = subprocess.run(["bash", "-c", f"{key_line}\ntimeout 3 {follow}"], capture_output=True, text=True,
                         timeout=30)
    if out.returncode != 124 or not out.stdout.strip():  # 124: still following when timeout stopped it
        return False
    out = subprocess.run(["bash", "-c", f"{key_line}\n{table}"], capture_output=True, text=True, timeout=30)
    if out.returncode != 0 or not any(bar in out.stdout for bar in "▁▂▃▄▅▆▇█"):
        return False
    backlog = f"?start_epoch_millis={int(time.time() * 1000) - 600_000}&"  # the last 10 minutes' warnings too
    out = subprocess.run(["bash", "-c", f"{key_line}\ntimeout 3 {stream.replace('?', backlog, 1)}"],
                         capture_output=True, text=True, timeout=30)
    return "\ndata: {" in "\n" + out.stdout


def _values(body: dict) -> dict[str, dict[str, object]]:
    """{metric: {label set as "k=v,...": value}} of a SUMMARY/CURRENT answer (one value set)."""
    out: dict[str, dict[str, object]] = {}
    values = body["metric_values"][0]["values"]
    for desc, vals in zip(body["metric_descriptors"], values):
        out[desc["name"]] = {",".join(f"{k}={v}" for k, v in ls.items()): v for ls, v in zip(desc["label_sets"], vals)}
    return out


def _training_and_chain_answer(key_line: str, curls: list[str]) -> bool:
    """The 4th and 5th printed curls: the job's metrics with CPU for both nodes, and the
    chain deployment with both chainlets active."""
    job, chains = (_run_printed(key_line, c) for c in curls)
    if not (job and chains and chains.get("deployments")):
        return False
    nodes = {n["node_id"]: n["metrics"] for n in job.get("per_node_metrics", [])}
    chainlets = {c["id"]: c["active_replica_count"] for c in chains["deployments"][0]["chainlets"]}
    return (all(nodes.get(f"node-{r}", {}).get("cpu_usage") for r in (0, 1))
            and set(chainlets) == {"preprocess", "predict"} and min(chainlets.values()) >= 1)


def _loops_answer(key_line: str, curl: str) -> bool:
    """The 6th printed curl: the trainer deployment's requests and CPU for both nodes."""
    body = _run_printed(key_line, curl)
    m = (body or {}).get("metrics") or {}
    nodes = {n["node_id"]: n for n in m.get("per_node_metrics", [])}
    return bool(m.get("inference_volume") and all(nodes.get(f"node-{r}", {}).get("cpu_usage") for r in (0, 1)))


def _textgen_answer(key_line: str, curl: str) -> bool:
    """The 7th printed curl: the text-generation deployment's time to first token and output
    tokens, scraped from its /metrics page."""
    body = _run_printed(key_line, curl)
    if not (body and body.get("metric_descriptors")):
        return False
    v = _values(body)
    return (any(x for x in v.get("sonde_llm_time_to_first_token_seconds", {}).values())
            and any(x for x in v.get("baseten_llm_output_tokens_total", {}).values()))


def _requests_answer(key_line: str, curl: str) -> bool:
    """The 8th printed curl: the slowest traced requests of the model servers."""
    body = _run_printed(key_line, curl)
    reqs = (body or {}).get("requests") or []
    return bool(reqs) and all(r["duration_seconds"] > 0 and r["route"] and r["request_id"] for r in reqs) \
        and [r["duration_seconds"] for r in reqs] == sorted((r["duration_seconds"] for r in reqs), reverse=True)


def _alerts_answer(key_line: str, curls: list[str]) -> bool:
    """The 9th and 10th printed curls: the demo's 5xx rule fires (the load has sensor
    glitches), and /metrics answers the Prometheus text format."""
    alerts = (_run_printed(key_line, curls[0]) or {}).get("alerts") or []
    if not any(a["name"] == "DemoServerErrors" and a["state"] == "firing" for a in alerts):
        return False
    out = subprocess.run(["bash", "-c", f"{key_line}\n{curls[1]}"], capture_output=True, text=True, timeout=30)
    totals = [s.value for f in text_string_to_metric_families(out.stdout) for s in f.samples
              if s.name == "baseten_inference_requests_total" and s.labels.get("deployment_id") == DEPLOYMENT]
    return bool(totals) and sum(totals) > 0


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
        assert len(key_lines) == 1 and len(curls) == 11, demo.diagnostics()
        creds = json.loads((demo.data / "credentials.json").read_text())
        printed_key = subprocess.run(["bash", "-c", f'{key_lines[0]}\nprintf %s "$KEY"'],
                                     capture_output=True, text=True, timeout=30).stdout
        assert printed_key == creds["management_key"]

        # The printed commands, run as printed, until they show traffic, both replicas
        # ready, per-replica memory, warnings and errors, and the text generation's first tokens.
        checks = [("replicas", lambda: _curls_answer(key_lines[0], curls[:3])),
                  ("training and chain", lambda: _training_and_chain_answer(key_lines[0], curls[3:5])),
                  ("loops", lambda: _loops_answer(key_lines[0], curls[5])),
                  ("textgen", lambda: _textgen_answer(key_lines[0], curls[6])),
                  ("requests", lambda: _requests_answer(key_lines[0], curls[7])),
                  # live before alerts: its interpreters run while the first evaluation is due
                  ("live", lambda: _live_answer(key_lines[0], demo.printed(sys.executable), curls[10])),
                  ("alerts and export", lambda: _alerts_answer(key_lines[0], curls[8:10]))]
        passed: list[str] = []  # when each check passed, for a failure's message
        while checks:
            if checks[0][1]():  # each in turn, once: every run of a printed line costs an interpreter
                passed.append(f"{checks.pop(0)[0]} at {time.monotonic() - t0:.1f} s")
                continue
            seen |= {p.pid for p in demo.tree()}
            assert time.monotonic() - t0 < CHECKS_S, \
                f"printed curls never showed the data: {[name for name, _ in checks]} (passed: {passed})\n" + \
                demo.diagnostics()
            time.sleep(1.0)
        print("printed checks passed:", passed)
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

        # The training job: per-node CPU and memory for ranks 0 and 1 over the demo's
        # window, loss lines in its logs, and COMPLETED once rank 0's run has ended.
        job_base = f"{demo.url}/v1/training_projects/{PROJECT}/jobs/{JOB}"
        m = httpx.get(f"{job_base}/metrics", headers=mgmt, timeout=30, params={
            "start_epoch_millis": demo.started_ms - 1000, "end_epoch_millis": int(time.time() * 1000) + 1000,
            "step_seconds": 5}).json()
        nodes = {n["node_id"]: n["metrics"] for n in m["per_node_metrics"]}
        assert set(nodes) == {"node-0", "node-1"}, m["per_node_metrics"]
        for node in nodes.values():
            assert any(pt["value"] > 0 for pt in node["cpu_usage"]), node["cpu_usage"]
            assert any(pt["value"] > 10 * 2**20 for pt in node["cpu_memory_usage_bytes"])
        assert m["cpu_usage"] and m["cache"] is not None  # the leader's, and its --cache-dir
        loss = httpx.get(f"{job_base}/logs", headers=mgmt, timeout=30,
                         params={"includes": " loss ", "limit": 1000}).json()["logs"]
        assert len(loss) >= 10 and all(ln["level"] == "INFO" for ln in loss), loss[:3]
        while True:  # rank 0's end completes the job; both ranks log that they ran all their steps
            job = httpx.get(job_base, headers=mgmt, timeout=30).json()["training_job"]
            finished = httpx.get(f"{job_base}/logs", headers=mgmt, timeout=30,
                                 params={"includes": "training finished", "limit": 10}).json()["logs"]
            if job["current_status"] == "COMPLETED" and len(finished) == 2:
                break
            assert job["current_status"] in ("RUNNING", "COMPLETED"), job
            assert time.monotonic() - t0 < CHECKS_S, f"the training never completed: {job} {finished}\n" + \
                demo.diagnostics()
            time.sleep(1.0)
        assert job["instance_type"]["millicpu_limit"] > 0  # derived from the agents' hardware
        assert {ln["message"].split("training finished")[0].split("train: ")[1] for ln in finished} == \
            {"rank 0/2: ", "rank 1/2: "}, finished

        # The chain: both chainlets listed with a replica each, and their logs, which
        # show requests the load generator sent through preprocess to predict.
        chain = httpx.get(f"{demo.url}/v1/chains/{CHAIN}/deployments/{CHAIN_DEPLOYMENT}", headers=mgmt,
                          timeout=30).json()
        assert {c["id"]: c["active_replica_count"] >= 1 for c in chain["chainlets"]} == \
            {"preprocess": True, "predict": True}, chain
        for chainlet, text in (("preprocess", "rows through predict"), ("predict", "predict: ")):
            lines = httpx.get(f"{demo.url}/v1/chains/{CHAIN}/deployments/{CHAIN_DEPLOYMENT}/chainlets/{chainlet}/logs",
                              headers=mgmt, timeout=30, params={"includes": text, "limit": 10}).json()["logs"]
            assert lines and all(ln["request_id"] for ln in lines), (chainlet, lines)

        # The trainer (loops) deployment over the demo's window: requests by status class
        # and their latency from both nodes' middleware, CPU, memory and disk per node from
        # their agents (the leader's at the top), and the lines both nodes printed.
        m = httpx.post(f"{demo.url}/v1/loops/deployments/{LOOPS}/metrics", headers=mgmt, timeout=30, json={
            "start_epoch_millis": demo.started_ms - 1000, "end_epoch_millis": int(time.time() * 1000) + 1000,
            "step_seconds": 5})
        assert m.status_code == 200, m.text
        lm = m.json()["metrics"]
        assert sum(pt["value"] for pt in lm["inference_volume"]) > 0, lm["inference_volume"]
        assert sum(pt["status_2xx"] for pt in lm["inference_volume_by_status"]) > 0
        assert len(lm["inference_volume_by_status"]) == len(lm["inference_volume"])
        stats = [s for s in lm["response_time_stats"] if s["p50"] is not None]
        assert stats and all(0 < s["p50"] <= s["p95"] <= s["p99"] for s in stats), lm["response_time_stats"]
        assert lm["concurrent_requests"], lm
        assert any(pt["value"] > 0 for pt in lm["cpu_usage"]) and lm["cpu_memory_usage_bytes"]
        assert lm["ephemeral_storage"]["usage_bytes"] and lm["ephemeral_storage"]["utilization"]
        loops_nodes = {n["node_id"]: n for n in lm["per_node_metrics"]}
        assert set(loops_nodes) == {"node-0", "node-1"}, lm["per_node_metrics"]
        for node in loops_nodes.values():
            assert any(pt["value"] > 0 for pt in node["cpu_usage"]), node["cpu_usage"]
            assert any(pt["value"] > 10 * 2**20 for pt in node["cpu_memory_usage_bytes"])
            assert node["ephemeral_storage"]["usage_bytes"]
        lines = httpx.get(f"{demo.url}/v1/loops/deployments/{LOOPS}/logs", headers=mgmt, timeout=30,
                          params={"start_epoch_millis": demo.started_ms - 1000, "direction": "asc",
                                  "limit": 1000}).json()["logs"]
        assert lines and {ln["replica"] for ln in lines} == LOOPS_REPLICAS, lines[:3]
        assert any("sampled" in ln["message"] and ln["request_id"] for ln in lines)
        assert any("policy ready at step" in ln["message"] for ln in lines)
        assert httpx.get(f"{demo.url}/v1/loops/deployments/{LOOPS}", headers=mgmt,
                         timeout=30).json()["deployment"]["status"] == {"name": "RUNNING"}

        # The text-generation deployment over the demo's window: its engine's prompt tokens and
        # time to first token, scraped by its agent from the vLLM-style page.
        r = httpx.get(f"{demo.url}/v1/models/{TEXTGEN}/deployments/{TEXTGEN_DEPLOYMENT}/metrics", headers=mgmt,
                      timeout=30, params={
                          "mode": "SUMMARY", "start_epoch_millis": demo.started_ms - 1000,
                          "end_epoch_millis": int(time.time() * 1000) + 1000,
                          "metrics": "baseten_llm_input_tokens_total,sonde_llm_time_to_first_token_seconds"})
        assert r.status_code == 200, r.text
        v = _values(r.json())
        assert sum(x or 0 for x in v["baseten_llm_input_tokens_total"].values()) > 0, v
        ttft = v["sonde_llm_time_to_first_token_seconds"]
        assert all(ttft[k] is not None and ttft[k] > 0 for k in ("quantile=0.5", "quantile=0.99", "stat=avg")), ttft
        assert ttft["quantile=0.5"] <= ttft["quantile=0.99"]

        # Ctrl-C ends it: exit 0, nothing of the tree left.
        demo.proc.send_signal(signal.SIGINT)
        code = demo.proc.wait(timeout=60)
        assert code == 0, demo.diagnostics()
    finally:
        if demo.proc.poll() is None:  # a failed assertion above: do not leave the demo behind
            demo.proc.terminate()
            demo.proc.wait(timeout=60)
    total_s = time.monotonic() - t0
    # server, 2 agents and 2 model servers, 2 agents and 2 chainlets, 2 agents and 2 loops
    # nodes, the text generation's agent and service, load generator (the training nodes
    # may have ended before the first look)
    assert len(seen) >= 16, seen
    left = []
    for p in psutil.process_iter(["pid", "cmdline", "status"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if p.info["status"] != psutil.STATUS_ZOMBIE and (p.info["pid"] in seen or str(demo.data) in cmd):
            left.append(cmd)
    assert not left, left
    assert "loadgen: stopped after" in "\n".join(demo.lines)
    print(f"demo data visible through the printed curls after {up_s:.1f} s; exited after {total_s:.1f} s")
