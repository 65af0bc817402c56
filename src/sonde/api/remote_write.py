"""``POST /api/v1/write``: Prometheus remote write 1.0 in (docs/remote-write.md).

The framing is the protocol's: ``Content-Type: application/x-protobuf`` (remote write
2.0's ``proto=io.prometheus.write.v2.Request`` is refused, so a sender that can fall
back does), ``Content-Encoding: snappy`` (block format), and
``X-Prometheus-Remote-Write-Version`` 0.1.x when sent; anything else is 415 naming the
header. The compressed body is read under ``max_body_bytes`` and refused (413) when
its declared uncompressed length is over it, before anything is inflated. The answer
is 204 once the rows are durable; samples skipped are counted in
``X-Sonde-Rejected`` (with the reasons in ``X-Sonde-Rejected-Reasons``), since remote
write has no partial-success body. Errors use the JSON envelope: Prometheus retries
5xx and 429 and drops a batch on other 4xx.
"""

from __future__ import annotations

import asyncio
import logging

import cramjam
from fastapi import APIRouter, Depends, Request, Response
from starlette.concurrency import run_in_threadpool

from .._exceptions import BadRequest, PayloadTooLarge, UnsupportedMediaType
from ..ingest import remote_write
from ..store.accounts import ApiKey
from . import auth, otlp_http

router = APIRouter(tags=["remote-write"])
log = logging.getLogger("sonde.remote_write")

_PROTO_V1 = "prometheus.writerequest"
#: longest reasons header: enough for a few reasons, never a huge header
_REASONS_MAX = 512


def check_headers(content_type: str | None, content_encoding: str | None, version: str | None) -> None:
    media, _, params = (content_type or "").partition(";")
    if media.strip().lower() not in ("application/x-protobuf", "application/protobuf"):
        raise UnsupportedMediaType(
            f"Content-Type {content_type or '(none)'!r} is not remote write; send application/x-protobuf",
            field="Content-Type")
    for param in params.split(";"):
        key, _, value = param.partition("=")
        if key.strip().lower() == "proto" and value.strip().strip('"').lower() != _PROTO_V1:
            raise UnsupportedMediaType(
                f"Content-Type proto={value.strip()} is not supported; Sonde reads remote write 1.0 "
                "(proto=prometheus.WriteRequest)", field="Content-Type")
    if (content_encoding or "").strip().lower() != "snappy":
        raise UnsupportedMediaType(
            f"Content-Encoding {content_encoding or '(none)'!r} is not supported; remote write bodies are snappy",
            field="Content-Encoding")
    if version is not None and not version.strip().startswith("0.1."):
        raise UnsupportedMediaType(
            f"X-Prometheus-Remote-Write-Version {version!r} is not supported; Sonde reads 0.1.0 (remote write 1.0)",
            field="X-Prometheus-Remote-Write-Version")


def unsnappy(body: bytes, limit: int) -> bytes:
    """The snappy block ``body`` inflated, refused over ``limit`` bytes before inflating."""
    try:
        size = cramjam.snappy.decompress_raw_len(body)
        if size > limit:
            raise PayloadTooLarge(f"request body after snappy ({size} bytes) is over the limit of {limit} bytes",
                                  field="body")
        if not body:
            raise cramjam.DecompressionError("empty body")
        return bytes(cramjam.snappy.decompress_raw(body))
    except cramjam.DecompressionError as exc:
        raise BadRequest(f"body is not snappy block format: {exc}", field="body") from None


def _header(text: str) -> str:
    text = text.encode("ascii", "replace").decode()
    return text if len(text) <= _REASONS_MAX else text[:_REASONS_MAX - 3] + "..."


@router.post("/api/v1/write", status_code=204, response_class=Response,
             summary="Prometheus remote write 1.0 receiver")
async def write(request: Request, key: ApiKey = Depends(auth.ingest)) -> Response:
    h = request.headers
    check_headers(h.get("content-type"), h.get("content-encoding"), h.get("x-prometheus-remote-write-version"))
    limit = request.app.state.config.max_body_bytes
    # the compressed body: read under the same limit, never inflated by read_body
    body = await otlp_http.read_body(request.stream(), limit=limit, content_length=h.get("content-length"),
                                     content_encoding=None)
    ingestor = request.app.state.ingestor

    def work() -> remote_write.Written:
        with request.app.state.decoders:
            return remote_write.write(ingestor, key.ws, unsnappy(body, limit))

    written = await run_in_threadpool(work)
    # shield: a cancelled request must not cancel the writer's future under it
    await asyncio.shield(asyncio.wrap_future(written.queued.future))
    headers = {}
    if written.rejected:
        log.warning("remote write to workspace %s: %s", key.ws, written.message)
        headers = {"X-Sonde-Rejected": str(written.rejected), "X-Sonde-Rejected-Reasons": _header(written.message)}
    return Response(status_code=204, headers=headers)
