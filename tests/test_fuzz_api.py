"""schemathesis against the served /openapi.json of the real app on chDB.

Every operation the document describes (vendor and Sonde's own: inventory, logs and
their live streams, requests, /metrics, remote write, OTLP, alerts, admin) gets
generated requests, valid and invalid, with a key of each scope, a wrong key or none.
The server (the app under uvicorn, in process, on a chDB database of its own) must never answer 5xx, and every error must be the one JSON envelope
(docs/api.md#errors), or a ``google.rpc.Status`` where an OTLP receiver answers a
protobuf request. Path ids are drawn half of the time from entities that exist, so
the generated parameters reach the queries and not only the 404s.

The CI run is bounded (``EXAMPLES`` per operation); ``-m drill`` runs the long one
(docs/reliability.md#hostile-input).
"""

from __future__ import annotations

import gzip
import json
import threading
import time
from collections import Counter

import cramjam
import httpx
import pytest
import schemathesis
import uvicorn
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from google.rpc import status_pb2
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from conftest import drop_database, new_db_name
from live_server import free_port
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from otlp_build import (DEPLOYMENT, SEC, T0, encode, gauge, log_record, logs_request, metrics_request, number,
                        traces_request)
from schemathesis import GenerationMode

from sonde.api.app import create_app
from sonde.ingest import prompb
from sonde.settings import Config
from sonde.store import Store

#: examples per operation and generation mode: CI, and the drill
EXAMPLES, DRILL_EXAMPLES = 6, 150
SCOPES = ("admin_key", "management_key", "ingest_key", "wrong", None)
#: path parameter -> ids that exist in the seeded workspace
KNOWN = {
    "model_id": ["m1"], "deployment_id": ["d1", "lp1"], "env_name": ["production"],
    "chain_id": ["c1"], "chain_deployment_id": ["cd1"], "chainlet_id": ["cl1"],
    "training_project_id": ["tp1"], "training_job_id": ["tj1"], "request_id": ["req-1"],
    "rule_id": [], "name": ["hook"],  # the rule's id once it is made
}
RESOURCES = [
    {**DEPLOYMENT, "sonde.environment": "production"},
    {"sonde.chain_id": "c1", "sonde.chain_deployment_id": "cd1", "sonde.chainlet_id": "cl1", "sonde.replica": "r1"},
    {"sonde.training_project_id": "tp1", "sonde.training_job_id": "tj1", "sonde.node_rank": "0"},
    {"sonde.loops_deployment_id": "lp1", "sonde.replica": "r1"},
]


def scope_for(path: str) -> str:
    if path.startswith("/v1/admin/"):
        return "admin_key"
    if path.startswith(("/v1/otlp/", "/api/v1/write")):
        return "ingest_key"
    return "management_key"


def _seed(server: Served) -> None:
    ingest = server.headers("ingest_key")
    for res in RESOURCES:
        for signal, req in (
            ("metrics", metrics_request(res, [gauge("hw.gpu.utilization", [number(T0, 0.5)])])),
            ("logs", logs_request(res, [log_record(T0, "hello aaa", severity_number=9,
                                                   attrs={"request_id": "req-1"})])),
            ("traces", traces_request(res, [(b"\x01" * 16, b"\x02" * 8, b"", "POST /predict", 2, T0, SEC,
                                             {"http.request.header.x-request-id": "req-1"})])),
        ):
            body, headers = encode(req)
            r = httpx.post(f"{server.url}/v1/otlp/v1/{signal}", content=body, headers={**headers, **ingest})
            assert r.status_code == 200, r.text
    mgmt = server.headers("management_key")
    r = httpx.put(f"{server.url}/v1/alert_receivers/hook", headers=mgmt,
                  json={"type": "webhook", "url": "http://127.0.0.1:9/hook"})
    assert r.status_code < 300, r.text
    r = httpx.post(f"{server.url}/v1/alert_rules", headers=mgmt, json={
        "name": "slow", "model_id": "m1", "deployment_id": "d1",
        "condition": {"type": "logs", "filters": {"search_pattern": "a+"}, "op": ">", "threshold": 0}})
    assert r.status_code < 300, r.text
    KNOWN["rule_id"] = [r.json()["id"]]


class Served:
    """The app under uvicorn on a loopback port, in this process, on its own chDB database:
    a live log stream answering 200 never ends, so the client must be able to hang up."""

    def __init__(self, executor, data_dir):
        # /metrics' rate limit would turn most of its examples into 429s
        config = Config(data_dir=str(data_dir), metrics_rate_limit=1_000_000, stream_heartbeat_seconds=0.2)
        self.store = Store(executor, new_db_name(), flush_interval_ms=5)
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.uvicorn = uvicorn.Server(uvicorn.Config(create_app(config, store=self.store), host="127.0.0.1",
                                                     port=port, log_level="warning", lifespan="off"))
        self.thread = threading.Thread(target=self.uvicorn.run, daemon=True)
        self.thread.start()
        while not self.uvicorn.started:
            assert self.thread.is_alive(), "uvicorn did not start"
            time.sleep(0.02)
        self.creds = json.loads((data_dir / "credentials.json").read_text())

    def headers(self, which: str) -> dict:
        return {"Authorization": f"Bearer {self.creds[which]}"}

    def alive(self) -> bool:
        return self.thread.is_alive()

    def close(self) -> None:
        self.uvicorn.should_exit = True
        self.thread.join(30)
        self.store.close(executor=False)
        drop_database(self.store.ex, self.store.db)


@pytest.fixture(scope="module")
def served(executor, tmp_path_factory):
    server = Served(executor, tmp_path_factory.mktemp("fuzz"))
    try:
        _seed(server)
        schema = schemathesis.openapi.from_dict(httpx.get(f"{server.url}/openapi.json").json())
        yield server, schema
    finally:
        server.close()


def check_answer(r: httpx.Response, request_type: str | None, path: str) -> None:
    """No 5xx; an error is the JSON envelope, or a google.rpc.Status for an OTLP protobuf request."""
    where = f"{r.request.method} {r.request.url} -> {r.status_code}"
    assert r.status_code < 500, f"{where}: {r.text[:500]}"
    if r.status_code < 400:
        return
    ctype = r.headers.get("content-type", "")
    otlp_proto = path.startswith("/v1/otlp/") and (request_type or "").split(";")[0].strip().lower() in (
        "application/x-protobuf", "application/protobuf")
    if otlp_proto:
        assert ctype == "application/x-protobuf", f"{where}: {ctype}"
        try:
            status = status_pb2.Status.FromString(r.content)
        except DecodeError:
            pytest.fail(f"{where}: not a google.rpc.Status: {r.content[:200]!r}")
        assert status.message and status.code, where
        return
    assert ctype.startswith("application/json"), f"{where}: {ctype} {r.text[:300]}"
    body = json.loads(r.content)
    assert set(body) == {"message", "error"}, f"{where}: {body}"
    assert isinstance(body["message"], str) and body["message"], f"{where}: {body}"
    assert set(body["error"]) == {"code", "field"}, f"{where}: {body}"
    assert isinstance(body["error"]["code"], str) and body["error"]["code"], f"{where}: {body}"
    assert body["error"]["field"] is None or isinstance(body["error"]["field"], str), f"{where}: {body}"


def send(http: httpx.Client, server: Served, case, key: str | None) -> int | None:
    """Sends ``case`` with ``key``'s credentials and checks the answer; its status, or
    None when no HTTP client could send what was generated."""
    kwargs = case.as_transport_kwargs(base_url=server.url)
    headers = {k: v for k, v in (kwargs.pop("headers", None) or {}).items() if k.lower() != "authorization"}
    if key == "wrong":
        headers["Authorization"] = "Bearer sk_not_a_key"
    elif key is not None:
        headers["Authorization"] = f"Bearer {server.creds[key]}"
    if "json" in kwargs:
        kwargs["content"] = json.dumps(kwargs.pop("json")).encode()
        headers.setdefault("Content-Type", "application/json")
    kwargs.pop("cookies", None)
    try:
        request = http.build_request(kwargs.pop("method"), kwargs.pop("url"), headers=headers,
                                     params=kwargs.pop("params", None), content=kwargs.pop("content", None)
                                     or kwargs.pop("data", None))
    except (httpx.InvalidURL, UnicodeEncodeError, ValueError, TypeError):
        return None  # a header or URL no HTTP client can send: nothing reaches the server
    # A live log stream answering 200 never ends: its status and headers are the answer.
    r = http.send(request, stream=True)
    try:
        if r.status_code == 200 and r.headers.get("content-type", "").startswith("text/event-stream"):
            return r.status_code
        r.read()
    finally:
        r.close()
    check_answer(r, headers.get("Content-Type") or headers.get("content-type"), case.path)
    return r.status_code


def _fuzz(served, examples: int) -> Counter:
    server, schema = served
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 50  # every route of the document, the new ones included
    http = httpx.Client(timeout=httpx.Timeout(30, pool=5))
    answers: Counter = Counter()

    for op in operations:
        strategy = st.one_of(op.as_strategy(generation_mode=GenerationMode.POSITIVE),
                             op.as_strategy(generation_mode=GenerationMode.NEGATIVE))

        # the scope the route wants half of the time, so examples get past auth to the handler
        right = st.just(scope_for(op.path))

        @settings(max_examples=examples, deadline=None, database=None, derandomize=examples <= EXAMPLES,
                  suppress_health_check=list(HealthCheck),
                  phases=(Phase.explicit, Phase.generate), report_multiple_bugs=False)
        @given(case=strategy, key=st.one_of(right, st.sampled_from(SCOPES)), data=st.data())
        def run(case, key, data):
            for name in list(case.path_parameters or {}):
                if name in KNOWN and data.draw(st.booleans()):
                    case.path_parameters[name] = data.draw(st.sampled_from(KNOWN[name]))
            answers[send(http, server, case, key)] += 1

        run()
    http.close()
    assert server.alive(), "the server died"
    print(f"{sum(answers.values())} requests over {len(operations)} operations; by status: {sorted(answers.items(), key=str)}")
    # the generated requests got past auth and validation too, not only refused
    assert answers[200] + answers[201] + answers[204] >= len(operations) // 2, answers
    return answers


def test_fuzz_every_operation(served):
    _fuzz(served, EXAMPLES)


@pytest.mark.drill
def test_fuzz_every_operation_long(served):
    _fuzz(served, DRILL_EXAMPLES)


#: the receivers' schema says nothing of their bodies; these are real requests to mutate
def _real_bodies() -> dict[str, bytes]:
    res = RESOURCES[0]
    wr = prompb.WriteRequest()
    ts = wr.timeseries.add()
    for k, v in (("__name__", "up"), ("deployment_id", "d1"), ("model_id", "m1")):
        ts.labels.add(name=k, value=v)
    ts.samples.add(timestamp=T0 // 10**6, value=1.0)
    return {
        "/v1/otlp/v1/metrics": metrics_request(res, [gauge("g", [number(T0, 1.0, attrs={"a": [1, {"b": 2.5}]})])]
                                               ).SerializeToString(),
        "/v1/otlp/v1/logs": logs_request(res, [log_record(T0, {"k": [1, "x"]}, severity_text="WARN")]
                                         ).SerializeToString(),
        "/v1/otlp/v1/traces": traces_request(res, [(b"\x05" * 16, b"\x06" * 8, b"", "s", 2, T0, SEC, {})]
                                             ).SerializeToString(),
        "/api/v1/write": wr.SerializeToString(),
    }


@st.composite
def mutated(draw, body: bytes) -> bytes:
    """``body`` cut, with bytes flipped, inserted or repeated: what a broken or hostile sender makes."""
    out = bytearray(body)
    for _ in range(draw(st.integers(0, 4))):
        at = draw(st.integers(0, max(len(out) - 1, 0)))
        how = draw(st.sampled_from(("flip", "insert", "cut", "repeat")))
        if how == "flip" and out:
            out[at] ^= draw(st.integers(1, 255))
        elif how == "insert":
            out[at:at] = draw(st.binary(max_size=16))
        elif how == "cut":
            del out[at:]
        else:
            out += out[at:at + 64] * draw(st.integers(1, 50))
    return bytes(out)


def _fuzz_bodies(served, examples: int) -> Counter:
    server, _ = served
    answers: Counter = Counter()
    http = httpx.Client(timeout=httpx.Timeout(30, pool=5))
    for path, body in _real_bodies().items():
        rw = path == "/api/v1/write"
        types = ["application/x-protobuf"] if rw else ["application/x-protobuf", "application/json", "text/plain"]

        @settings(max_examples=examples, deadline=None, database=None, derandomize=examples <= EXAMPLES * 5,
                  suppress_health_check=list(HealthCheck), phases=(Phase.explicit, Phase.generate))
        @given(raw=mutated(body), ctype=st.sampled_from(types), compress=st.booleans())
        def run(raw, ctype, compress):
            headers = {"Content-Type": ctype, **server.headers("ingest_key")}
            if rw:
                headers["Content-Encoding"] = "snappy"
                raw = bytes(cramjam.snappy.compress_raw(raw)) if compress else raw
            elif ctype == "application/json":
                raw = json.dumps(json_format.MessageToDict(
                    type(_OTLP[path]).FromString(body))).encode()[:len(raw)] if compress else raw
            elif compress:
                headers["Content-Encoding"] = "gzip"
                raw = gzip.compress(raw)
            r = http.post(server.url + path, content=raw, headers=headers)
            check_answer(r, ctype, path)
            answers[r.status_code] += 1

        run()
    http.close()
    assert server.alive(), "the server died"
    print(f"hostile bodies: {sum(answers.values())} requests; by status: {sorted(answers.items())}")
    assert answers[200] and answers[400], answers  # some mutations still decode, most do not
    return answers


_OTLP = {"/v1/otlp/v1/metrics": ExportMetricsServiceRequest(), "/v1/otlp/v1/logs": ExportLogsServiceRequest(),
         "/v1/otlp/v1/traces": ExportTraceServiceRequest()}


def test_fuzz_ingest_bodies(served):
    _fuzz_bodies(served, EXAMPLES * 5)


@pytest.mark.drill
def test_fuzz_ingest_bodies_long(served):
    _fuzz_bodies(served, DRILL_EXAMPLES * 10)
