"""Past capacity a replica sheds load at the door (api/admission.py): a burst over
``max_inflight_ingest`` / ``max_inflight_reads`` gets 503 with Retry-After in the route's
error format, at once, while what was admitted is served and stored whole. The figures
under rising load are bench/bench_load.py's (docs/reliability.md#load)."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from google.rpc import status_pb2

from live_server import LiveServer
from otlp_build import SEC, encode, log_record, logs_request

pytestmark = pytest.mark.e2e

BURST = 40
LINES = 20  # a whole burst stays under one logs page (1,000)
RESOURCE = {"sonde.model_id": "m1", "sonde.deployment_id": "d1", "sonde.replica": "r0001"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = LiveServer(str(tmp_path_factory.mktemp("shed")),
                   env={"SONDE_MAX_INFLIGHT_INGEST": "2", "SONDE_MAX_INFLIGHT_READS": "2"}).start()
    yield s
    s.stop()


async def _burst(server: LiveServer, build) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=BURST, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=server.url, timeout=60, limits=limits) as client:
        return await asyncio.gather(*(build(client, i) for i in range(BURST)))


def _batch(i: int, t0: int) -> tuple[bytes, dict]:
    records = [log_record(t0 + (i * LINES + k) * 1000, f"burst {i} line {k}", severity_number=9)
               for k in range(LINES)]
    return encode(logs_request(RESOURCE, records))


def test_an_ingest_burst_is_shed_with_otlp_status_and_nothing_admitted_is_lost(server):
    t0 = (time.time_ns() // SEC - 300) * SEC
    headers = server.headers("ingest_key")

    async def send(client, i):
        body, h = _batch(i, t0)
        return await client.post("/v1/otlp/v1/logs", content=body, headers={**headers, **h})

    answers = asyncio.run(_burst(server, send))
    codes = sorted({r.status_code for r in answers})
    assert codes == [200, 503], codes
    for r in answers:
        if r.status_code == 503:
            assert r.headers["retry-after"] == "1"
            assert r.headers["content-type"] == "application/x-protobuf"
            status = status_pb2.Status.FromString(r.content)
            assert "max_inflight_ingest" in status.message
    accepted = sum(r.status_code == 200 for r in answers)
    # every batch that got its 200 is stored, whole; the shed ones never were
    got = httpx.post(f"{server.url}/v1/models/m1/deployments/d1/logs", headers=server.headers(),
                     json={"start_epoch_millis": t0 // 10**6, "end_epoch_millis": t0 // 10**6 + 600_000,
                           "limit": 1000}, timeout=30)
    assert got.status_code == 200, got.text
    lines = [x["message"] for x in got.json()["logs"]]
    batches = {m.split()[1] for m in lines}
    assert len(lines) == accepted * LINES and len(batches) == accepted


def test_a_query_burst_is_shed_with_the_json_envelope_then_served_again(server):
    headers = server.headers()
    now_ms = time.time_ns() // 10**6

    async def query(client, i):
        return await client.post("/v1/models/m1/deployments/d1/logs", headers=headers, json={
            "start_epoch_millis": now_ms - 3_600_000, "end_epoch_millis": now_ms, "search_pattern": f"line {i % 7}"})

    answers = asyncio.run(_burst(server, query))
    assert sorted({r.status_code for r in answers}) == [200, 503]
    shed = [r for r in answers if r.status_code == 503]
    for r in shed:
        assert r.headers["retry-after"] == "1"
        assert r.json()["error"] == {"code": "overloaded", "field": None}
        assert "max_inflight_reads" in r.json()["message"]
    # the bound is on requests in flight, not a penalty: once the burst is over, all pass
    after = httpx.get(f"{server.url}/v1/models", headers=headers, timeout=30)
    assert after.status_code == 200
    # streams and the dashboard are not counted against the reads
    assert httpx.get(f"{server.url}/ui/", timeout=30).status_code == 200
