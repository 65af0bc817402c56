"""Deployment metrics: parameters, windows, the step ladder, errors and response shapes."""

from __future__ import annotations

import time

import pytest

from conftest import Client
from otlp_build import DEPLOYMENT, SEC, encode, gauge, metrics_request, number
from sonde._exceptions import BadRequest
from sonde.query import window as W
from sonde.query.catalogue import CATALOGUE, DEFAULT_METRICS, parse_names
from spec_schema import validate

URL = "/v1/models/m1/deployments/d1/metrics"
H = 3600_000
NOW = 1_800_000_000_000  # a fixed clock for the pure rules
REAL = time.time_ns() // 10**6  # the server's clock, for requests


@pytest.mark.parametrize("window_ms,step,steps", [
    (60_000, 60, 1),
    (61_000, 60, 2),                  # the last value set is partial
    (6 * H, 60, 360),                 # 360 steps of 60 s still fit
    (6 * H + 1, 300, 73),
    (30 * H, 300, 360),
    (30 * H + 1, 900, 121),
    (90 * H, 900, 360),
    (90 * H + 1, 1800, 181),
    (7 * 24 * H, 1800, 336),          # the longest window never needs 3600 s
])
def test_step_ladder(window_ms, step, steps):
    w = W.resolve("SERIES", NOW - window_ms, NOW, now_ms=NOW)
    assert (w.step_s, w.n_steps) == (step, steps)
    starts = w.step_starts_ms()
    assert starts[0] == NOW - window_ms and all(b - a == step * 1000 for a, b in zip(starts, starts[1:]))
    assert starts[-1] < NOW <= starts[-1] + step * 1000


def test_ladder_top_rung_for_longer_windows():
    # Windows over 7 days are refused, but the ladder itself ends at 3600 s.
    assert W.step_for(180 * H) == 1800 and W.step_for(180 * H + 1) == 3600


def test_defaults_and_modes():
    w = W.resolve(None, None, None, now_ms=NOW)
    assert (w.mode, w.start_ms, w.end_ms, w.step_s, w.n_steps) == ("CURRENT", NOW - 60_000, NOW, None, 1)
    w = W.resolve("SUMMARY", None, None, now_ms=NOW)
    assert (w.start_ms, w.end_ms, w.step_s, w.n_steps) == (NOW - H, NOW, None, 1)
    w = W.resolve("series", None, NOW - H, now_ms=NOW)
    assert (w.mode, w.start_ms, w.end_ms, w.step_s) == ("SERIES", NOW - 2 * H, NOW - H, 60)
    # end may lie in the future (steps there are simply empty); start may not
    assert W.resolve("SERIES", NOW - H, NOW + H, now_ms=NOW).n_steps == 120


@pytest.mark.parametrize("mode,start,end,field", [
    ("HOURLY", None, None, "mode"),
    ("CURRENT", NOW - H, None, "start_epoch_millis"),
    ("CURRENT", None, NOW, "end_epoch_millis"),
    ("SERIES", NOW + 1, NOW + H, "start_epoch_millis"),
    ("SERIES", NOW - H, NOW - H, "end_epoch_millis"),
    ("SERIES", NOW - H, NOW - 2 * H, "end_epoch_millis"),
    ("SUMMARY", NOW - 7 * 24 * H - 1, NOW, "end_epoch_millis"),
    ("SUMMARY", -1, NOW, "start_epoch_millis"),
    ("SUMMARY", None, 2**62, "end_epoch_millis"),
])
def test_window_rules(mode, start, end, field):
    with pytest.raises(BadRequest) as e:
        W.resolve(mode, start, end, now_ms=NOW)
    assert e.value.field == field
    # exactly 7 days is allowed
    W.resolve("SUMMARY", NOW - 7 * 24 * H, NOW, now_ms=NOW)


def test_metric_names():
    assert [m.name for m in parse_names(None)] == list(DEFAULT_METRICS)
    got = parse_names(["baseten_gpu_utilization,baseten_replicas_active", " baseten_gpu_utilization ",
                       "baseten_container_restarts_total"])
    assert [m.name for m in got] == ["baseten_gpu_utilization", "baseten_replicas_active",
                                     "baseten_container_restarts_total"]
    with pytest.raises(BadRequest) as e:
        parse_names(["baseten_gpu_utilization", "baseten_nope"])
    assert e.value.field == "metrics" and "baseten_nope" in e.value.message
    assert all(name in e.value.message for name in CATALOGUE)
    with pytest.raises(BadRequest):
        parse_names([",", ""])


# --- through the endpoint -------------------------------------------------------


def _send_gauge(client, creds, resource=DEPLOYMENT, times=None):
    now = time.time_ns()
    times = times or [now - k * 10 * SEC for k in range(1, 6)]
    body, headers = encode(metrics_request(resource, [
        gauge("hw.gpu.utilization", [number(t, 0.5, attrs={"hw.gpu.index": 0}) for t in times])]))
    r = client.post("/v1/otlp/v1/metrics", content=body, headers=headers, key=creds["ingest_key"])
    assert r.status_code == 200, r.text


def _err(r, status, field):
    assert r.status_code == status, r.text
    assert r.json()["error"]["field"] == field, r.json()
    return r.json()


@pytest.mark.parametrize("params,field", [
    ({"mode": "WEEKLY"}, "mode"),
    ({"start_epoch_millis": 1}, "start_epoch_millis"),
    ({"mode": "CURRENT", "end_epoch_millis": 1}, "end_epoch_millis"),
    ({"mode": "SERIES", "start_epoch_millis": "yesterday"}, "start_epoch_millis"),
    ({"mode": "SERIES", "end_epoch_millis": 1.5}, "end_epoch_millis"),
    ({"mode": "SERIES", "start_epoch_millis": REAL + H}, "start_epoch_millis"),
    ({"mode": "SERIES", "start_epoch_millis": REAL - H, "end_epoch_millis": REAL - H}, "end_epoch_millis"),
    ({"mode": "SERIES", "start_epoch_millis": REAL - H, "end_epoch_millis": REAL - 2 * H}, "end_epoch_millis"),
    ({"mode": "SUMMARY", "start_epoch_millis": REAL - 8 * 24 * H, "end_epoch_millis": REAL}, "end_epoch_millis"),
    ({"mode": "SUMMARY", "start_epoch_millis": -5}, "start_epoch_millis"),
    ({"metrics": ["baseten_replicas_active", "cpu"]}, "metrics"),
    ({"metrics": ""}, "metrics"),
])
def test_bad_parameters_are_400_naming_the_field(client, creds, params, field):
    _send_gauge(client, creds)
    body = _err(client.get(URL, params=params), 400, field)
    if field == "metrics" and params["metrics"]:
        assert "baseten_gpu_utilization" in body["message"]  # lists the valid names


def test_not_found_and_auth(app, creds, client):
    _send_gauge(client, creds)
    assert client.get(URL).status_code == 200
    _err(client.get("/v1/models/m2/deployments/d1/metrics"), 404, "deployment_id")
    _err(client.get("/v1/models/m1/deployments/d2/metrics"), 404, "deployment_id")
    _err(client.get("/v1/models/m1/deployments/bad id!/metrics"), 400, "deployment_id")
    assert Client(app).get(URL, key=creds["ingest_key"]).status_code == 403
    assert Client(app).get(URL, key=None).status_code == 401
    # another workspace has no d1: 404 exactly as if it did not exist
    admin = Client(app, creds["admin_key"])
    ws = admin.post("/v1/admin/workspaces", json={"name": "other"}).json()["id"]
    keys = {s: admin.post(f"/v1/admin/workspaces/{ws}/api_keys", json={"name": s, "scope": s}).json()["key"]
            for s in ("management", "ingest")}
    other = Client(app, keys["management"])
    _err(other.get(URL), 404, "deployment_id")
    # ... and once it has its own d1, it sees only its own telemetry
    other.put("/v1/models/m1/deployments/d1", json={})
    r = other.get(URL, params={"metrics": "baseten_gpu_utilization"})
    assert r.status_code == 200 and r.json()["metric_descriptors"] == []
    _send_gauge(other, {"ingest_key": keys["ingest"]})
    assert [d["name"] for d in other.get(URL, params={"metrics": "baseten_gpu_utilization"}).json()[
        "metric_descriptors"]] == ["baseten_gpu_utilization"]


def test_response_shapes_in_every_mode(client, creds):
    now_ms = time.time_ns() // 10**6
    _send_gauge(client, creds)
    wanted = {"metrics": ["baseten_gpu_utilization", "baseten_replicas_active"]}

    r = client.get(URL, params=wanted)  # CURRENT by default
    assert r.status_code == 200, r.text
    body = r.json()
    validate(body, "GetDeploymentMetricsResponseV1")
    assert body["mode"] == "CURRENT" and body["step_seconds"] is None
    assert body["end_epoch_millis"] - body["start_epoch_millis"] == 60_000
    assert abs(body["end_epoch_millis"] - now_ms) < 30_000
    assert [v["start_epoch_millis"] for v in body["metric_values"]] == [body["start_epoch_millis"]]
    assert [d["name"] for d in body["metric_descriptors"]] == wanted["metrics"]
    assert body["metric_descriptors"][0] == {"name": "baseten_gpu_utilization", "unit_hint": "RATIO", "kind": "GAUGE",
                                             "label_sets": [{"replica": "r0001", "gpu": "0"}]}
    assert body["metric_descriptors"][1]["label_sets"] == [{}]
    assert body["metric_values"][0]["values"] == [[pytest.approx(0.5)], [1]]

    start, end = now_ms - 10 * 60_000 - 1234, now_ms + 60_000
    r = client.get(URL, params={"mode": "SUMMARY", "start_epoch_millis": start, "end_epoch_millis": end, **wanted})
    body = r.json()
    validate(body, "GetDeploymentMetricsResponseV1")
    assert (body["mode"], body["start_epoch_millis"], body["end_epoch_millis"], body["step_seconds"]) == \
        ("SUMMARY", start, end, None)
    assert [v["start_epoch_millis"] for v in body["metric_values"]] == [start]

    r = client.get(URL, params={"mode": "SERIES", "start_epoch_millis": start, "end_epoch_millis": end, **wanted})
    body = r.json()
    validate(body, "GetDeploymentMetricsResponseV1")
    assert (body["start_epoch_millis"], body["end_epoch_millis"], body["step_seconds"]) == (start, end, 60)
    starts = [v["start_epoch_millis"] for v in body["metric_values"]]
    assert starts == [start + k * 60_000 for k in range(12)]  # 11 min 1.234 s: 12 sets, the last partial
    # steps with no data are null, per label set; the telemetry sits in the last 60 s
    assert body["metric_values"][0]["values"] == [[None], [None]]
    assert any(v["values"][0] != [None] for v in body["metric_values"])


def test_defaults_and_omitted_metrics(client, creds):
    _send_gauge(client, creds)
    body = client.get(URL).json()
    # the default set, of which only replicas_active has data: the others are left out
    assert [d["name"] for d in body["metric_descriptors"]] == ["baseten_replicas_active"]
    # repeated and comma-separated names, in the order asked; names without data left out
    body = client.get(URL, params=[("metrics", "baseten_replicas_active,baseten_concurrent_requests"),
                                   ("metrics", "baseten_gpu_utilization")]).json()
    assert [d["name"] for d in body["metric_descriptors"]] == ["baseten_replicas_active", "baseten_gpu_utilization"]
    assert len(body["metric_values"][0]["values"]) == 2
    # a deployment registered by PUT with no telemetry: empty, but a valid response
    client.put("/v1/models/m1/deployments/quiet", json={})
    body = client.get("/v1/models/m1/deployments/quiet/metrics", params={"mode": "SUMMARY"}).json()
    validate(body, "GetDeploymentMetricsResponseV1")
    assert body["metric_descriptors"] == [] and body["metric_values"][0]["values"] == []
