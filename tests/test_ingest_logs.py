"""OTLP logs in, ``logs`` rows out: every field, levels, timestamps, order."""

from __future__ import annotations

import time

import pytest
from conftest import Client
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from otlp_build import DEPLOYMENT, SEC, T0, log_record, logs_request, merge, post

from sonde.ingest.logs import level_of


@pytest.fixture
def ingest(app, creds) -> Client:
    return Client(app, creds["ingest_key"])


def rows(store) -> list[dict]:
    out = store.ex.query(
        f"SELECT *, toUnixTimestamp64Nano(ts) AS t FROM {store.t('logs')} ORDER BY seq"
    )
    for r in out:
        r["attrs"] = dict(r["attrs"])
    return out


def test_every_field(ingest, store, creds):
    res = {**DEPLOYMENT, "sonde.environment": "production", "sonde.node_id": "n1", "sonde.node_rank": 0}
    trace, span = bytes(range(16)), bytes(range(8))
    r = post(ingest, logs_request(res, [
        log_record(T0, "hello", severity_number=9, trace_id=trace, span_id=span,
                   attrs={"request_id": "req-1", "component": "server", "http.status": 500, "ok": False}),
        log_record(T0 + SEC, {"event": "load", "n": 3}, severity_text="warn"),
        log_record(T0 + 2 * SEC, 42),
        log_record(T0 + 3 * SEC, None),
    ]))
    assert r.status_code == 200 and ExportLogsServiceResponse.FromString(r.content).ByteSize() == 0
    got = rows(store)
    first = got[0]
    assert (first["ws"], first["scope"], first["entity"], first["parent"], first["environment"], first["replica"]) == \
        (creds["workspace_id"], "deployment", "d1", "m1", "production", "r0001")
    assert (first["t"], first["level"], first["message"], first["request_id"], first["component"]) == \
        (T0, 2, "hello", "req-1", "server")
    assert first["attrs"] == {"http.status": "500", "ok": "false", "trace_id": trace.hex(), "span_id": span.hex(),
                              "sonde.node_id": "n1", "sonde.node_rank": "0"}
    assert [(r["message"], r["level"], r["request_id"]) for r in got[1:]] == [
        ('{"event":"load","n":3}', 3, ""), ("42", 0, ""), ("", 0, "")]
    seqs = [r["seq"] for r in got]
    assert seqs == sorted(seqs) and len(set(seqs)) == 4


def test_levels():
    expect = {0: 0, 1: 1, 5: 1, 8: 1, 9: 2, 12: 2, 13: 3, 16: 3, 17: 4, 21: 4, 24: 4}
    assert {n: level_of(n, "") for n in expect} == expect
    texts = {"DEBUG": 1, "trace": 1, "Info": 2, "INFO2": 2, "WARN": 3, "warning": 3, "ERROR": 4, "Fatal": 4,
             "CRITICAL": 4, " error ": 4, "verbose": 0, "": 0}
    assert {t: level_of(0, t) for t in texts} == texts
    assert level_of(17, "INFO") == 4  # the number wins


def test_timestamps_fall_back_to_observed_then_arrival(ingest, store):
    before = time.time_ns()
    assert post(ingest, logs_request(DEPLOYMENT, [
        log_record(T0, "a", observed=T0 + 5), log_record(0, "b", observed=T0 + 7), log_record(0, "c")]),
        json=True).status_code == 200
    after = time.time_ns()
    got = rows(store)
    assert [r["t"] for r in got[:2]] == [T0, T0 + 7]
    assert before <= got[2]["t"] <= after


def test_json_with_hex_ids_and_gzip(ingest, store):
    trace = bytes.fromhex("5b8efff798038103d269b633813fc60c")
    req = logs_request(DEPLOYMENT, [log_record(T0, "x", severity_number=13, trace_id=trace)])
    assert post(ingest, req, json=True, gzip=True).status_code == 200
    body = b'{"resourceLogs":[{"resource":{"attributes":[' \
           b'{"key":"sonde.deployment_id","value":{"stringValue":"d1"}}]},' \
           b'"scopeLogs":[{"logRecords":[{"timeUnixNano":"%d","severityNumber":17,"body":{"stringValue":"raw"},' \
           b'"spanId":"eee19b7ec3c1b174","attributes":[{"key":"component","value":{"stringValue":"c"}}]}]}]}]}' % T0
    r = ingest.post("/v1/otlp/v1/logs", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 200, r.text
    got = rows(store)
    assert got[0]["attrs"]["trace_id"] == trace.hex() and got[0]["level"] == 3
    assert (got[1]["message"], got[1]["level"], got[1]["component"], got[1]["attrs"]["span_id"]) == \
        ("raw", 4, "c", "eee19b7ec3c1b174")
    r = ingest.post("/v1/otlp/v1/logs", content=body.replace(b"eee19b7ec3c1b174", b"not-hex"),
                    headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["field"] == "spanId"


def test_unplaced_records_are_rejected_the_rest_stored(ingest, store):
    r = post(ingest, merge(
        logs_request({"service.name": "x"}, [log_record(T0, "lost"), log_record(T0, "lost too")]),
        logs_request(DEPLOYMENT, [log_record(T0, "kept"), log_record(2**63, "far future")]),
    ))
    ps = ExportLogsServiceResponse.FromString(r.content).partial_success
    assert ps.rejected_log_records == 3
    assert "3 log records rejected" in ps.error_message and "no placing attribute" in ps.error_message
    assert "after the year 2262 (1)" in ps.error_message
    assert [x["message"] for x in rows(store)] == ["kept"]


def test_seq_follows_record_order_across_resources(ingest, store):
    a = logs_request({**DEPLOYMENT, "sonde.replica": "aaaaa"}, [log_record(T0 + 9, f"a{i}") for i in range(3)])
    b = logs_request({**DEPLOYMENT, "sonde.replica": "bbbbb"}, [log_record(T0, f"b{i}") for i in range(3)])
    assert post(ingest, merge(a, b)).status_code == 200
    assert [(r["message"], r["replica"]) for r in rows(store)] == \
        [("a0", "aaaaa"), ("a1", "aaaaa"), ("a2", "aaaaa"), ("b0", "bbbbb"), ("b1", "bbbbb"), ("b2", "bbbbb")]
