"""A real ``sonde serve`` over a real port: the OpenTelemetry SDK's own exporters, and
``kill -9`` mid-stream losing no acknowledged row.

The server owns its chDB path, and this test process already holds another one, so
rows are read after the server has stopped, by a separate Python process.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import threading
import time

import httpx
import pytest
from live_server import LiveServer
from otlp_build import SEC, gauge, log_record, logs_request, metrics_request, number, post, sum_metric

pytestmark = pytest.mark.e2e

_READ = """
import json, sys
from chdb import session
s = session.Session(sys.argv[1])
for sql in json.loads(sys.argv[2]):
    print(json.dumps([json.loads(line) for line in str(s.query(sql, "JSONEachRow")).splitlines() if line]))
s.close()
"""


def read_store(data_dir, *sql: str) -> list[list[dict]]:
    """Run ``sql`` on a stopped server's store, in a process of its own."""
    out = subprocess.run(
        [sys.executable, "-c", _READ, f"{data_dir}/store", json.dumps(list(sql))],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout
    return [json.loads(line) for line in out.splitlines()]


def test_opentelemetry_sdk_exporters(tmp_path):
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry._logs import SeverityNumber
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation, View
    from opentelemetry.sdk.resources import Resource

    server = LiveServer(tmp_path).start()
    try:
        headers = {"Authorization": f"Bearer {server.creds['ingest_key']}"}
        resource = Resource.create({"sonde.model_id": "m-sdk", "sonde.deployment_id": "d-sdk",
                                    "sonde.replica": "abcde", "service.name": "svc"})
        reader = PeriodicExportingMetricReader(
            OTLPMetricExporter(endpoint=f"{server.url}/v1/otlp/v1/metrics", headers=headers),
            export_interval_millis=3_600_000)
        meters = MeterProvider(resource=resource, metric_readers=[reader], views=[
            View(instrument_name="ttfb", aggregation=ExponentialBucketHistogramAggregation())])
        meter = meters.get_meter("e2e")
        requests = meter.create_counter("http.server.requests")
        duration = meter.create_histogram("http.server.request.duration", unit="s")
        ttfb = meter.create_histogram("ttfb", unit="s")
        active = meter.create_up_down_counter("http.server.active_requests")
        requests.add(5, {"http.response.status_code": 200})
        for v in (0.1, 0.2, 3.0):
            duration.record(v, {"http.response.status_code": 200})
            ttfb.record(v)
        active.add(3)
        assert meters.force_flush()
        requests.add(7, {"http.response.status_code": 200})
        active.add(-1)
        assert meters.force_flush()
        meters.shutdown()

        logs = LoggerProvider(resource=resource)
        logs.add_log_record_processor(SimpleLogRecordProcessor(
            OTLPLogExporter(endpoint=f"{server.url}/v1/otlp/v1/logs", headers=headers)))
        logs.get_logger("e2e").emit(body="cache miss for key-1", severity_number=SeverityNumber.WARN,
                                    severity_text="WARNING", attributes={"request_id": "req-9", "component": "cache"})
        logs.shutdown()

        mgmt = server.headers("management_key")
        d = httpx.get(f"{server.url}/v1/models/m-sdk/deployments/d-sdk", headers=mgmt, timeout=10)
        assert d.status_code == 200 and d.json()["status"] == "ACTIVE"
    finally:
        assert server.stop() == 0
    points, hist, exp, lines = read_store(
        tmp_path,
        "SELECT metric, value, attrs FROM sonde.metric_points WHERE kind = 'sum' ORDER BY metric, ts",
        "SELECT count, sum, buckets FROM sonde.metric_points WHERE metric = 'http.server.request.duration' ORDER BY ts",
        "SELECT count, scale, pos_buckets FROM sonde.metric_points WHERE metric = 'ttfb' ORDER BY ts",
        "SELECT level, message, request_id, component, replica, entity FROM sonde.logs",
    )
    # shutdown() exports once more: the up-down counter's level again, a zero increase
    assert [(p["metric"], p["value"]) for p in points] == [
        ("http.server.active_requests", 3), ("http.server.active_requests", 2), ("http.server.active_requests", 2),
        ("http.server.requests", 5), ("http.server.requests", 7), ("http.server.requests", 0)]
    assert points[-1]["attrs"] == {"http.response.status_code": "200"}
    # later exports repeat the cumulative histogram unchanged: empty deltas
    assert [(int(h["count"]), round(h["sum"], 9), sum(map(int, h["buckets"]))) for h in hist] == \
        [(3, 3.3, 3), (0, 0, 0), (0, 0, 0)]
    assert int(exp[0]["count"]) == 3 and sum(map(int, exp[0]["pos_buckets"])) == 3
    assert lines == [{"level": 3, "message": "cache miss for key-1", "request_id": "req-9", "component": "cache",
                      "replica": "abcde", "entity": "d-sdk"}]


def test_kill_9_loses_no_acknowledged_row(tmp_path):
    resource = {"sonde.model_id": "m1", "sonde.deployment_id": "d1", "sonde.replica": "kill9"}
    t0 = (time.time_ns() // SEC - 600) * SEC
    acked_points: list[int] = []
    acked_logs: list[int] = []
    sent = {"i": 0}

    def batch(i: int):
        m = metrics_request(resource, [
            gauge("g", [number(t0 + i * 1000 + j, float(i), attrs={"id": i * 5 + j}) for j in range(5)]),
            sum_metric("c", [number(t0 + i * 1000, i + 1, start=t0 - SEC)]),
        ])
        return m, logs_request(resource, [log_record(t0 + i, f"line {i}")])

    def client(url: str, key: str, stop: threading.Event):
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=10) as c:
            i = 0
            while not stop.is_set():
                m, lg = batch(i)
                sent["i"] = i
                try:
                    if post(c, m).status_code == 200:
                        acked_points.extend(range(i * 5, i * 5 + 5))
                    if post(c, lg).status_code == 200:
                        acked_logs.append(i)
                except httpx.HTTPError:
                    return
                i += 1

    fast = {"SONDE_FLUSH_INTERVAL_MS": "5"}  # more commits, more moments to be killed in
    server = LiveServer(tmp_path, env=fast).start()
    stop = threading.Event()
    thread = threading.Thread(target=client, args=(server.url, server.creds["ingest_key"], stop))
    thread.start()
    # a random moment: after a random number of acknowledged batches, a random bit later
    target, deadline = random.randint(15, 40), time.monotonic() + 60
    while len(acked_logs) < target and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(random.uniform(0, 0.05))
    server.kill9()
    thread.join(timeout=30)
    stop.set()
    assert len(acked_logs) >= 15, "the client got too few acknowledgements to test anything"

    again = LiveServer(tmp_path, env=fast).start()
    try:
        with httpx.Client(base_url=again.url, headers=again.headers("ingest_key"), timeout=10) as c:
            last = sent["i"]
            for i in (last, last + 1):  # the client retries what was in flight, then goes on
                m, lg = batch(i)
                assert post(c, m).status_code == 200
    finally:
        assert again.stop() == 0
    gauges, counter, lines = read_store(
        tmp_path,
        "SELECT toUInt64(attrs['id']) AS id FROM sonde.metric_points WHERE metric = 'g'",
        "SELECT value FROM sonde.metric_points WHERE metric = 'c' ORDER BY ts",
        "SELECT message FROM sonde.logs",
    )
    stored_points = {int(r["id"]) for r in gauges}
    assert set(acked_points) <= stored_points
    stored_lines = {r["message"] for r in lines}
    assert {f"line {i}" for i in acked_logs} <= stored_lines
    # cumulative 1, 2, 3, ...: whatever was lost, retried or replayed, deltas add up to the last value
    assert sum(r["value"] for r in counter) == last + 2
    assert all(r["value"] >= 1 for r in counter)
