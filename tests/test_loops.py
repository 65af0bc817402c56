"""Trainer (loops) deployments: inventory, metrics against ground truth, logs, bad input.

Telemetry goes in through the real OTLP/HTTP receiver (hand-built protobuf, exact
timestamps); expected values are computed here from what was sent: the hold rule for
gauges (``test_metrics_values.tw_mean``), counter increases per step, request counts per
status class, exact numpy quantiles of the values behind exponential histograms (1%).
"""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pytest

from conftest import Client
from otlp_build import (SEC, T0, encode, exp_histogram, gauge, log_record, logs_request, metrics_request, number,
                        sum_metric)
from spec_schema import validate
from test_metrics_values import _exp_point, tw_mean

URL = "/v1/loops/deployments/lp1"
W0, W1 = T0 - 30 * 60 * SEC, T0
STEP = 120 * SEC
NSTEPS = 15
BODY = {"start_epoch_millis": W0 // 10**6, "end_epoch_millis": W1 // 10**6, "step_seconds": 120}
NODES = {0: ("node-a", "ra"), 1: ("node-b", "rb")}


def res(rank: int) -> dict:
    node, replica = NODES[rank]
    return {"sonde.loops_deployment_id": "lp1", "sonde.replica": replica, "sonde.node_rank": rank,
            "sonde.node_id": node}


def send(client, creds, resource, metrics) -> None:
    body, headers = encode(metrics_request(resource, metrics))
    r = client.post("/v1/otlp/v1/metrics", content=body, headers=headers, key=creds["ingest_key"])
    assert r.status_code == 200 and b"rejected" not in r.content, r.content


def iso(ns: int) -> str:
    return datetime.fromtimestamp(ns // 10**6 / 1000, tz=timezone.utc).isoformat().replace("+00:00", "Z")


def steps():
    return [(W0 + k * STEP, W0 + (k + 1) * STEP) for k in range(NSTEPS)]


def series(by_step: dict[int, float]) -> list[dict]:
    return [{"value": v, "timestamp": iso(W0 + k * STEP)} for k, v in sorted(by_step.items())]


def tw_series(samples) -> dict[int, float]:
    out = {}
    for k, (a, b) in enumerate(steps()):
        m = tw_mean(samples, a, b)
        if m is not None:
            out[k] = m
    return out


def assert_series(got: list[dict], want: dict[int, float], rel=1e-9) -> None:
    exp = series(want)
    assert [g["timestamp"] for g in got] == [e["timestamp"] for e in exp]
    assert [g["value"] for g in got] == pytest.approx([e["value"] for e in exp], rel=rel)


def _times(start, end, every):
    return list(range(start, end, every))


def metrics(client, body=BODY, url=URL):
    r = client.post(f"{url}/metrics", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    validate(out, "GetLoopsDeploymentMetricsResponseV1")
    return out


@pytest.fixture
def telemetry(client, creds) -> dict:
    """Two nodes of compute metrics and the leader's HTTP traffic; returns what was sent."""
    rng = np.random.default_rng(11)
    sent: dict = {"gpu_util": {}, "gpu_mem": {}, "cpu": {}, "mem": {}, "fs": {}, "active": {}}
    for rank in (0, 1):
        every = 15 * SEC if rank == 0 else 20 * SEC
        ts = _times(W0 - 60 * SEC, W1 + 30 * SEC, every) if rank == 0 else _times(W0 + 300 * SEC, W1 - 300 * SEC, every)
        gpus = (0, 1) if rank == 0 else (0,)
        util = {g: [(t, float(rng.uniform())) for t in ts] for g in gpus}
        gmem = {g: [(t, int(rng.integers(2**30, 2**34))) for t in ts] for g in gpus}
        mem = [(t, float(rng.uniform(1e9, 4e9))) for t in ts]
        cpu, total = [], 100.0
        for t in ts:
            total += float(rng.uniform(0, every / SEC * 8))  # up to 8 cores busy
            cpu.append((t, total))
        fs_t = ts[::2]
        fs = {"usage": [(t, int(rng.integers(10**9, 5 * 10**9))) for t in fs_t],
              "limit": [(t, 10**10 + (t // SEC) % 7) for t in fs_t]}
        active = [(t, int(rng.integers(0, 6))) for t in _times(W0 - 30 * SEC, W1, 10 * SEC)]
        sent["gpu_util"][rank], sent["gpu_mem"][rank], sent["mem"][rank], sent["fs"][rank] = util, gmem, mem, fs
        sent["cpu"][rank], sent["active"][rank] = cpu, active
        start = W0 - 3600 * SEC
        m = [
            gauge("hw.gpu.utilization", [number(t, v, attrs={"hw.gpu.index": g}) for g in gpus for t, v in util[g]],
                  unit="1"),
            gauge("hw.gpu.memory.usage", [number(t, v, attrs={"hw.gpu.index": g}) for g in gpus for t, v in gmem[g]],
                  unit="By"),
            gauge("process.memory.usage", [number(t, v) for t, v in mem], unit="By"),
            sum_metric("process.cpu.time", [number(t, v, start=start) for t, v in cpu], unit="s"),
            gauge("system.filesystem.usage", [number(t, v, attrs={"sonde.mount": m}) for m in ("ephemeral", "cache")
                                              for t, v in fs["usage"]], unit="By"),
            gauge("system.filesystem.limit", [number(t, v, attrs={"sonde.mount": m}) for m in ("ephemeral", "cache")
                                              for t, v in fs["limit"]], unit="By"),
            sum_metric("http.server.active_requests", [number(t, v, start=start) for t, v in active],
                       monotonic=False, unit="{request}"),
        ]
        send(client, creds, res(rank), m)
    # HTTP traffic on the leader: delta exponential histograms per status code, every minute
    http = {}
    points = []
    for i in range(0, 30):
        if i % 7 == 3:
            continue  # minutes with no telemetry at all
        t = W0 + i * 60 * SEC + 30 * SEC
        for code, n in ((200, int(rng.integers(50, 300))), (302, 5), (404, int(rng.integers(0, 20))), (503, 3)):
            if n == 0:
                continue
            v = rng.lognormal(-2.0 if code == 200 else -3.0, 0.7, n)
            http.setdefault(t, []).append((code, v))
            points.append(_exp_point(t, v, 6, attrs={"http.response.status_code": code}))
    send(client, creds, res(0), [exp_histogram("http.server.request.duration", points, cumulative=False)])
    sent["http"] = http
    return sent


def test_metrics_match_ground_truth(client, telemetry):
    body = metrics(client, {**BODY, "time_divisor_seconds": 60})
    assert body["deployment_id"] == "lp1"
    m = body["metrics"]
    # service: volume per minute, by status class, latency quantiles in ms, concurrency
    counts: dict[int, dict[int, int]] = {}
    values: dict[int, list] = {}
    for t, parts in telemetry["http"].items():
        k = (t - W0) // STEP
        for code, v in parts:
            counts.setdefault(k, {}).setdefault(code // 100, 0)
            counts[k][code // 100] += len(v)
            values.setdefault(k, []).append(v)
    assert_series(m["inference_volume"], {k: sum(c.values()) * 60 / 120 for k, c in counts.items()})
    assert [d["timestamp"] for d in m["inference_volume_by_status"]] == [iso(W0 + k * STEP) for k in sorted(counts)]
    for d, k in zip(m["inference_volume_by_status"], sorted(counts)):
        for cls in (2, 4, 5):
            assert d[f"status_{cls}xx"] == pytest.approx(counts[k].get(cls, 0) * 60 / 120, rel=1e-12)
    assert [d["timestamp"] for d in m["response_time_stats"]] == [iso(W0 + k * STEP) for k in sorted(values)]
    for d, k in zip(m["response_time_stats"], sorted(values)):
        exact = np.quantile(np.concatenate(values[k]), (0.5, 0.95, 0.99)) * 1000
        got = np.array([d["p50"], d["p95"], d["p99"]])
        assert np.all(np.abs(got - exact) / exact <= 0.01), (k, got, exact)
    active = [tw_series(telemetry["active"][r]) for r in (0, 1)]
    assert_series(m["concurrent_requests"], {k: sum(a[k] for a in active if k in a)
                                             for k in set(active[0]) | set(active[1])})

    # compute: the leader at the top level, every node in per_node_metrics
    def node_truth(rank: int) -> dict:
        cpu = {}
        pts = telemetry["cpu"][rank]
        # the first point of a cumulative series counts from its start: its delta is its value
        for (_, a), (t, b) in zip([(0, 0.0)] + pts, pts):
            if W0 <= t < W1:
                k = (t - W0) // STEP
                cpu[k] = cpu.get(k, 0.0) + (b - a)
        fs = telemetry["fs"][rank]
        usage, limit = tw_series(fs["usage"]), tw_series(fs["limit"])
        return {
            "gpu_utilization": {str(g): tw_series(v) for g, v in telemetry["gpu_util"][rank].items()},
            "gpu_memory_usage_bytes": {str(g): tw_series(v) for g, v in telemetry["gpu_mem"][rank].items()},
            "cpu_usage": {k: v / 120 for k, v in cpu.items()},
            "cpu_memory_usage_bytes": tw_series(telemetry["mem"][rank]),
            "usage_bytes": usage,
            "utilization": {k: usage[k] / limit[k] for k in usage},
        }

    def check(got: dict, want: dict) -> None:
        for field in ("gpu_utilization", "gpu_memory_usage_bytes"):
            assert sorted(got[field]) == sorted(want[field])
            for g in want[field]:
                assert_series(got[field][g], want[field][g])
        assert_series(got["cpu_usage"], want["cpu_usage"])
        assert_series(got["cpu_memory_usage_bytes"], want["cpu_memory_usage_bytes"])
        assert_series(got["ephemeral_storage"]["usage_bytes"], want["usage_bytes"])
        assert_series(got["ephemeral_storage"]["utilization"], want["utilization"])

    check(m, node_truth(0))
    assert [n["node_id"] for n in m["per_node_metrics"]] == ["node-a", "node-b"]
    for n, rank in zip(m["per_node_metrics"], (0, 1)):
        check(n, node_truth(rank))


def test_time_divisor_defaults_to_per_second_and_step_is_derived(client, telemetry):
    m = metrics(client, {**BODY, "step_seconds": None})["metrics"]  # 30 min: the 60 s rung
    per_minute: dict[int, int] = {}
    for t, parts in telemetry["http"].items():
        per_minute[(t - W0) // (60 * SEC)] = sum(len(v) for _, v in parts)
    assert [d["timestamp"] for d in m["inference_volume"]] == [iso(W0 + k * 60 * SEC) for k in sorted(per_minute)]
    assert [d["value"] for d in m["inference_volume"]] == pytest.approx(
        [per_minute[k] / 60 for k in sorted(per_minute)], rel=1e-12)
    # a partial last step: the rate is over the part of the step inside the window
    body = {"start_epoch_millis": W0 // 10**6, "end_epoch_millis": (W0 + 180 * SEC) // 10**6, "step_seconds": 120}
    m = metrics(client, body)["metrics"]
    n0 = sum(len(v) for t, parts in telemetry["http"].items() if W0 <= t < W0 + 120 * SEC for _, v in parts)
    n1 = sum(len(v) for t, parts in telemetry["http"].items() if W0 + 120 * SEC <= t < W0 + 180 * SEC for _, v in parts)
    assert n0 and n1
    assert [d["value"] for d in m["inference_volume"]] == pytest.approx([n0 / 120, n1 / 60], rel=1e-12)


def test_unranked_single_node_is_the_leader_and_empty_deployment(client, creds):
    t0 = W0 + 10 * SEC
    pts = [(t0 + i * 15 * SEC, float(i)) for i in range(20)]
    send(client, creds, {"sonde.loops_deployment_id": "solo", "sonde.replica": "s1"},
         [gauge("process.memory.usage", [number(t, v) for t, v in pts], unit="By")])
    m = metrics(client, url="/v1/loops/deployments/solo")["metrics"]
    assert_series(m["cpu_memory_usage_bytes"], tw_series(pts))
    assert [n["node_id"] for n in m["per_node_metrics"]] == ["0"]
    client.put("/v1/loops/deployments/empty", json={})
    m = metrics(client, url="/v1/loops/deployments/empty")["metrics"]
    assert m["inference_volume"] == [] and m["per_node_metrics"] == [] and m["gpu_utilization"] == {}


@pytest.mark.parametrize("body, field", [
    ({"start_epoch_millis": W1 // 10**6, "end_epoch_millis": W0 // 10**6}, "end_epoch_millis"),
    ({"start_epoch_millis": W0 // 10**6, "end_epoch_millis": W0 // 10**6}, "end_epoch_millis"),
    ({"start_epoch_millis": W1 // 10**6 - 8 * 86400_000, "end_epoch_millis": W1 // 10**6}, "end_epoch_millis"),
    ({**BODY, "step_seconds": 0}, "step_seconds"),
    ({**BODY, "step_seconds": -60}, "step_seconds"),
    ({"start_epoch_millis": W1 // 10**6 - 7 * 86400_000, "end_epoch_millis": W1 // 10**6, "step_seconds": 1},
     "step_seconds"),
    ({**BODY, "time_divisor_seconds": 0}, "time_divisor_seconds"),
    ({**BODY, "step_seconds": "soon"}, "step_seconds"),
    ({"start_epoch_millis": -1}, "start_epoch_millis"),
    ({"start_epoch_millis": (T0 + 3600 * SEC) // 10**6 + 10**8}, "start_epoch_millis"),
])
def test_bad_metrics_requests_are_400_naming_the_field(client, body, field):
    client.put(URL, json={})
    r = client.post(f"{URL}/metrics", json=body)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["field"] == field and r.json()["message"]


def test_metrics_body_forms(client):
    client.put(URL, json={})
    assert client.post(f"{URL}/metrics", json={}).status_code == 200
    # the vendor's curl example: --data without a Content-Type
    r = client.post(f"{URL}/metrics", content=b'{"end_epoch_millis": null, "start_epoch_millis": null}',
                    headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 200, r.text
    r = client.post(f"{URL}/metrics", content=b"{nope", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["field"] == "body"


def other_workspace(app, creds) -> Client:
    admin = Client(app, creds["admin_key"])
    ws = admin.post("/v1/admin/workspaces", json={"name": "other"}).json()["id"]
    key = admin.post(f"/v1/admin/workspaces/{ws}/api_keys", json={"name": "m", "scope": "management"}).json()["key"]
    return Client(app, key)


def test_inventory_put_reads_and_registration(app, client, creds):
    r = client.put(URL, json={
        "base_model": "Qwen/Qwen3-8B", "base_url": "https://lp1.example", "status": {"name": "DEPLOYING"},
        "user": {"email": "a@example.com"},
        "sampler": {"id": "s1", "base_url": "https://s1.example", "base_model": "Qwen/Qwen3-8B", "model_id": "m9",
                    "deployment_id": "d9", "status": {"name": "ACTIVE"}}})
    assert r.status_code == 200, r.text
    validate(r.json(), "GetLoopsDeploymentResponseV1")
    dep = r.json()["deployment"]
    assert dep["status"] == {"name": "DEPLOYING"} and dep["user"] == {"email": "a@example.com"}
    assert dep["sampler"]["id"] == "s1" and dep["sampler"]["deployment_id"] == "d9"
    created = dep["sampler"]["created_at"]
    again = client.put(URL, json={**{k: dep[k] for k in ("base_model", "base_url", "status", "user")},
                                  "sampler": {k: v for k, v in dep["sampler"].items() if k != "created_at"}})
    assert again.json()["deployment"]["sampler"]["created_at"] == created  # derived, kept across upserts
    # telemetry registers an unknown deployment as RUNNING
    send(client, creds, {"sonde.loops_deployment_id": "lp2", "sonde.replica": "x"},
         [gauge("process.memory.usage", [number(T0, 1.0)])])
    body = client.get("/v1/loops/deployments").json()
    validate(body, "ListLoopsDeploymentsResponseV1")
    assert [d["id"] for d in body["deployments"]] == ["lp1", "lp2"]
    assert body["deployments"][1] == {"id": "lp2", "base_model": "", "base_url": "", "status": {"name": "RUNNING"},
                                      "user": {"email": None}, "sampler": None}
    assert client.get("/v1/loops/deployments", params={"scope": "org"}).json() == body
    got = client.get("/v1/loops/deployments/lp2").json()
    validate(got, "GetLoopsDeploymentResponseV1")
    assert got["deployment"]["status"] == {"name": "RUNNING"}
    # bad input
    assert client.put(URL, json={"status": {"name": "GONE"}}).json()["error"]["field"] == "status"
    assert client.put(URL, json={"colour": "red"}).status_code == 400
    r = client.put("/v1/loops/deployments/bad id!", json={})
    assert r.status_code == 400 and r.json()["error"]["field"] == "deployment_id"
    # unknown ids and another workspace: 404
    other = other_workspace(app, creds)
    for c in (client, other):
        for method, url in (("GET", "/v1/loops/deployments/nope"), ("POST", "/v1/loops/deployments/nope/metrics"),
                            ("GET", "/v1/loops/deployments/nope/logs")):
            r = c.request(method, url, json={} if method == "POST" else None)
            assert r.status_code == 404 and r.json()["error"]["code"] == "not_found", (method, url)
    for method, url in (("GET", URL), ("POST", f"{URL}/metrics"), ("GET", f"{URL}/logs")):
        assert other.request(method, url, json={} if method == "POST" else None).status_code == 404
    assert other.get("/v1/loops/deployments").json() == {"deployments": []}


def test_logs(client, creds):
    t = W0 + 5 * SEC
    records = [log_record(t + i * SEC, f"line {i}", severity_number=(9 if i % 2 else 17)) for i in range(6)]
    body, headers = encode(logs_request(res(0), records))
    assert client.post("/v1/otlp/v1/logs", content=body, headers=headers, key=creds["ingest_key"]).status_code == 200
    params = {"start_epoch_millis": W0 // 10**6, "end_epoch_millis": W1 // 10**6}
    r = client.get(f"{URL}/logs", params=params)
    assert r.status_code == 200, r.text
    validate(r.json(), "GetLogsResponseV1")
    assert [x["message"] for x in r.json()["logs"]] == [f"line {i}" for i in reversed(range(6))]
    r = client.get(f"{URL}/logs", params={**params, "min_level": "ERROR", "direction": "asc", "limit": 2})
    assert [x["message"] for x in r.json()["logs"]] == ["line 0", "line 2"]
    assert all(x["level"] == "ERROR" and x["replica"] == "ra" for x in r.json()["logs"])
    r = client.get(f"{URL}/logs", params={"start_epoch_millis": W1 // 10**6, "end_epoch_millis": W0 // 10**6})
    assert r.status_code == 400 and r.json()["error"]["field"] == "end_epoch_millis"
