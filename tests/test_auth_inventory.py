import os
import stat

import pytest

from conftest import Client


def test_first_start_writes_credentials_0600(app, tmp_path, creds):
    path = tmp_path / "data" / "credentials.json"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert set(creds) == {"admin_key", "workspace_id", "management_key", "ingest_key"}


def test_missing_unknown_and_wrong_scope(app, creds):
    c = Client(app)
    assert c.get("/v1/models", key=None).status_code == 401
    assert c.get("/v1/models", key="sonde_nope").status_code == 401
    r = c.get("/v1/models", headers={"Authorization": "Basic abc"})
    assert r.status_code == 401 and r.json()["error"]["field"] == "Authorization"
    assert c.get("/v1/models", key=creds["ingest_key"]).status_code == 403
    assert c.get("/v1/models", key=creds["admin_key"]).status_code == 403
    assert c.post("/v1/admin/workspaces", json={"name": "x"}, key=creds["management_key"]).status_code == 403


@pytest.mark.steady_only("one process's key cache, asked between requests")
def test_keys_seen_lately_are_answered_from_memory(app, creds):
    accounts, c = app.state.accounts, Client(app)
    assert accounts.cached("sonde_unseen") == (False, None)  # the store is asked: off the event loop
    assert c.get("/v1/models", key="sonde_unseen").status_code == 401
    assert accounts.cached("sonde_unseen") == (True, None)  # refused again without the store
    assert c.get("/v1/models", key=creds["management_key"]).status_code == 200
    found, key = accounts.cached(creds["management_key"])
    assert found and key.scope == "management" and key.ws == creds["workspace_id"]
    assert c.get("/v1/models", key=creds["management_key"]).status_code == 200  # answered on the loop


def test_api_key_scheme_is_accepted(app, creds):
    r = Client(app).get("/v1/models", headers={"Authorization": f"Api-Key {creds['management_key']}"})
    assert r.status_code == 200 and r.json() == {"models": []}


# every replica must refuse a revoked key at once, not within key_cache_seconds
@pytest.mark.server_config(key_cache_seconds=0)
def test_admin_creates_workspace_and_keys_and_revokes(app, creds):
    admin = Client(app, creds["admin_key"])
    r = admin.post("/v1/admin/workspaces", json={"name": "team-b"})
    assert r.status_code == 201 and r.json()["name"] == "team-b"
    ws = r.json()["id"]
    r = admin.post(f"/v1/admin/workspaces/{ws}/api_keys", json={"name": "m", "scope": "management"})
    assert r.status_code == 201
    body = r.json()
    assert set(body) == {"id", "name", "scope", "key"} and body["scope"] == "management"
    b = Client(app, body["key"])
    assert b.get("/v1/models").status_code == 200
    assert admin.delete(f"/v1/admin/api_keys/{body['id']}").status_code == 204
    assert b.get("/v1/models").status_code == 401
    assert admin.delete(f"/v1/admin/api_keys/{body['id']}").status_code == 404
    r = admin.post(f"/v1/admin/workspaces/{ws}/api_keys", json={"name": "m", "scope": "root"})
    assert r.status_code == 400 and r.json()["error"]["field"] == "scope"
    assert admin.post("/v1/admin/workspaces/ws_nope/api_keys", json={"name": "m", "scope": "ingest"}).status_code == 404


def test_inventory_upsert_and_reads(client):
    r = client.put("/v1/models/m1", json={"name": "Llama", "team_name": "ml"})
    assert r.status_code == 200, r.text
    m = r.json()
    assert m["id"] == "m1" and m["name"] == "Llama" and m["deployments_count"] == 0
    r = client.put("/v1/models/m1/deployments/d1", json={"name": "v1", "is_production": True, "instance_type_name": "H100x1"})
    assert r.status_code == 200, r.text
    d = r.json()
    assert d["model_id"] == "m1" and d["status"] == "ACTIVE" and d["active_replica_count"] == 0
    assert d["autoscaling_settings"] is None
    again = client.put("/v1/models/m1/deployments/d1", json={"name": "v1", "is_production": True, "instance_type_name": "H100x1"})
    assert again.json()["created_at"] == d["created_at"]
    m = client.get("/v1/models/m1").json()
    assert m["deployments_count"] == 1 and m["production_deployment_id"] == "d1" and m["instance_type_name"] == "H100x1"
    assert [x["id"] for x in client.get("/v1/models/m1/deployments").json()["deployments"]] == ["d1"]
    assert client.get("/v1/models/m1/deployments/d1").json()["name"] == "v1"
    assert client.get("/v1/models/m2/deployments/d1").status_code == 404
    client.put("/v1/models/m2", json={})
    assert client.get("/v1/models/m2/deployments/d1").status_code == 404
    assert client.put("/v1/models/m2/deployments/d1", json={}).status_code == 409


def test_bad_ids_and_bodies(client):
    r = client.put("/v1/models/" + "x" * 65, json={})
    assert r.status_code == 400 and r.json()["error"]["field"] == "model_id"
    r = client.put("/v1/models/m1", json={"nme": "typo"})
    assert r.status_code == 400 and r.json()["error"]["field"] == "nme"
    r = client.put("/v1/models/m1/deployments/d1", json={"status": "RUNNING"})
    assert r.status_code == 400 and r.json()["error"]["field"] == "status"


def test_workspaces_do_not_see_each_other(app, creds, client):
    admin = Client(app, creds["admin_key"])
    ws = admin.post("/v1/admin/workspaces", json={"name": "other"}).json()["id"]
    other = Client(app, admin.post(f"/v1/admin/workspaces/{ws}/api_keys", json={"name": "m", "scope": "management"}).json()["key"])
    client.put("/v1/models/m1/deployments/d1", json={})
    assert other.get("/v1/models").json() == {"models": []}
    assert other.get("/v1/models/m1").status_code == 404
    assert other.get("/v1/models/m1/deployments/d1").status_code == 404
    assert other.put("/v1/models/m1/deployments/d1", json={}).status_code == 200
    assert client.get("/v1/models/m1/deployments/d1").status_code == 200


def test_inventory_responses_match_vendor_schemas(client):
    from spec_schema import response_schema, validate

    client.put("/v1/models/m1", json={"name": "Llama"})
    client.put("/v1/models/m1/deployments/d1", json={"autoscaling_settings": {
        "min_replica": 1, "max_replica": 3, "autoscaling_window": 60, "scale_down_delay": 900,
        "concurrency_target": 4, "target_utilization_percentage": 70}})
    for url, tmpl in [
        ("/v1/models", "/v1/models"),
        ("/v1/models/m1", "/v1/models/{model_id}"),
        ("/v1/models/m1/deployments", "/v1/models/{model_id}/deployments"),
        ("/v1/models/m1/deployments/d1", "/v1/models/{model_id}/deployments/{deployment_id}"),
    ]:
        r = client.get(url)
        assert r.status_code == 200
        validate(r.json(), response_schema("GET", tmpl))
