"""The OTLP receivers over HTTP: every bad input gets its clear 4xx, in the request's
encoding, and loses nothing already stored; keys, scopes, workspaces, registration."""

from __future__ import annotations

import gzip
import json
import tracemalloc

import pytest
from conftest import Client, drop_database, new_db_name
from google.rpc import code_pb2, status_pb2
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceResponse
from otlp_build import (
    DEPLOYMENT, S0, SEC, T0, gauge, log_record, logs_request, metrics_request, number, post, sum_metric,
)

from sonde.api.app import create_app
from sonde.settings import Config
from sonde.store import Store

METRICS = "/v1/otlp/v1/metrics"
PB = {"Content-Type": "application/x-protobuf"}
JS = {"Content-Type": "application/json"}


def status(r) -> status_pb2.Status:
    assert r.headers["content-type"] == "application/x-protobuf"
    return status_pb2.Status.FromString(r.content)


def count(store, table: str = "metric_points") -> int:
    return store.ex.query(f"SELECT count() AS n FROM {store.t(table)}")[0]["n"]


@pytest.fixture
def ingest(app, creds) -> Client:
    return Client(app, creds["ingest_key"])


@pytest.fixture
def small(store, tmp_path) -> Client:
    """An app whose body limit is 2000 bytes."""
    app = create_app(Config(data_dir=str(tmp_path / "small"), max_body_bytes=2000), store=store)
    creds = json.loads((tmp_path / "small" / "credentials.json").read_text())
    return Client(app, creds["ingest_key"])


def test_content_types_and_encodings(ingest, store):
    body = metrics_request(DEPLOYMENT, [gauge("g", [number(T0, 1.0)])]).SerializeToString()
    r = ingest.post(METRICS, content=body, headers={"Content-Type": "text/plain"})
    assert r.status_code == 415 and r.json()["error"] == {"code": "unsupported_media_type", "field": "Content-Type"}
    assert ingest.post(METRICS, content=body).status_code == 415
    r = ingest.post(METRICS, content=body, headers={**PB, "Content-Encoding": "br"})
    assert r.status_code == 415 and "Content-Encoding 'br'" in status(r).message
    r = ingest.post(METRICS, content=body, headers={"Content-Type": "application/x-protobuf; charset=binary"})
    assert r.status_code == 200
    assert count(store) == 1


def test_bodies_that_do_not_decode_are_400(ingest, store):
    ok = metrics_request(DEPLOYMENT, [gauge("g", [number(T0, 1.0)])])
    assert post(ingest, ok).status_code == 200
    r = ingest.post(METRICS, content=b"\xff\xff\xff", headers=PB)
    assert r.status_code == 400
    st = status(r)
    assert st.code == code_pb2.INVALID_ARGUMENT and "ExportMetricsServiceRequest" in st.message
    for bad in (b"{not json", b"[]", b'{"resourceMetrics": "x"}', b'{"resourceMetrics": [{"resource": 3}]}'):
        r = ingest.post(METRICS, content=bad, headers=JS)
        assert r.status_code == 400 and r.json()["error"]["field"] == "body", r.text
        assert "OTLP/JSON ExportMetricsServiceRequest" in r.json()["message"]
    r = ingest.post(METRICS, content=b"plain", headers={**PB, "Content-Encoding": "gzip"})
    assert r.status_code == 400 and "not valid gzip" in status(r).message
    truncated = gzip.compress(ok.SerializeToString())[:-12]
    r = ingest.post(METRICS, content=truncated, headers={**PB, "Content-Encoding": "gzip"})
    assert r.status_code == 400 and "truncated" in status(r).message
    assert count(store) == 1  # nothing stored by the bad ones, nothing lost


def test_a_point_attribute_that_does_not_decode_is_400(ingest, store):
    req = metrics_request(DEPLOYMENT, [gauge("g", [number(T0, 1.0, attrs={"k": "v"})])])
    body = req.SerializeToString()
    kv = req.resource_metrics[0].scope_metrics[0].metrics[0].gauge.data_points[0].attributes[0].SerializeToString()
    # same length, but the key is no longer valid UTF-8
    corrupt = body.replace(kv, kv.replace(b"\n\x01k", b"\n\x01\xff"))
    assert corrupt != body
    r = ingest.post(METRICS, content=corrupt, headers=PB)
    assert r.status_code == 400 and "attribute does not decode" in status(r).message
    assert count(store) == 0


def test_empty_request_is_fine(ingest):
    r = ingest.post(METRICS, content=b"", headers=PB)
    assert r.status_code == 200 and ExportMetricsServiceResponse.FromString(r.content).ByteSize() == 0
    r = ingest.post(METRICS, content=b"{}", headers=JS)
    assert r.status_code == 200 and r.json() == {}


def test_body_limits(small, store):
    big = metrics_request(DEPLOYMENT, [gauge("g", [number(T0 + i, float(i), attrs={"i": i}) for i in range(200)])])
    body = big.SerializeToString()
    assert len(body) > 2000
    r = small.post(METRICS, content=body, headers=PB)  # Content-Length says it all
    assert r.status_code == 413 and status(r).code == code_pb2.RESOURCE_EXHAUSTED
    r = small.post(METRICS, content=body, headers={**PB, "Content-Encoding": "gzip"})
    assert r.status_code == 413
    async def chunks():  # no Content-Length: the body is counted as it streams
        for i in range(0, len(body), 500):
            yield body[i:i + 500]

    r = small.post(METRICS, content=chunks(), headers=PB)
    assert r.status_code == 413
    zipped = gzip.compress(body)
    assert len(zipped) < 2000
    r = small.post(METRICS, content=zipped, headers={**JS, "Content-Encoding": "gzip"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "too_large" and "after gzip" in r.json()["message"]
    assert count(store) == 0
    assert post(small, metrics_request(DEPLOYMENT, [gauge("g", [number(T0, 1.0)])]), gzip=True).status_code == 200


def test_gzip_bomb_does_not_inflate(small):
    bomb = gzip.compress(b"\0" * (50 << 20), compresslevel=9)
    tracemalloc.start()
    try:
        r = small.post(METRICS, content=bomb, headers={**PB, "Content-Encoding": "gzip"})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert r.status_code == 413
    assert peak < 8 << 20, peak  # the 50 MiB never existed


# every replica must refuse a revoked key at once, not within key_cache_seconds
@pytest.mark.server_config(key_cache_seconds=0)
def test_keys_and_scopes(app, creds, store):
    body = metrics_request(DEPLOYMENT, [gauge("g", [number(T0, 1.0)])]).SerializeToString()
    c = Client(app)
    r = c.post(METRICS, content=body, headers=PB, key=None)
    assert r.status_code == 401 and status(r).code == code_pb2.UNAUTHENTICATED
    r = c.post(METRICS, content=b"{}", headers=JS, key=None)
    assert r.status_code == 401 and r.json()["error"]["field"] == "Authorization"
    assert c.post(METRICS, content=body, headers=PB, key="sonde_unknown").status_code == 401
    for scope in ("management_key", "admin_key"):
        r = c.post(METRICS, content=body, headers=PB, key=creds[scope])
        assert r.status_code == 403 and status(r).code == code_pb2.PERMISSION_DENIED
        r = c.post("/v1/otlp/v1/logs", content=b"{}", headers=JS, key=creds[scope])
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    admin = Client(app, creds["admin_key"])
    made = admin.post(f"/v1/admin/workspaces/{creds['workspace_id']}/api_keys", json={"name": "i", "scope": "ingest"})
    key = made.json()
    assert c.post(METRICS, content=body, headers=PB, key=key["key"]).status_code == 200
    assert admin.delete(f"/v1/admin/api_keys/{key['id']}").status_code == 204
    assert c.post(METRICS, content=body, headers=PB, key=key["key"]).status_code == 401
    assert count(store) == 1
    # an ingest key reads nothing
    assert Client(app, creds["ingest_key"]).get("/v1/models").status_code == 403


def test_workspaces_are_isolated(app, creds, store):
    admin = Client(app, creds["admin_key"])
    ws2 = admin.post("/v1/admin/workspaces", json={"name": "team-b"}).json()["id"]
    keys = {s: admin.post(f"/v1/admin/workspaces/{ws2}/api_keys", json={"name": s, "scope": s}).json()["key"]
            for s in ("ingest", "management")}
    req = metrics_request(DEPLOYMENT, [sum_metric("c", [number(T0, 10, start=S0)])])
    assert post(Client(app, creds["ingest_key"]), req).status_code == 200
    nxt = metrics_request(DEPLOYMENT, [sum_metric("c", [number(T0 + SEC, 25, start=S0)])])
    assert post(Client(app, keys["ingest"]), nxt).status_code == 200
    got = store.ex.query(f"SELECT ws, value, series FROM {store.t('metric_points')} ORDER BY ts")
    # the second workspace's point is its own first point (25), not a delta on the other's 10
    assert [(r["ws"], r["value"]) for r in got] == [(creds["workspace_id"], 10.0), (ws2, 25.0)]
    assert got[0]["series"] != got[1]["series"]
    m2 = Client(app, keys["management"])
    assert [d["id"] for d in m2.get("/v1/models/m1/deployments").json()["deployments"]] == ["d1"]
    admin_ws = Client(app, creds["management_key"])
    assert admin_ws.get("/v1/models/m1/deployments/d1").status_code == 200
    assert m2.put("/v1/models/m2", json={}).status_code == 200
    assert admin_ws.get("/v1/models/m2").status_code == 404


def test_telemetry_registers_what_it_names(app, creds, store):
    ingest, mgmt = Client(app, creds["ingest_key"]), Client(app, creds["management_key"])
    assert post(ingest, metrics_request({"sonde.deployment_id": "d9", "sonde.environment": "staging"},
                                        [gauge("g", [number(T0, 1.0)])])).status_code == 200
    d = mgmt.get("/v1/models/_unassigned/deployments/d9").json()
    assert (d["status"], d["environment"], d["model_id"]) == ("ACTIVE", "staging", "_unassigned")
    # a deployment the inventory knows keeps its model, whatever telemetry says
    assert mgmt.put("/v1/models/m5/deployments/d5", json={"name": "five"}).status_code == 200
    for res in ({"sonde.deployment_id": "d5"}, {"sonde.deployment_id": "d5", "sonde.model_id": "m6"}):
        assert post(ingest, logs_request(res, [log_record(T0, "x")])).status_code == 200
    got = store.ex.query(f"SELECT DISTINCT parent FROM {store.t('logs')} WHERE entity = 'd5'")
    assert got == [{"parent": "m5"}]
    assert mgmt.get("/v1/models/m6").status_code == 404
    assert mgmt.get("/v1/models/m5/deployments/d5").json()["name"] == "five"


@pytest.fixture
def tight(store_executor, tmp_path):
    """An app whose store queue holds at most 5 rows."""
    s = Store(store_executor, new_db_name(), flush_interval_ms=5, max_pending_rows=5)
    app = create_app(Config(data_dir=str(tmp_path / "tight")), store=s)
    creds = json.loads((tmp_path / "tight" / "credentials.json").read_text())
    yield Client(app, creds["ingest_key"]), s
    s.close(executor=False)
    drop_database(store_executor, s.db)


def test_overload_is_503_with_retry_after_and_changes_nothing(tight):
    ingest, store = tight
    six = metrics_request(DEPLOYMENT, [sum_metric("c", [number(T0, 100 + i, start=S0, attrs={"i": i})
                                                        for i in range(6)])])
    r = post(ingest, six)
    assert r.status_code == 503 and r.headers["Retry-After"] == "1"
    assert status(r).code == code_pb2.UNAVAILABLE
    r = post(ingest, six, json=True)
    assert r.status_code == 503 and r.json()["error"]["code"] == "overloaded" and r.headers["Retry-After"]
    assert count(store) == 0
    # the rejected points did not move the counter state: the next point is a first point
    assert post(ingest, metrics_request(DEPLOYMENT, [sum_metric("c", [number(T0 + SEC, 105, start=S0,
                                                                              attrs={"i": 0})])])).status_code == 200
    assert store.ex.query(f"SELECT value FROM {store.t('metric_points')}") == [{"value": 105.0}]


def test_gzip_with_several_members(ingest, store):
    a = metrics_request(DEPLOYMENT, [gauge("a", [number(T0, 1.0)])]).SerializeToString()
    b = metrics_request(DEPLOYMENT, [gauge("b", [number(T0, 2.0)])]).SerializeToString()
    # protobuf messages concatenate; so do gzip members (RFC 1952)
    r = ingest.post(METRICS, content=gzip.compress(a) + gzip.compress(b), headers={**PB, "Content-Encoding": "gzip"})
    assert r.status_code == 200
    assert store.ex.query(f"SELECT metric, value FROM {store.t('metric_points')} ORDER BY metric") == \
        [{"metric": "a", "value": 1.0}, {"metric": "b", "value": 2.0}]
