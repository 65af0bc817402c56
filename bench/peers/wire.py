"""Protobuf bodies written with numpy: Prometheus remote write 1.0 and OTLP metrics.

Building millions of samples through the protobuf runtime costs ~1 us each in Python,
which would make the client, not the server, the bottleneck on two cores. Every
sample (or OTLP point) of one series has a fixed encoded length here, so a series'
samples are one numpy array of rows written in one go. :func:`check` parses both
encodings back with the official message classes (``--scale tiny`` runs it every time).
"""

from __future__ import annotations

import cramjam
import numpy as np

from workload import BOUNDS, CODES, Fleet, ReplicaData, names

LE = [f"{b:g}" for b in BOUNDS] + ["+Inf"]


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def ld(field: int, payload: bytes) -> bytes:
    """A length-delimited field."""
    return varint(field << 3 | 2) + varint(len(payload)) + payload


def _rows(n: int, parts: list) -> np.ndarray:
    """``n`` rows concatenating ``parts``: bytes (the same in every row) or arrays of
    shape (n, k) uint8."""
    cols = [np.broadcast_to(np.frombuffer(p, np.uint8), (n, len(p))) if isinstance(p, bytes) else p for p in parts]
    return np.concatenate(cols, axis=1) if cols else np.empty((n, 0), np.uint8)


def _f64(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x, dtype="<f8").view(np.uint8).reshape(len(x), -1)


def _u64(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x, dtype="<u8").view(np.uint8).reshape(len(x), -1)


def _varint6(t: np.ndarray) -> np.ndarray:
    """Millisecond timestamps as 6-byte varints (valid for 1971..2109)."""
    t = t.astype(np.uint64)
    assert t.min() >= 2**35 and t.max() < 2**42
    out = np.empty((len(t), 6), np.uint8)
    for k in range(6):
        out[:, k] = ((t >> np.uint64(7 * k)) & np.uint64(0x7F)) | np.uint64(0x80 if k < 5 else 0)
    return out


# --- Prometheus remote write ---------------------------------------------------------

def _rw_series(labels: dict, ts_ms: np.ndarray, values: np.ndarray) -> bytes:
    lab = b"".join(ld(1, ld(1, k.encode()) + ld(2, v.encode())) for k, v in sorted(labels.items()))
    # Sample {double value = 1; int64 timestamp = 2}: 1 + 8 + 1 + 6 = 16 bytes
    samples = _rows(len(ts_ms), [b"\x12\x10\x09", _f64(values), b"\x10", _varint6(ts_ms)])
    return ld(1, lab + samples.tobytes())


def remote_write(fleet: Fleet, reps: list[ReplicaData], lo: int, hi: int) -> bytes:
    """A snappy WriteRequest of steps [lo, hi) of ``reps``, names as an OTel Collector's
    Prometheus exporter would write them."""
    out = []
    for d in reps:
        keep = np.flatnonzero(d.present[lo:hi]) + lo
        if not len(keep):
            continue
        ts = fleet.times_ns[keep] // 10**6
        model, dep, rep = names(d.dep, d.rep)
        place = {"model_id": model, "deployment_id": dep, "replica": rep}
        for g in range(fleet.scale.gpus):
            gl = {**place, "gpu": str(g)}
            out.append(_rw_series({"__name__": "hw_gpu_utilization_ratio", **gl}, ts, d.util[g, keep]))
            out.append(_rw_series({"__name__": "hw_gpu_memory_usage_bytes", **gl}, ts, d.mem[g, keep]))
        for c, code in enumerate(CODES):
            cl = {**place, "http_response_status_code": str(code)}
            le = np.cumsum(d.buckets[c, keep], axis=1)
            name = "http_server_request_duration_seconds"
            for j, bound in enumerate(LE):
                out.append(_rw_series({"__name__": name + "_bucket", **cl, "le": bound}, ts, le[:, j]))
            out.append(_rw_series({"__name__": name + "_sum", **cl}, ts, d.sums[c, keep]))
            out.append(_rw_series({"__name__": name + "_count", **cl}, ts, le[:, -1]))
    return bytes(cramjam.snappy.compress_raw(b"".join(out)))


RW_HEADERS = {"Content-Type": "application/x-protobuf", "Content-Encoding": "snappy",
              "X-Prometheus-Remote-Write-Version": "0.1.0"}


# --- OTLP ------------------------------------------------------------------------------

def _kv(key: str, *, s: str | None = None, i: int | None = None) -> bytes:
    value = ld(1, s.encode()) if s is not None else varint(3 << 3) + varint(i)
    return ld(1, key.encode()) + ld(2, value)


def _points(field: int, n: int, parts: list) -> bytes:
    """``n`` data points (each ``parts`` concatenated) as repeated field ``field``."""
    body = _rows(n, parts)
    head = varint(field << 3 | 2) + varint(body.shape[1])
    return _rows(n, [head, body]).tobytes()


def otlp(fleet: Fleet, reps: list[ReplicaData], lo: int, hi: int) -> bytes:
    """An ExportMetricsServiceRequest of steps [lo, hi) of ``reps``: one resource per
    replica; GPU gauges ``hw.gpu.utilization`` (1) and ``hw.gpu.memory.usage`` (By) by
    ``hw.gpu.index``; the cumulative histogram ``http.server.request.duration`` (s) by
    ``http.response.status_code``, as the OTel SDK exports them."""
    out = []
    bounds = np.array(BOUNDS, "<f8").tobytes()
    for d in reps:
        keep = np.flatnonzero(d.present[lo:hi]) + lo
        if not len(keep):
            continue
        n, t = len(keep), _u64(fleet.times_ns[keep])
        model, dep, rep = names(d.dep, d.rep)
        resource = b"".join(ld(1, _kv(k, s=v)) for k, v in (
            ("sonde.model_id", model), ("sonde.deployment_id", dep), ("sonde.replica", rep)))
        metrics = []
        for name, unit, values in (("hw.gpu.utilization", "1", d.util), ("hw.gpu.memory.usage", "By", d.mem)):
            # NumberDataPoint {time_unix_nano = 3 fixed64; as_double = 4; attributes = 7}
            pts = b"".join(_points(1, n, [ld(7, _kv("hw.gpu.index", s=str(g))), b"\x19", t, b"\x21",
                                          _f64(values[g, keep])]) for g in range(fleet.scale.gpus))
            metrics.append(ld(1, name.encode()) + ld(3, unit.encode()) + ld(5, pts))
        pts = []
        packed_bounds = ld(7, bounds)
        for c, code in enumerate(CODES):
            counts = d.buckets[c, keep].astype("<u8")
            # HistogramDataPoint {start = 2, time = 3, count = 4 (fixed64), sum = 5
            # (double), bucket_counts = 6 (packed fixed64), explicit_bounds = 7, attributes = 9}
            pts.append(_points(1, n, [
                ld(9, _kv("http.response.status_code", i=code)), b"\x11", _u64(d.start_ns[keep]), b"\x19", t,
                b"\x21", _u64(counts.sum(axis=1)), b"\x29", _f64(d.sums[c, keep]),
                varint(6 << 3 | 2) + varint(8 * len(LE)), counts.view(np.uint8).reshape(n, -1), packed_bounds]))
        # Histogram {data_points = 1; aggregation_temporality = 2 (CUMULATIVE = 2)}
        hist = b"".join(pts) + b"\x10\x02"
        metrics.append(ld(1, b"http.server.request.duration") + ld(3, b"s") + ld(9, hist))
        scope = ld(1, ld(1, b"sonde-bench-peers")) + b"".join(ld(2, m) for m in metrics)
        out.append(ld(1, ld(1, resource) + ld(2, scope)))
    return b"".join(out)


OTLP_HEADERS = {"Content-Type": "application/x-protobuf"}


def check(fleet: Fleet) -> None:
    """Parse one request of each encoding back with the official classes and compare
    with the generator; raises AssertionError on any difference."""
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

    from sonde.ingest import prompb
    d = fleet.replica(0, 0)
    lo, hi = 0, min(fleet.scale.steps, 40)
    keep = np.flatnonzero(d.present[lo:hi])
    req = ExportMetricsServiceRequest.FromString(otlp(fleet, [d], lo, hi))
    attrs = {a.key: a.value.string_value for a in req.resource_metrics[0].resource.attributes}
    assert attrs == {"sonde.model_id": "m000", "sonde.deployment_id": "d000", "sonde.replica": "r00"}, attrs
    ms = req.resource_metrics[0].scope_metrics[0].metrics
    assert [m.name for m in ms] == ["hw.gpu.utilization", "hw.gpu.memory.usage", "http.server.request.duration"]
    p = ms[0].gauge.data_points[len(keep)]
    assert p.as_double == d.util[1, keep[0]] and p.time_unix_nano == fleet.times_ns[keep[0]]
    assert p.attributes[0].value.string_value == "1"
    h = ms[2].histogram.data_points[len(keep) * 2 + 1]
    assert list(h.bucket_counts) == list(d.buckets[2, keep[1]].astype(int)), h
    assert list(h.explicit_bounds) == list(BOUNDS) and h.attributes[0].value.int_value == 500
    assert h.count == sum(h.bucket_counts) and h.sum == d.sums[2, keep[1]] and ms[2].histogram.aggregation_temporality == 2
    assert h.start_time_unix_nano == d.start_ns[keep[1]]
    wr = prompb.WriteRequest.FromString(bytes(cramjam.snappy.decompress_raw(remote_write(fleet, [d], lo, hi))))
    ts = wr.timeseries[1]
    assert {lab.name: lab.value for lab in ts.labels}["__name__"] == "hw_gpu_memory_usage_bytes"
    assert [s.value for s in ts.samples] == list(d.mem[0, keep]) and ts.samples[0].timestamp == fleet.times_ns[keep[0]] // 10**6
    assert len(wr.timeseries) == fleet.scale.series_per_replica
