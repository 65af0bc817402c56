"""OTLP/HTTP receivers: ``POST /v1/otlp/v1/metrics`` and ``POST /v1/otlp/v1/logs``.

So ``OTEL_EXPORTER_OTLP_ENDPOINT=http://host:port/v1/otlp`` works with any
OpenTelemetry SDK or Collector. The client hears 200 only once its rows are
committed. Errors answer in the request's encoding: a protobuf request gets a
protobuf ``google.rpc.Status`` (OTLP/HTTP), anything else Sonde's JSON envelope
(framing and both answers: :mod:`.otlp_http`).
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Request, Response
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool

from ..ingest.decode import Encoding, decode
from ..ingest.pipeline import Ingestor
from ..ingest.proto import LogsResponse, MetricsResponse
from ..store.accounts import ApiKey
from . import auth, errors, otlp_http


class _OtlpRoute(APIRoute):
    """Answers errors of protobuf requests (auth included) with ``google.rpc.Status``."""

    def get_route_handler(self):
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except Exception as exc:
                if otlp_http.encoding(request.headers.get("content-type")) is not Encoding.PROTOBUF:
                    raise  # the app's handlers answer with the JSON envelope
                return otlp_http.status_response(errors.failure(exc))

        return route


router = APIRouter(route_class=_OtlpRoute, tags=["otlp"])


async def _export(request: Request, key: ApiKey, signal: str) -> Response:
    enc = otlp_http.require_encoding(request.headers.get("content-type"))
    body = await otlp_http.read_body(
        request.stream(),
        limit=request.app.state.config.max_body_bytes,
        content_length=request.headers.get("content-length"),
        content_encoding=request.headers.get("content-encoding"),
    )
    ingestor: Ingestor = request.app.state.ingestor

    def work():
        msg = decode(body, enc, signal)
        return ingestor.metrics(key.ws, msg) if signal == "metrics" else ingestor.logs(key.ws, msg)

    queued = await run_in_threadpool(work)
    # shield: a cancelled request must not cancel the writer's future under it
    await asyncio.shield(asyncio.wrap_future(queued.future))
    if signal == "metrics":
        resp = MetricsResponse()
        if queued.rejected:
            resp.partial_success.rejected_data_points = queued.rejected
            resp.partial_success.error_message = queued.message
    else:
        resp = LogsResponse()
        if queued.rejected:
            resp.partial_success.rejected_log_records = queued.rejected
            resp.partial_success.error_message = queued.message
    return otlp_http.response(resp, enc)


@router.post("/v1/otlp/v1/metrics", summary="OTLP/HTTP metrics receiver")
async def export_metrics(request: Request, key: ApiKey = Depends(auth.ingest)) -> Response:
    return await _export(request, key, "metrics")


@router.post("/v1/otlp/v1/logs", summary="OTLP/HTTP logs receiver")
async def export_logs(request: Request, key: ApiKey = Depends(auth.ingest)) -> Response:
    return await _export(request, key, "logs")
