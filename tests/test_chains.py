"""Chains: inventory (PUT and reads), chainlets from live telemetry, chainlet logs, bad input.

Telemetry goes in through the real OTLP/HTTP receiver; every response is validated against
the vendor's schema and compared with what the test wrote and sent.
"""

from __future__ import annotations

import re
import time

import pytest

from conftest import Client
from otlp_build import SEC, T0, encode, gauge, log_record, logs_request, metrics_request, number
from spec_schema import validate

AUTOSCALING = {"min_replica": 1, "max_replica": 4, "autoscaling_window": 60, "scale_down_delay": 900,
               "concurrency_target": 8, "target_utilization_percentage": 70, "target_in_flight_tokens": None,
               "max_scale_down_rate": None}


def chainlet_res(chainlet: str, replica: str, deployment: str = "cd1", chain: str = "c1") -> dict:
    return {"sonde.chain_id": chain, "sonde.chain_deployment_id": deployment, "sonde.chainlet_id": chainlet,
            "sonde.replica": replica}


def send_metrics(client, creds, resource, ts: int) -> None:
    body, headers = encode(metrics_request(resource, [gauge("hw.gpu.utilization", [number(ts, 0.5)], unit="1")]))
    r = client.post("/v1/otlp/v1/metrics", content=body, headers=headers, key=creds["ingest_key"])
    assert r.status_code == 200 and b"rejected" not in r.content, r.content


def send_logs(client, creds, resource, records) -> None:
    body, headers = encode(logs_request(resource, records))
    r = client.post("/v1/otlp/v1/logs", content=body, headers=headers, key=creds["ingest_key"])
    assert r.status_code == 200 and b"rejected" not in r.content, r.content


def get(client, url: str, schema: str, **params) -> dict:
    r = client.get(url, params=params or None)
    assert r.status_code == 200, r.text
    validate(r.json(), schema)
    return r.json()


def other_workspace(app, creds) -> Client:
    admin = Client(app, creds["admin_key"])
    ws = admin.post("/v1/admin/workspaces", json={"name": "other"}).json()["id"]
    key = admin.post(f"/v1/admin/workspaces/{ws}/api_keys", json={"name": "m", "scope": "management"}).json()["key"]
    return Client(app, key)


def put_deployment(client, d: str, chainlets: list[dict], **kw) -> dict:
    r = client.put(f"/v1/chains/c1/deployments/{d}", json={"chainlets": chainlets, **kw})
    assert r.status_code == 200, r.text
    validate(r.json(), "ChainDeploymentV1")
    return r.json()


def test_inventory_put_and_reads(client):
    r = client.put("/v1/chains/c1", json={"name": "RAG", "team_name": "search"})
    assert r.status_code == 200, r.text
    validate(r.json(), "ChainV1")
    assert r.json()["name"] == "RAG" and r.json()["deployments_count"] == 0 and r.json()["team_name"] == "search"
    first = put_deployment(client, "cd1", [
        {"id": "cl1", "name": "Retriever", "autoscaling_settings": AUTOSCALING, "instance_type_name": "L4x4",
         "status": "ACTIVE"},
        {"id": "cl2", "status": "DEPLOYING"},
    ], environment="production", status="UPDATING")
    assert first["chain_id"] == "c1" and first["environment"] == "production" and first["status"] == "UPDATING"
    assert first["chainlets"] == [
        {"id": "cl1", "name": "Retriever", "autoscaling_settings": AUTOSCALING, "instance_type_name": "L4x4",
         "active_replica_count": 0, "status": "ACTIVE"},
        {"id": "cl2", "name": "cl2", "autoscaling_settings": None, "instance_type_name": "",
         "active_replica_count": 0, "status": "DEPLOYING"},
    ]
    put_deployment(client, "cd2", [{"id": "cl1"}])
    put_deployment(client, "cd3", [])
    body = get(client, "/v1/chains/c1/deployments", "ChainDeploymentsV1")
    assert [d["id"] for d in body["deployments"]] == ["cd3", "cd2", "cd1"]  # newest first
    created = [d["created_at"] for d in body["deployments"]]
    assert created == sorted(created, reverse=True)
    assert body["deployments"][1]["environment"] is None and body["deployments"][1]["status"] == "ACTIVE"
    assert body["deployments"][2] == first
    # an upsert keeps created_at and replaces the written fields
    again = put_deployment(client, "cd1", [{"id": "cl1", "instance_type_name": "H100"}], environment="production")
    assert again["created_at"] == first["created_at"] and [c["id"] for c in again["chainlets"]] == ["cl1"]
    assert again["chainlets"][0]["autoscaling_settings"] is None and again["chainlets"][0]["instance_type_name"] == "H100"
    assert get(client, "/v1/chains/c1/deployments/cd1", "ChainDeploymentV1") == again
    chain = get(client, "/v1/chains/c1", "ChainV1")
    assert chain["deployments_count"] == 3 and chain["id"] == "c1"
    # a deployment PUT creates its chain
    r = client.put("/v1/chains/c2/deployments/cd9", json={})
    assert r.status_code == 200 and r.json()["chainlets"] == []
    body = get(client, "/v1/chains", "ChainsV1")
    assert [(c["id"], c["name"], c["deployments_count"], c["team_name"]) for c in body["chains"]] == [
        ("c1", "RAG", 3, "search"), ("c2", "c2", 1, "default")]


def test_chainlets_and_active_replicas_from_live_telemetry(client, creds):
    put_deployment(client, "cd1", [{"id": "cl1", "name": "Retriever"}])
    now = time.time_ns()
    for replica in ("r1", "r2"):
        send_metrics(client, creds, chainlet_res("cl1", replica), now - 5 * SEC)
    send_metrics(client, creds, chainlet_res("cl1", "r3"), now - 90 * SEC)  # reported, but not within 60 s
    send_metrics(client, creds, chainlet_res("cl2", "r1"), now - 2 * SEC)  # not in the PUT: from telemetry
    send_logs(client, creds, chainlet_res("cl3", "r9"), [log_record(now - SEC, "hello")])  # logs only
    send_metrics(client, creds, chainlet_res("cl1", "r4", deployment="cd2"), now - SEC)  # another deployment
    dep = get(client, "/v1/chains/c1/deployments/cd1", "ChainDeploymentV1")
    assert [(c["id"], c["name"], c["active_replica_count"]) for c in dep["chainlets"]] == [
        ("cl1", "Retriever", 2), ("cl2", "cl2", 1), ("cl3", "cl3", 0)]
    assert dep["chainlets"][1] == {"id": "cl2", "name": "cl2", "autoscaling_settings": None,
                                   "instance_type_name": "", "active_replica_count": 1, "status": "ACTIVE"}
    # telemetry registered cd2 under c1 with the first chainlet it named
    body = get(client, "/v1/chains/c1/deployments", "ChainDeploymentsV1")
    assert [d["id"] for d in body["deployments"]] == ["cd2", "cd1"]
    assert [(c["id"], c["active_replica_count"]) for c in body["deployments"][0]["chainlets"]] == [("cl1", 1)]
    assert body["deployments"][0]["status"] == "ACTIVE"


def test_telemetry_without_chain_id_goes_under_unassigned(client, creds):
    res = {"sonde.chain_deployment_id": "cdx", "sonde.chainlet_id": "a", "sonde.replica": "r1"}
    send_metrics(client, creds, res, time.time_ns() - SEC)
    body = get(client, "/v1/chains/_unassigned/deployments", "ChainDeploymentsV1")
    assert [d["id"] for d in body["deployments"]] == ["cdx"]
    assert [c["id"] for c in get(client, "/v1/chains", "ChainsV1")["chains"]] == ["_unassigned"]


def test_chainlet_logs_match_ground_truth(client, creds):
    put_deployment(client, "cd1", [{"id": "cl1"}, {"id": "cl2"}])
    client.put("/v1/chains/c1/deployments/cd2", json={"chainlets": [{"id": "cl1"}]})
    t0 = T0 - 20 * 60 * SEC
    sent = []
    for i in range(40):
        replica, sev = ("r1", "r2")[i % 2], (0, 5, 9, 13, 17)[i % 5]
        msg = f"step {i} {'error: boom' if sev == 17 else 'ok'}"
        sent.append((t0 + i * SEC, msg, replica, sev))
    by_replica: dict[str, list] = {}
    for t, msg, replica, sev in sent:
        by_replica.setdefault(replica, []).append(log_record(t, msg, severity_number=sev))
    for replica, records in by_replica.items():
        send_logs(client, creds, chainlet_res("cl1", replica), records)
    # noise: the other chainlet, and the same chainlet id under another deployment
    send_logs(client, creds, chainlet_res("cl2", "r1"), [log_record(t0 + 3 * SEC, "other chainlet")])
    send_logs(client, creds, chainlet_res("cl1", "r1", deployment="cd2"), [log_record(t0 + 4 * SEC, "other dep")])
    url = "/v1/chains/c1/deployments/cd1/chainlets/cl1/logs"
    window = {"start_epoch_millis": (t0 - SEC) // 10**6, "end_epoch_millis": T0 // 10**6}
    level = {0: None, 5: "DEBUG", 9: "INFO", 13: "WARNING", 17: "ERROR"}
    rank = {"DEBUG": 1, "INFO": 2, "WARNING": 3, "ERROR": 4}

    def want(pred, desc=True, limit=500):
        rows = [s for s in sent if pred(s)]
        rows.sort(key=lambda s: s[0], reverse=desc)
        return [{"timestamp": str(t), "message": m, "replica": r, "request_id": None, "level": level[sev]}
                for t, m, r, sev in rows[:limit]]

    assert get(client, url, "GetLogsResponseV1", **window)["logs"] == want(lambda s: True)
    got = get(client, url, "GetLogsResponseV1", **window, direction="asc", limit=7, replica="r2")["logs"]
    assert got == want(lambda s: s[2] == "r2", desc=False, limit=7)
    got = get(client, url, "GetLogsResponseV1", **window, min_level="WARNING")["logs"]
    assert got == want(lambda s: s[3] and rank[level[s[3]]] >= 3)
    got = get(client, url, "GetLogsResponseV1", **window, search_pattern=r"step \d*7 ")["logs"]
    assert got == want(lambda s: re.search(r"step \d*7 ", s[1]) is not None)
    got = get(client, url, "GetLogsResponseV1", **window, includes="boom", excludes="step 1")["logs"]
    assert got == want(lambda s: "boom" in s[1] and "step 1" not in s[1])
    other = get(client, "/v1/chains/c1/deployments/cd2/chainlets/cl1/logs", "GetLogsResponseV1", **window)["logs"]
    assert [x["message"] for x in other] == ["other dep"]
    r = client.get(url, params={**window, "search_pattern": "("})
    assert r.status_code == 400 and r.json()["error"]["field"] == "search_pattern"
    r = client.get(url, params={"start_epoch_millis": T0 // 10**6 - 8 * 86400_000, "end_epoch_millis": T0 // 10**6})
    assert r.status_code == 400 and r.json()["error"]["field"] == "start_epoch_millis"


@pytest.mark.parametrize("url", [
    "/v1/chains/nope", "/v1/chains/nope/deployments", "/v1/chains/nope/deployments/cd1",
    "/v1/chains/c1/deployments/nope", "/v1/chains/c2/deployments/cd1",
    "/v1/chains/c1/deployments/cd1/chainlets/nope/logs", "/v1/chains/c2/deployments/cd1/chainlets/cl1/logs",
    "/v1/chains/c1/deployments/nope/chainlets/cl1/logs",
])
def test_unknown_ids_are_404(client, url):
    put_deployment(client, "cd1", [{"id": "cl1"}])
    client.put("/v1/chains/c2", json={})
    r = client.get(url)
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found", r.text


def test_other_workspace_sees_nothing(app, client, creds):
    put_deployment(client, "cd1", [{"id": "cl1"}])
    other = other_workspace(app, creds)
    assert other.get("/v1/chains").json() == {"chains": []}
    for url in ("/v1/chains/c1", "/v1/chains/c1/deployments", "/v1/chains/c1/deployments/cd1",
                "/v1/chains/c1/deployments/cd1/chainlets/cl1/logs"):
        assert other.get(url).status_code == 404, url


def test_bad_input(client):
    put_deployment(client, "cd1", [])
    cases = [
        ("/v1/chains/bad id", {}, "chain_id"),
        ("/v1/chains/c1/deployments/bad!", {}, "chain_deployment_id"),
        ("/v1/chains/c1/deployments/cd1", {"chainlets": [{"id": "a"}, {"id": "a"}]}, "chainlets"),
        ("/v1/chains/c1/deployments/cd1", {"chainlets": [{"id": "a b"}]}, "chainlets"),
        ("/v1/chains/c1/deployments/cd1", {"status": "HAPPY"}, "status"),
        ("/v1/chains/c1/deployments/cd1", {"chainlets": [{"id": "a", "autoscaling_settings": {"min_replica": 1}}]},
         "chainlets"),
        ("/v1/chains/c1/deployments/cd1", {"colour": "red"}, "colour"),
    ]
    for url, body, field in cases:
        r = client.put(url, json=body)
        assert r.status_code == 400 and r.json()["error"]["field"] == field, (url, body, r.text)
    # a chain deployment never moves to another chain
    r = client.put("/v1/chains/c2/deployments/cd1", json={})
    assert r.status_code == 409 and r.json()["error"]["field"] == "chain_deployment_id"
    r = client.get("/v1/chains/c1/deployments/cd1/chainlets/cl1/logs", params={"limit": 0})
    assert r.status_code == 400 and r.json()["error"]["field"] == "limit"
