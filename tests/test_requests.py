"""Requests and traces: OTLP spans in, the requests endpoints out.

Spans are made by the OpenTelemetry SDK's tracer (a server span per request, a child
span inside it, the request id as ``http.request.header.x-request-id`` where the
request had one) and encoded by the OTLP exporter's encoder; log lines carry the
request id or the trace id. Expected answers are computed from what was sent.
"""

from __future__ import annotations

import time

import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common._internal.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otlp_build import encode, log_record, logs_request

MODEL, DEP = "m1", "d1"
URL = f"/v1/models/{MODEL}/deployments/{DEP}/requests"
RES = {"sonde.model_id": MODEL, "sonde.deployment_id": DEP, "sonde.replica": "r1"}
# (status, duration ms, request id or None, log lines)
PLAN = [(200, 30, "req-a", 2), (200, 250, "req-b", 0), (500, 900, None, 3), (404, 5, "req-d", 1),
        (200, 120, "req-e", 1), (503, 400, "req-f", 2)]


def post(client, creds, path, msg):
    body, headers = encode(msg)
    r = client.post(path, content=body, headers=headers, key=creds["ingest_key"])
    assert r.status_code == 200, r.text
    return r


def record_requests(resource: dict, t0_ns: int) -> list[dict]:
    """The plan as real SDK spans (server span, child span), with exact times."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create(resource))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test-app")
    sent = []
    for i, (status, ms, rid, lines) in enumerate(PLAN):
        start = t0_ns + i * 10**9
        attrs = {"http.route": "/predict", "http.response.status_code": status, "http.request.method": "POST"}
        if rid:
            attrs["http.request.header.x-request-id"] = (rid,)
        server = tracer.start_span("POST /predict", kind=trace.SpanKind.SERVER, attributes=attrs, start_time=start)
        with trace.use_span(server, end_on_exit=False):
            child = tracer.start_span("model.forward", start_time=start + 10**6)
            child.end(end_time=start + 10**6 + ms * 10**6 // 2)
        if status >= 500:
            server.set_status(trace.Status(trace.StatusCode.ERROR, "boom"))
        server.end(end_time=start + ms * 10**6)
        ctx = server.get_span_context()
        sent.append({"request_id": rid or f"{ctx.trace_id:032x}", "trace_id": f"{ctx.trace_id:032x}",
                     "span_id": ctx.span_id, "start": start, "ms": ms, "status": status, "lines": lines})
    return [dict(s, spans=exporter.get_finished_spans()) for s in sent]


@pytest.fixture
def sent(client, creds):
    client.put(f"/v1/models/{MODEL}/deployments/{DEP}", json={})
    t0 = (time.time_ns() // 10**9 - 120) * 10**9
    reqs = record_requests(RES, t0)
    req = encode_spans(reqs[0]["spans"])
    post(client, creds, "/v1/otlp/v1/traces", req)
    records = []
    for r in reqs:
        for j in range(r["lines"]):
            # half the lines name the request id, the others only the trace (as an SDK's log bridge does)
            if r["request_id"] != r["trace_id"] and j % 2 == 0:
                records.append(log_record(r["start"] + j * 1000, f"line {j} of {r['request_id']}",
                                          attrs={"request_id": r["request_id"]}))
            else:
                records.append(log_record(r["start"] + j * 1000, f"line {j} of {r['request_id']}",
                                          trace_id=bytes.fromhex(r["trace_id"]),
                                          span_id=r["span_id"].to_bytes(8, "big")))
    # a line of another request id, and one outside every request: never counted
    records.append(log_record(t0 + 500, "unrelated", attrs={"request_id": "someone-else"}))
    post(client, creds, "/v1/otlp/v1/logs", logs_request(RES, records))
    return reqs


def window(reqs) -> dict:
    return {"start_epoch_millis": reqs[0]["start"] // 10**6 - 1000,
            "end_epoch_millis": reqs[-1]["start"] // 10**6 + 5000}


def test_slowest_and_newest_with_log_counts(client, creds, sent):
    r = client.get(URL, params=window(sent))
    assert r.status_code == 200, r.text
    got = r.json()["requests"]
    want = sorted(sent, key=lambda s: -s["ms"])
    assert [g["request_id"] for g in got] == [s["request_id"] for s in want]
    for g, s in zip(got, want):
        assert g == {"request_id": s["request_id"], "trace_id": s["trace_id"], "timestamp": str(s["start"]),
                     "duration_seconds": pytest.approx(s["ms"] / 1000), "status_code": s["status"],
                     "replica": "r1", "route": "/predict", "log_count": s["lines"]}
    newest = client.get(URL, params={**window(sent), "order": "newest", "limit": 2}).json()["requests"]
    assert [g["request_id"] for g in newest] == [sent[-1]["request_id"], sent[-2]["request_id"]]


def test_filters(client, sent):
    w = window(sent)
    five = client.get(URL, params={**w, "status": "5xx"}).json()["requests"]
    assert sorted(g["status_code"] for g in five) == [500, 503]
    slow = client.get(URL, params={**w, "min_duration_ms": 200}).json()["requests"]
    assert [g["duration_seconds"] for g in slow] == pytest.approx([0.9, 0.4, 0.25])
    assert client.get(URL, params={**w, "replica": "r2"}).json() == {"requests": []}


def test_one_request_with_its_spans_and_log_lines(client, sent):
    s = sent[2]  # no X-Request-ID: its id is its trace id
    r = client.get(f"{URL}/{s['request_id']}")
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["request_id"], body["status_code"], body["log_count"]) == (s["trace_id"], 500, 3)
    assert [(x["name"], x["kind"]) for x in body["spans"]] == [("POST /predict", 2), ("model.forward", 1)]
    server, child = body["spans"]
    assert child["parent_span_id"] == server["span_id"] and server["status_code"] == 2
    assert child["duration_seconds"] == pytest.approx(0.45)
    assert [x["message"] for x in body["logs"]] == [f"line {j} of {s['request_id']}" for j in range(3)]
    b = client.get(f"{URL}/req-b").json()
    assert b["logs"] == [] and b["log_count"] == 0


def test_tenancy_and_bad_input(client, creds, sent):
    assert client.get(f"{URL}/no-such-request").status_code == 404
    # another workspace with the same ids: 404 for the request, an empty list for its own deployment
    admin = client.with_key(creds["admin_key"])
    ws = admin.post("/v1/admin/workspaces", json={"name": "other"}).json()["id"]
    key = admin.post(f"/v1/admin/workspaces/{ws}/api_keys", json={"name": "m", "scope": "management"}).json()["key"]
    other = client.with_key(key)
    assert other.get(f"{URL}/req-a").status_code == 404
    other.put(f"/v1/models/{MODEL}/deployments/{DEP}", json={})
    assert other.get(f"{URL}/req-a").status_code == 404
    assert other.get(URL, params=window(sent)).json() == {"requests": []}
    for params, field in (({"limit": 0}, "limit"), ({"limit": 101}, "limit"), ({"status": "6xx"}, "status"),
                          ({"order": "fastest"}, "order"), ({"min_duration_ms": -1}, "min_duration_ms"),
                          ({"start_epoch_millis": 10, "end_epoch_millis": 5}, "end_epoch_millis")):
        r = client.get(URL, params=params)
        assert r.status_code == 400, (params, r.text)
        assert r.json()["error"]["field"] == field, r.json()
    assert client.get(f"/v1/models/{MODEL}/deployments/nope/requests").status_code == 404


def test_bad_spans_are_rejected_and_the_rest_stored(client, creds):
    client.put(f"/v1/models/{MODEL}/deployments/{DEP}", json={})
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    for k, v in RES.items():
        rs.resource.attributes.add(key=k).value.string_value = v
    spans = rs.scope_spans.add().spans
    now = time.time_ns() - 60 * 10**9
    spans.add(trace_id=b"\x01" * 16, span_id=b"\x02" * 8, name="ok", kind=2, start_time_unix_nano=now,
              end_time_unix_nano=now + 10**6)
    spans.add(trace_id=b"\x01" * 8, span_id=b"\x03" * 8, name="short trace", kind=2, start_time_unix_nano=now,
              end_time_unix_nano=now + 1)
    spans.add(trace_id=b"\x04" * 16, span_id=b"\x05" * 8, name="backwards", kind=2, start_time_unix_nano=now,
              end_time_unix_nano=now - 1)
    body, headers = encode(req)
    r = client.post("/v1/otlp/v1/traces", content=body, headers=headers, key=creds["ingest_key"])
    assert r.status_code == 200
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
    ps = ExportTraceServiceResponse.FromString(r.content).partial_success
    assert ps.rejected_spans == 2 and "trace_id is not 16 bytes" in ps.error_message
    got = client.get(URL, params={"start_epoch_millis": now // 10**6 - 1000}).json()["requests"]
    assert [g["request_id"] for g in got] == ["01" * 16]
    bad = client.post("/v1/otlp/v1/traces", content=b"\xff\xff", headers=headers, key=creds["ingest_key"])
    assert bad.status_code == 400
