"""``sonde requests`` and ``sonde request`` as a user runs them: child processes against
a real ``sonde serve``, fed spans made by the OpenTelemetry SDK's tracer (as
tests/test_requests.py does) and log lines naming the requests. Expected answers
are computed from what was sent.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common._internal.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from live_server import LiveServer
from otlp_build import log_record, logs_request, post
from test_cli import sonde

from sonde.cli.options import parse_duration
from sonde.cli.waterfall import BAR

MODEL, DEP, OTHER = "cm", "cd", "cd-down"
RES = {"sonde.model_id": MODEL, "sonde.deployment_id": DEP}
# (request id or None, status, duration ms, replica, log lines), one a second
PLAN = [("req-fast", 200, 20, "r1", 0), ("req-slow", 200, 800, "r1", 2), (None, 503, 300, "r2", 1),
        ("req-miss", 404, 5, "r1", 0)]
# the children of each server span: (name, parent name, start, end) as fractions of the request
CHILDREN = [("preprocess", None, 0.0, 0.1), ("model.forward", None, 0.1, 0.9), ("attention", "model.forward", 0.2, 0.8),
            ("postprocess", None, 0.9, 1.0)]
MS = 10**6


def record(t0: int) -> tuple[list, list[dict]]:
    """The plan as SDK spans: a server span per request with nested children, and one
    span recorded by another deployment (a downstream call in the same trace)."""
    exporter = InMemorySpanExporter()
    providers = {rep: TracerProvider(resource=Resource.create({**RES, "sonde.replica": rep})) for rep in ("r1", "r2")}
    down = TracerProvider(resource=Resource.create({**RES, "sonde.deployment_id": OTHER, "sonde.replica": "x1"}))
    for p in (*providers.values(), down):
        p.add_span_processor(SimpleSpanProcessor(exporter))
    sent = []
    for i, (rid, status, ms, rep, lines) in enumerate(PLAN):
        start, dur = t0 + i * 10**9, ms * MS
        attrs = {"http.route": "/predict", "http.response.status_code": status}
        if rid:
            attrs["http.request.header.x-request-id"] = (rid,)
        tracer = providers[rep].get_tracer("app")
        server = tracer.start_span("POST /predict", kind=trace.SpanKind.SERVER, attributes=attrs, start_time=start)
        made = {None: server}
        for name, parent, a, b in CHILDREN:
            ctx = trace.set_span_in_context(made[parent])
            made[name] = tracer.start_span(name, context=ctx, start_time=start + int(dur * a))
            made[name].end(end_time=start + int(dur * b))
        if rid == "req-slow":
            call = down.get_tracer("down").start_span("embed", context=trace.set_span_in_context(made["model.forward"]),
                                                     start_time=start + int(dur * 0.3))
            call.end(end_time=start + int(dur * 0.5))
        if status >= 500:
            server.set_status(trace.Status(trace.StatusCode.ERROR, "boom"))
        server.end(end_time=start + dur)
        trace_id = f"{server.get_span_context().trace_id:032x}"
        sent.append({"request_id": rid or trace_id, "trace_id": trace_id, "start": start, "ms": ms,
                     "status": status, "replica": rep, "lines": lines})
    return exporter.get_finished_spans(), sent


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = LiveServer(tmp_path_factory.mktemp("cli-requests")).start()
    yield s
    assert s.stop() == 0


@pytest.fixture(scope="module")
def sent(server):
    t0 = (time.time_ns() // 10**9 - 120) * 10**9
    spans, sent = record(t0)
    records = [log_record(s["start"] + j * MS, f"line {j} of {s['request_id']}", severity_text="INFO",
                          attrs={"request_id": s["request_id"]}) for s in sent for j in range(s["lines"])]
    with httpx.Client(base_url=server.url, headers=server.headers("ingest_key")) as c:
        for msg in (encode_spans(spans), logs_request({**RES, "sonde.replica": "r1"}, records)):
            r = post(c, msg)
            assert r.status_code == 200, r.text
    return sent


def listed(server, *args) -> list[str]:
    return [r["request_id"] for r in json.loads(sonde(server, "requests", MODEL, DEP, *args, "--format",
                                                      "json").stdout)["requests"]]


def test_table_lists_slowest_first_with_every_column(server, sent):
    out = sonde(server, "requests", MODEL, DEP).stdout
    rows = [line for line in out.splitlines() if any(s["request_id"] in line for s in sent)]
    want = sorted(sent, key=lambda s: -s["ms"])
    assert [next(s["request_id"] for s in sent if s["request_id"] in r) for r in rows] == \
        [s["request_id"] for s in want]
    for row, s in zip(rows, want):
        cells = [c.strip() for c in row.strip("│ ").split("│")]
        when = datetime.fromtimestamp(s["start"] / 1e9, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        assert cells == [when, f"{s['ms']:.1f} ms" if s["ms"] >= 10 else f"{s['ms']:.2f} ms", str(s["status"]),
                         "/predict", s["replica"], s["request_id"], str(s["lines"])]


def test_json_is_the_api_answer_and_filters_reach_it(server, sent):
    api = httpx.get(f"{server.url}/v1/models/{MODEL}/deployments/{DEP}/requests", headers=server.headers()).json()
    assert json.loads(sonde(server, "requests", MODEL, DEP, "--format", "json").stdout) == api
    lines = sonde(server, "requests", MODEL, DEP, "--format", "jsonl").stdout.splitlines()
    assert [json.loads(x) for x in lines] == api["requests"]
    by_ms = {s["ms"]: s["request_id"] for s in sent}
    assert listed(server, "--status", "5xx") == [by_ms[300]]
    assert listed(server, "--min-duration", "250ms") == [by_ms[800], by_ms[300]]
    assert listed(server, "--min-duration", "0.5s") == [by_ms[800]]
    assert listed(server, "--replica", "r2") == [by_ms[300]]
    assert listed(server, "-n", "2", "--order", "newest") == [sent[3]["request_id"], sent[2]["request_id"]]
    # an ISO start just after the first request leaves it out; a time ago of 1m leaves all out
    after_first = datetime.fromtimestamp(sent[0]["start"] / 1e9 + 0.5, tz=timezone.utc).isoformat()
    assert sorted(listed(server, "--since", after_first)) == sorted(s["request_id"] for s in sent[1:])
    assert sorted(listed(server, "--since", after_first.replace("+00:00", ""))) == \
        sorted(s["request_id"] for s in sent[1:])
    assert listed(server, "--since", "1m") == []
    assert len(listed(server, "--since", "30m")) == len(sent)


def span_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if "█" in line]


def test_waterfall_nests_spans_and_scales_bars_to_the_request(server, sent):
    slow = next(s for s in sent if s["request_id"] == "req-slow")
    out = sonde(server, "request", MODEL, DEP, "req-slow").stdout
    assert f"request req-slow  trace {slow['trace_id']}" in out
    assert "/predict  status 200  800.0 ms  replica r1" in out
    spans = span_lines(out)
    names = [line[:line.index("  ", len(line) - len(line.lstrip()))] for line in spans]
    assert names == ["POST /predict", "  preprocess", "  model.forward", "    attention",
                     f"    embed [deployment {OTHER}]", "  postprocess"]
    col = spans[0].index("█")
    assert all(line.index("█") >= col for line in spans)

    def bar(line):  # (first cell, cells) of a line's bar on the shared axis
        cells = line[col:col + BAR]
        return cells.index("█"), cells.count("█")

    fractions = {"POST /predict": (0.0, 1.0), "preprocess": (0.0, 0.1), "model.forward": (0.1, 0.9),
                 "attention": (0.2, 0.8), "embed": (0.3, 0.5), "postprocess": (0.9, 1.0)}
    for name, line in zip(names, spans):
        a, b = fractions[name.split(" [")[0].strip()]
        assert bar(line) == (round(a * BAR), round((b - a) * BAR)), (name, line)
    assert spans[0].rstrip().endswith("800.0 ms  200") and spans[3].rstrip().endswith("480.0 ms")
    logs = out[out.index("logs (2)"):].splitlines()[1:]
    assert [x.split(" ", 3)[1:] for x in logs] == [["INFO", "r1", f"line {j} of req-slow"] for j in range(2)]


def test_request_without_an_id_and_json_output(server, sent):
    failed = next(s for s in sent if s["status"] == 503)
    out = sonde(server, "request", MODEL, DEP, failed["request_id"]).stdout
    assert span_lines(out)[0].rstrip().endswith("300.0 ms  503") and "logs (1)" in out
    api = httpx.get(f"{server.url}/v1/models/{MODEL}/deployments/{DEP}/requests/{failed['request_id']}",
                    headers=server.headers()).json()
    assert json.loads(sonde(server, "request", MODEL, DEP, failed["request_id"], "--format", "json").stdout) == api
    assert [json.loads(x) for x in sonde(server, "request", MODEL, DEP, failed["request_id"], "--format",
                                         "jsonl").stdout.splitlines()] == [api]


def test_unknown_ids_are_clear_errors(server, sent):
    r = sonde(server, "request", MODEL, DEP, "no-such-request", ok=False)
    assert r.returncode == 1 and r.stdout == ""
    assert "404: request 'no-such-request' not found (field: request_id)" in r.stderr
    r = sonde(server, "requests", MODEL, "no-such-deployment", ok=False)
    assert r.returncode == 1 and "404" in r.stderr and "deployment_id" in r.stderr


@pytest.mark.parametrize("args, message", [
    (("--since", "yesterday"), "neither a time ago"), (("--min-duration", "500"), "not a duration"),
    (("-n", "101"), "101"), (("--status", "6xx"), "6xx"),
])
def test_bad_options_are_usage_errors(server, args, message):
    r = sonde(server, "requests", MODEL, DEP, *args, ok=False)
    assert r.returncode == 2 and message in r.stderr


def test_durations():
    assert [parse_duration(x) for x in ("500ms", "2s", "1.5s", "30m", "1h", "7d", ".5s", " 2S ")] == \
        pytest.approx([0.5, 2, 1.5, 1800, 3600, 7 * 86400, 0.5, 2])
    assert [parse_duration(x) for x in ("500", "2 s", "1.5.5s", "-1s", "s", "1y")] == [None] * 6
