"""The sonde CLI as a user runs it: child processes against a real server."""

import json
import subprocess
import sys

import pytest

from live_server import LiveServer


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = LiveServer(tmp_path_factory.mktemp("cli-data")).start()
    yield s
    assert s.stop() == 0


def sonde(server, *args, ok=True):
    r = subprocess.run([sys.executable, "-m", "sonde", *args, "--server", server.url, "--data-dir", server.data_dir],
                       capture_output=True, text=True, timeout=60)
    if ok:
        assert r.returncode == 0, r.stderr
    return r


def test_admin_flow_and_inventory_reads(server):
    ws = json.loads(sonde(server, "workspaces", "create", "team-x", "--format", "json").stdout)
    assert ws["name"] == "team-x" and ws["id"].startswith("ws_")
    key = json.loads(sonde(server, "keys", "create", "--workspace", ws["id"], "--name", "ci", "--scope",
                           "management", "--format", "json").stdout)
    assert key["key"].startswith("sonde_")
    models = json.loads(sonde(server, "models", "--key", key["key"], "--format", "json").stdout)
    assert models == {"models": []}
    sonde(server, "keys", "revoke", key["id"])
    r = sonde(server, "models", "--key", key["key"], ok=False)
    assert r.returncode != 0 and "401" in r.stderr


def test_errors_are_printed_with_their_field(server):
    r = sonde(server, "deployments", "no-such-model", ok=False)
    assert r.returncode == 1 and "404" in r.stderr and "model_id" in r.stderr


def test_table_output(server):
    import httpx

    httpx.put(f"{server.url}/v1/models/m1", headers=server.headers(), json={"name": "Llama"}).raise_for_status()
    out = sonde(server, "models").stdout
    assert "m1" in out and "Llama" in out
