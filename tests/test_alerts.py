"""Alert rules, evaluation, state and delivery (docs/alerts.md), on the real app and store.

Evaluation is driven by ``app.state.evaluator.run_once(now_ms)`` so a test chooses the
clock; the loop that calls it every ``alert_eval_seconds`` runs in
``tests/test_alertmanager_peer.py`` (a real server). Webhooks are real HTTP receivers
(``peers.Hook``)."""

from __future__ import annotations

import time

import pytest
from conftest import Client
from otlp_build import gauge, log_record, logs_request, metrics_request, number, post
from peers import Hook

from sonde.alerts.deliver import Sender
from sonde.alerts.state import fingerprint
from sonde.api.app import create_app

pytestmark = pytest.mark.steady_only("evaluation is driven in process; the restart test builds its own app")

NOW_MS = time.time_ns() // 1_000_000
GIB = 2**30


def res(dep: str = "d1", replica: str = "r0001") -> dict:
    return {"sonde.model_id": "m1", "sonde.deployment_id": dep, "sonde.replica": replica}


def gpu_memory(app, creds, used_gib: float, *, dep: str = "d1", ts_ms: int = NOW_MS - 5000, n: int = 1) -> None:
    """``n`` samples of ``used_gib``, every 10 s up to ``ts_ms``."""
    points = [number((ts_ms - 10_000 * k) * 1_000_000, used_gib * GIB, attrs={"hw.gpu.index": "0"})
              for k in reversed(range(n))]
    r = post(Client(app, creds["ingest_key"]), metrics_request(res(dep), [
        gauge("hw.gpu.memory.usage", points, unit="By")]))
    assert r.status_code == 200, r.content


def rule(**over) -> dict:
    body = {"name": "GPUMemoryHigh", "model_id": "m1", "deployment_id": "d1", "severity": "critical",
            "annotations": {"summary": "GPU {{ $labels.gpu }} of {{ $labels.replica }} at {{ $value }} MiB"},
            "condition": {"type": "metric", "metric": "baseten_gpu_memory_used", "labels": {"gpu": "0"},
                          "window_seconds": 300, "op": ">", "threshold": 70 * 1024}}
    return {**body, **over}


@pytest.fixture
def setup(app, client):
    client.put("/v1/models/m1", json={"name": "llama"}).raise_for_status()
    client.put("/v1/models/m1/deployments/d1", json={"name": "prod"}).raise_for_status()
    app.state.evaluator.sender = Sender(backoff_s=0.05)
    yield app
    app.state.evaluator.sender.close()


def run(app, now_ms: int):
    return app.state.evaluator.run_once(now_ms)


def test_rules_crud(setup, client):
    r = client.post("/v1/alert_rules", json=rule(for_seconds=60))
    assert r.status_code == 201, r.text
    made = r.json()
    assert made["id"].startswith("rule_") and made["for_seconds"] == 60 and made["severity"] == "critical"
    assert client.get("/v1/alert_rules").json()["rules"] == [made]
    assert client.get(f"/v1/alert_rules/{made['id']}").json() == made
    # GET -> edit -> PUT round-trips; the creation time stays
    changed = client.put(f"/v1/alert_rules/{made['id']}", json={**made, "severity": "warning"}).json()
    assert changed["severity"] == "warning" and changed["created_at"] == made["created_at"]
    assert changed["id"] == made["id"]
    defaults = client.post("/v1/alert_rules", json={k: v for k, v in rule().items() if k != "severity"}).json()
    assert defaults["severity"] == "warning" and defaults["for_seconds"] == 0 and defaults["annotations"]
    assert client.delete(f"/v1/alert_rules/{made['id']}").json() == {"id": made["id"], "deleted": True}
    assert client.get(f"/v1/alert_rules/{made['id']}").status_code == 404
    assert [x["id"] for x in client.get("/v1/alert_rules").json()["rules"]] == [defaults["id"]]


@pytest.mark.parametrize("change, status, field", [
    ({"condition": {**rule()["condition"], "metric": "baseten_no_such_metric"}}, 400, "condition.metric"),
    ({"condition": {**rule()["condition"], "op": "=="}}, 400, "condition.metric.op"),
    ({"condition": {"type": "absent", "metric": "nope_never_sent"}}, 400, "condition.metric"),
    ({"condition": {"type": "logs", "filters": {"search_pattern": "(unclosed"}, "op": ">", "threshold": 0}},
     400, "condition.filters.search_pattern"),
    ({"condition": {"type": "sql", "query": "SELECT 1"}}, 400, "condition"),
    ({"condition": {**rule()["condition"], "window_seconds": 0}}, 400, "condition.metric.window_seconds"),
    ({"condition": {**rule()["condition"], "threshold": "high"}}, 400, "condition.metric.threshold"),
    ({"for_seconds": -1}, 400, "for_seconds"),
    ({"colour": "red"}, 400, "colour"),
    ({"deployment_id": "d-unknown"}, 404, "deployment_id"),
    ({"model_id": "m-other"}, 404, "deployment_id"),
])
def test_rule_validation(setup, client, change, status, field):
    r = client.post("/v1/alert_rules", json=rule(**change))
    assert r.status_code == status, r.text
    body = r.json()
    # the field names the top-level part (or the whole path); the message the whole path
    assert body["error"]["field"] in (field, field.split(".")[0]), body
    assert body["error"]["field"] == field or body["message"].startswith(field), body
    assert client.get("/v1/alert_rules").json()["rules"] == []


def test_metric_rule_fires_and_resolves_through_a_webhook(setup, app, client, creds):
    with Hook(fail_first=1) as hook:
        assert client.put("/v1/alert_receivers/oncall", json={"type": "webhook", "url": hook.url}).status_code == 200
        made = client.post("/v1/alert_rules", json=rule(for_seconds=60, condition={
            **rule()["condition"], "window_seconds": 60})).json()
        gpu_memory(app, creds, 20, n=7)  # NOW-65 s .. NOW-5 s
        assert run(app, NOW_MS).active == 0  # 20 GiB: below the threshold
        gpu_memory(app, creds, 80, ts_ms=NOW_MS + 295_000, n=30)  # NOW+5 s .. NOW+295 s
        # the value is the time-weighted mean over the last minute, as the metrics endpoint's SUMMARY
        assert run(app, NOW_MS + 120_000).active == 1
        pending = client.get("/v1/alerts").json()["alerts"]
        assert [a["state"] for a in pending] == ["pending"] and pending[0]["fired_at"] is None
        labels = pending[0]["labels"]
        assert labels == {"alertname": "GPUMemoryHigh", "severity": "critical", "model_id": "m1",
                          "deployment_id": "d1", "rule_id": made["id"], "replica": "r0001", "gpu": "0"}
        assert pending[0]["fingerprint"] == fingerprint(labels)
        assert hook.bodies == [] and hook.refused == []  # pending is not announced

        assert run(app, NOW_MS + 200_000).fired == 1  # held for 80 s >= for_seconds
        firing = client.get("/v1/alerts").json()["alerts"][0]
        assert firing["state"] == "firing" and firing["active_at"] == pending[0]["active_at"]
        assert firing["annotations"]["summary"].startswith("GPU 0 of r0001 at ")
        (body,) = hook.wait(1)  # the first post was refused (500) and retried
        assert len(hook.refused) == 1 and hook.refused[0] == body
        assert body["version"] == "4" and body["status"] == "firing" and body["receiver"] == "oncall"
        assert body["groupLabels"] == {"alertname": "GPUMemoryHigh", "rule_id": made["id"]}
        (alert,) = body["alerts"]
        assert alert["labels"] == labels and alert["fingerprint"] == fingerprint(labels)
        assert alert["endsAt"] == "0001-01-01T00:00:00Z" and alert["status"] == "firing"
        assert body["commonLabels"] == labels and "groupKey" in body and "externalURL" in body

        assert run(app, NOW_MS + 240_000).fired == 0  # still firing: not announced again
        assert app.state.evaluator.sender.flush()
        assert len(hook.bodies) == 1

        # the data ages out of the window: resolved, announced once, gone from /v1/alerts
        assert run(app, NOW_MS + 600_000).resolved == 1
        resolved = hook.wait(2)[1]
        assert resolved["status"] == "resolved" and resolved["alerts"][0]["status"] == "resolved"
        assert resolved["alerts"][0]["endsAt"] != "0001-01-01T00:00:00Z"
        assert client.get("/v1/alerts").json()["alerts"] == []
        run(app, NOW_MS + 660_000)
        assert app.state.evaluator.sender.flush() and len(hook.bodies) == 2


def test_firing_state_survives_a_restart_without_reannouncing(setup, app, client, creds, store, tmp_path):
    with Hook() as hook:
        client.put("/v1/alert_receivers/hook", json={"type": "webhook", "url": hook.url}).raise_for_status()
        client.post("/v1/alert_rules", json=rule()).raise_for_status()
        gpu_memory(app, creds, 90)
        assert run(app, NOW_MS).fired == 1
        hook.wait(1)
        before = client.get("/v1/alerts").json()["alerts"]
        # a new process on the same store: the alert is still firing, since the same time
        again = create_app(app.config, store=store)
        again.state.evaluator.sender = Sender(backoff_s=0.05)
        assert again.state.evaluator.run_once(NOW_MS + 30_000).fired == 0
        assert again.state.evaluator.sender.flush()
        assert len(hook.bodies) == 1
        after = Client(again, creds["management_key"]).get("/v1/alerts").json()["alerts"]
        assert [(a["fingerprint"], a["fired_at"], a["state"]) for a in after] == \
               [(a["fingerprint"], a["fired_at"], a["state"]) for a in before]
        again.state.evaluator.sender.close()


def test_logs_and_absent_conditions(setup, app, client, creds):
    oom = client.post("/v1/alert_rules", json=rule(name="CudaOOM", condition={
        "type": "logs", "filters": {"search_pattern": "CUDA out of memory|NCCL error"},
        "window_seconds": 300, "op": ">=", "threshold": 2})).json()
    quiet = client.post("/v1/alert_rules", json=rule(name="NoGpuData", condition={
        "type": "absent", "metric": "baseten_gpu_memory_used", "window_seconds": 120})).json()
    lines = [log_record((NOW_MS - 10_000 + i) * 1_000_000, text) for i, text in enumerate(
        ["torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB", "step 10 ok",
         "NCCL error: unhandled system error", "CUDA is fine"])]
    r = post(Client(app, creds["ingest_key"]), logs_request(res(), lines))
    assert r.status_code == 200, r.content
    run(app, NOW_MS)
    active = {a["name"]: a for a in client.get("/v1/alerts").json()["alerts"]}
    assert set(active) == {"CudaOOM", "NoGpuData"}
    assert active["CudaOOM"]["value"] == 2 and active["CudaOOM"]["rule_id"] == oom["id"]
    assert active["NoGpuData"]["value"] == 1 and active["NoGpuData"]["rule_id"] == quiet["id"]
    gpu_memory(app, creds, 1, ts_ms=NOW_MS + 1000)
    run(app, NOW_MS + 2000)
    assert {a["name"] for a in client.get("/v1/alerts").json()["alerts"]} == {"CudaOOM"}
    # the lines leave the 5-minute window
    run(app, NOW_MS + 400_000)
    assert {a["name"] for a in client.get("/v1/alerts").json()["alerts"]} == {"NoGpuData"}


def test_deleting_a_rule_resolves_its_alerts(setup, app, client, creds):
    with Hook() as hook:
        client.put("/v1/alert_receivers/hook", json={"type": "webhook", "url": hook.url}).raise_for_status()
        made = client.post("/v1/alert_rules", json=rule()).json()
        gpu_memory(app, creds, 90)
        run(app, NOW_MS)
        client.delete(f"/v1/alert_rules/{made['id']}").raise_for_status()
        assert run(app, NOW_MS + 1000).resolved == 1
        assert [b["status"] for b in hook.wait(2)] == ["firing", "resolved"]
        assert client.get("/v1/alerts").json()["alerts"] == []


def test_receivers(setup, client):
    assert client.put("/v1/alert_receivers/am", json={"type": "alertmanager", "url": "http://am:9093"}).json() == \
        {"name": "am", "type": "alertmanager", "url": "http://am:9093"}
    client.put("/v1/alert_receivers/am", json={"type": "alertmanager", "url": "http://am2:9093"})
    assert client.get("/v1/alert_receivers").json() == {
        "receivers": [{"name": "am", "type": "alertmanager", "url": "http://am2:9093"}]}
    for body, field in (({"type": "pagerduty", "url": "http://x"}, "type"),
                        ({"type": "webhook", "url": "ftp://x/y"}, "url"),
                        ({"type": "webhook"}, "url")):
        r = client.put("/v1/alert_receivers/bad", json=body)
        assert r.status_code == 400 and field in r.text, r.text
    assert client.put("/v1/alert_receivers/bad name", json={"type": "webhook", "url": "http://x"}).status_code == 400
    assert client.delete("/v1/alert_receivers/am").status_code == 200
    assert client.delete("/v1/alert_receivers/am").status_code == 404
    assert client.get("/v1/alert_receivers").json() == {"receivers": []}


def test_workspaces_never_see_each_other(setup, app, client, creds):
    admin = Client(app, creds["admin_key"])
    ws = admin.post("/v1/admin/workspaces", json={"name": "team-b"}).json()["id"]
    other = Client(app, admin.post(f"/v1/admin/workspaces/{ws}/api_keys",
                                   json={"name": "m", "scope": "management"}).json()["key"])
    with Hook() as mine, Hook() as theirs:
        client.put("/v1/alert_receivers/hook", json={"type": "webhook", "url": mine.url}).raise_for_status()
        other.put("/v1/alert_receivers/hook", json={"type": "webhook", "url": theirs.url}).raise_for_status()
        made = client.post("/v1/alert_rules", json=rule()).json()
        # the other workspace can neither use d1 nor see or touch the rule
        assert other.post("/v1/alert_rules", json=rule()).status_code == 404
        for method in ("GET", "DELETE"):
            assert other.request(method, f"/v1/alert_rules/{made['id']}").status_code == 404
        assert other.put(f"/v1/alert_rules/{made['id']}", json=rule()).status_code == 404
        assert other.get("/v1/alert_rules").json() == {"rules": []}
        gpu_memory(app, creds, 90)
        run(app, NOW_MS)
        assert len(mine.wait(1)) == 1
        assert other.get("/v1/alerts").json() == {"alerts": []}
        assert len(client.get("/v1/alerts").json()["alerts"]) == 1
        assert app.state.evaluator.sender.flush() and theirs.bodies == []
        assert other.get("/v1/alert_receivers").json()["receivers"][0]["url"] == theirs.url


def test_one_evaluator_holds_the_lease(setup, app, client, creds, store):
    client.post("/v1/alert_rules", json=rule()).raise_for_status()
    gpu_memory(app, creds, 90)
    second = create_app(app.config, store=store).state.evaluator
    assert run(app, NOW_MS).evaluated
    assert not second.run_once(NOW_MS + 1000).evaluated  # the first holds the lease
    assert run(app, NOW_MS + 2000).evaluated  # and renews it
    # the holder stops renewing (it died): after three intervals the other takes over
    later = NOW_MS + 2000 + int(3 * app.state.evaluator.interval_s * 1000) + 1
    assert second.run_once(later).evaluated
    assert not run(app, later + 1000).evaluated
    # a clean stop hands the lease over at once
    second.stop()
    assert run(app, later + 2000).evaluated


def test_training_job_rules_watch_logs_and_silence(setup, app, client, creds):
    client.put("/v1/training_projects/p1", json={"name": "pretrain"}).raise_for_status()
    client.put("/v1/training_projects/p1/jobs/j1", json={}).raise_for_status()
    job = {"model_id": None, "deployment_id": None, "training_project_id": "p1", "training_job_id": "j1"}
    silent = client.post("/v1/alert_rules", json={**rule(name="TrainingStalled", condition={
        "type": "absent", "window_seconds": 120}), **job})
    assert silent.status_code == 201, silent.text
    assert "model_id" not in silent.json() and silent.json()["training_job_id"] == "j1"
    nccl = client.post("/v1/alert_rules", json={**rule(name="NCCL", condition={
        "type": "logs", "filters": {"includes": ["NCCL"]}, "op": ">", "threshold": 0}), **job}).json()
    # a training job has no metrics endpoint of the deployment kind: metric rules are refused
    r = client.post("/v1/alert_rules", json={**rule(), **job})
    assert r.status_code == 400 and r.json()["error"]["field"] == "condition.metric"
    r = client.post("/v1/alert_rules", json={**rule(), "training_job_id": "j1"})
    assert r.status_code == 400, r.text
    r = client.post("/v1/alert_rules", json={**rule(), "deployment_id": None})
    assert r.status_code == 400 and r.json()["error"]["field"] == "deployment_id"
    r = client.post("/v1/alert_rules", json={**rule(), **job, "training_job_id": "j-other"})
    assert r.status_code == 404 and r.json()["error"]["field"] == "training_job_id"

    run(app, NOW_MS)
    (stalled,) = client.get("/v1/alerts").json()["alerts"]
    assert stalled["name"] == "TrainingStalled" and stalled["rule_id"] == silent.json()["id"]
    assert stalled["labels"]["training_job_id"] == "j1" and "deployment_id" not in stalled["labels"]
    jres = {"sonde.training_project_id": "p1", "sonde.training_job_id": "j1", "sonde.node_rank": 0}
    ingest = Client(app, creds["ingest_key"])
    assert post(ingest, metrics_request(jres, [gauge("hw.gpu.utilization", [
        number((NOW_MS + 1000) * 1_000_000, 0.9, attrs={"hw.gpu.index": "0"})], unit="1")])).status_code == 200
    assert post(ingest, logs_request(jres, [log_record((NOW_MS + 1000) * 1_000_000,
                                                       "NCCL WARN Call to ibv_reg_mr failed")])).status_code == 200
    run(app, NOW_MS + 2000)
    assert [a["rule_id"] for a in client.get("/v1/alerts").json()["alerts"]] == [nccl["id"]]
