"""``GET /metrics``: what OTLP sent, read back through prometheus_client's own parsers.

Runs in every server mode: ``restart`` rebuilds the app before each request, so the
counters' totals can only come from the store (they survive a Sonde restart)."""

from __future__ import annotations

import math
import time

import pytest
from conftest import Client
from otlp_build import (
    SEC, exp_histogram, exp_point, gauge, hist_point, histogram, metrics_request, number, post, sum_metric,
)
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text

from sonde.query.export import FIXED_BOUNDS
from sonde.store import migrations

NOW = START = 0  # set per test: the export's staleness and "active" are read off the wall clock


@pytest.fixture(autouse=True)
def _clock():
    global NOW, START
    NOW = time.time_ns() // SEC * SEC - 30 * SEC
    START = NOW - 120 * SEC


def res(replica: str, dep: str = "d1", model: str = "m1") -> dict:
    return {"sonde.model_id": model, "sonde.deployment_id": dep, "sonde.replica": replica,
            "sonde.environment": "production"}


def send(app, key: str, resource: dict, metrics: list) -> None:
    r = post(Client(app, key), metrics_request(resource, metrics))
    assert r.status_code == 200, r.content


def samples(text: str, parser=parse_text) -> dict[str, list]:
    out: dict[str, list] = {}
    for fam in parser(text):
        for s in fam.samples:
            out.setdefault(s.name, []).append(s)
    return out


def one(found: dict, name: str, **labels):
    hits = [s for s in found.get(name, []) if all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(hits) == 1, (name, labels, found.get(name))
    return hits[0]


@pytest.fixture
def sent(app, creds, client):
    key = creds["ingest_key"]
    client.put("/v1/models/m1", json={"name": "Llama 3"}).raise_for_status()
    # GPU memory in bytes (exported in MiB), utilisation per GPU, two replicas
    for replica, used in (("r0001", 512 * 2**20), ("r0002", 1024 * 2**20)):
        send(app, key, res(replica), [
            gauge("hw.gpu.memory.usage", [number(NOW - 10 * SEC, 1.0, attrs={"hw.gpu.index": "0"}),
                                          number(NOW, used, attrs={"hw.gpu.index": "0"})], unit="By"),
            gauge("hw.gpu.utilization", [number(NOW, 0.25, attrs={"hw.gpu.index": "1"})], unit="1"),
        ])
    # request durations, cumulative: two points, then the replica restarts (counts fall)
    req = lambda pts: histogram("http.server.request.duration", pts)  # noqa: E731
    a200 = {"http.response.status_code": 200, "http.route": "/a"}
    b200 = {"http.response.status_code": 200, "http.route": "/b"}
    send(app, key, res("r0001"), [req([hist_point(NOW - 20 * SEC, [1, 1, 0], [0.1, 1.0], start=START, sum=0.6,
                                                  attrs=a200)])])
    send(app, key, res("r0001"), [req([hist_point(NOW - 10 * SEC, [2, 2, 1], [0.1, 1.0], start=START, sum=3.0,
                                                  attrs=a200),
                                       hist_point(NOW - 10 * SEC, [0, 1, 0], [0.1, 1.0], start=START, sum=0.5,
                                                  attrs=b200)])])
    # a reset: a new start time and counts below the last ones
    send(app, key, res("r0001"), [req([hist_point(NOW, [1, 0, 0], [0.1, 1.0], start=NOW - 5 * SEC, sum=0.05,
                                                  attrs=a200)])])
    send(app, key, res("r0001"), [sum_metric("vllm:prompt_tokens_total", [number(NOW - 5 * SEC, 5, start=START),
                                                                          number(NOW, 12, start=START)])])
    send(app, key, res("r0001"), [exp_histogram("sonde.server.time_to_first_byte", [
        exp_point(NOW, scale=0, positive=(0, [2, 3]), zero_count=1, sum=10.0, start=START)])])
    send(app, key, res("r0001"), [gauge("my.queue.depth", [number(NOW, 7, attrs={"queue": "hi"})])])
    # silent for ten minutes: out of the export
    send(app, key, res("r0001"), [gauge("old.gauge", [number(NOW - 600 * SEC, 1)])])
    return app


def test_values_match_what_was_sent(sent, client):
    r = client.get("/metrics")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    found = samples(r.text)
    place = {"model_id": "m1", "model_name": "Llama 3", "deployment_id": "d1", "environment": "production"}
    mem = one(found, "baseten_gpu_memory_used", replica="r0002", gpu="0")
    assert mem.value == 1024.0 and {k: mem.labels[k] for k in place} == place
    assert one(found, "baseten_gpu_memory_used", replica="r0001", gpu="0").value == 512.0
    assert one(found, "baseten_gpu_utilization", replica="r0001", gpu="1").value == 0.25
    # counter: 2+2 (first point) + 2+3+... : totals from the histogram's count: 2, 5, then 1 after the reset
    total = one(found, "baseten_inference_requests_total", replica="r0001", status_code="200")
    assert total.value == 2 + 3 + 1 + 1  # /a: 2, +3, reset +1; /b: 1
    # histogram of one replica: /a and /b add up, bucket by bucket
    count = one(found, "baseten_end_to_end_response_time_seconds_count", replica="r0001")
    assert count.value == 7
    le = {s.labels["le"]: s.value for s in found["baseten_end_to_end_response_time_seconds_bucket"]
          if s.labels["replica"] == "r0001"}
    assert le == {"0.1": 3.0, "1.0": 6.0, "+Inf": 7.0}
    assert one(found, "baseten_end_to_end_response_time_seconds_sum", replica="r0001").value == pytest.approx(
        3.0 + 0.5 + 0.05)
    assert one(found, "baseten_llm_input_tokens_total", replica="r0001").value == 12
    # exponential, scale 0: (1, 2] holds 2, (2, 4] holds 3, zero holds 1
    ttfb = {s.labels["le"]: s.value for s in found["baseten_time_to_first_byte_seconds_bucket"]}
    assert ttfb["1.0"] == 1 and ttfb["2.0"] == 3 and ttfb["4.0"] == 6 and ttfb["+Inf"] == 6
    assert len(ttfb) == len(FIXED_BOUNDS) + 1
    assert one(found, "my_queue_depth", queue="hi").value == 7
    assert "old_gauge" not in found
    assert one(found, "baseten_replicas_active", deployment_id="d1").value == 2


def test_counters_never_decrease_across_restarts_and_resets(sent, client, creds):
    before = one(samples(client.get("/metrics").text), "baseten_llm_input_tokens_total").value
    # the replica restarts: its counter starts again from 0 (new start time)
    send(sent, creds["ingest_key"], res("r0001"), [sum_metric("vllm:prompt_tokens_total", [
        number(NOW + SEC, 4, start=NOW + SEC - 1)])])
    after = one(samples(client.get("/metrics").text), "baseten_llm_input_tokens_total").value
    assert before == 12 and after == 16


@pytest.mark.steady_only("reads the store the one app writes to")
def test_totals_outlive_the_points_and_an_upgrade(sent, client, store):
    """Dropping old points (what the TTL does) lowers no total; a store migrated from
    schema 4 gets the totals of the points it already held."""
    def totals() -> tuple:
        found = samples(client.get("/metrics").text)
        return (one(found, "baseten_llm_input_tokens_total", replica="r0001").value,
                one(found, "baseten_end_to_end_response_time_seconds_count", replica="r0001").value)

    assert totals() == (12, 7)
    # back to schema 4, without the totals, every point still stored: migrating adds them up
    store.ex.command(f"DROP VIEW {store.t('series_totals_mv')}")
    store.ex.command(f"TRUNCATE TABLE {store.t('series_totals')}")
    store.ex.command(f"ALTER TABLE {store.t('meta')} DELETE WHERE key = 'schema_version' AND version > 4"
                     " SETTINGS mutations_sync = 2")
    store.ex.command(f"INSERT INTO {store.t('meta')} (key, value, version) VALUES ('schema_version', '4', 4)")
    assert migrations.migrate(store.ex, store.db, 30) == (4, migrations.SCHEMA_VERSION)
    assert totals() == (12, 7)
    # the points behind the totals go (as the TTL drops them); the totals stay
    store.ex.command(f"ALTER TABLE {store.t('metric_points')} DELETE WHERE ts < fromUnixTimestamp64Nano("
                     "{t:Int64}) AND kind != 'gauge' SETTINGS mutations_sync = 2", {"t": NOW})
    assert totals() == (12, 7)


def test_openmetrics_when_asked(sent, client):
    r = client.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/openmetrics-text")
    assert r.text.endswith("# EOF\n")
    found = samples(r.text, parse_openmetrics)
    assert one(found, "baseten_llm_input_tokens_total", replica="r0001").value == 12
    assert one(found, "baseten_end_to_end_response_time_seconds_count", replica="r0001").value == 7


def test_keys_and_workspaces(sent, app, creds):
    assert Client(app).get("/metrics").status_code == 401
    r = Client(app, creds["ingest_key"]).get("/metrics")
    assert r.status_code == 403 and r.json()["error"]["field"] == "Authorization"
    admin = Client(app, creds["admin_key"])
    ws = admin.post("/v1/admin/workspaces", json={"name": "team-b"}).json()["id"]
    other = admin.post(f"/v1/admin/workspaces/{ws}/api_keys", json={"name": "m", "scope": "management"}).json()
    text = Client(app, other["key"]).get("/metrics").text
    assert "d1" not in text and "baseten_gpu_memory_used{" not in text


@pytest.mark.steady_only("the limit is counted per process")
@pytest.mark.server_config(metrics_rate_limit=2)
def test_rate_limit_answers_429_with_retry_after(app, client):
    assert [client.get("/metrics").status_code for _ in range(2)] == [200, 200]
    r = client.get("/metrics")
    assert r.status_code == 429
    assert 1 <= int(r.headers["Retry-After"]) <= 60
    body = r.json()
    assert body["error"]["code"] == "rate_limited" and "metrics_rate_limit" in body["message"]
    assert math.isfinite(float(r.headers["Retry-After"]))
