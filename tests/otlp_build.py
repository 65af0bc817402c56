"""Hand-built OTLP requests with exact timestamps, for any test that needs telemetry.

    from otlp_build import *
    req = metrics_request(DEPLOYMENT, [
        gauge("hw.gpu.utilization", [number(T0, 0.5, attrs={"hw.gpu.index": 0})]),
        sum_metric("sonde.process.restarts", [number(T0, 3, start=S0)]),          # cumulative
        histogram("http.server.request.duration",
                  [hist_point(T0, [1, 2, 0], [0.1, 1.0], start=S0, sum=1.3,
                              attrs={"http.response.status_code": 200})]),
        exp_histogram("sonde.server.time_to_first_byte",
                      [exp_point(T0, scale=3, positive=(-2, [1, 4]), sum=2.0, start=S0)]),
    ])
    body, headers = encode(req)                      # protobuf
    body, headers = encode(req, json=True, gzip=True)  # OTLP/JSON, gzipped
    r = post(client, req, json=True)                 # to /v1/otlp/v1/metrics (or /logs)

Attribute values take their OTLP type from the Python type: str, bool, int, float,
bytes, list (array), dict (kvlist). Times are integer nanoseconds.
"""

from __future__ import annotations

import base64
import builtins
import gzip as _gzip
import json as _json
import time

from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList
from opentelemetry.proto.logs.v1 import logs_pb2
from opentelemetry.proto.metrics.v1 import metrics_pb2 as mp

__all__ = [
    "T0", "S0", "SEC", "DEPLOYMENT", "traces_request", "any_value", "attributes", "number", "gauge", "sum_metric", "hist_point",
    "histogram", "exp_point", "exp_histogram", "summary", "metrics_request", "log_record", "logs_request",
    "merge", "to_json", "encode", "post", "DELTA", "CUMULATIVE",
]

SEC = 1_000_000_000
#: a whole minute ten minutes before this test run started (recent, so inside any
#: retention TTL, and exact), and a start a minute before it
T0 = (time.time_ns() // (60 * SEC) - 10) * 60 * SEC
S0 = T0 - 60 * SEC
#: resource attributes placing telemetry on deployment d1 of model m1, replica r0001
DEPLOYMENT = {"sonde.model_id": "m1", "sonde.deployment_id": "d1", "sonde.replica": "r0001"}

DELTA = mp.AGGREGATION_TEMPORALITY_DELTA
CUMULATIVE = mp.AGGREGATION_TEMPORALITY_CUMULATIVE


def any_value(v) -> AnyValue:
    if isinstance(v, AnyValue):
        return v
    if isinstance(v, bool):
        return AnyValue(bool_value=v)
    if isinstance(v, int):
        return AnyValue(int_value=v)
    if isinstance(v, float):
        return AnyValue(double_value=v)
    if isinstance(v, bytes):
        return AnyValue(bytes_value=v)
    if isinstance(v, (list, tuple)):
        return AnyValue(array_value=ArrayValue(values=[any_value(x) for x in v]))
    if isinstance(v, dict):
        return AnyValue(kvlist_value=KeyValueList(values=attributes(v)))
    if v is None:
        return AnyValue()
    return AnyValue(string_value=str(v))


def attributes(d: dict | None) -> list[KeyValue]:
    return [KeyValue(key=k, value=any_value(v)) for k, v in (d or {}).items()]


def number(ts: int, value, *, start: int = 0, attrs: dict | None = None, flags: int = 0) -> mp.NumberDataPoint:
    """A gauge or sum point; an int value is sent as ``as_int``, a float as ``as_double``."""
    p = mp.NumberDataPoint(time_unix_nano=ts, start_time_unix_nano=start, attributes=attributes(attrs), flags=flags)
    if isinstance(value, int) and not isinstance(value, bool):
        p.as_int = value
    elif value is not None:
        p.as_double = value
    return p


def gauge(name: str, points: list, *, unit: str = "") -> mp.Metric:
    return mp.Metric(name=name, unit=unit, gauge=mp.Gauge(data_points=points))


def sum_metric(name: str, points: list, *, cumulative: bool = True, monotonic: bool = True, unit: str = "",
               temporality: int | None = None) -> mp.Metric:
    t = temporality if temporality is not None else (CUMULATIVE if cumulative else DELTA)
    return mp.Metric(name=name, unit=unit, sum=mp.Sum(data_points=points, aggregation_temporality=t,
                                                       is_monotonic=monotonic))


def hist_point(ts: int, counts: list[int], bounds: list[float], *, start: int = 0, sum: float | None = None,
               min: float | None = None, max: float | None = None, count: int | None = None,
               attrs: dict | None = None, flags: int = 0) -> mp.HistogramDataPoint:
    p = mp.HistogramDataPoint(
        time_unix_nano=ts, start_time_unix_nano=start, bucket_counts=counts, explicit_bounds=bounds,
        count=builtins.sum(counts) if count is None else count, attributes=attributes(attrs), flags=flags,
    )
    for field, v in (("sum", sum), ("min", min), ("max", max)):
        if v is not None:
            setattr(p, field, v)
    return p


def histogram(name: str, points: list, *, cumulative: bool = True, unit: str = "s") -> mp.Metric:
    return mp.Metric(name=name, unit=unit, histogram=mp.Histogram(
        data_points=points, aggregation_temporality=CUMULATIVE if cumulative else DELTA))


def exp_point(ts: int, *, scale: int, positive: tuple[int, list[int]] = (0, []),
              negative: tuple[int, list[int]] = (0, []), zero_count: int = 0, start: int = 0,
              sum: float | None = None, min: float | None = None, max: float | None = None,
              count: int | None = None, attrs: dict | None = None) -> mp.ExponentialHistogramDataPoint:
    """``positive``/``negative`` are ``(offset, bucket_counts)``; bucket i covers
    (base**(offset+i), base**(offset+i+1)] with base = 2**(2**-scale)."""
    total = zero_count + builtins.sum(positive[1]) + builtins.sum(negative[1])
    p = mp.ExponentialHistogramDataPoint(
        time_unix_nano=ts, start_time_unix_nano=start, scale=scale, zero_count=zero_count,
        count=total if count is None else count, attributes=attributes(attrs),
        positive=mp.ExponentialHistogramDataPoint.Buckets(offset=positive[0], bucket_counts=positive[1]),
        negative=mp.ExponentialHistogramDataPoint.Buckets(offset=negative[0], bucket_counts=negative[1]),
    )
    for field, v in (("sum", sum), ("min", min), ("max", max)):
        if v is not None:
            setattr(p, field, v)
    return p


def exp_histogram(name: str, points: list, *, cumulative: bool = True, unit: str = "s") -> mp.Metric:
    return mp.Metric(name=name, unit=unit, exponential_histogram=mp.ExponentialHistogram(
        data_points=points, aggregation_temporality=CUMULATIVE if cumulative else DELTA))


def summary(name: str, ts: int, *, count: int = 1, sum: float = 1.0) -> mp.Metric:
    return mp.Metric(name=name, summary=mp.Summary(data_points=[
        mp.SummaryDataPoint(time_unix_nano=ts, count=count, sum=sum)]))


def metrics_request(resource: dict, metrics: list[mp.Metric], *, scope: str = "test") -> ExportMetricsServiceRequest:
    req = ExportMetricsServiceRequest()
    rm = req.resource_metrics.add()
    rm.resource.attributes.extend(attributes(resource))
    sm = rm.scope_metrics.add()
    sm.scope.name = scope
    sm.metrics.extend(metrics)
    return req


def log_record(ts: int, body="", *, severity_number: int = 0, severity_text: str = "", attrs: dict | None = None,
               observed: int = 0, trace_id: bytes = b"", span_id: bytes = b"") -> logs_pb2.LogRecord:
    return logs_pb2.LogRecord(
        time_unix_nano=ts, observed_time_unix_nano=observed, severity_number=severity_number,
        severity_text=severity_text, body=any_value(body), attributes=attributes(attrs),
        trace_id=trace_id, span_id=span_id,
    )


def logs_request(resource: dict, records: list[logs_pb2.LogRecord], *, scope: str = "test") -> ExportLogsServiceRequest:
    req = ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    rl.resource.attributes.extend(attributes(resource))
    sl = rl.scope_logs.add()
    sl.scope.name = scope
    sl.log_records.extend(records)
    return req


def traces_request(resource: dict, spans: list[tuple]) -> ExportTraceServiceRequest:
    """spans: (trace id, span id, parent id, name, kind, start ns, duration ns, attributes)."""
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.extend(attributes(resource))
    out = rs.scope_spans.add().spans
    for trace_id, span_id, parent, name, kind, start, duration, attrs in spans:
        out.add(trace_id=trace_id, span_id=span_id, parent_span_id=parent, name=name, kind=kind,
                start_time_unix_nano=start, end_time_unix_nano=start + duration, attributes=attributes(attrs))
    return req


def merge(*requests):
    """One request holding the resources of all ``requests`` (of one signal)."""
    out = type(requests[0])()
    for r in requests:
        out.MergeFrom(r)
    return out


def _ids_to_hex(obj) -> None:
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k in ("traceId", "spanId") and isinstance(v, str):
                obj[k] = base64.b64decode(v).hex()
            else:
                _ids_to_hex(v)
    elif isinstance(obj, list):
        for x in obj:
            _ids_to_hex(x)


def to_json(msg) -> str:
    """OTLP/JSON: lowerCamelCase names, 64-bit ints as strings, enums as ints, hex ids."""
    doc = json_format.MessageToDict(msg, use_integers_for_enums=True)
    _ids_to_hex(doc)
    return _json.dumps(doc)


def encode(msg, *, json: bool = False, gzip: bool = False) -> tuple[bytes, dict[str, str]]:
    """``(body, headers)`` for posting ``msg`` as protobuf or OTLP/JSON, optionally gzipped."""
    body = to_json(msg).encode() if json else msg.SerializeToString()
    headers = {"Content-Type": "application/json" if json else "application/x-protobuf"}
    if gzip:
        body = _gzip.compress(body)
        headers["Content-Encoding"] = "gzip"
    return body, headers


def post(client, msg, *, json: bool = False, gzip: bool = False, **kw):
    """POST ``msg`` to its OTLP route through ``client`` (anything with ``.post(url,
    content=, headers=)``, e.g. conftest's Client or an httpx.Client)."""
    body, headers = encode(msg, json=json, gzip=gzip)
    headers.update(kw.pop("headers", None) or {})
    path = ("/v1/otlp/v1/logs" if isinstance(msg, ExportLogsServiceRequest)
            else "/v1/otlp/v1/traces" if isinstance(msg, ExportTraceServiceRequest) else "/v1/otlp/v1/metrics")
    return client.post(path, content=body, headers=headers, **kw)
