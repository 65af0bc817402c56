"""Training projects, jobs, job metrics and job logs against ground truth.

Telemetry goes in through the real OTLP/HTTP receiver as two nodes (ranks 0 and 1) of
job j1 in project p1, two GPUs each, sampled every 10 s exactly on the window's grid, so
the time-weighted mean of a step is the plain mean of its samples and a CPU step's
increase is the difference of the cumulative values at the step boundaries.
"""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from conftest import Client
from otlp_build import SEC, T0, encode, gauge, log_record, logs_request, metrics_request, number, sum_metric
from spec_schema import validate

BASE = "/v1/training_projects/p1/jobs/j1"
W0, W1 = T0 - 10 * 60 * SEC, T0  # ten minutes, 60 samples per series at 10 s
N = 60
TIMES = [W0 + i * 10 * SEC for i in range(N)]
GIB = 2**30
LIMIT = {"ephemeral": 100 * GIB, "cache": 500 * GIB}
WINDOW = {"start_epoch_millis": W0 // 10**6, "end_epoch_millis": W1 // 10**6}


def resource(rank: int, job: str = "j1") -> dict:
    return {"sonde.training_project_id": "p1", "sonde.training_job_id": job, "sonde.node_id": f"node{rank}",
            "sonde.node_rank": rank, "sonde.replica": f"rep{rank}"}


def gpu_util(rank, gpu, i):
    return ((rank * 7 + gpu * 3 + i) % 11) / 10


def gpu_mem(rank, gpu, i):
    return (10 + rank + gpu) * GIB + i * 2**20


def cpu_total(rank, i):  # cumulative CPU seconds at sample i (counted from 10 s before W0)
    return sum((1.5 + rank + (j % 4) * 0.25) * 10 for j in range(i + 1))


def rss(rank, i):
    return (4 + rank) * GIB + (i % 5) * 2**20


def fs_usage(rank, mount, i):
    return (20 if mount == "ephemeral" else 200) * GIB + rank * GIB + i * 2**24


def send(client, creds, rank: int, *, cache: bool, job: str = "j1"):
    ms = []
    for name, f in (("hw.gpu.utilization", gpu_util), ("hw.gpu.memory.usage", gpu_mem)):
        ms.append(gauge(name, [number(t, f(rank, g, i), attrs={"hw.gpu.index": g})
                               for i, t in enumerate(TIMES) for g in (0, 1)]))
    ms.append(sum_metric("process.cpu.time", [number(t, cpu_total(rank, i), start=W0 - 10 * SEC)
                                              for i, t in enumerate(TIMES)], unit="s"))
    ms.append(gauge("process.memory.usage", [number(t, rss(rank, i)) for i, t in enumerate(TIMES)], unit="By"))
    for mount in ("ephemeral", "cache") if cache else ("ephemeral",):
        a = {"sonde.mount": mount, "system.filesystem.mountpoint": f"/{mount}"}
        ms.append(gauge("system.filesystem.usage", [number(t, fs_usage(rank, mount, i), attrs=a)
                                                    for i, t in enumerate(TIMES)], unit="By"))
        ms.append(gauge("system.filesystem.limit", [number(t, LIMIT[mount], attrs=a) for t in TIMES], unit="By"))
    body, headers = encode(metrics_request(resource(rank, job), ms))
    r = client.post("/v1/otlp/v1/metrics", content=body, headers=headers, key=creds["ingest_key"])
    assert r.status_code == 200 and b"rejected" not in r.content, r.content


@pytest.fixture
def job(client, creds):
    send(client, creds, 0, cache=True)
    send(client, creds, 1, cache=False)
    return client


def iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, tz=timezone.utc).isoformat().replace("+00:00", "Z")


def truth(step_s: int) -> dict:
    """The expected TrainingJobMetricsV1 of each rank (and rank 0's cache) at ``step_s``."""
    per = step_s // 10
    steps = range(N // per)

    def series(f):
        return [{"value": pytest.approx(sum(f(i) for i in range(k * per, (k + 1) * per)) / per, rel=1e-9),
                 "timestamp": iso(W0 + k * step_s * SEC)} for k in steps]

    def storage(rank, mount):
        usage = series(lambda i: fs_usage(rank, mount, i))
        util = series(lambda i: fs_usage(rank, mount, i) / LIMIT[mount])
        return {"usage_bytes": usage, "utilization": util}

    out = {}
    for rank in (0, 1):
        cores = [{"value": pytest.approx((cpu_total(rank, (k + 1) * per - 1)
                                          - (cpu_total(rank, k * per - 1) if k else 0)) / step_s, rel=1e-9),
                  "timestamp": iso(W0 + k * step_s * SEC)} for k in steps]
        out[rank] = {
            "gpu_memory_usage_bytes": {str(g): series(lambda i, g=g: gpu_mem(rank, g, i)) for g in (0, 1)},
            "gpu_utilization": {str(g): series(lambda i, g=g: gpu_util(rank, g, i)) for g in (0, 1)},
            "cpu_usage": cores,
            "cpu_memory_usage_bytes": series(lambda i: rss(rank, i)),
            "ephemeral_storage": storage(rank, "ephemeral"),
        }
    out["cache"] = storage(0, "cache")
    return out


def check(body: dict, step_s: int):
    validate(body, "GetTrainingJobMetricsResponseV1")
    want = truth(step_s)
    assert [n["node_id"] for n in body["per_node_metrics"]] == ["node0", "node1"]
    for rank, node in enumerate(body["per_node_metrics"]):
        validate(node, "TrainingJobNodeMetricsV1")
        assert node["metrics"] == want[rank]
    top = {k: body[k] for k in want[0]}
    assert top == want[0]  # top-level compute fields are the leader's
    assert body["cache"] == want["cache"]
    assert body["training_job"]["id"] == "j1"
    assert body["training_job"]["current_status"] == "RUNNING"


def test_metrics_values_get_and_post(job):
    r = job.get(f"{BASE}/metrics", params={**WINDOW, "step_seconds": 60})
    assert r.status_code == 200, r.text
    check(r.json(), 60)
    # The older POST form, with its JSON body, gives the same answer.
    r2 = job.post(f"{BASE}/metrics", json={**WINDOW, "step_seconds": 60})
    assert r2.status_code == 200, r2.text
    assert r2.json() == r.json()


def test_step_derived_from_window(job):
    # Ten minutes and no step: the smallest rung giving <= 360 steps is 10 s.
    r = job.get(f"{BASE}/metrics", params=WINDOW)
    assert r.status_code == 200, r.text
    check(r.json(), 10)
    # The vendor's POST example sends nulls: defaults (the last hour, 10 s steps).
    r = job.post(f"{BASE}/metrics", json={"start_epoch_millis": None, "end_epoch_millis": None})
    assert r.status_code == 200, r.text
    validate(r.json(), "GetTrainingJobMetricsResponseV1")


def test_job_without_cache_or_telemetry(client, creds):
    send(client, creds, 0, cache=False, job="j2")
    r = client.get("/v1/training_projects/p1/jobs/j2/metrics", params={**WINDOW, "step_seconds": 300})
    assert r.status_code == 200, r.text
    body = r.json()
    validate(body, "GetTrainingJobMetricsResponseV1")
    assert body["cache"] is None
    assert len(body["per_node_metrics"]) == 1 and len(body["cpu_usage"]) == 2
    # A job PUT but never reporting: empty series, no nodes.
    assert client.put("/v1/training_projects/p1/jobs/quiet", json={}).status_code == 200
    body = client.get("/v1/training_projects/p1/jobs/quiet/metrics", params=WINDOW).json()
    validate(body, "GetTrainingJobMetricsResponseV1")
    assert body["per_node_metrics"] == [] and body["cache"] is None and body["gpu_utilization"] == {}


def test_inventory_registration_and_put(job, creds):
    r = job.get("/v1/training_projects")
    assert r.status_code == 200
    validate(r.json(), "ListTrainingProjectsResponseV1")
    [p] = r.json()["training_projects"]
    assert p["id"] == "p1" and p["latest_job"]["id"] == "j1"
    j = p["latest_job"]
    assert j["current_status"] == "RUNNING" and j["priority"] == 0 and j["user"] is None
    assert j["instance_type"]["id"] == "unknown" and j["checkpoint_sync_status"] is None

    r = job.put("/v1/training_projects/p1", json={"name": "Llama FT", "team_name": "ml"})
    assert r.status_code == 200, r.text
    validate(r.json(), "TrainingProjectV1")
    assert r.json()["name"] == "Llama FT"
    it = {"id": "H100x8", "name": "8 H100", "memory_limit_mib": 1 << 20, "millicpu_limit": 96000, "gpu_count": 8,
          "gpu_type": "H100", "gpu_memory_limit_mib": 81920}
    r = job.put(f"{BASE}", json={"name": "run-1", "current_status": "FAILED", "error_message": "OOM",
                                 "instance_type": it, "priority": 3, "checkpoint_sync_status": "SYNCING",
                                 "user": {"email": "a@b.c"}})
    assert r.status_code == 200, r.text
    validate(r.json(), "GetTrainingJobResponseV1")
    r = job.get(BASE)
    validate(r.json(), "GetTrainingJobResponseV1")
    got = r.json()["training_job"]
    assert (got["name"], got["current_status"], got["error_message"], got["instance_type"], got["priority"],
            got["checkpoint_sync_status"], got["user"]) == ("run-1", "FAILED", "OOM", it, 3, "SYNCING",
                                                            {"email": "a@b.c"})
    assert got["training_project"] == {"id": "p1", "name": "Llama FT"}
    r = job.get("/v1/training_projects/p1/jobs")
    validate(r.json(), "ListTrainingJobsResponseV1")
    assert [x["id"] for x in r.json()["training_jobs"]] == ["j1"]
    # Later telemetry does not overwrite the PUT record.
    send(job, creds, 0, cache=True)
    assert job.get(BASE).json()["training_job"]["current_status"] == "FAILED"
    assert job.put(f"{BASE}", json={"checkpoint_sync_status": "NOPE"}).status_code == 400


def test_logs_get_and_post(job, creds):
    recs = [log_record(W0 + i * SEC, f"step {i} loss 0.{i}", severity_number=9) for i in range(5)]
    recs.append(log_record(W0 + 6 * SEC, "CUDA error", severity_number=17))
    body, headers = encode(logs_request(resource(0), recs))
    assert job.post("/v1/otlp/v1/logs", content=body, headers=headers, key=creds["ingest_key"]).status_code == 200
    r = job.get(f"{BASE}/logs", params={**WINDOW, "direction": "asc"})
    assert r.status_code == 200, r.text
    validate(r.json(), "GetLogsResponseV1")
    assert [x["message"] for x in r.json()["logs"]] == [f"step {i} loss 0.{i}" for i in range(5)] + ["CUDA error"]
    r = job.post(f"{BASE}/logs", json={**WINDOW, "min_level": "ERROR"})
    assert r.status_code == 200, r.text
    validate(r.json(), "GetLogsResponseV1")
    assert [x["message"] for x in r.json()["logs"]] == ["CUDA error"]
    assert job.get("/v1/training_projects/p1/jobs/nope/logs").status_code == 404


def _error(r, status, field):
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"message", "error"} and body["error"]["field"] == field, body


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_bad_input(job, app, creds, method):
    def ask(path=f"{BASE}/metrics", **q):
        if method == "GET":
            return job.get(path, params=q)
        return job.post(path, json=q)

    _error(ask("/v1/training_projects/p1/jobs/nope/metrics"), 404, "training_job_id")
    _error(ask("/v1/training_projects/nope/jobs/j1/metrics"), 404, "training_project_id")
    _error(ask(step_seconds=0), 400, "step_seconds")
    _error(ask(step_seconds=-5), 400, "step_seconds")
    _error(ask(start_epoch_millis=W1 // 10**6, end_epoch_millis=W0 // 10**6), 400, "end_epoch_millis")
    _error(ask(start_epoch_millis=W1 // 10**6 - 8 * 86400_000, end_epoch_millis=W1 // 10**6), 400,
           "end_epoch_millis")
    _error(ask(**WINDOW, step_seconds=8 * 86400), 400, "step_seconds")
    # Another workspace does not see p1/j1 at all.
    admin = Client(app, creds["admin_key"])
    ws = admin.post("/v1/admin/workspaces", json={"name": "other"}).json()["id"]
    other = job.with_key(admin.post(f"/v1/admin/workspaces/{ws}/api_keys",
                                    json={"name": "m", "scope": "management"}).json()["key"])
    for path in (f"{BASE}/metrics", f"{BASE}/logs"):
        r = other.get(path) if method == "GET" else other.post(path, json={})
        assert r.status_code == 404, r.text
    assert other.get(BASE).status_code == 404
    assert other.get("/v1/training_projects/p1/jobs").status_code == 404
    assert other.get("/v1/training_projects").json() == {"training_projects": []}
