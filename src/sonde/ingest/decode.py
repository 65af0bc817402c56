"""OTLP/HTTP bodies: content type, size limit, gzip, decoding, response encoding.

Protobuf bodies go straight into the view classes of :mod:`.proto`. JSON bodies
(OTLP/JSON: lowerCamelCase names, 64-bit ints as strings, enums as ints, trace and
span ids in hex) are parsed by ``google.protobuf.json_format`` into the generated
classes, then re-encoded and read through the view, so both paths end in the same
messages. Responses and errors come back in the request's own encoding: protobuf
requests get a protobuf ``ExportMetricsServiceResponse`` / ``google.rpc.Status``
as OTLP/HTTP specifies; JSON requests get OTLP/JSON responses and Sonde's JSON
error envelope.
"""

from __future__ import annotations

import base64
import binascii
import json
import zlib
from collections.abc import AsyncIterator

from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from google.rpc import code_pb2, status_pb2

from .._exceptions import BadRequest, PayloadTooLarge, SondeError
from . import proto

PROTOBUF = "application/x-protobuf"
JSON = "application/json"

_GRPC_CODES = {
    400: code_pb2.INVALID_ARGUMENT, 401: code_pb2.UNAUTHENTICATED, 403: code_pb2.PERMISSION_DENIED,
    404: code_pb2.NOT_FOUND, 413: code_pb2.RESOURCE_EXHAUSTED, 415: code_pb2.INVALID_ARGUMENT,
    429: code_pb2.RESOURCE_EXHAUSTED, 503: code_pb2.UNAVAILABLE,
}


class UnsupportedMediaType(BadRequest):
    status = 415
    code = "unsupported_media_type"


def media_type(content_type: str | None) -> str | None:
    """``application/x-protobuf`` or ``application/json`` from a Content-Type, else None."""
    base = (content_type or "").split(";", 1)[0].strip().lower()
    if base in (PROTOBUF, "application/protobuf"):
        return PROTOBUF
    if base == JSON:
        return JSON
    return None


def require_media_type(content_type: str | None) -> str:
    kind = media_type(content_type)
    if kind is None:
        raise UnsupportedMediaType(
            f"Content-Type {content_type or '(none)'!r} is not supported; send {PROTOBUF} or {JSON}",
            field="Content-Type",
        )
    return kind


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
    encoding = (content_encoding or "identity").strip().lower()
    if encoding not in ("identity", "gzip", "x-gzip"):
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
    gz = _Gunzip(limit) if encoding != "identity" else None
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


def _hex_ids_to_base64(obj: dict, keys: tuple[str, ...]) -> None:
    # OTLP/JSON writes trace and span ids in hex; json_format expects base64 bytes.
    for key in keys:
        value = obj.get(key)
        if isinstance(value, str) and value:
            try:
                obj[key] = base64.b64encode(bytes.fromhex(value)).decode()
            except ValueError:
                raise BadRequest(f"{key} {value!r} is not hex", field=key) from None


def _items(obj, *keys: str) -> list[dict]:
    """The dicts in ``obj[key]`` for the first key present (camelCase or snake_case)."""
    if not isinstance(obj, dict):
        return []
    for key in keys:
        value = obj.get(key)
        if isinstance(value, list):
            return [x for x in value if isinstance(x, dict)]
    return []


def _fix_json_ids(doc: dict, signal: str) -> None:
    ids = ("traceId", "spanId", "trace_id", "span_id")
    if signal == "logs":
        for rl in _items(doc, "resourceLogs", "resource_logs"):
            for sl in _items(rl, "scopeLogs", "scope_logs"):
                for rec in _items(sl, "logRecords", "log_records"):
                    _hex_ids_to_base64(rec, ids)
        return
    for rm in _items(doc, "resourceMetrics", "resource_metrics"):
        for sm in _items(rm, "scopeMetrics", "scope_metrics"):
            for m in _items(sm, "metrics"):
                for body in m.values():
                    for p in _items(body, "dataPoints", "data_points"):
                        for ex in _items(p, "exemplars"):
                            _hex_ids_to_base64(ex, ids)


def decode(body: bytes, kind: str, signal: str) -> Message:
    """``body`` as the view message of ``signal`` ('metrics' or 'logs'); 400 if it does not decode."""
    generated = proto.MetricsRequest if signal == "metrics" else proto.LogsRequest
    view = proto.ViewMetricsRequest if signal == "metrics" else proto.ViewLogsRequest
    name = generated.DESCRIPTOR.name
    try:
        if kind == PROTOBUF:
            return view.FromString(body)
        doc = json.loads(body)
        if not isinstance(doc, dict):
            raise BadRequest(f"body does not decode as an OTLP/JSON {name}: not a JSON object", field="body")
        _fix_json_ids(doc, signal)
        msg = json_format.ParseDict(doc, generated(), ignore_unknown_fields=True)
        return view.FromString(msg.SerializeToString())
    except DecodeError as exc:
        raise BadRequest(f"body does not decode as a protobuf {name}: {exc or 'malformed'}", field="body") from None
    except (json_format.ParseError, ValueError, RecursionError, binascii.Error) as exc:
        raise BadRequest(f"body does not decode as an OTLP/JSON {name}: {exc}", field="body") from None


def encode_response(msg: Message, kind: str) -> bytes:
    if kind == PROTOBUF:
        return msg.SerializeToString()
    return json_format.MessageToJson(msg, indent=None).encode()


def status_body(exc: SondeError) -> bytes:
    """A ``google.rpc.Status`` for an error answered to a protobuf request (OTLP/HTTP)."""
    code = _GRPC_CODES.get(exc.status, code_pb2.INTERNAL)
    return status_pb2.Status(code=code, message=exc.message).SerializeToString()
