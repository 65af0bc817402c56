"""OTLP messages from bytes: protobuf or OTLP/JSON, both into the same view messages.

Protobuf bodies go straight into the view classes of :mod:`.proto`. JSON bodies
(OTLP/JSON: lowerCamelCase names, 64-bit ints as strings, enums as ints, trace and
span ids in hex) are parsed by ``google.protobuf.json_format`` into the generated
classes, then re-encoded and read through the view, so both paths end in the same
messages. Which encoding a body is in, and how it arrived (Content-Type, gzip, size
limits), is the transport's business: ``sonde.api.otlp_http``.
"""

from __future__ import annotations

import base64
import binascii
import enum
import json

from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message

from .._exceptions import BadRequest
from . import proto


class Encoding(enum.Enum):
    """How an OTLP message is written."""

    PROTOBUF = "protobuf"
    JSON = "json"


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


#: per signal: (the generated request class, its view class)
_CLASSES = {
    "metrics": (proto.MetricsRequest, proto.ViewMetricsRequest),
    "logs": (proto.LogsRequest, proto.ViewLogsRequest),
    "traces": (proto.TracesRequest, proto.ViewTracesRequest),
}


def _fix_json_ids(doc: dict, signal: str) -> None:
    ids = ("traceId", "spanId", "trace_id", "span_id")
    if signal == "traces":
        span_ids = (*ids, "parentSpanId", "parent_span_id")
        for rs in _items(doc, "resourceSpans", "resource_spans"):
            for ss in _items(rs, "scopeSpans", "scope_spans"):
                for span in _items(ss, "spans"):
                    _hex_ids_to_base64(span, span_ids)
                    for link in _items(span, "links"):
                        _hex_ids_to_base64(link, ids)
        return
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


def decode(body: bytes, encoding: Encoding, signal: str) -> Message:
    """``body``, written in ``encoding``, as the view message of ``signal`` ('metrics',
    'logs' or 'traces'); 400 if it does not decode."""
    generated, view = _CLASSES[signal]
    name = generated.DESCRIPTOR.name
    try:
        if encoding is Encoding.PROTOBUF:
            return view.FromString(body)
        doc = json.loads(body)
        if not isinstance(doc, dict):
            raise BadRequest(f"body does not decode as an OTLP/JSON {name}: not a JSON object", field="body")
        _fix_json_ids(doc, signal)
        msg = json_format.ParseDict(doc, generated(), ignore_unknown_fields=True)
        return view.FromString(msg.SerializeToString())
    except DecodeError as exc:
        raise BadRequest(f"body does not decode as a protobuf {name}: {proto.why_not(exc)}", field="body") from None
    except (json_format.ParseError, ValueError, RecursionError, binascii.Error) as exc:
        raise BadRequest(f"body does not decode as an OTLP/JSON {name}: {exc}", field="body") from None
