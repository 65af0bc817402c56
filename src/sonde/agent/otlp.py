"""Build OTLP/HTTP protobuf request bodies (opentelemetry-proto classes), gzip them.

One request carries one resource (the replica) and one scope (``sonde.agent``).
Serialized requests of the same type concatenate into a valid request (protobuf
merges repeated fields by appending), which the spool's replay uses to send many
spooled batches in one POST; :func:`concat` is that operation.
"""

from __future__ import annotations

import functools
import gzip
import math
from collections.abc import Iterable, Mapping
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord as PbLogRecord
from opentelemetry.proto.metrics.v1.metrics_pb2 import (
    AggregationTemporality,
    HistogramDataPoint,
    Metric,
    NumberDataPoint,
)
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from .model import LogRecord, Point

SCOPE = InstrumentationScope(name="sonde.agent", version="0.1.0")
METRICS, LOGS = "metrics", "logs"
PATHS = {METRICS: "/v1/otlp/v1/metrics", LOGS: "/v1/otlp/v1/logs"}
# gzip level 1: agent CPU is the budget that matters (model nodes), the ratio on OTLP
# protobuf is within a few percent of level 6.
GZIP_LEVEL = 1


def any_value(v: Any) -> AnyValue:
    if isinstance(v, bool):
        return AnyValue(bool_value=v)
    if isinstance(v, int):
        return AnyValue(int_value=v)
    if isinstance(v, float):
        return AnyValue(double_value=v)
    return AnyValue(string_value=str(v))


@functools.lru_cache(maxsize=1 << 16)
def _key_value(key: str, kind: type, value: Any) -> KeyValue:
    return KeyValue(key=key, value=any_value(value))


def key_values(attrs: Mapping[str, Any]) -> list[KeyValue]:
    # Scraped pages repeat the same label pairs every scrape: built once, copied after.
    # The type is part of the cache key, as True == 1 for the cache but not for OTLP.
    return [_key_value(k, type(v), v) for k, v in attrs.items() if v is not None]


def resource(attrs: Mapping[str, Any]) -> Resource:
    return Resource(attributes=key_values(attrs))


def _number_point(p: Point, ts_ns: int) -> NumberDataPoint:
    dp = NumberDataPoint(time_unix_nano=ts_ns, start_time_unix_nano=p.start_ns, attributes=key_values(p.attrs))
    if isinstance(p.value, int) and not isinstance(p.value, bool):
        dp.as_int = p.value
    else:
        dp.as_double = float(p.value)
    return dp


def _histogram_point(p: Point, ts_ns: int) -> HistogramDataPoint:
    dp = HistogramDataPoint(time_unix_nano=ts_ns, start_time_unix_nano=p.start_ns, attributes=key_values(p.attrs),
                            count=sum(p.buckets), bucket_counts=p.buckets, explicit_bounds=p.bounds)
    if math.isfinite(p.value):  # sum is optional in OTLP; a NaN one would be refused
        dp.sum = p.value
    return dp


_CUMULATIVE = AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE


def metrics_request(res: Resource, points: Iterable[Point], ts_ns: int) -> bytes:
    """Serialized ExportMetricsServiceRequest: points of one tick, grouped into metrics by name."""
    req = ExportMetricsServiceRequest()
    sm = req.resource_metrics.add(resource=res).scope_metrics.add(scope=SCOPE)
    by_name: dict[tuple[str, str, str], Any] = {}
    for p in points:
        key = (p.name, p.unit, p.kind)
        target = by_name.get(key)
        if target is None:
            m: Metric = sm.metrics.add(name=p.name, unit=p.unit)
            if p.kind == "gauge":
                target = m.gauge
            elif p.kind == "histogram":
                target = m.histogram
                target.aggregation_temporality = _CUMULATIVE
            else:
                target = m.sum
                target.aggregation_temporality = _CUMULATIVE
                target.is_monotonic = p.kind == "counter"
            target.SetInParent()
            by_name[key] = target
        if p.kind == "histogram":
            target.data_points.append(_histogram_point(p, ts_ns))
        else:
            target.data_points.append(_number_point(p, ts_ns))
    return req.SerializeToString()


def logs_request(res: Resource, records: Iterable[LogRecord]) -> bytes:
    req = ExportLogsServiceRequest()
    sl = req.resource_logs.add(resource=res).scope_logs.add(scope=SCOPE)
    for r in records:
        sl.log_records.append(PbLogRecord(
            time_unix_nano=r.ts_ns, observed_time_unix_nano=r.ts_ns,
            severity_number=r.severity_number, severity_text=r.severity_text,
            body=AnyValue(string_value=r.body), attributes=key_values(r.attrs),
        ))
    return req.SerializeToString()


def compress(raw: bytes) -> bytes:
    return gzip.compress(raw, compresslevel=GZIP_LEVEL, mtime=0)


def concat(bodies: Iterable[bytes]) -> bytes:
    """Gzipped bodies of one request type -> one gzipped body carrying all of them, in order."""
    return compress(b"".join(gzip.decompress(b) for b in bodies))


def count_items(kind: str, gz_body: bytes) -> int:
    """Points (metrics) or records (logs) in a gzipped request body."""
    raw = gzip.decompress(gz_body)
    if kind == METRICS:
        req = ExportMetricsServiceRequest.FromString(raw)
        n = 0
        for rm in req.resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    n += len(getattr(m, m.WhichOneof("data")).data_points) if m.WhichOneof("data") else 0
        return n
    req = ExportLogsServiceRequest.FromString(raw)
    return sum(len(sl.log_records) for rl in req.resource_logs for sl in rl.scope_logs)
