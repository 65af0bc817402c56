"""Instance types from the agent's ``sonde.hw.*`` resource attributes (docs/agent.md).

Telemetry goes in through the real OTLP/HTTP receiver; the read endpoints show the
instance type derived from the hardware unless a PUT wrote one (a PUT always wins,
later telemetry never overwrites it), and every response validates against the spec.
"""

from __future__ import annotations

import time

import pytest

from otlp_build import SEC, encode, gauge, log_record, logs_request, metrics_request, number
from spec_schema import validate

H200 = {"sonde.hw.gpu_count": 1, "sonde.hw.gpu_type": "NVIDIA H200", "sonde.hw.gpu_memory_mib": 143771,
        "sonde.hw.cpu_millicores": 16000, "sonde.hw.memory_mib": 131072}
H200_TYPE = {"id": "1xH200-140GiB-16cpu-128GiB", "name": "1xH200-140GiB-16cpu-128GiB", "memory_limit_mib": 131072,
             "millicpu_limit": 16000, "gpu_count": 1, "gpu_type": "NVIDIA H200", "gpu_memory_limit_mib": 143771}
CPU = {"sonde.hw.gpu_count": 0, "sonde.hw.cpu_millicores": 4000, "sonde.hw.memory_mib": 16384}
CPU_TYPE = {"id": "cpu-4cpu-16GiB", "name": "cpu-4cpu-16GiB", "memory_limit_mib": 16384, "millicpu_limit": 4000,
            "gpu_count": 0, "gpu_type": None, "gpu_memory_limit_mib": None}
A100X8 = {"sonde.hw.gpu_count": 8, "sonde.hw.gpu_type": "NVIDIA A100-SXM4-80GB", "sonde.hw.gpu_memory_mib": 81920,
          "sonde.hw.cpu_millicores": 2500, "sonde.hw.memory_mib": 512}


def send(client, creds, resource: dict, logs: bool = False) -> None:
    now = time.time_ns()
    if logs:
        body, headers = encode(logs_request(resource, [log_record(now, "hello")]))
        path = "/v1/otlp/v1/logs"
    else:
        body, headers = encode(metrics_request(resource, [gauge("hw.gpu.utilization", [number(now - SEC, 0.5)])]))
        path = "/v1/otlp/v1/metrics"
    r = client.post(path, content=body, headers=headers, key=creds["ingest_key"])
    assert r.status_code == 200 and b"rejected" not in r.content, r.content


def get(client, url: str, schema: str) -> dict:
    r = client.get(url)
    assert r.status_code == 200, r.text
    validate(r.json(), schema)
    return r.json()


DEP = {"sonde.model_id": "m1", "sonde.deployment_id": "d1", "sonde.replica": "r0001"}
JOB = {"sonde.training_project_id": "p1", "sonde.training_job_id": "j1", "sonde.node_rank": 0}


def test_name_derivation():
    from sonde.ingest.resource import hardware, instance_type

    def derive(attrs):
        return instance_type(hardware({k: str(v) for k, v in attrs.items()}))

    assert derive(H200) == H200_TYPE
    assert derive(CPU) == CPU_TYPE
    assert derive(A100X8)["name"] == "8xA100-SXM4-80GB-80GiB-2.5cpu-512MiB"
    assert hardware({"sonde.hw.cpu_millicores": "x", "sonde.hw.memory_mib": "1"}) is None
    assert hardware({"sonde.hw.cpu_millicores": "1000"}) is None  # no memory: nothing to fill


def test_deployment_instance_type_from_hardware_and_put_wins(client, creds):
    url = "/v1/models/m1/deployments/d1"
    send(client, creds, {**DEP, **H200})
    assert get(client, url, "DeploymentV1")["instance_type_name"] == H200_TYPE["name"]
    # A PUT naming one wins, and later telemetry (even other hardware) never overwrites it.
    r = client.put(url, json={"instance_type_name": "H100x1", "is_production": True})
    assert r.status_code == 200 and r.json()["instance_type_name"] == "H100x1"
    send(client, creds, {**DEP, **CPU})
    assert get(client, url, "DeploymentV1")["instance_type_name"] == "H100x1"
    assert get(client, "/v1/models/m1", "ModelV1")["instance_type_name"] == "H100x1"
    # A PUT without one falls back to what the agent observed last.
    r = client.put(url, json={"is_production": True})
    assert r.status_code == 200 and r.json()["instance_type_name"] == CPU_TYPE["name"]
    validate(r.json(), "DeploymentV1")
    assert get(client, "/v1/models/m1", "ModelV1")["instance_type_name"] == CPU_TYPE["name"]


def test_deployment_put_first_then_telemetry(client, creds):
    r = client.put("/v1/models/m1/deployments/d2", json={"instance_type_name": "L4x1"})
    assert r.status_code == 200
    send(client, creds, {**DEP, "sonde.deployment_id": "d2", **H200}, logs=True)  # logs carry it too
    assert get(client, "/v1/models/m1/deployments/d2", "DeploymentV1")["instance_type_name"] == "L4x1"
    # registered from logs alone, no PUT: the observed type
    send(client, creds, {**DEP, "sonde.deployment_id": "d3", **CPU}, logs=True)
    assert get(client, "/v1/models/m1/deployments/d3", "DeploymentV1")["instance_type_name"] == CPU_TYPE["name"]


def test_training_job_instance_type_from_hardware_and_put_wins(client, creds):
    url = "/v1/training_projects/p1/jobs/j1"
    send(client, creds, {**JOB, **H200})
    body = get(client, url, "GetTrainingJobResponseV1")
    assert body["training_job"]["instance_type"] == H200_TYPE
    listed = get(client, "/v1/training_projects", "ListTrainingProjectsResponseV1")
    assert listed["training_projects"][0]["latest_job"]["instance_type"] == H200_TYPE
    put_type = {"id": "H100:8x", "name": "8x H100", "memory_limit_mib": 2, "millicpu_limit": 3, "gpu_count": 8,
                "gpu_type": "H100", "gpu_memory_limit_mib": 81920}
    r = client.put(url, json={"instance_type": put_type})
    assert r.status_code == 200 and r.json()["training_job"]["instance_type"] == put_type
    send(client, creds, {**JOB, **A100X8})
    assert get(client, url, "GetTrainingJobResponseV1")["training_job"]["instance_type"] == put_type
    # without one in the PUT, the last observed type
    r = client.put(url, json={"name": "run"})
    assert r.status_code == 200
    assert r.json()["training_job"]["instance_type"]["name"] == "8xA100-SXM4-80GB-80GiB-2.5cpu-512MiB"


def test_training_job_without_hardware_stays_unknown(client, creds):
    send(client, creds, {**JOB, "sonde.hw.cpu_millicores": "lots", "sonde.hw.memory_mib": 1})  # malformed: ignored
    it = get(client, "/v1/training_projects/p1/jobs/j1", "GetTrainingJobResponseV1")["training_job"]["instance_type"]
    assert it["id"] == "unknown"


def test_chainlets_get_their_own_instance_types(client, creds):
    base = {"sonde.chain_id": "c1", "sonde.chain_deployment_id": "cd1"}
    send(client, creds, {**base, "sonde.chainlet_id": "cl1", "sonde.replica": "a", **H200})
    send(client, creds, {**base, "sonde.chainlet_id": "cl2", "sonde.replica": "b", **CPU})
    dep = get(client, "/v1/chains/c1/deployments/cd1", "ChainDeploymentV1")
    assert {c["id"]: c["instance_type_name"] for c in dep["chainlets"]} == {"cl1": H200_TYPE["name"],
                                                                            "cl2": CPU_TYPE["name"]}
    r = client.put("/v1/chains/c1/deployments/cd1",
                   json={"chainlets": [{"id": "cl1", "instance_type_name": "H100"}, {"id": "cl2"}]})
    assert r.status_code == 200
    validate(r.json(), "ChainDeploymentV1")
    assert {c["id"]: c["instance_type_name"] for c in r.json()["chainlets"]} == {"cl1": "H100",
                                                                                 "cl2": CPU_TYPE["name"]}
    send(client, creds, {**base, "sonde.chainlet_id": "cl1", "sonde.replica": "a", **A100X8})
    listed = get(client, "/v1/chains/c1/deployments", "ChainDeploymentsV1")["deployments"][0]
    assert {c["id"]: c["instance_type_name"] for c in listed["chainlets"]} == {"cl1": "H100", "cl2": CPU_TYPE["name"]}


@pytest.mark.steady_only("a process remembers the hardware it stored; a new process looks it up once")
def test_known_hardware_costs_no_inventory_access(app, client, creds):
    inv = app.state.inventory
    calls = []
    find, amend = inv.find, inv.amend
    inv.find = lambda *a, **k: calls.append("find") or find(*a, **k)
    inv.amend = lambda *a, **k: calls.append("amend") or amend(*a, **k)
    send(client, creds, {**DEP, **H200})
    assert "amend" in calls
    calls.clear()
    for _ in range(3):
        send(client, creds, {**DEP, **H200})
    assert calls == []


def test_hardware_that_changes_back_is_the_latest(client, creds):
    # In replicas mode the first and last observation land on one replica, the middle
    # one on the other: a replica that skipped the write because it had stored H200
    # itself before would leave the other replica's CPU in place.
    url = "/v1/models/m1/deployments/d1"
    for hw in (H200, CPU, H200):  # by turns in replicas mode: first and last on one replica
        send(client, creds, {**DEP, **hw})
    assert get(client, url, "DeploymentV1")["instance_type_name"] == H200_TYPE["name"]
