"""Every error, whatever raised it, has the one envelope of docs/api.md#errors."""

import pytest

from conftest import Client


def assert_envelope(r, status, field=...):
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"message", "error"}
    assert isinstance(body["message"], str) and body["message"]
    assert set(body["error"]) == {"code", "field"}
    assert isinstance(body["error"]["code"], str) and body["error"]["code"]
    if field is not ...:
        assert body["error"]["field"] == field, body


@pytest.mark.parametrize(
    "method,url,kw,status,field",
    [
        ("GET", "/v1/nowhere", {}, 404, None),
        ("DELETE", "/v1/models", {}, 405, None),
        ("GET", "/v1/models/nope", {}, 404, "model_id"),
        ("PUT", "/v1/models/bad id!", {"json": {}}, 400, "model_id"),
        ("PUT", "/v1/models/m1", {"content": b"{not json", "headers": {"Content-Type": "application/json"}}, 400, "body"),
        ("PUT", "/v1/models/m1", {"json": {"name": 7}}, 400, "name"),
        ("PUT", "/v1/models/m1", {"json": {"zzz": 1}}, 400, "zzz"),
    ],
)
def test_management_errors(client, method, url, kw, status, field):
    assert_envelope(client.request(method, url, **kw), status, field)


def test_auth_errors(app, creds):
    c = Client(app)
    assert_envelope(c.get("/v1/models", key=None), 401, "Authorization")
    assert_envelope(c.get("/v1/models", key="wrong"), 401, "Authorization")
    assert_envelope(c.get("/v1/models", key=creds["ingest_key"]), 403, "Authorization")


def test_conflict(client):
    client.put("/v1/models/a/deployments/d", json={})
    assert_envelope(client.put("/v1/models/b/deployments/d", json={}), 409, "deployment_id")


def test_admin_validation(app, creds):
    admin = Client(app, creds["admin_key"])
    assert_envelope(admin.post("/v1/admin/workspaces", json={}), 400, "name")
    assert_envelope(admin.delete("/v1/admin/api_keys/key_missing"), 404, "key_id")
