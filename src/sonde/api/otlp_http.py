"""OTLP/HTTP framing: media types, the request body, responses and errors in kind.

A request's Content-Type says how its body is encoded (protobuf or OTLP/JSON); any
other is 415, as is a Content-Encoding other than gzip. The body is read under
``max_body_bytes`` and gunzipped without ever holding more than that. Responses and
errors come back in the request's own encoding: protobuf requests get a protobuf
``Export*ServiceResponse`` / ``google.rpc.Status`` as OTLP/HTTP specifies; JSON
requests get OTLP/JSON responses and Sonde's JSON error envelope.
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator

from fastapi import Response
from google.protobuf import json_format
from google.protobuf.message import Message
from google.rpc import code_pb2, status_pb2

from .._exceptions import BadRequest, PayloadTooLarge, UnsupportedMediaType
from ..ingest.decode import Encoding
from .errors import Failure

PROTOBUF = "application/x-protobuf"
JSON = "application/json"

_ENCODINGS = {PROTOBUF: Encoding.PROTOBUF, "application/protobuf": Encoding.PROTOBUF, JSON: Encoding.JSON}
#: the media type a response in each encoding is labelled with
MEDIA_TYPE = {Encoding.PROTOBUF: PROTOBUF, Encoding.JSON: JSON}

_GRPC_CODES = {
    400: code_pb2.INVALID_ARGUMENT, 401: code_pb2.UNAUTHENTICATED, 403: code_pb2.PERMISSION_DENIED,
    404: code_pb2.NOT_FOUND, 413: code_pb2.RESOURCE_EXHAUSTED, 415: code_pb2.INVALID_ARGUMENT,
    429: code_pb2.RESOURCE_EXHAUSTED, 503: code_pb2.UNAVAILABLE,
}


def encoding(content_type: str | None) -> Encoding | None:
    """The body encoding a Content-Type declares, or None for one OTLP/HTTP does not use."""
    return _ENCODINGS.get((content_type or "").split(";", 1)[0].strip().lower())


def require_encoding(content_type: str | None) -> Encoding:
    found = encoding(content_type)
    if found is None:
        raise UnsupportedMediaType(
            f"Content-Type {content_type or '(none)'!r} is not supported; send {PROTOBUF} or {JSON}",
            field="Content-Type",
        )
    return found


def _too_large(limit: int, what: str) -> PayloadTooLarge:
    return PayloadTooLarge(f"request body {what} is over the limit of {limit} bytes", field="body")


class _Gunzip:
    """Inflates gzip (several members too, as RFC 1952 allows) into at most ``limit`` bytes."""

    def __init__(self, limit: int):
        self.limit = limit
        self.out = bytearray()
        self._z = zlib.decompressobj(16 + zlib.MAX_WBITS)

    def feed(self, data: bytes) -> None:
        while data:
            try:
                # max_length stops inflation one byte past the limit, whatever the ratio
                self.out += self._z.decompress(data, self.limit + 1 - len(self.out))
            except zlib.error as exc:
                raise BadRequest(f"body is not valid gzip: {exc}", field="body") from None
            if len(self.out) > self.limit:
                raise _too_large(self.limit, "after gzip")
            data = b""
            if self._z.eof and self._z.unused_data:  # the next member
                data = self._z.unused_data
                self._z = zlib.decompressobj(16 + zlib.MAX_WBITS)

    def finish(self) -> bytes:
        if not self._z.eof:
            raise BadRequest("gzip body is truncated", field="body")
        return bytes(self.out)


async def read_body(
    chunks: AsyncIterator[bytes], *, limit: int, content_length: str | None, content_encoding: str | None
) -> bytes:
    """The request body, gunzipped, never holding more than ``limit`` bytes of it.

    Content-Length is checked before anything is read; the stream and the gzip
    output are counted as they come, so neither a lying client nor a gzip bomb can
    make the server hold more than ``limit`` bytes.
    """
    content_coding = (content_encoding or "identity").strip().lower()
    if content_coding not in ("identity", "gzip", "x-gzip"):
        raise UnsupportedMediaType(
            f"Content-Encoding {content_encoding!r} is not supported; send gzip or none", field="Content-Encoding"
        )
    if content_length is not None:
        try:
            declared = int(content_length)
        except ValueError:
            raise BadRequest("Content-Length is not a number", field="Content-Length") from None
        if declared > limit:
            raise _too_large(limit, f"({declared} bytes)")
    gz = _Gunzip(limit) if content_coding != "identity" else None
    out = bytearray()
    received = 0
    async for chunk in chunks:
        received += len(chunk)
        if received > limit:
            raise _too_large(limit, "as sent")
        if gz is None:
            out += chunk
        else:
            gz.feed(chunk)
    if gz is None:
        return bytes(out)
    return gz.finish() if received else b""


def response(msg: Message, enc: Encoding) -> Response:
    """An export response in the request's encoding."""
    body = msg.SerializeToString() if enc is Encoding.PROTOBUF else json_format.MessageToJson(msg, indent=None).encode()
    return Response(body, media_type=MEDIA_TYPE[enc])


def status_response(f: Failure) -> Response:
    """An error answered to a protobuf request: a ``google.rpc.Status`` (OTLP/HTTP)."""
    status = status_pb2.Status(code=_GRPC_CODES.get(f.status, code_pb2.INTERNAL), message=f.message)
    return Response(status.SerializeToString(), status_code=f.status, media_type=PROTOBUF, headers=f.headers)
