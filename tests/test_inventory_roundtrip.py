"""Inventory round trip (docs/api.md, "Inventory"): every inventory PUT accepts the whole
read shape of its resource.

For each resource, a property test: create it from a generated body, GET -> PUT that
exact document -> GET gives the same document; then edit one writable field of the
document, PUT it, and the new value shows with everything else unchanged. Beside it:
read-only fields in a body change nothing, a field no schema knows is a 400 naming it,
a read shows every field of the vendor's read schema, and echoing an instance type the
agent observed does not pin it. Every document read is validated against the vendor schema.
"""

from __future__ import annotations

import json
import string
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from otlp_build import SEC, encode, gauge, metrics_request, number
from spec_schema import openapi, validate

# --- strategies: values that read back exactly as written ---------------------------------

DEPLOYMENT_STATUS = ["BUILDING", "DEPLOYING", "DEPLOY_FAILED", "LOADING_MODEL", "ACTIVE", "UNHEALTHY",
                     "BUILD_FAILED", "BUILD_STOPPED", "DEACTIVATING", "INACTIVE", "FAILED", "UPDATING",
                     "SCALED_TO_ZERO", "WAKING_UP"]
LOOPS_STATUS = ["CREATED", "DEPLOYING", "RUNNING", "SCALED_TO_ZERO", "FAILED", "STOPPED"]

text = st.text(max_size=24)
words = st.text(min_size=1, max_size=24)  # where an empty value reads back as a default
ids = st.text(string.ascii_letters + string.digits + "_.-", min_size=1, max_size=64)
maybe = st.none().__or__
count = st.integers(0, 10_000)

autoscaling = st.fixed_dictionaries({
    "min_replica": count, "max_replica": count, "autoscaling_window": maybe(count),
    "scale_down_delay": maybe(count), "concurrency_target": st.integers(1, 10_000),
    "target_utilization_percentage": maybe(st.integers(1, 100)), "target_in_flight_tokens": maybe(count),
    "max_scale_down_rate": maybe(st.integers(1, 50)),
})
json_value = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.floats(allow_nan=False, allow_infinity=False)
    | text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=8,
)
chainlet = st.fixed_dictionaries({
    "id": ids, "name": words, "autoscaling_settings": maybe(autoscaling), "instance_type_name": text,
    "active_replica_count": st.just(0), "status": st.sampled_from(DEPLOYMENT_STATUS),
})
instance_type = st.fixed_dictionaries({
    "id": words, "name": words, "memory_limit_mib": count, "millicpu_limit": count, "gpu_count": count,
    "gpu_type": maybe(words), "gpu_memory_limit_mib": maybe(count),
})
user = st.fixed_dictionaries({"email": maybe(text)})
sampler = st.fixed_dictionaries({
    "id": words, "base_url": text, "base_model": text, "model_id": words, "deployment_id": words,
    "status": st.fixed_dictionaries({"name": st.sampled_from(DEPLOYMENT_STATUS)}),
})

# --- the resources ------------------------------------------------------------------------


def _unwrap(key: str | None) -> Callable[[dict], dict]:
    return (lambda body: body[key]) if key else (lambda body: body)


@dataclass(frozen=True)
class Resource:
    name: str
    url: str  # PUT and GET
    schema: str  # the vendor's read schema of the document
    writable: dict  # field -> strategy of values that read back as written
    read_only: dict  # derived fields, each with a value no read would show
    envelope: str | None = None  # the key around the document in GET and PUT answers
    envelope_schema: str | None = None
    listed: tuple[str, str] | None = None  # (list URL, key) where there is no GET of one
    volatile: tuple[str, ...] = ()  # fields that move with every write
    nested: dict = field(default_factory=dict)  # field -> (vendor schema of its items or value)

    def read(self, client) -> dict:
        if self.listed:
            url, key = self.listed
            r = client.get(url)
            assert r.status_code == 200, r.text
            [doc] = [d for d in r.json()[key] if d["id"] == self.url.rsplit("/", 1)[1]]
        else:
            r = client.get(self.url)
            assert r.status_code == 200, r.text
            if self.envelope_schema:
                validate(r.json(), self.envelope_schema)
            doc = _unwrap(self.envelope)(r.json())
        validate(doc, self.schema)
        return doc

    def put(self, client, body: dict) -> dict:
        r = client.put(self.url, json=body)
        assert r.status_code == 200, (body, r.text)
        doc = _unwrap(self.envelope)(r.json())
        validate(doc, self.schema)
        return doc


EPOCH = "2001-02-03T04:05:06Z"
RESOURCES = [
    Resource("model", "/v1/models/m1", "ModelV1", {"name": words, "team_name": words},
             {"id": "other", "created_at": EPOCH, "deployments_count": 42, "production_deployment_id": "x",
              "development_deployment_id": "y", "instance_type_name": "z"}),
    Resource("deployment", "/v1/models/m1/deployments/d1", "DeploymentV1", {
        "name": words, "is_production": st.booleans(), "is_development": st.booleans(),
        "status": st.sampled_from(DEPLOYMENT_STATUS), "autoscaling_settings": maybe(autoscaling),
        "instance_type_name": maybe(words), "environment": maybe(text),
        "labels": maybe(st.dictionaries(text, json_value, max_size=4)),
    }, {"id": "other", "created_at": EPOCH, "model_id": "m9", "active_replica_count": 99},
        nested={"autoscaling_settings": "AutoscalingSettingsV1"}),
    Resource("chain", "/v1/chains/c1", "ChainV1", {"name": words, "team_name": words},
             {"id": "other", "created_at": EPOCH, "deployments_count": 42}),
    Resource("chain deployment", "/v1/chains/c1/deployments/cd1", "ChainDeploymentV1", {
        "environment": maybe(words), "status": st.sampled_from(DEPLOYMENT_STATUS),
        "chainlets": st.lists(chainlet, max_size=4, unique_by=lambda c: c["id"]),
    }, {"id": "other", "created_at": EPOCH, "chain_id": "c9"}, nested={"chainlets": "ChainletV1"}),
    Resource("training project", "/v1/training_projects/p1", "TrainingProjectV1",
             {"name": words, "team_name": maybe(text)},
             {"id": "other", "created_at": EPOCH, "updated_at": EPOCH, "latest_job": {"id": "j9"}},
             listed=("/v1/training_projects", "training_projects"), volatile=("updated_at",)),
    Resource("training job", "/v1/training_projects/p1/jobs/j1", "TrainingJobV1", {
        "name": words, "current_status": st.text(min_size=1, max_size=64), "error_message": maybe(text),
        "instance_type": instance_type, "priority": st.integers(-(2**31), 2**31),
        "checkpoint_sync_status": maybe(st.sampled_from(["SYNCING", "COMPLETED"])),
        "availability_model": st.sampled_from(["dedicated", "spot"]), "user": maybe(user),
    }, {"id": "other", "created_at": EPOCH, "updated_at": EPOCH, "training_project_id": "p9",
        "training_project": {"id": "p9", "name": "other"}},
        envelope="training_job", envelope_schema="GetTrainingJobResponseV1", volatile=("updated_at",),
        nested={"instance_type": "InstanceTypeV1", "user": "UserV1"}),
    Resource("loops deployment", "/v1/loops/deployments/l1", "LoopsDeploymentV1", {
        "base_model": text, "base_url": text, "status": st.fixed_dictionaries({"name": st.sampled_from(LOOPS_STATUS)}),
        "user": user, "sampler": maybe(sampler),
    }, {"id": "other"}, envelope="deployment", envelope_schema="GetLoopsDeploymentResponseV1",
        nested={"sampler": "LoopsSamplerV1", "user": "UserV1"}),
]


def without(doc: dict, volatile: tuple[str, ...]) -> dict:
    return {k: v for k, v in doc.items() if k not in volatile}


def assert_same(res: Resource, before: dict, after: dict) -> None:
    """The same document, except that a write may move ``updated_at`` forward."""
    assert without(after, res.volatile) == without(before, res.volatile)
    for k in res.volatile:
        assert datetime.fromisoformat(after[k]) >= datetime.fromisoformat(before[k])


# --- the property ------------------------------------------------------------------------


def two_values(strategy):
    """Two different values: at least one differs from whatever the field holds."""
    return st.lists(strategy, min_size=2, max_size=2, unique_by=json.dumps)


@pytest.mark.parametrize("res", RESOURCES, ids=[r.name for r in RESOURCES])
def test_get_put_get_round_trips_and_an_edit_shows(client, res):
    # Everything is drawn before the first request: a draw that overran mid-test would
    # have cost requests for an example that does not count.
    @settings(max_examples=4, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(initial=st.fixed_dictionaries({}, optional=res.writable),
           order=st.permutations(sorted(res.writable)),
           edits=st.fixed_dictionaries({k: two_values(s) for k, s in res.writable.items()}))
    def check(initial, order, edits):
        res.put(client, initial)
        doc = res.read(client)
        # GET -> PUT of that exact body -> GET: the same document.
        assert_same(res, doc, res.put(client, doc))
        assert_same(res, doc, res.read(client))
        # Each writable field in turn, edited alone: its new value shows and nothing else moves.
        for name in order:
            value = next(v for v in edits[name] if v != doc[name])
            edited = res.put(client, {**doc, name: value})
            got = res.read(client)
            assert_same(res, edited, got)
            if name == "sampler" and value is not None:
                # Derived: when this sampler id was first written.
                if doc["sampler"] and doc["sampler"]["id"] == value["id"]:
                    assert got["sampler"]["created_at"] == doc["sampler"]["created_at"]
                value = {**value, "created_at": got["sampler"]["created_at"]}
            assert_same(res, {**doc, name: value}, got)
            doc = got

    check()


# --- read-only, unknown and complete -------------------------------------------------------


FULL = {
    "model": {"name": "Llama", "team_name": "ml"},
    "deployment": {"name": "v1", "is_production": True, "is_development": False, "status": "UPDATING",
                   "autoscaling_settings": {"min_replica": 1, "max_replica": 3, "autoscaling_window": 60,
                                            "scale_down_delay": 900, "concurrency_target": 4,
                                            "target_utilization_percentage": 70, "target_in_flight_tokens": 5,
                                            "max_scale_down_rate": 20},
                   "instance_type_name": "H100x1", "environment": "production", "labels": {"team": "a", "n": 1}},
    "chain": {"name": "RAG", "team_name": "search"},
    "chain deployment": {"environment": "staging", "status": "ACTIVE", "chainlets": [
        {"id": "cl1", "name": "Retriever", "autoscaling_settings": None, "instance_type_name": "L4",
         "active_replica_count": 0, "status": "DEPLOYING"}]},
    "training project": {"name": "FT", "team_name": "ml"},
    "training job": {"name": "run-1", "current_status": "FAILED", "error_message": "OOM",
                     "instance_type": {"id": "H100x8", "name": "8 H100", "memory_limit_mib": 1, "millicpu_limit": 2,
                                       "gpu_count": 8, "gpu_type": "H100", "gpu_memory_limit_mib": 3},
                     "priority": 3, "checkpoint_sync_status": "SYNCING", "availability_model": "spot",
                     "user": {"email": "a@b.c"}},
    "loops deployment": {"base_model": "Qwen/Qwen3-8B", "base_url": "https://l1.example",
                         "status": {"name": "DEPLOYING"},
                         "user": {"email": "a@b.c"},
                         "sampler": {"id": "s1", "base_url": "https://s1.example", "base_model": "Qwen/Qwen3-8B",
                                     "model_id": "m9", "deployment_id": "d9", "status": {"name": "ACTIVE"}}},
}


@pytest.mark.parametrize("res", RESOURCES, ids=[r.name for r in RESOURCES])
def test_read_shows_every_field_and_written_ones_as_written(client, res):
    body = FULL[res.name]
    assert set(body) == set(res.writable)
    doc = res.put(client, body)
    schemas = openapi()["components"]["schemas"]
    assert set(doc) == set(schemas[res.schema]["properties"])
    assert set(res.writable) | set(res.read_only) | set(res.volatile) >= set(doc) - {"updated_at"}
    for name, schema in res.nested.items():
        for item in doc[name] if isinstance(doc[name], list) else [doc[name]]:
            assert set(item) == set(schemas[schema]["properties"]), name
    shown_back = dict(doc)
    if res.name == "loops deployment":
        shown_back["sampler"] = without(doc["sampler"], ("created_at",))
    assert {k: shown_back[k] for k in body} == body


@pytest.mark.parametrize("res", RESOURCES, ids=[r.name for r in RESOURCES])
def test_read_only_fields_in_a_body_change_nothing(client, res):
    res.put(client, FULL[res.name])
    doc = res.read(client)
    body = {**doc, **res.read_only}
    if res.name == "chain deployment":
        body["chainlets"] = [{**c, "active_replica_count": 99} for c in doc["chainlets"]]
    if res.name == "loops deployment":
        body["sampler"] = {**doc["sampler"], "created_at": EPOCH}
    assert_same(res, doc, res.put(client, body))
    assert_same(res, doc, res.read(client))


@pytest.mark.parametrize("res", RESOURCES, ids=[r.name for r in RESOURCES])
def test_a_field_no_schema_knows_is_a_400_naming_it(client, res):
    res.put(client, FULL[res.name])
    doc = res.read(client)
    r = client.put(res.url, json={**doc, "colour": "red"})
    assert r.status_code == 400 and r.json()["error"]["field"] == "colour", r.text
    assert "colour" in r.json()["message"]
    # Inside a nested object the envelope names the top-level field that holds it.
    for name in res.nested:
        value = doc[name][0] if isinstance(doc[name], list) else doc[name]
        bad = {**value, "colour": "red"}
        r = client.put(res.url, json={**doc, name: [bad] if isinstance(doc[name], list) else bad})
        assert r.status_code == 400 and r.json()["error"]["field"] == name, r.text
    assert_same(res, doc, res.read(client))


# --- an echoed instance type is not a pin -------------------------------------------------

H200 = {"sonde.hw.gpu_count": 1, "sonde.hw.gpu_type": "NVIDIA H200", "sonde.hw.gpu_memory_mib": 143771,
        "sonde.hw.cpu_millicores": 16000, "sonde.hw.memory_mib": 131072}
CPU = {"sonde.hw.gpu_count": 0, "sonde.hw.cpu_millicores": 4000, "sonde.hw.memory_mib": 16384}


def send(client, creds, resource: dict) -> None:
    body, headers = encode(metrics_request(resource, [gauge("hw.gpu.utilization", [number(time.time_ns() - SEC, .5)])]))
    r = client.post("/v1/otlp/v1/metrics", content=body, headers=headers, key=creds["ingest_key"])
    assert r.status_code == 200 and b"rejected" not in r.content, r.content


def pin(res: Resource, doc: dict, name: str) -> dict:
    """``doc`` with the instance type named ``name`` written."""
    if res.name == "chain deployment":
        return {**doc, "chainlets": [{**doc["chainlets"][0], "instance_type_name": name}]}
    if res.name == "training job":
        return {**doc, "instance_type": {**doc["instance_type"], "name": name}}
    return {**doc, "instance_type_name": name}


@pytest.mark.parametrize("res,resource,read", [
    (RESOURCES[1], {"sonde.model_id": "m1", "sonde.deployment_id": "d1", "sonde.replica": "r1"},
     lambda doc: doc["instance_type_name"]),
    (RESOURCES[3], {"sonde.chain_id": "c1", "sonde.chain_deployment_id": "cd1", "sonde.chainlet_id": "cl1",
                    "sonde.replica": "r1"}, lambda doc: doc["chainlets"][0]["instance_type_name"]),
    (RESOURCES[5], {"sonde.training_project_id": "p1", "sonde.training_job_id": "j1", "sonde.node_rank": 0},
     lambda doc: doc["instance_type"]["name"]),
], ids=["deployment", "chainlet", "training job"])
def test_an_observed_instance_type_echoed_back_stays_observed(client, creds, res, resource, read):
    send(client, creds, {**resource, **H200})
    doc = res.read(client)
    assert "H200" in read(doc)
    assert_same(res, doc, res.put(client, doc))
    send(client, creds, {**resource, **CPU})
    assert read(res.read(client)).startswith("cpu-")
    # A written one is kept, and echoing it back keeps it written.
    res.put(client, pin(res, res.read(client), "mine"))
    res.put(client, res.read(client))
    send(client, creds, {**resource, **H200})
    assert read(res.read(client)) == "mine"
