"""Logs sent through the real OTLP/HTTP receiver come back through the log endpoints."""

from __future__ import annotations

from conftest import Client
from otlp_build import SEC, T0, encode, log_record, logs_request, merge
from spec_schema import validate

RESOURCE = {"sonde.model_id": "m1", "sonde.deployment_id": "d1", "sonde.replica": "abcde",
            "sonde.environment": "production"}
WINDOW = {"start_epoch_millis": (T0 - 60 * SEC) // 10**6, "end_epoch_millis": (T0 + 60 * SEC) // 10**6}


def send(client, creds, request, **kw):
    body, headers = encode(request, **kw)
    r = client.post("/v1/otlp/v1/logs", content=body, headers=headers, key=creds["ingest_key"])
    assert r.status_code == 200, r.text


def test_otlp_logs_round_trip(client, creds):
    records = [
        log_record(T0, "model loaded", severity_number=9, attrs={"component": "model"}),
        log_record(T0 + 1, "request failed: CUDA OOM", severity_number=17,
                   attrs={"request_id": "req-42", "component": "server"}),
        log_record(T0 + 1, "retrying req-42", severity_text="WARN", attrs={"request_id": "req-42"}),
        log_record(T0 + 2, "plain print() line"),
        log_record(T0 + 3, "debug\tdetail \\d+", severity_number=5),
    ]
    send(client, creds, logs_request(RESOURCE, records))
    # A second replica in another environment, as JSON + gzip.
    staging = {**RESOURCE, "sonde.replica": "fghij", "sonde.environment": "staging"}
    send(client, creds, merge(logs_request(staging, [log_record(T0 + 4, "staging line", severity_number=13)])),
         json=True, gzip=True)

    url = "/v1/models/m1/deployments/d1/logs"  # never PUT: the telemetry registered it
    r = client.get(url, params={**WINDOW, "direction": "asc"})
    assert r.status_code == 200, r.text
    validate(r.json(), "GetLogsResponseV1")
    assert r.json()["logs"] == [
        {"timestamp": str(T0), "message": "model loaded", "replica": "abcde", "request_id": None, "level": "INFO"},
        {"timestamp": str(T0 + 1), "message": "request failed: CUDA OOM", "replica": "abcde",
         "request_id": "req-42", "level": "ERROR"},
        {"timestamp": str(T0 + 1), "message": "retrying req-42", "replica": "abcde", "request_id": "req-42",
         "level": "WARNING"},
        {"timestamp": str(T0 + 2), "message": "plain print() line", "replica": "abcde", "request_id": None,
         "level": None},
        {"timestamp": str(T0 + 3), "message": "debug\tdetail \\d+", "replica": "abcde", "request_id": None,
         "level": "DEBUG"},
        {"timestamp": str(T0 + 4), "message": "staging line", "replica": "fghij", "request_id": None,
         "level": "WARNING"},
    ]

    def messages(path, **params):
        r = client.get(path, params={**WINDOW, **params})
        assert r.status_code == 200, r.text
        return [line["message"] for line in r.json()["logs"]]

    assert messages(url, request_id="req-42") == ["retrying req-42", "request failed: CUDA OOM"]
    assert messages(url, component="server") == ["request failed: CUDA OOM"]
    assert messages(url, min_level="WARNING") == ["staging line", "retrying req-42", "request failed: CUDA OOM"]
    assert messages(url, replica="fghij") == ["staging line"]
    assert messages(url, search_pattern=r"\\d\+$") == ["debug\tdetail \\d+"]
    assert messages(url, includes=["\t"]) == ["debug\tdetail \\d+"]
    env = "/v1/models/m1/environments/{}/logs"
    assert messages(env.format("staging")) == ["staging line"]
    assert len(messages(env.format("production"))) == 5

    # An ingest key reads nothing; another workspace's ingest key lands lines only there.
    assert client.get(url, params=WINDOW, key=creds["ingest_key"]).status_code == 403
    admin = Client(client.app, creds["admin_key"])
    ws_b = admin.post("/v1/admin/workspaces", json={"name": "b"}).json()["id"]
    keys_b = {scope: admin.post(f"/v1/admin/workspaces/{ws_b}/api_keys",
                                json={"name": scope, "scope": scope}).json()["key"]
              for scope in ("ingest", "management")}
    send(client, {"ingest_key": keys_b["ingest"]}, logs_request(RESOURCE, [log_record(T0 + 5, "workspace b")]))
    assert messages(url, limit=1) == ["staging line"]
    r = client.get(url, params=WINDOW, key=keys_b["management"])
    assert [line["message"] for line in r.json()["logs"]] == ["workspace b"]
