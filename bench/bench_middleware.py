"""Per-request overhead of SondeMiddleware, against the bare app and OpenTelemetry's own.

    .venv/bin/python bench/bench_middleware.py [--iterations 2000] [--rounds 21]

A trivial FastAPI app is called straight through ASGI (no HTTP client, no socket: the
difference between two variants is then the middleware alone) in one event loop, in
rounds that interleave the variants (in a rotating order) so that drift (CPU frequency,
other load) hits all of them alike. Time is the process's CPU time, which a busy shared
machine inflates less than wall time. A variant's overhead is taken per round, against
the bare app's run of the same round, and summarised by the median over rounds: pairing
cancels most of the load that comes and goes between rounds.

Variants, all on an SDK MeterProvider with an in-memory reader (collection is not on
the request path, so no exporter is needed):
  bare          the app alone
  sonde         SondeMiddleware on a provider as configure() builds it (sonde_views,
                exemplars off)
  sonde+exempl  the same on a default SDK provider (trace-based exemplar sampling on)
  sonde-noop    SondeMiddleware on the API's NoOpMeterProvider: the middleware's own
                cost (ASGI wrapping, request id, context variable, attributes), the rest
                of the sonde figure being the SDK's recording
  otel-fastapi  opentelemetry-instrumentation-fastapi 0.66b2 (FastAPIInstrumentor,
                metrics on the same kind of provider; tracing through the API's no-op
                tracer, i.e. its cheapest configuration)
Two endpoints: GET /ping (no request body) and POST /predict (a 256-byte JSON body,
so request body size is recorded too).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

from fastapi import FastAPI, Request
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from sonde.instrument import SondeMiddleware, sonde_views

BODY = json.dumps({"inputs": [round(i * 0.37, 3) for i in range(40)]}).encode()[:256].ljust(256, b" ")


def make_app() -> FastAPI:
    app = FastAPI()

    @app.get("/ping")
    async def ping():
        return {"ok": True}

    @app.post("/predict")
    async def predict(request: Request):
        body = await request.body()
        return {"n": len(body)}

    return app


def provider(exemplars: bool) -> MeterProvider:
    kw = {} if exemplars else {"exemplar_filter": AlwaysOffExemplarFilter()}
    return MeterProvider(metric_readers=[InMemoryMetricReader()], views=sonde_views(), **kw)


def variants() -> dict:
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    apps = {"bare": make_app()}
    apps["sonde"] = make_app()
    apps["sonde"].add_middleware(SondeMiddleware, meter_provider=provider(exemplars=False))
    apps["sonde+exempl"] = make_app()
    apps["sonde+exempl"].add_middleware(SondeMiddleware, meter_provider=provider(exemplars=True))
    apps["sonde-noop"] = make_app()
    apps["sonde-noop"].add_middleware(SondeMiddleware, meter_provider=NoOpMeterProvider())
    apps["otel-fastapi"] = make_app()
    FastAPIInstrumentor.instrument_app(apps["otel-fastapi"], meter_provider=provider(exemplars=False))
    return apps


def scope_for(method: str, path: str) -> tuple[dict, bytes]:
    headers = [(b"host", b"model.test"), (b"user-agent", b"bench"), (b"accept", b"*/*")]
    body = b""
    if method == "POST":
        body = BODY
        headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.4"}, "http_version": "1.1",
             "method": method, "scheme": "http", "path": path, "raw_path": path.encode(), "root_path": "",
             "query_string": b"", "headers": headers, "client": ("127.0.0.1", 50000),
             "server": ("model.test", 80), "state": {}}
    return scope, body


async def run_many(app, method: str, path: str, n: int) -> float:
    """Mean seconds per request over ``n`` sequential requests."""
    template, body = scope_for(method, path)
    request_msg = {"type": "http.request", "body": body, "more_body": False}
    status = []

    async def receive():
        return request_msg

    async def send(message):
        if message["type"] == "http.response.start":
            status.append(message["status"])

    t0 = time.process_time()
    for _ in range(n):
        await app(dict(template), receive, send)  # a fresh scope: routers write into it
    elapsed = time.process_time() - t0
    assert set(status) == {200}, set(status)
    return elapsed / n


def sdk_record_cost(n: int = 50_000) -> float:
    """One histogram.record on the configure()-style provider: the floor per recorded value."""
    hist = provider(exemplars=False).get_meter("bench").create_histogram("http.server.request.duration", unit="s")
    attrs = {"http.request.method": "GET", "url.scheme": "http", "http.response.status_code": 200,
             "http.route": "/ping"}
    best = float("inf")
    for _ in range(5):
        t0 = time.process_time()
        for i in range(n):
            hist.record(0.001 + (i % 100) * 1e-4, attrs)
        best = min(best, time.process_time() - t0)
    return best / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=2000, help="requests per variant per round")
    ap.add_argument("--rounds", type=int, default=21)
    args = ap.parse_args()
    apps = variants()
    names = list(apps)
    endpoints = [("GET", "/ping"), ("POST", "/predict")]

    async def bench() -> dict:
        results: dict = {(name, ep): [] for name in apps for ep in endpoints}
        for name, app in apps.items():  # warm up: middleware stacks, caches, first series
            for method, path in endpoints:
                await run_many(app, method, path, 500)
        for r in range(args.rounds):
            order = names[r % len(names):] + names[:r % len(names)]  # no variant always runs first
            for method, path in endpoints:
                for name in order:
                    results[(name, (method, path))].append(
                        await run_many(apps[name], method, path, args.iterations))
        return results

    results = asyncio.run(bench())
    print(f"{args.rounds} rounds x {args.iterations} requests per variant and endpoint; CPU time per request.")
    print("overhead: the median over rounds of (variant - bare) within the same round, "
          "with the rounds' quartiles in brackets.\n")
    print(f"{'endpoint':<15} {'variant':<13} {'us/request':>10} {'overhead us':>24} {'x bare':>7} {'x sonde':>8}")
    for method, path in endpoints:
        ep = (method, path)
        bare = results[("bare", ep)]
        paired = {name: [t - b for t, b in zip(results[(name, ep)], bare)] for name in names}
        sonde_over = statistics.median(paired["sonde"])
        for name in names:
            t = statistics.median(results[(name, ep)])
            over = ""
            if name != "bare":
                q1, q2, q3 = statistics.quantiles(paired[name], n=4)
                over = f"{statistics.median(paired[name]) * 1e6:7.1f} [{q1 * 1e6:6.1f} ..{q3 * 1e6:6.1f}]"
            vs_sonde = "" if name in ("bare", "sonde") else f"{statistics.median(paired[name]) / sonde_over:8.2f}"
            print(f"{method + ' ' + path:<15} {name:<13} {t * 1e6:10.1f} {over:>24} "
                  f"{t / statistics.median(bare):7.2f} {vs_sonde:>8}")
        print()
    print("x sonde: that variant's overhead over SondeMiddleware's.")
    print(f"floor: one OTel SDK histogram.record (exponential view, exemplars off) = {sdk_record_cost() * 1e6:.1f} us;"
          " SondeMiddleware makes 2 per GET /ping and 3 per POST /predict (TTFB is for streamed bodies only).")


if __name__ == "__main__":
    main()
