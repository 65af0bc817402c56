"""End to end: request spans -> OTLP/HTTP -> a real `sonde serve` -> the requests endpoints.

(a) SondeMiddleware with configure(): every request is listed, slowest first, with its
    status, request id and log lines; one that came with a ``traceparent`` joins the
    caller's trace; the latency histogram's exemplars name the requests' traces.
(b) a plain FastAPI app with opentelemetry-instrumentation-fastapi and the SDK's OTLP
    exporters, no Sonde code: its server spans are its requests, and a log line written
    inside one joins it by trace id.

The server, model and deployments are test_instrument_e2e's.
"""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import time
import warnings
from collections import Counter
from contextlib import contextmanager

import httpx
import pytest
from fastapi import FastAPI, HTTPException
from opentelemetry import trace
from test_instrument_e2e import MODEL, OTEL_DEP, SONDE_DEP, server  # noqa: F401 - server is a fixture

pytestmark = pytest.mark.e2e

CALLER_TRACE, CALLER_SPAN = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
# (path, status, seconds asleep in the model, X-Request-ID or None: the middleware makes one)
PLAN = [
    ("/predict", 200, 0.005, "req-ok-1"), ("/predict", 200, 0.040, "req-ok-2"), ("/predict", 200, 0.015, None),
    ("/predict", 200, 0.025, "req-ok-4"), ("/predict", 404, 0.002, "req-missing"),
    ("/predict", 500, 0.030, None), ("/predict", 500, 0.010, "req-fail-2"), ("/predict", 500, 0.020, None),
    ("/explain", 200, 0.008, "req-logged"), ("/predict", 200, 0.012, "req-traced"),
]
LOG_LINE = "explaining the prediction"


def get(srv, path: str, **params) -> dict:
    r = httpx.get(f"{srv.url}/v1/models/{MODEL}/deployments/{path}", params=params,
                  headers=srv.headers("management_key"), timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


def listed(srv, dep: str, since_ms: int, n: int, timeout: float = 30.0) -> list[dict]:
    """All of ``dep``'s requests since ``since_ms``, slowest first, polled until there
    are ``n`` (ingest is asynchronous)."""
    deadline = time.monotonic() + timeout
    while True:
        found = get(srv, f"{dep}/requests", start_epoch_millis=since_ms, limit=100)["requests"]
        if len(found) >= n or time.monotonic() > deadline:
            return found
        time.sleep(0.25)


@contextmanager
def exported_only(name: str, handler: logging.Handler):
    """The logger ``name`` writing to ``handler`` alone (an exporter's), while the block runs."""
    log = logging.getLogger(name)
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    try:
        yield log
    finally:
        log.removeHandler(handler)
        log.propagate = True


@pytest.fixture(scope="module")
def traffic(server):  # noqa: F811 - the imported fixture
    from sonde.instrument import SondeMiddleware, configure

    since_ms = int(time.time() * 1000) - 60_000
    telemetry = configure(server=server.url, api_key=server.creds["ingest_key"], model_id=MODEL,
                          deployment_id=SONDE_DEP, replica="r0001", environment="production",
                          export_interval_s=3600, set_global=False, attach_to_root_logger=False)
    app_log = logging.getLogger("sonde.test.traces")
    model = telemetry.tracer_provider.get_tracer("test-model")

    # FastAPI's own tracing would add a second server span per request (docs/instrument.md).
    app = FastAPI(telemetry={"metrics": False, "tracing": False})

    @app.post("/predict")
    async def predict(body: dict):
        with model.start_as_current_span("model.forward"):
            await asyncio.sleep(body["seconds"])
        if body["status"] == 500:
            raise RuntimeError("CUDA error: out of memory")
        if body["status"] != 200:
            raise HTTPException(body["status"], "rejected")
        return {"ok": True}

    @app.get("/explain")
    async def explain():
        await asyncio.sleep(0.008)
        app_log.info(LOG_LINE)
        return {}

    served = SondeMiddleware(app, meter_provider=telemetry.meter_provider,
                             tracer_provider=telemetry.tracer_provider)

    def send(c: httpx.AsyncClient, path: str, status: int, seconds: float, rid: str | None):
        headers = {"X-Request-ID": rid} if rid else {}
        if rid == "req-traced":
            headers["traceparent"] = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"
        if path == "/explain":
            return c.get(path, headers=headers)
        return c.post(path, json={"status": status, "seconds": seconds}, headers=headers)

    async def go():
        transport = httpx.ASGITransport(app=served, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://model.test") as c:
            return await asyncio.gather(*(send(c, *p) for p in PLAN))

    try:
        with exported_only(app_log.name, telemetry.log_handler):
            responses = asyncio.run(go())
        assert [r.status_code for r in responses] == [p[1] for p in PLAN]
        assert telemetry.force_flush(30_000)
    finally:
        telemetry.shutdown()
    ids = [r.headers["x-request-id"] for r in responses]
    assert [i for i, p in zip(ids, PLAN) if p[3]] == [p[3] for p in PLAN if p[3]]
    # request id -> (status, route, log lines, least duration)
    want = {rid: (status, path, int(path == "/explain"), seconds)
            for rid, (path, status, seconds, _) in zip(ids, PLAN)}
    return {"since_ms": since_ms, "want": want, "requests": listed(server, SONDE_DEP, since_ms, len(PLAN))}


def test_every_request_listed_slowest_first(server, traffic):  # noqa: F811
    reqs, want = traffic["requests"], traffic["want"]
    assert {r["request_id"]: (r["status_code"], r["route"], r["log_count"]) for r in reqs} == {
        rid: w[:3] for rid, w in want.items()}
    assert all(r["replica"] == "r0001" and len(r["trace_id"]) == 32 for r in reqs)
    assert len({r["trace_id"] for r in reqs}) == len(PLAN)  # a trace per request
    durations = [r["duration_seconds"] for r in reqs]
    assert durations == sorted(durations, reverse=True)
    assert all(r["duration_seconds"] >= want[r["request_id"]][3] for r in reqs)  # the model slept that long
    # A limit keeps the slowest; the status filter keeps a class.
    top = get(server, f"{SONDE_DEP}/requests", start_epoch_millis=traffic["since_ms"], limit=3)["requests"]
    assert [r["request_id"] for r in top] == [r["request_id"] for r in reqs[:3]]
    failed = get(server, f"{SONDE_DEP}/requests", start_epoch_millis=traffic["since_ms"], status="5xx")["requests"]
    assert sorted(r["request_id"] for r in failed) == sorted(rid for rid, w in want.items() if w[0] == 500)
    newest = get(server, f"{SONDE_DEP}/requests", start_epoch_millis=traffic["since_ms"], order="newest")["requests"]
    assert [int(r["timestamp"]) for r in newest] == sorted((int(r["timestamp"]) for r in reqs), reverse=True)


def test_a_request_with_traceparent_joins_the_callers_trace(server, traffic):  # noqa: F811
    detail = get(server, f"{SONDE_DEP}/requests/req-traced")
    assert detail["trace_id"] == CALLER_TRACE and detail["status_code"] == 200
    root, child = detail["spans"]
    assert (root["name"], root["kind"], root["parent_span_id"]) == ("POST /predict", 2, CALLER_SPAN)
    assert root["attributes"]["http.route"] == "/predict" and root["attributes"]["url.path"] == "/predict"
    assert root["attributes"]["http.request.method"] == "POST"
    assert root["http_status"] == 200 and root["replica"] == "r0001"
    # the app's own span ran inside the middleware's
    assert (child["name"], child["parent_span_id"], child["trace_id"]) == ("model.forward", root["span_id"],
                                                                          CALLER_TRACE)


def test_a_failed_request_and_a_logged_one(server, traffic):  # noqa: F811
    failed = get(server, f"{SONDE_DEP}/requests/req-fail-2")
    root = failed["spans"][0]
    assert (root["name"], root["http_status"], root["parent_span_id"]) == ("POST /predict", 500, None)
    assert root["attributes"]["error.type"] == "RuntimeError"
    assert root["status_message"] == "RuntimeError: CUDA error: out of memory"
    logged = get(server, f"{SONDE_DEP}/requests/req-logged")
    assert (logged["route"], logged["log_count"]) == ("/explain", 1)
    assert [(line["message"], line["request_id"]) for line in logged["logs"]] == [(LOG_LINE, "req-logged")]
    assert [s["name"] for s in logged["spans"]] == ["GET /explain"]


def test_plain_opentelemetry_fastapi_app_lists_its_requests(server):  # noqa: F811
    """No Sonde code: OpenTelemetry's own FastAPI instrumentation, tracer and log handler."""
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
    from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    since_ms = int(time.time() * 1000) - 60_000
    otlp, auth = f"{server.url}/v1/otlp/v1", {"Authorization": f"Bearer {server.creds['ingest_key']}"}
    resource = Resource.create({"service.name": "plain", "sonde.model_id": MODEL, "sonde.deployment_id": OTEL_DEP,
                                "service.instance.id": "plain-1"})
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{otlp}/traces", headers=auth)))
    logger_provider = LoggerProvider(resource=resource)
    logger_provider.add_log_record_processor(
        BatchLogRecordProcessor(OTLPLogExporter(endpoint=f"{otlp}/logs", headers=auth)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # see sonde/instrument/otel.py
        handler = LoggingHandler(logger_provider=logger_provider)
    app_log = logging.getLogger("sonde.test.plain")
    talked: list[str] = []

    app = FastAPI()

    @app.get("/predict/{kind}")
    async def predict(kind: str):
        if kind == "talk":  # written inside the instrumentation's span: it carries the trace id
            app_log.info("talking")
            talked.append(f"{trace.get_current_span().get_span_context().trace_id:032x}")
        await asyncio.sleep(0.01)
        if kind == "boom":
            raise RuntimeError("boom")
        if kind == "nope":
            raise HTTPException(404)
        return {"ok": True}

    FastAPIInstrumentor.instrument_app(app, tracer_provider=tracer_provider)
    kinds = ["ok"] * 4 + ["talk"] + ["nope"] * 2 + ["boom"] * 2

    async def go():
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://model.test") as c:
            return await asyncio.gather(*(c.get(f"/predict/{k}") for k in kinds))

    try:
        with exported_only(app_log.name, handler):
            statuses = sorted(r.status_code for r in asyncio.run(go()))
        assert statuses == [200] * 5 + [404] * 2 + [500] * 2
        assert tracer_provider.force_flush(30_000) and logger_provider.force_flush(30_000)
    finally:
        FastAPIInstrumentor.uninstrument_app(app)
        tracer_provider.shutdown()
        logger_provider.shutdown()
    reqs = listed(server, OTEL_DEP, since_ms, len(kinds))
    assert Counter((r["route"], r["status_code"]) for r in reqs) == {
        ("/predict/{kind}", 200): 5, ("/predict/{kind}", 404): 2, ("/predict/{kind}", 500): 2}
    # without an X-Request-ID, a request is known by its trace id; its log line by the same
    assert all(r["request_id"] == r["trace_id"] for r in reqs)
    assert {r["request_id"]: r["log_count"] for r in reqs if r["log_count"]} == {talked[0]: 1}
    detail = get(server, f"{OTEL_DEP}/requests/{talked[0]}")
    assert [line["message"] for line in detail["logs"]] == ["talking"]


@pytest.mark.parametrize("fastapi_tracing", [True, False])
def test_fastapi_builtin_tracing_is_flagged(fastapi_tracing, caplog):
    """FastAPI's own tracing starts a second server span, outside the middleware's
    trace: each request would be listed twice, so the middleware says so."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from sonde.instrument import SondeMiddleware

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = FastAPI(telemetry={"tracer_provider": provider, "tracing": fastapi_tracing, "metrics": False,
                             "logs": False, "operation_spans": False})
    app.get("/x")(lambda: {})

    async def go():
        transport = httpx.ASGITransport(app=SondeMiddleware(app, tracer_provider=provider))
        async with httpx.AsyncClient(transport=transport, base_url="http://model.test") as c:
            await c.get("/x")

    with caplog.at_level(logging.WARNING, logger="sonde.instrument"):
        asyncio.run(go())
    provider.shutdown()
    servers = [s for s in exporter.get_finished_spans() if s.kind == trace.SpanKind.SERVER]
    warned = [r.getMessage() for r in caplog.records if r.name == "sonde.instrument"]
    if fastapi_tracing:
        assert len(servers) == 2 and servers[0].context.trace_id != servers[1].context.trace_id
        assert len(warned) == 1 and "listed twice" in warned[0] and "'tracing': False" in warned[0]
    else:
        assert [s.name for s in servers] == ["GET /x"] and warned == []


READ_EXEMPLARS = """
import json, sys
from sonde.store import open_store
store = open_store("chdb", sys.argv[1])
try:
    rows = store.ex.query("SELECT trace_id, value FROM " + store.t("exemplars")
                          + " WHERE entity = {dep:String} AND metric = 'http.server.request.duration'",
                          {"dep": sys.argv[2]})
finally:
    store.close()
print(json.dumps(rows))
"""


def test_latency_exemplars_name_the_requests(server, traffic):  # noqa: F811
    """Last in this module: it stops the server, since chDB lets one process open a store.
    The store is read by a child process, as this one may hold another chDB path already."""
    server.stop()
    out = subprocess.run([sys.executable, "-c", READ_EXEMPLARS, server.data_dir, SONDE_DEP],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    exemplars = {r["trace_id"]: r["value"] for r in json.loads(out.stdout.splitlines()[-1])}
    # Each series (method, route, status, error) saw fewer requests than the SDK's
    # reservoir of 20 holds, so every request is an exemplar, with its own duration.
    durations = {r["trace_id"]: r["duration_seconds"] for r in traffic["requests"]}
    assert exemplars.keys() == durations.keys()
    assert all(abs(exemplars[t] - d) < 1e-6 for t, d in durations.items()), (exemplars, durations)
