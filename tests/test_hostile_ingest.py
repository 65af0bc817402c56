"""Hostile OTLP and remote-write bodies against the real app and a real chDB store.

Truncated protobuf, gzip and snappy bombs, values nested thousands deep, NaN and
infinities, times far in the past and future, one key exploding cardinality: each
gets a 4xx or a ``partial_success`` that names the reason, and what the store already
held is still there afterwards (docs/reliability.md#hostile-input).
"""

from __future__ import annotations

import gzip
import math
import time
import tracemalloc
import zlib

import cramjam
import pytest
from conftest import Client
from google.rpc import status_pb2
from otlp_build import (DEPLOYMENT, SEC, T0, encode, gauge, histogram, hist_point, log_record,
                        logs_request, merge, metrics_request, number, post, sum_metric, traces_request)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceResponse

from sonde.api.app import create_app
from sonde.ingest import prompb, proto

pytestmark = pytest.mark.steady_only("input handling, the same in every server mode")
RW_HEADERS = {"Content-Type": "application/x-protobuf", "Content-Encoding": "snappy",
              "X-Prometheus-Remote-Write-Version": "0.1.0"}
GiB = 1 << 30


@pytest.fixture
def ingest(app, creds) -> Client:
    return Client(app, creds["ingest_key"])


def rows(store, table: str) -> int:
    return store.ex.query_arrow(f"SELECT count() AS n FROM {store.t(table)}").column("n")[0].as_py()


def seed(ingest: Client) -> None:
    """One committed request of each signal, which no later hostile one may lose."""
    for req in (metrics_request(DEPLOYMENT, [gauge("hw.gpu.utilization", [number(T0, 0.5)])]),
                logs_request(DEPLOYMENT, [log_record(T0, "kept")]),
                traces_request(DEPLOYMENT, [(b"\x01" * 16, b"\x02" * 8, b"", "GET /", 2, T0, SEC, {})])):
        assert post(ingest, req).status_code == 200


def status_of(r) -> status_pb2.Status:
    assert r.headers["content-type"] == "application/x-protobuf", r.headers
    return status_pb2.Status.FromString(r.content)


def rejected(r) -> tuple[int, str]:
    assert r.status_code == 200, r.text
    ps = ExportMetricsServiceResponse.FromString(r.content).partial_success
    return ps.rejected_data_points, ps.error_message


# -- truncated bodies -------------------------------------------------------------------

def test_truncated_bodies_are_400_and_lose_nothing(ingest, store):
    seed(ingest)
    before = {t: rows(store, t) for t in ("metric_points", "logs", "spans")}
    req = metrics_request(DEPLOYMENT, [gauge("g", [number(T0 + i * SEC, float(i), attrs={"k": "v" * 40})
                                                   for i in range(20)])])
    whole = req.SerializeToString()
    answers = set()
    # every cut through the first resource's header and a sample through its points
    for cut in sorted({*range(1, 60), *range(60, len(whole) - 1, 37)}):
        r = ingest.post("/v1/otlp/v1/metrics", content=whole[:cut],
                        headers={"Content-Type": "application/x-protobuf"})
        answers.add(r.status_code)
        if r.status_code != 200:  # a cut on a field boundary is a shorter valid message
            assert r.status_code == 400, r.text
            assert "does not decode" in status_of(r).message
    assert 400 in answers
    # a truncated gzip stream, and a truncated OTLP/JSON body, in the JSON envelope
    body, headers = encode(req, json=True, gzip=True)
    r = ingest.post("/v1/otlp/v1/metrics", content=body[:-20], headers=headers)
    assert (r.status_code, r.json()["error"]["field"]) == (400, "body"), r.text
    assert "truncated" in r.json()["message"] or "gzip" in r.json()["message"]
    body, headers = encode(req, json=True)
    r = ingest.post("/v1/otlp/v1/metrics", content=body[: len(body) // 2], headers=headers)
    assert (r.status_code, r.json()["error"]["code"]) == (400, "invalid"), r.text
    for t, n in before.items():
        assert rows(store, t) >= n, t  # the seeded rows, and any cut that was itself a valid message


# -- bombs ------------------------------------------------------------------------------

def _gzip_of_zeros(size: int) -> bytes:
    """``size`` zeros as gzip members of 64 MiB each (RFC 1952 allows several; one
    compressed member, repeated, makes the bomb in a fraction of the time)."""
    member = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    member = member.compress(bytes(64 << 20)) + member.flush()
    return member * (size // (64 << 20))


def test_gzip_bomb_is_413_without_inflating_it(ingest, app):
    bomb = _gzip_of_zeros(GiB)  # 1 GiB of zeros in about 1 MB
    limit = app.state.config.max_body_bytes
    assert len(bomb) < limit < GiB
    tracemalloc.start()
    try:
        r = ingest.post("/v1/otlp/v1/metrics", content=bomb,
                        headers={"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    print(f"gzip bomb: {len(bomb)} bytes inflating to {GiB}; 413 with a peak of {peak / 2**20:.1f} MiB "
          f"traced (limit {limit / 2**20:.0f} MiB)")
    assert r.status_code == 413, r.text
    assert str(limit) in status_of(r).message
    # the inflated body never held more than the limit (and the compressed body, and copies of it)
    assert peak < 3 * limit + 4 * len(bomb), peak


def test_snappy_bombs_are_refused_before_inflating(ingest):
    wr = prompb.WriteRequest()
    zeros = bytes(64 << 20)  # 64 MiB of zeros: about 3 MB of snappy, over the 16 MiB limit inflated
    r = ingest.post("/api/v1/write", content=bytes(cramjam.snappy.compress_raw(zeros)), headers=RW_HEADERS)
    assert (r.status_code, r.json()["error"]["code"]) == (413, "too_large"), r.text
    assert "after snappy" in r.json()["message"]
    # a header that lies: it declares far less than the data inflates to
    real = bytes(cramjam.snappy.compress_raw(wr.SerializeToString() + bytes(4096)))
    liar = bytes([10]) + real[2:]  # varint length 10, then the (longer) compressed stream
    r = ingest.post("/api/v1/write", content=liar, headers=RW_HEADERS)
    assert (r.status_code, r.json()["error"]["field"]) == (400, "body"), r.text


# -- nesting ----------------------------------------------------------------------------

def _field(num: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field: tag, length, bytes."""
    def varint(n: int) -> bytes:
        out = bytearray()
        while True:
            out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
            n >>= 7
            if not n:
                return bytes(out)
    return varint(num << 3 | 2) + varint(len(payload)) + payload


def nested(depth: int) -> bytes:
    """An encoded AnyValue: arrays and kvlists alternately ``depth`` levels deep. The
    generated classes cannot build it (their own parser refuses the depth)."""
    v = _field(1, b"x")  # string_value
    for i in range(depth):
        v = _field(6, _field(1, _field(1, b"k") + _field(2, v))) if i % 2 else _field(5, _field(1, v))
    return v


def test_deeply_nested_values_are_400_naming_the_nesting(ingest, store):
    seed(ingest)
    before = rows(store, "metric_points"), rows(store, "logs")
    kv = _field(1, b"deep") + _field(2, nested(3000))
    base = metrics_request(DEPLOYMENT, [gauge("g", [number(T0, 1.0)])])
    # a point attribute (read lazily, one KeyValue at a time) and a resource attribute (parsed with the body)
    point = proto.ViewMetricsRequest.FromString(base.SerializeToString())
    point.resource_metrics[0].scope_metrics[0].metrics[0].gauge.data_points[0].attributes.append(kv)
    resource = _field(1, base.resource_metrics[0].SerializeToString() + _field(1, _field(1, kv)))
    record = log_record(T0, "").SerializeToString() + _field(5, nested(3000))  # LogRecord.body
    rl = logs_request(DEPLOYMENT, []).resource_logs[0]
    log_body = _field(1, _field(1, rl.resource.SerializeToString()) + _field(2, _field(2, record)))
    for path, body in (("metrics", point.SerializeToString()), ("metrics", resource), ("logs", log_body)):
        r = ingest.post(f"/v1/otlp/v1/{path}", content=body, headers={"Content-Type": "application/x-protobuf"})
        assert r.status_code == 400, r.text
        assert f"nest more than {proto.MAX_DEPTH} deep" in status_of(r).message
    # OTLP/JSON: the same depth in a JSON body
    doc = '{"arrayValue": {"values": [' * 3000 + '{"stringValue": "x"}' + "]}}" * 3000
    jreq = '{"resourceMetrics": [{"resource": {"attributes": [{"key": "deep", "value": %s}]}}]}' % doc
    r = ingest.post("/v1/otlp/v1/metrics", content=jreq, headers={"Content-Type": "application/json"})
    assert (r.status_code, r.json()["error"]["field"]) == (400, "body"), r.text
    assert (rows(store, "metric_points"), rows(store, "logs")) == before
    # nesting well inside the limit is stored, as compact JSON
    point = proto.ViewMetricsRequest.FromString(base.SerializeToString())
    point.resource_metrics[0].scope_metrics[0].metrics[0].gauge.data_points[0].attributes.append(
        _field(1, b"deep") + _field(2, nested(20)))
    r = ingest.post("/v1/otlp/v1/metrics", content=point.SerializeToString(),
                    headers={"Content-Type": "application/x-protobuf"})
    assert rejected(r) == (0, "")
    assert rows(store, "metric_points") == before[0] + 1


# -- values and times -------------------------------------------------------------------

def test_nan_and_infinities_are_rejected_by_point(ingest, store):
    seed(ingest)
    before = rows(store, "metric_points")
    req = metrics_request(DEPLOYMENT, [
        gauge("g", [number(T0, v, attrs={"i": i}) for i, v in enumerate((math.nan, math.inf, -math.inf, 1.5))]),
        histogram("h", [hist_point(T0, [1, 1], [1.0], start=T0 - SEC, sum=math.nan),
                        hist_point(T0, [1, 1], [math.inf], start=T0 - SEC, sum=2.0, attrs={"b": 1})]),
    ])
    n, message = rejected(post(ingest, req))
    assert n == 5, message
    assert "value is NaN or infinite (3)" in message and "sum is NaN or infinite" in message
    assert "explicit_bounds hold NaN or infinity" in message
    assert rows(store, "metric_points") == before + 1
    # remote write: a NaN that is not a staleness marker, and an infinity, are skipped and counted
    wr = prompb.WriteRequest()
    for i, v in enumerate((math.nan, math.inf, 2.0)):
        ts = wr.timeseries.add()
        for k, val in sorted({"__name__": "rw_gauge", "deployment_id": "d1", "model_id": "m1", "i": str(i)}.items()):
            ts.labels.add(name=k, value=val)
        ts.samples.add(timestamp=T0 // 10**6, value=v)
    r = ingest.post("/api/v1/write", content=bytes(cramjam.snappy.compress_raw(wr.SerializeToString())),
                    headers=RW_HEADERS)
    assert r.status_code == 204, r.text
    assert r.headers["X-Sonde-Rejected"] == "2" and "NaN" in r.headers["X-Sonde-Rejected-Reasons"], r.headers
    assert rows(store, "metric_points") == before + 2


def test_times_far_out_are_rejected_and_do_not_poison_a_counter(ingest, store):
    now = time.time_ns()
    future, far_future = now + 2 * 3600 * SEC, 7_258_118_400 * SEC  # two hours ahead; the year 2200
    req = metrics_request(DEPLOYMENT, [
        gauge("g", [number(t, 1.0, attrs={"t": str(t)}) for t in (0, future, far_future, 2**63 + 5, SEC, T0)]),
        sum_metric("c", [number(far_future, 100, start=S) for S in (T0 - 60 * SEC,)], cumulative=True),
    ])
    n, message = rejected(post(ingest, req))
    assert n == 5, message
    assert "metric 'g': time_unix_nano is more than 1 hour ahead of the server's clock (2)" in message
    assert "time_unix_nano is 0" in message and "after the year 2262" in message
    # the far past (1 s after 1970) is accepted; the retention TTL drops it at a merge, maybe at once
    kept = store.ex.query_arrow(f"SELECT toUnixTimestamp64Nano(ts) AS t FROM {store.t('metric_points')}")
    assert set(kept.column("t").to_pylist()) in ({T0}, {T0, SEC})
    # the counter's rejected point left no state: its next points count as the first ever seen
    for v, t in ((5, T0), (8, T0 + 10 * SEC)):
        req = metrics_request(DEPLOYMENT, [sum_metric("c", [number(t, v, start=T0 - 60 * SEC)], cumulative=True)])
        assert rejected(post(ingest, req)) == (0, "")
    total = store.ex.query_arrow(f"SELECT sum(value) AS v FROM {store.t('metric_points')} WHERE metric = 'c'")
    assert total.column("v")[0].as_py() == 8  # 5 from its start, then 3 more: the 100 of 2200 left no trace


# -- cardinality ------------------------------------------------------------------------

def _many(n: int, start: int = 0, t: int = T0):
    return metrics_request(DEPLOYMENT, [gauge("requests.by_user", [
        number(t, 1.0, attrs={"user": f"u{i}"}) for i in range(start, start + n)])])


@pytest.mark.server_config(max_series_per_workspace=50)
def test_series_limit_rejects_new_series_and_keeps_known_ones(app, ingest, store, creds):
    n, message = rejected(post(ingest, _many(80)))
    assert n == 30 and "max_series_per_workspace" in message and "limit of 50 series" in message, message
    assert rows(store, "metric_points") == 50
    # the same 80 series a minute later: the 50 known ones are accepted, the 30 new still refused
    n, _ = rejected(post(ingest, _many(80, t=T0 + 60 * SEC)))
    assert (n, rows(store, "metric_points")) == (30, 100)
    # every kind of point counts: a histogram of a new series is refused too
    h = metrics_request(DEPLOYMENT, [histogram("h", [hist_point(T0, [1, 0], [1.0], start=T0 - SEC)])])
    assert rejected(post(ingest, h))[0] == 1
    # remote write: accepted in part, the rest counted in X-Sonde-Rejected with the setting's name
    wr = prompb.WriteRequest()
    for i in range(3):
        ts = wr.timeseries.add()
        for k, v in sorted({"__name__": "rw", "deployment_id": "d1", "model_id": "m1", "i": str(i)}.items()):
            ts.labels.add(name=k, value=v)
        ts.samples.add(timestamp=T0 // 10**6, value=1.0)
    r = ingest.post("/api/v1/write", content=bytes(cramjam.snappy.compress_raw(wr.SerializeToString())),
                    headers=RW_HEADERS)
    assert r.status_code == 204 and r.headers["X-Sonde-Rejected"] == "3", r.headers
    assert "max_series_per_workspace" in r.headers["X-Sonde-Rejected-Reasons"]
    # another workspace has its own budget
    admin = Client(app, creds["admin_key"])
    ws = admin.post("/v1/admin/workspaces", json={"name": "other"}).json()["id"]
    key = admin.post(f"/v1/admin/workspaces/{ws}/api_keys", json={"name": "i", "scope": "ingest"}).json()["key"]
    assert rejected(post(Client(app, key), _many(10))) == (0, "")
    # a restarted server counts the store's series from the start: the budget stays spent
    again = Client(create_app(app.config, store=store), creds["ingest_key"])
    assert rejected(post(again, _many(1, start=200)))[0] == 1
    assert rejected(post(again, _many(50, t=T0 + 120 * SEC)))[0] == 0


def test_series_limit_seed_counts_each_workspace(store):
    from sonde.ingest.series_limit import SeriesLimit

    limit = SeriesLimit(2, {"a": [1, 2]})
    assert limit.admit("a", [1, 2, 1]) is None
    assert limit.admit("a", [3, 1]) == [False, True]
    assert limit.admit("b", [3, 4, 5]) == [True, True, False]
    assert (limit.count("a"), limit.count("b")) == (2, 2)


def test_merge_of_hostile_and_good_resources_keeps_the_good(ingest, store):
    """One request mixing a resource that cannot be placed, bad points and good ones: the good are stored."""
    good = metrics_request(DEPLOYMENT, [gauge("g", [number(T0, 1.0)])])
    unplaced = metrics_request({"sonde.deployment_id": "bad id!"}, [gauge("g", [number(T0, 1.0)])])
    nan = metrics_request(DEPLOYMENT, [gauge("g2", [number(T0, math.nan)])])
    n, message = rejected(post(ingest, merge(good, unplaced, nan)))
    assert n == 2, message
    assert rows(store, "metric_points") == 1
    body = gzip.compress(merge(good, nan).SerializeToString())
    r = ingest.post("/v1/otlp/v1/metrics", content=body,
                    headers={"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"})
    assert rejected(r)[0] == 1
