"""OTLP message classes, and a faster view of the same wire format.

Everything is decoded by protobuf's own parser (upb) from opentelemetry-proto's
descriptors; nothing here parses bytes by hand.

Why a view: reading ``point.attributes`` through the generated classes makes a
Python object per KeyValue and per AnyValue, about 1 us per attribute, which alone
would cap ingest near 300k points/s. The view classes are built at import from the
very same descriptors with one change: data point and log record ``attributes``
(field 7 / 6, ``repeated KeyValue``) are declared ``repeated bytes``, which the
protobuf wire format allows for any length-delimited field. Each point then hands
out its attributes as the raw encoded KeyValues: a hashable series key for free,
and each distinct KeyValue is decoded once, by the generated ``KeyValue`` class
(:func:`decode_kv`), and cached. A KeyValue that does not decode is a 400, exactly
as if the whole request had been decoded with the generated classes.
"""

from __future__ import annotations

import base64
import json

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.logs.v1 import logs_pb2
from opentelemetry.proto.metrics.v1 import metrics_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from .._exceptions import BadRequest

#: the generated (reference) classes
MetricsRequest = metrics_service_pb2.ExportMetricsServiceRequest
MetricsResponse = metrics_service_pb2.ExportMetricsServiceResponse
LogsRequest = logs_service_pb2.ExportLogsServiceRequest
LogsResponse = logs_service_pb2.ExportLogsServiceResponse
TracesRequest = trace_service_pb2.ExportTraceServiceRequest
TracesResponse = trace_service_pb2.ExportTraceServiceResponse
KeyValue = common_pb2.KeyValue

_RAW_ATTRS = {
    "NumberDataPoint", "HistogramDataPoint", "ExponentialHistogramDataPoint", "SummaryDataPoint", "LogRecord",
    "Span",
}


def _view_pool() -> descriptor_pool.DescriptorPool:
    pool = descriptor_pool.DescriptorPool()
    for module in (common_pb2, resource_pb2, metrics_pb2, logs_pb2, trace_pb2, metrics_service_pb2,
                   logs_service_pb2, trace_service_pb2):
        fdp = descriptor_pb2.FileDescriptorProto()
        module.DESCRIPTOR.CopyToProto(fdp)
        for msg in fdp.message_type:
            if msg.name in _RAW_ATTRS:
                for field in msg.field:
                    if field.name == "attributes":
                        field.type = descriptor_pb2.FieldDescriptorProto.TYPE_BYTES
                        field.ClearField("type_name")
        pool.Add(fdp)
    return pool


_pool = _view_pool()
ViewMetricsRequest = message_factory.GetMessageClass(
    _pool.FindMessageTypeByName("opentelemetry.proto.collector.metrics.v1.ExportMetricsServiceRequest")
)
ViewLogsRequest = message_factory.GetMessageClass(
    _pool.FindMessageTypeByName("opentelemetry.proto.collector.logs.v1.ExportLogsServiceRequest")
)
ViewTracesRequest = message_factory.GetMessageClass(
    _pool.FindMessageTypeByName("opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest")
)


def any_to_py(v):
    """An AnyValue (generated or view class) as a plain Python value; bytes as base64."""
    which = v.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [any_to_py(x) for x in v.array_value.values]
    if which == "kvlist_value":
        return {kv.key: any_to_py(kv.value) for kv in v.kvlist_value.values}
    if which == "bytes_value":
        return base64.b64encode(v.bytes_value).decode()
    return getattr(v, which)


def any_to_str(v) -> str:
    """An AnyValue as stored in ``attrs``: strings as is, ints in decimal, bools
    ``true``/``false``, doubles by ``repr``, bytes base64, arrays and maps as JSON."""
    which = v.WhichOneof("value")
    if which == "string_value":
        return v.string_value
    if which == "int_value":
        return str(v.int_value)
    if which == "bool_value":
        return "true" if v.bool_value else "false"
    if which == "double_value":
        return repr(v.double_value)
    if which is None:
        return ""
    if which == "array_value":  # the common array, of strings (HTTP header attributes), without the detour
        items = v.array_value.values
        strs = [x.string_value for x in items if x.WhichOneof("value") == "string_value"]
        if len(strs) == len(items):
            return "[" + ",".join(map(_json_str, strs)) + "]"
    value = any_to_py(v)
    return value if isinstance(value, str) else _JSON.encode(value)


#: one encoder, not one per call (json.dumps with options builds a new one each time)
_JSON = json.JSONEncoder(separators=(",", ":"), sort_keys=True)
_json_str = json.encoder.encode_basestring_ascii  # a string as _JSON writes it (ensure_ascii)


#: the deepest nesting of messages protobuf's parser (upb) reads; a body nesting deeper is a 400.
#: An attribute or log body of arrays (two messages a level) and kvlists (three) reaches it at 30 to 45 levels.
MAX_DEPTH = 100


def why_not(exc: DecodeError) -> str:
    """What a DecodeError says, in words a client can act on."""
    text = str(exc) or "malformed"
    if "MaxDepth" in text:
        return (f"messages nest more than {MAX_DEPTH} deep (an attribute or log body value of arrays or"
                " kvlists nested inside each other too deeply)")
    return text


def decode_kv(raw: bytes) -> tuple[str, str]:
    """One raw KeyValue (from a view's ``attributes``) as ``(key, value as string)``."""
    try:
        kv = KeyValue.FromString(raw)
    except DecodeError as exc:
        raise BadRequest(f"an attribute does not decode as an OTLP KeyValue: {why_not(exc)}", field="body") from exc
    return kv.key, any_to_str(kv.value)


def kv_pairs(kvs) -> dict[str, str]:
    """Decoded (generated-class) KeyValues as ``{key: string value}``; last wins."""
    return {kv.key: any_to_str(kv.value) for kv in kvs}
