"""SondeMiddleware on a real FastAPI app, read back through the real OpenTelemetry SDK.

Requests go through httpx.ASGITransport (or straight ASGI calls where the timing of
individual messages matters); metrics are read from an InMemoryMetricReader on an SDK
MeterProvider carrying the same views configure() installs.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time

import httpx
import pytest
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import PlainTextResponse, StreamingResponse
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation, View

from sonde.instrument import RequestIdFilter, SondeMiddleware, current_request_id, sonde_views

log = logging.getLogger("sonde.test.app")


class Captured(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.addFilter(RequestIdFilter(default="-"))

    def emit(self, record):
        self.records.append(record)


def make_app() -> FastAPI:
    app = FastAPI()
    app.state.release = asyncio.Event()

    @app.get("/ok")
    async def ok():
        log.info("ok handled")
        return {"request_id": current_request_id()}

    @app.get("/sync")
    def sync():  # runs in the thread pool: the context must follow it there
        log.info("sync handled")
        return {"request_id": current_request_id()}

    @app.post("/echo")
    async def echo(request: Request):
        return PlainTextResponse(await request.body())

    @app.get("/items/{item_id}")
    async def item(item_id: str):
        if item_id == "missing":
            raise HTTPException(404, "no such item")
        return {"id": item_id}

    @app.get("/boom")
    async def boom():
        log.error("about to explode")
        raise RuntimeError("model exploded")

    @app.get("/stream")
    async def stream():
        async def chunks():
            await asyncio.sleep(0.2)  # the "prefill": nothing to send yet
            log.info("first token")
            for i in range(3):
                yield f"token{i} ".encode()
                await asyncio.sleep(0.1)

        return StreamingResponse(chunks(), media_type="text/plain")

    @app.get("/wait")
    async def wait():
        await app.state.release.wait()
        return {}

    return app


@pytest.fixture
def telemetry():
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader], views=sonde_views())
    app = make_app()
    app.add_middleware(SondeMiddleware, meter_provider=provider)
    handler = Captured()
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    yield app, reader, handler
    log.removeHandler(handler)
    provider.shutdown()


def run(coro):
    return asyncio.run(coro)


async def fire(app, requests: list[tuple], **client_kw) -> list[httpx.Response]:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://model.test", **client_kw) as c:
        return [await c.request(m, u, **kw) for m, u, kw in requests]


def points(reader: InMemoryMetricReader, name: str) -> list:
    data = reader.get_metrics_data()
    out = []
    for rm in data.resource_metrics if data else ():
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                if m.name == name:
                    out.extend(m.data.data_points)
    return out


def by_attr(pts, key: str, field: str = "count") -> dict:
    out: dict = {}
    for p in pts:
        k = p.attributes.get(key)
        out[k] = out.get(k, 0) + getattr(p, field)
    return out


def test_counts_per_status_route_and_exceptions(telemetry):
    app, reader, _ = telemetry
    reqs = [("GET", "/ok", {})] * 7 + [("GET", "/items/a1", {})] * 3 + [("GET", "/items/missing", {})] * 4
    reqs += [("GET", "/boom", {})] * 2 + [("GET", "/no/such/path", {})] * 5
    responses = run(fire(app, reqs))
    assert [r.status_code for r in responses] == [200] * 10 + [404] * 4 + [500] * 2 + [404] * 5

    dur = points(reader, "http.server.request.duration")
    assert by_attr(dur, "http.response.status_code") == {200: 10, 404: 9, 500: 2}
    assert by_attr(dur, "http.route") == {"/ok": 7, "/items/{item_id}": 7, "/boom": 2, None: 5}
    assert all(isinstance(p.scale, int) for p in dur)  # exported as an exponential histogram
    boom = [p for p in dur if p.attributes.get("http.route") == "/boom"]
    assert boom[0].attributes["error.type"] == "RuntimeError"
    assert boom[0].attributes["http.request.method"] == "GET"
    assert all("error.type" not in p.attributes for p in dur if p.attributes["http.response.status_code"] != 500)
    # Durations are real: every request took some time, none took seconds.
    assert all(0 < p.min <= p.max < 1 for p in dur)
    assert points(reader, "sonde.server.time_to_first_byte") == []  # nothing was streamed


def test_outermost_wrapping_puts_the_id_on_unhandled_500s(telemetry):
    # With add_middleware, Starlette's ServerErrorMiddleware sits outside and renders
    # the 500 itself; wrapping the whole app puts that response inside the middleware.
    _, _, handler = telemetry
    reader2 = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader2], views=sonde_views())
    outer = SondeMiddleware(make_app(), meter_provider=provider)
    (r,) = run(fire(outer, [("GET", "/boom", {"headers": {"X-Request-ID": "failing-1"}})]))
    assert r.status_code == 500 and r.headers["x-request-id"] == "failing-1"
    assert [(x.getMessage(), x.request_id) for x in handler.records] == [("about to explode", "failing-1")]
    (p,) = points(reader2, "http.server.request.duration")
    assert (p.count, p.attributes["http.response.status_code"], p.attributes["error.type"]) == (1, 500, "RuntimeError")
    (p,) = points(reader2, "http.server.response.body.size")
    assert p.sum == len(r.content)  # the error page is what the client got
    provider.shutdown()


def test_route_templates_under_mounts(telemetry):
    app, reader, _ = telemetry
    v2 = FastAPI()

    @v2.get("/items/{item_id}")
    async def v2_item(item_id: int):
        return {"id": item_id}

    async def files(scope, receive, send):  # a plain ASGI app, like StaticFiles
        await PlainTextResponse("file")(scope, receive, send)

    app.mount("/v2", v2)
    app.mount("/static", files)
    run(fire(app, [("GET", "/v2/items/7", {}), ("GET", "/static/a/b.css", {}), ("GET", "/items/x", {}),
                   ("GET", "/v2/nothing/here", {})]))
    routes = by_attr(points(reader, "http.server.request.duration"), "http.route")
    assert routes == {"/v2/items/{item_id}": 1, "/static/{path}": 1, "/items/{item_id}": 1, "/v2/{path}": 1}


@pytest.mark.parametrize("outermost", [False, True])
def test_fastapi_builtin_http_metrics_are_flagged(outermost, caplog):
    """FastAPI's own telemetry records the same two metrics once a provider is set;
    both at once would count every request twice, so the middleware says so."""

    def scopes_recording_duration(native_metrics: bool) -> set[str]:
        reader = InMemoryMetricReader()
        provider = MeterProvider(metric_readers=[reader], views=sonde_views())
        app = FastAPI(telemetry={"meter_provider": provider, "metrics": native_metrics, "tracing": False,
                                 "logs": False})
        app.get("/x")(lambda: {})
        served = SondeMiddleware(app, meter_provider=provider) if outermost else app
        if not outermost:
            app.add_middleware(SondeMiddleware, meter_provider=provider)
        run(fire(served, [("GET", "/x", {})] * 2))
        data = reader.get_metrics_data()
        provider.shutdown()
        return {sm.scope.name for rm in data.resource_metrics for sm in rm.scope_metrics
                for m in sm.metrics if m.name == "http.server.request.duration"}

    with caplog.at_level(logging.WARNING, logger="sonde.instrument"):
        assert scopes_recording_duration(native_metrics=True) == {"fastapi", "sonde.instrument"}
    ours = [r.getMessage() for r in caplog.records if r.name == "sonde.instrument"]
    assert len(ours) == 1 and "counted twice" in ours[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="sonde.instrument"):
        assert scopes_recording_duration(native_metrics=False) == {"sonde.instrument"}
    assert [r for r in caplog.records if r.name == "sonde.instrument"] == []


def test_body_sizes_fixed_and_chunked(telemetry):
    app, reader, _ = telemetry

    async def body_in_pieces():
        for piece in (b"a" * 700, b"b" * 300, b"c" * 24):
            yield piece

    async def go():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://model.test") as c:
            fixed = await c.post("/echo", content=b"x" * 1000)
            chunked = await c.post("/echo", content=body_in_pieces())
            plain = await c.get("/items/zz")
            return fixed, chunked, plain

    fixed, chunked, plain = run(go())
    assert len(fixed.content) == 1000 and len(chunked.content) == 1024
    req = points(reader, "http.server.request.body.size")
    assert sorted((p.count, p.sum) for p in req) == [(2, 2024)]  # the GET carried no body
    resp = points(reader, "http.server.response.body.size")
    sums = {p.attributes.get("http.route"): (p.count, p.sum) for p in resp}
    assert sums == {"/echo": (2, 2024), "/items/{item_id}": (1, len(plain.content))}


def test_streaming_time_to_first_byte_and_no_buffering(telemetry):
    app, reader, handler = telemetry
    sent: list[tuple[float, dict]] = []

    async def go():
        # Straight ASGI, so the arrival time of each message at the server is visible.
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
                 "scheme": "http", "path": "/stream", "raw_path": b"/stream", "root_path": "",
                 "query_string": b"", "headers": [(b"host", b"model.test")], "client": ("127.0.0.1", 1),
                 "server": ("model.test", 80)}
        done = asyncio.Event()

        async def receive():
            if not done.is_set():
                done.set()
                return {"type": "http.request", "body": b"", "more_body": False}
            await asyncio.sleep(3600)

        async def send(message):
            sent.append((time.perf_counter(), message))

        t0 = time.perf_counter()
        await app(scope, receive, send)
        return t0

    t0 = run(go())
    bodies = [(t - t0, m) for t, m in sent if m["type"] == "http.response.body" and m.get("body")]
    assert [m["body"] for _, m in bodies] == [b"token0 ", b"token1 ", b"token2 "]
    # Chunks leave as they are produced (0.2, 0.3, 0.4 s), not together at the end.
    assert bodies[0][0] < 0.3 and bodies[2][0] - bodies[0][0] >= 0.18

    ttfb = points(reader, "sonde.server.time_to_first_byte")
    dur = points(reader, "http.server.request.duration")
    assert [p.count for p in ttfb] == [1] and [p.count for p in dur] == [1]
    assert 0.19 <= ttfb[0].sum < 0.3, ttfb[0].sum
    assert dur[0].sum >= 0.48 and dur[0].sum - ttfb[0].sum >= 0.27
    headers = dict(sent[0][1]["headers"])
    rid = headers[b"x-request-id"].decode()
    assert [r.request_id for r in handler.records if r.getMessage() == "first token"] == [rid]


def test_request_ids_propagated_generated_and_on_log_records(telemetry):
    app, _, handler = telemetry
    given = "req-abc-123"
    responses = run(fire(app, [
        ("GET", "/ok", {"headers": {"X-Request-ID": given}}),
        ("GET", "/ok", {}),
        ("GET", "/sync", {}),
        ("GET", "/ok", {"headers": {"X-Request-ID": "has spaces\tand tabs"}}),
        ("GET", "/ok", {"headers": {"X-Request-ID": "x" * 129}}),
    ]))
    ids = [r.headers["x-request-id"] for r in responses]
    assert ids[0] == given
    for generated in ids[1:]:
        assert len(generated) == 32 and int(generated, 16) >= 0
    assert len(set(ids)) == 5
    # The endpoint saw the same id as the client, and so did its log records.
    assert [r.json()["request_id"] for r in responses] == ids
    assert [r.request_id for r in handler.records] == ids
    assert [len(r.headers.get_list("x-request-id")) for r in responses] == [1] * 5

    log.info("outside any request")
    assert handler.records[-1].request_id == "-"

    async def after_a_request_in_this_task():
        await fire(app, [("GET", "/ok", {})])  # ASGITransport runs the app in this very task
        return current_request_id()

    assert run(after_a_request_in_this_task()) is None  # the id does not outlive its request
    explicit = logging.LogRecord("x", logging.INFO, __file__, 1, "m", None, None)
    explicit.request_id = "mine"
    RequestIdFilter().filter(explicit)
    assert explicit.request_id == "mine"  # an id given in extra= wins


def test_active_requests_while_in_flight_and_back_to_zero(telemetry):
    app, reader, _ = telemetry

    def active():
        return {p.attributes["http.request.method"]: p.value for p in points(reader, "http.server.active_requests")}

    async def go():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://model.test") as c:
            tasks = [asyncio.create_task(c.get("/wait")) for _ in range(5)]
            for _ in range(200):
                await asyncio.sleep(0.01)
                if active().get("GET") == 5:
                    break
            in_flight = active()
            app.state.release.set()
            await asyncio.gather(*tasks)
            return in_flight

    assert run(go()) == {"GET": 5}
    assert active() == {"GET": 0}
    run(fire(app, [("POST", "/echo", {"content": b"1"}), ("BREW", "/ok", {})]))
    assert active() == {"GET": 0, "POST": 0, "_OTHER": 0}


def _quantile_from_buckets(point, q: float) -> float:
    """The nearest-rank quantile read off an exponential histogram: the bucket's log midpoint."""
    rank = max(1, math.ceil(q * point.count))
    base = 2 ** (2 ** -point.scale)
    seen = point.zero_count
    for i, n in enumerate(point.positive.bucket_counts):
        seen += n
        if seen >= rank:
            return base ** (point.positive.offset + i + 0.5)
    raise AssertionError("rank beyond the histogram")


def _record(max_size: int | None, values: list[float]):
    reader = InMemoryMetricReader()
    views = sonde_views() if max_size is None else [View(
        instrument_name="http.server.request.duration",
        aggregation=ExponentialBucketHistogramAggregation(max_size=max_size, max_scale=20))]
    provider = MeterProvider(metric_readers=[reader], views=views)
    hist = provider.get_meter("t").create_histogram("http.server.request.duration", unit="s")
    for v in values:
        hist.record(v, {"http.response.status_code": 200})
    (point,) = points(reader, "http.server.request.duration")
    provider.shutdown()
    return point


def test_exponential_view_keeps_scale_6_and_1_percent_quantiles():
    # A model server's spread: health checks at 0.2 ms, most requests 20-500 ms, a long
    # tail of generations up to a minute. Six decades; SDK's default 160 buckets get scale 2.
    rng = random.Random(42)
    values = [rng.lognormvariate(math.log(0.08), 1.2) for _ in range(20_000)]
    values += [0.0002] * 200 + [60.0] * 20
    exact = sorted(values)
    point = _record(None, values)
    assert point.count == len(values) and point.scale >= 6, point.scale
    for q in (0.5, 0.9, 0.95, 0.99, 0.999):
        want = exact[math.ceil(q * len(exact)) - 1]
        got = _quantile_from_buckets(point, q)
        assert abs(got - want) / want <= 0.01, (q, got, want)
    # Why the view matters: the same data at OTel's default size, or at 320 buckets,
    # lands below scale 6, where a bucket is wider than the 1% budget allows.
    assert _record(160, values).scale <= 3
    assert _record(320, values).scale <= 4
