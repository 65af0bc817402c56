"""Every ready rule in docs/alerts.md is a valid rule: each JSON block is created
against the real app, and it evaluates without error."""

from __future__ import annotations

import json
import pathlib
import re

import pytest

DOC = pathlib.Path(__file__).resolve().parents[1] / "docs" / "alerts.md"
BLOCKS = re.findall(r"```json\n(.*?)```", DOC.read_text(), re.S)

pytestmark = pytest.mark.steady_only("one app is enough to create rules")


def test_the_doc_has_the_promised_examples():
    names = {json.loads(b)["name"] for b in BLOCKS}
    assert len(BLOCKS) >= 11 and len(names) == len(BLOCKS)


def test_every_ready_rule_is_accepted(app, client):
    client.put("/v1/models/m1", json={"name": "llama"}).raise_for_status()
    client.put("/v1/models/m1/deployments/d1", json={"name": "prod"}).raise_for_status()
    client.put("/v1/training_projects/p1", json={"name": "pretrain"}).raise_for_status()
    client.put("/v1/training_projects/p1/jobs/j1", json={}).raise_for_status()
    for block in BLOCKS:
        r = client.post("/v1/alert_rules", json=json.loads(block))
        assert r.status_code == 201, (block, r.text)
    assert len(client.get("/v1/alert_rules").json()["rules"]) == len(BLOCKS)
    done = app.state.evaluator.run_once()
    assert done.evaluated and done.rules == len(BLOCKS)
    # with no telemetry at all, exactly the "no data" rules hold
    names = {a["name"] for a in client.get("/v1/alerts").json()["alerts"]}
    assert names == {"NoReplicas", "TrainingSilent"}
