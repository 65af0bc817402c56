"""OTLP/HTTP receivers: ``POST /v1/otlp/v1/metrics``, ``/v1/otlp/v1/logs`` and ``/v1/otlp/v1/traces``.

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
from ..ingest.offload import SpanDecoders
from ..ingest.pipeline import Ingestor
from ..ingest.proto import LogsResponse, MetricsResponse, TracesResponse
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
    offload: SpanDecoders = request.app.state.span_decoders
    if signal == "traces" and offload.processes:
        decoded = offload.submit(key.ws, body, enc)
        await asyncio.wait([asyncio.wrap_future(decoded.future)])
        queued = await run_in_threadpool(lambda: ingestor.spans(key.ws, offload.rows(decoded)))
    else:
        def work():
            with request.app.state.decoders:  # in the thread: any event loop may call this app
                return getattr(ingestor, signal)(key.ws, decode(body, enc, signal))

        queued = await run_in_threadpool(work)
    # shield: a cancelled request must not cancel the writer's future under it
    await asyncio.shield(asyncio.wrap_future(queued.future))
    response, rejected_field = _RESPONSES[signal]
    resp = response()
    if queued.rejected:
        setattr(resp.partial_success, rejected_field, queued.rejected)
        resp.partial_success.error_message = queued.message
    return otlp_http.response(resp, enc)


#: per signal: the export response and its partial_success count field
_RESPONSES = {
    "metrics": (MetricsResponse, "rejected_data_points"),
    "logs": (LogsResponse, "rejected_log_records"),
    "traces": (TracesResponse, "rejected_spans"),
}


@router.post("/v1/otlp/v1/metrics", summary="OTLP/HTTP metrics receiver")
async def export_metrics(request: Request, key: ApiKey = Depends(auth.ingest)) -> Response:
    return await _export(request, key, "metrics")


@router.post("/v1/otlp/v1/logs", summary="OTLP/HTTP logs receiver")
async def export_logs(request: Request, key: ApiKey = Depends(auth.ingest)) -> Response:
    return await _export(request, key, "logs")


@router.post("/v1/otlp/v1/traces", summary="OTLP/HTTP traces receiver")
async def export_traces(request: Request, key: ApiKey = Depends(auth.ingest)) -> Response:
    return await _export(request, key, "traces")
