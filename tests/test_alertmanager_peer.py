"""A real ``sonde serve`` evaluates its rules on its own schedule and posts to a real
Alertmanager (Debian's ``prometheus-alertmanager``), which routes to a webhook the test
runs: firing, then resolved, with Sonde's labels and annotations intact.

``./run test`` installs the package when missing; without it this test fails, saying
so, unless ``SONDE_SKIP_ALERTMANAGER=1``.
"""

from __future__ import annotations

import time

import httpx
import pytest
from otlp_build import encode, gauge, metrics_request, number

from live_server import LiveServer
from peers import Alertmanager, Hook
from test_agent_e2e import wait_until

pytestmark = pytest.mark.e2e


def test_sonde_alerts_reach_a_webhook_through_alertmanager(tmp_path):
    (tmp_path / "sonde").mkdir()
    with Hook() as hook:
        config = {"route": {"receiver": "hook", "group_by": ["alertname", "deployment_id"],
                            "group_wait": "1s", "group_interval": "1s", "repeat_interval": "1h"},
                  "receivers": [{"name": "hook", "webhook_configs": [{"url": hook.url, "send_resolved": True}]}]}
        with Alertmanager(tmp_path, config) as am:
            server = LiveServer(tmp_path / "sonde", env={"SONDE_ALERT_EVAL_SECONDS": "1"}).start()
            try:
                api = httpx.Client(base_url=server.url, headers=server.headers(), timeout=10)
                api.put("/v1/models/m1", json={"name": "trainer"}).raise_for_status()
                api.put("/v1/models/m1/deployments/d1", json={"name": "prod"}).raise_for_status()
                api.put("/v1/alert_receivers/am", json={"type": "alertmanager", "url": am.url}).raise_for_status()
                r = api.post("/v1/alert_rules", json={
                    "name": "NoGpuData", "model_id": "m1", "deployment_id": "d1", "severity": "page",
                    "annotations": {"summary": "d1 sent no GPU memory for 30 s"},
                    "condition": {"type": "absent", "metric": "baseten_gpu_memory_used", "window_seconds": 30}})
                assert r.status_code == 201, r.text
                rule_id = r.json()["id"]

                # the server's own loop evaluates (every second here) and posts to Alertmanager
                wait_until(lambda: any(a["labels"].get("rule_id") == rule_id for a in am.alerts()), 30,
                           "Alertmanager to hold Sonde's alert")
                (held,) = am.alerts()
                assert held["labels"]["alertname"] == "NoGpuData" and held["labels"]["severity"] == "page"
                assert held["annotations"] == {"summary": "d1 sent no GPU memory for 30 s"}
                assert held["status"]["state"] == "active"
                firing = hook.wait(1)[0]
                assert firing["status"] == "firing" and firing["receiver"] == "hook"
                assert firing["alerts"][0]["labels"] == held["labels"]
                (active,) = api.get("/v1/alerts").json()["alerts"]
                assert active["state"] == "firing" and active["fingerprint"] == firing["alerts"][0]["fingerprint"]

                # data arrives: Sonde resolves the alert, Alertmanager tells the webhook
                now = time.time_ns()
                body, headers = encode(metrics_request(
                    {"sonde.model_id": "m1", "sonde.deployment_id": "d1", "sonde.replica": "r0001"},
                    [gauge("hw.gpu.memory.usage", [number(now - k * 1_000_000_000, 2.0**30,
                                                          attrs={"hw.gpu.index": "0"}) for k in (3, 2, 1)],
                           unit="By")]))
                r = httpx.post(f"{server.url}/v1/otlp/v1/metrics", content=body,
                               headers={**headers, **server.headers("ingest_key")})
                assert r.status_code == 200, r.text
                wait_until(lambda: any(b["status"] == "resolved" for b in hook.bodies), 30,
                           "Alertmanager's resolved notification")
                resolved = next(b for b in hook.bodies if b["status"] == "resolved")
                assert resolved["alerts"][0]["labels"]["rule_id"] == rule_id
                assert api.get("/v1/alerts").json() == {"alerts": []}
            finally:
                server.stop()
