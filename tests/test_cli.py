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


def test_logs_and_metrics_take_times_as_peers_do(server):
    """--since / --until as a time ago, an ISO time or epoch ms; -n, --level, --grep, -o."""
    import time
    from datetime import datetime, timezone

    import httpx
    from otlp_build import encode, gauge, log_record, logs_request, metrics_request, number

    res = {"sonde.model_id": "tm", "sonde.deployment_id": "td", "sonde.replica": "r0"}
    now = time.time_ns()
    minute = 60 * 10**9
    lines = [log_record(now - 20 * minute, "CUDA out of memory, long ago", severity_text="ERROR"),
             log_record(now - 5 * minute, "CUDA out of memory", severity_text="ERROR"),
             log_record(now - 4 * minute, "NCCL WARN retrying", severity_text="WARNING"),
             log_record(now - 3 * minute, "step 10 ok", severity_text="INFO"),
             log_record(now - 2 * minute, "NCCL error: unhandled", severity_text="ERROR")]
    for msg, path in ((logs_request(res, lines), "logs"),
                      (metrics_request(res, [gauge("process.memory.usage", [
                          number(now - k * 10**9, 2.0**30) for k in range(30, 0, -5)], unit="By")]), "metrics")):
        body, headers = encode(msg)
        httpx.post(f"{server.url}/v1/otlp/v1/{path}", content=body,
                   headers={**headers, **server.headers("ingest_key")}).raise_for_status()

    def messages(*args):
        out = sonde(server, "logs", "tm", "td", *args, "-o", "jsonl").stdout
        return [json.loads(line)["message"] for line in out.splitlines()]

    assert messages("--since", "10m", "--level", "WARNING", "--grep", "CUDA|NCCL", "--direction", "asc") == [
        "CUDA out of memory", "NCCL WARN retrying", "NCCL error: unhandled"]
    assert messages("--since", "10m", "-n", "1") == ["NCCL error: unhandled"]  # newest first by default
    iso = datetime.fromtimestamp((now - 3.5 * minute) / 1e9, tz=timezone.utc).isoformat()
    until_ms = str(int(now - 2.5 * minute) // 10**6)
    assert messages("--since", iso, "--until", until_ms) == ["step 10 ok"]
    assert messages("--since", "1h", "--grep", "long ago") == ["CUDA out of memory, long ago"]
    r = sonde(server, "logs", "tm", "td", "--since", "yesterday-ish", ok=False)
    assert r.returncode == 2 and "neither a time ago" in r.stderr
    r = sonde(server, "logs", "tm", "td", "-f", "--until", "5m", ok=False)
    assert r.returncode == 2 and "no --until" in r.stderr

    rows = json.loads(sonde(server, "metrics", "tm", "td", "--since", "10m", "--metric",
                            "baseten_container_cpu_memory_working_set_bytes", "-o", "json").stdout)
    assert rows["mode"] == "SUMMARY"  # a window asked for: one value set over it
    (value,) = rows["metric_values"][0]["values"][0]
    assert value == 2.0**30
