"""OTLP/HTTP receivers: ``POST /v1/otlp/v1/metrics`` and ``POST /v1/otlp/v1/logs``.

So ``OTEL_EXPORTER_OTLP_ENDPOINT=http://host:port/v1/otlp`` works with any
OpenTelemetry SDK or Collector. The client hears 200 only once its rows are
committed. Errors answer in the request's encoding: a protobuf request gets a
protobuf ``google.rpc.Status`` (OTLP/HTTP), anything else Sonde's JSON envelope.
"""

from __future__ import annotations

import asyncio
import logging
import threading

from fastapi import APIRouter, Depends, Request, Response
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool

from .._exceptions import Overloaded, SondeError
from ..ingest import decode as dec
from ..ingest.pipeline import Ingestor
from ..ingest.proto import LogsResponse, MetricsResponse
from ..store.accounts import ApiKey
from . import auth

log = logging.getLogger("sonde.otlp")
_init_lock = threading.Lock()


class _OtlpRoute(APIRoute):
    """Answers errors of protobuf requests (auth included) with ``google.rpc.Status``."""

    def get_route_handler(self):
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except Exception as exc:
                if dec.media_type(request.headers.get("content-type")) != dec.PROTOBUF:
                    raise
                if not isinstance(exc, SondeError):
                    log.exception("unhandled error in OTLP receiver", exc_info=exc)
                    exc = SondeError("internal server error")
                elif exc.status >= 500 and not isinstance(exc, Overloaded):
                    log.exception("OTLP receiver failed", exc_info=exc)
                headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, Overloaded) else None
                return Response(dec.status_body(exc), status_code=exc.status, media_type=dec.PROTOBUF, headers=headers)

        return route


router = APIRouter(route_class=_OtlpRoute, tags=["otlp"])


def _ingestor(request: Request) -> Ingestor:
    # Created on first use: the store exists only once the app's lifespan has run,
    # and loading the cumulative state reads the store.
    state = request.app.state
    ing = getattr(state, "ingestor", None)
    if ing is None:
        with _init_lock:
            ing = getattr(state, "ingestor", None)
            if ing is None:
                sync = state.config.state_sync
                shared = sync == "store" or (sync == "auto" and not state.store.ex.exclusive)
                ing = state.ingestor = Ingestor(state.store, state.inventory, shared_state=shared)
    return ing


async def _export(request: Request, key: ApiKey, signal: str) -> Response:
    kind = dec.require_media_type(request.headers.get("content-type"))
    body = await dec.read_body(
        request.stream(),
        limit=request.app.state.config.max_body_bytes,
        content_length=request.headers.get("content-length"),
        content_encoding=request.headers.get("content-encoding"),
    )
    ingestor = getattr(request.app.state, "ingestor", None) or await run_in_threadpool(_ingestor, request)

    def work():
        msg = dec.decode(body, kind, signal)
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
    return Response(dec.encode_response(resp, kind), media_type=kind)


@router.post("/v1/otlp/v1/metrics", summary="OTLP/HTTP metrics receiver")
async def export_metrics(request: Request, key: ApiKey = Depends(auth.ingest)) -> Response:
    return await _export(request, key, "metrics")


@router.post("/v1/otlp/v1/logs", summary="OTLP/HTTP logs receiver")
async def export_logs(request: Request, key: ApiKey = Depends(auth.ingest)) -> Response:
    return await _export(request, key, "logs")
