"""API keys through the real app and store: stored as a hash only, revoked at once on the
replica that revoked them, and paced per key (``rate_limit_per_key``, ``rate_limit_burst``)
with 429, Retry-After and the one error envelope (docs/reliability.md#keys-and-rate-limits).

Open live streams of a revoked key end within ``stream_key_check_seconds``:
tests/test_logs_stream.py::test_limit_per_key_and_revoked_key_ends_the_stream.
"""

from __future__ import annotations

import hashlib
import json

import pytest
from conftest import Client
from google.rpc import code_pb2, status_pb2
from otlp_build import DEPLOYMENT, T0, gauge, metrics_request, number, post

from sonde.api.ratelimit import RateLimiter
from sonde._exceptions import RateLimited


def _new_keys(app, creds) -> dict[str, dict]:
    admin = Client(app, creds["admin_key"])
    ws = admin.post("/v1/admin/workspaces", json={"name": "keys"}).json()["id"]
    return {s: admin.post(f"/v1/admin/workspaces/{ws}/api_keys", json={"name": s, "scope": s}).json()
            for s in ("management", "ingest")}


def _every_stored_value(store) -> str:
    """Every row of every table of the test's database, as one text."""
    tables = [r["name"] for r in store.ex.query(
        "SELECT name FROM system.tables WHERE database = {db:String} AND engine NOT LIKE '%View%'", {"db": store.db})]
    assert "api_keys" in tables
    return "\n".join(json.dumps(store.ex.query(f"SELECT * FROM {store.t(t)}"), default=str) for t in tables)


@pytest.mark.steady_only("what one process writes is what is searched")
def test_the_store_holds_only_hashes_and_credentials_json_only_the_bootstrap_keys(app, creds, store, tmp_path):
    before = (tmp_path / "data" / "credentials.json").read_bytes()
    made = _new_keys(app, creds)
    raws = [creds["admin_key"], creds["management_key"], creds["ingest_key"], *(k["key"] for k in made.values())]
    assert all(Client(app, k["key"]).get("/v1/models" if s == "management" else "/metrics").status_code
               in (200, 403) for s, k in made.items())
    stored = _every_stored_value(store)
    for raw in raws:
        assert raw.startswith("sonde_") and raw not in stored and raw.removeprefix("sonde_") not in stored
        assert hashlib.sha256(raw.encode()).hexdigest() in stored
    # credentials.json is written once, at first start, with the bootstrap keys (raw: it is
    # how the operator gets them); keys made later are shown once, in the 201, and nowhere else
    assert (tmp_path / "data" / "credentials.json").read_bytes() == before
    assert not any(k["key"] in before.decode() for k in made.values())


@pytest.mark.steady_only("one replica's own cache is the subject")
def test_a_revoked_key_fails_at_once_on_the_replica_that_revoked_it(app, creds):
    # key_cache_seconds stays at its default (5 s): the revoking replica drops its cached
    # lookup, so the very next call is refused although the cache would still trust it
    made = _new_keys(app, creds)
    mgmt, ingest = Client(app, made["management"]["key"]), Client(app, made["ingest"]["key"])
    req = metrics_request(DEPLOYMENT, [gauge("g", [number(T0, 1.0)])])
    assert mgmt.get("/v1/models").status_code == 200 and post(ingest, req).status_code == 200
    admin = Client(app, creds["admin_key"])
    for scope, c in (("management", mgmt), ("ingest", ingest)):
        assert admin.delete(f"/v1/admin/api_keys/{made[scope]['id']}").status_code == 204
    for r in (mgmt.get("/v1/models"), mgmt.get("/metrics"), post(ingest, req, json=True)):
        assert r.status_code == 401 and r.json()["error"] == {"code": "unauthorized", "field": "Authorization"}
    r = post(ingest, req)  # protobuf OTLP answers in its own encoding
    assert r.status_code == 401 and status_pb2.Status.FromString(r.content).code == code_pb2.UNAUTHENTICATED


@pytest.mark.steady_only("the rate is counted per process")
# one token back a minute: no slowness of the machine lets a call through that should not pass
@pytest.mark.server_config(rate_limit_per_key=1, rate_limit_burst=3)
def test_per_key_rate_limit_answers_429_with_retry_after_in_the_envelope(app, creds):
    made = _new_keys(app, creds)
    mgmt = Client(app, made["management"]["key"])
    assert [mgmt.get("/v1/models").status_code for _ in range(3)] == [200, 200, 200]
    r = mgmt.get("/v1/models/m1/deployments/d1/logs")
    wait = int(r.headers["Retry-After"])
    assert r.status_code == 429 and 1 <= wait <= 60
    body = r.json()
    assert body["error"] == {"code": "rate_limited", "field": None}
    assert "rate_limit_per_key" in body["message"] and f"retry in {wait} s" in body["message"]
    assert mgmt.get("/metrics").status_code == 429  # every route draws on the one budget
    # the budget is the key's: the same workspace's ingest key and the other keys still pass
    ingest = Client(app, made["ingest"]["key"])
    req = metrics_request(DEPLOYMENT, [gauge("g", [number(T0, 1.0)])])
    assert post(ingest, req).status_code == 200
    assert Client(app, creds["management_key"]).get("/v1/models").status_code == 200
    # refused before the limiter (unknown key, wrong scope) spends nothing
    for _ in range(3):
        assert mgmt.get("/v1/models", key="sonde_unknown").status_code == 401
        assert ingest.get("/v1/models").status_code == 403
    assert [post(ingest, req).status_code for _ in range(2)] == [200, 200]
    r = post(ingest, req)  # OTLP protobuf: RESOURCE_EXHAUSTED, with Retry-After too
    assert r.status_code == 429 and 1 <= int(r.headers["Retry-After"]) <= 60
    assert status_pb2.Status.FromString(r.content).code == code_pb2.RESOURCE_EXHAUSTED


def test_bucket_refills_at_the_rate_and_counts_each_key_alone():
    now = [100.0]
    limiter = RateLimiter(120, 2, clock=lambda: now[0])  # two a second, bursts of two
    limiter.check("a"), limiter.check("a"), limiter.check("b")
    with pytest.raises(RateLimited) as e:
        limiter.check("a")
    assert e.value.retry_after == 1 and e.value.status == 429
    now[0] += 0.5  # half a second gives one token back, not two
    limiter.check("a")
    with pytest.raises(RateLimited):
        limiter.check("a")
    now[0] += 3600  # an idle key refills to its burst, no further
    limiter.check("a"), limiter.check("a")
    with pytest.raises(RateLimited):
        limiter.check("a")
    limiter.check("b")


def test_a_slow_rate_waits_as_long_as_one_token_takes():
    now = [0.0]
    limiter = RateLimiter(2, 1, what="requests to /metrics", setting="metrics_rate_limit", clock=lambda: now[0])
    limiter.check("k")
    with pytest.raises(RateLimited, match=r"more than 2 requests to /metrics a minute .*metrics_rate_limit") as e:
        limiter.check("k")
    assert e.value.retry_after == 30
    now[0] += 29.0
    with pytest.raises(RateLimited) as e:
        limiter.check("k")
    assert e.value.retry_after == 1
    now[0] += 1.0
    limiter.check("k")
