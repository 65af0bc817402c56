"""``sonde alerts`` as a user runs it: child processes against a real ``sonde serve``
that evaluates its rules every second."""

from __future__ import annotations

import json

import httpx
import pytest

from live_server import LiveServer
from test_agent_e2e import wait_until
from test_cli import sonde

RULES_YAML = """\
rules:
  - name: NoGpuData
    model_id: m1
    deployment_id: d1
    severity: page
    condition: {type: absent, metric: baseten_gpu_memory_used, window_seconds: 60}
  - name: HighP95
    model_id: m1
    deployment_id: d1
    for_seconds: 120
    condition:
      type: metric
      metric: baseten_end_to_end_response_time_seconds
      labels: {quantile: "0.95"}
      window_seconds: 300
      op: ">"
      threshold: 2.5
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = LiveServer(tmp_path_factory.mktemp("cli-alerts"), env={"SONDE_ALERT_EVAL_SECONDS": "1"}).start()
    with httpx.Client(base_url=s.url, headers=s.headers()) as c:
        c.put("/v1/models/m1", json={"name": "llama"}).raise_for_status()
        c.put("/v1/models/m1/deployments/d1", json={"name": "prod"}).raise_for_status()
    yield s
    assert s.stop() == 0


def test_create_list_active_and_delete(server, tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text(RULES_YAML)
    made = json.loads(sonde(server, "alerts", "create", str(path), "--format", "json").stdout)["rules"]
    assert [r["name"] for r in made] == ["NoGpuData", "HighP95"]
    table = sonde(server, "alerts", "rules").stdout
    assert "NoGpuData" in table and "no baseten_gpu_memory_used for 60s" in table
    assert "baseten_end_to_end_response_time_seconds{quantile=0.95} over 300s > 2.5" in table

    def firing() -> list:
        out = json.loads(sonde(server, "alerts", "active", "--format", "json").stdout)["alerts"]
        return [a for a in out if a["state"] == "firing"]
    wait_until(firing, 30, "the server's evaluation to fire NoGpuData")
    (alert,) = firing()
    assert alert["name"] == "NoGpuData" and alert["labels"]["severity"] == "page"
    table = sonde(server, "alerts", "active").stdout
    assert "NoGpuData" in table and "firing" in table

    # one JSON file with one rule works too
    one = tmp_path / "one.json"
    one.write_text(json.dumps({"name": "Oom", "model_id": "m1", "deployment_id": "d1", "condition": {
        "type": "logs", "filters": {"search_pattern": "CUDA out of memory"}, "op": ">", "threshold": 0}}))
    assert json.loads(sonde(server, "alerts", "create", str(one), "--format", "json").stdout)["rules"][0]["name"] == "Oom"

    sonde(server, "alerts", "delete", made[0]["id"])
    names = [r["name"] for r in json.loads(sonde(server, "alerts", "rules", "--format", "json").stdout)["rules"]]
    assert names == ["HighP95", "Oom"]
    wait_until(lambda: not firing(), 30, "the deleted rule's alert to resolve")


def test_bad_rules_are_refused_naming_the_rule_and_the_field(server, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("- name: Typo\n  model_id: m1\n  deployment_id: d1\n"
                   "  condition: {type: metric, metric: baseten_gpu_memroy_used, op: '>', threshold: 1}\n")
    r = sonde(server, "alerts", "create", str(bad), ok=False)
    assert r.returncode != 0 and "'Typo'" in r.stderr and "baseten_gpu_memroy_used" in r.stderr
    garbage = tmp_path / "garbage.yaml"
    garbage.write_text("rules: [1, 2")
    r = sonde(server, "alerts", "create", str(garbage), ok=False)
    assert r.returncode != 0 and "neither YAML nor JSON" in r.stderr


def test_receivers(server):
    out = json.loads(sonde(server, "alerts", "receiver", "am", "--type", "alertmanager", "--url",
                           "http://127.0.0.1:9093", "--format", "json").stdout)
    assert out == {"name": "am", "type": "alertmanager", "url": "http://127.0.0.1:9093"}
    assert "http://127.0.0.1:9093" in sonde(server, "alerts", "receivers").stdout
