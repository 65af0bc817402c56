"""OTLP metrics in, ``metric_points`` rows out: exact values, deltas, histograms."""

from __future__ import annotations

import math

import pytest
from conftest import Client
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceResponse
from otlp_build import (
    DEPLOYMENT, S0, SEC, T0, exp_histogram, exp_point, gauge, hist_point, histogram, merge, metrics_request,
    number, post, sum_metric,
)

from sonde.ingest.columns import series_hash


@pytest.fixture
def ingest(app, creds) -> Client:
    return Client(app, creds["ingest_key"])


def rows(store, where: str = "1", **params) -> list[dict]:
    out = store.ex.query(
        f"SELECT * REPLACE (toString(kind) AS kind),"
        f" toUnixTimestamp64Nano(ts) AS t, toUnixTimestamp64Nano(start_ts) AS st"
        f" FROM {store.t('metric_points')} WHERE {where} ORDER BY metric, series, ts, seq",
        params,
    )
    for r in out:
        r["attrs"] = dict(r["attrs"])
    return out


def ok(r) -> ExportMetricsServiceResponse:
    assert r.status_code == 200, r.content
    return ExportMetricsServiceResponse.FromString(r.content)


def test_gauge_rows_are_exact(ingest, store, creds):
    attrs = {"status": 200, "ok": True, "ratio": 0.25, "name": "a", "tags": ["x", "y"]}
    resp = ok(post(ingest, metrics_request(DEPLOYMENT, [gauge("hw.gpu.utilization", [
        number(T0, 0.5, attrs=attrs),
        number(T0 + SEC, 7, attrs=dict(reversed(list(attrs.items())))),  # same series, other order
        number(T0 + SEC, 1.5, attrs={"gpu": "1"}),
    ], unit="1")])))
    assert not resp.HasField("partial_success")
    got = rows(store)
    assert [(r["t"], r["value"]) for r in got if r["attrs"].get("gpu") != "1"] == [(T0, 0.5), (T0 + SEC, 7.0)]
    r = got[0] if got[0]["attrs"].get("gpu") != "1" else got[1]
    ws = creds["workspace_id"]
    assert r["attrs"] == {"status": "200", "ok": "true", "ratio": "0.25", "name": "a", "tags": '["x","y"]'}
    assert (r["ws"], r["scope"], r["entity"], r["parent"], r["replica"], r["node_rank"]) == \
        (ws, "deployment", "d1", "m1", "r0001", -1)
    assert (r["metric"], r["unit"], r["kind"], r["monotonic"], r["st"], r["cum_state"]) == \
        ("hw.gpu.utilization", "1", "gauge", False, 0, "")
    assert r["series"] == series_hash(ws, "deployment", "d1", "hw.gpu.utilization", "r0001", -1, r["attrs"])
    assert len({x["series"] for x in got}) == 2
    assert math.isnan(r["min"]) and r["count"] == 0 and r["buckets"] == [] and r["bounds"] == []
    assert len({x["seq"] for x in got}) == 3


def test_cumulative_counter_becomes_deltas_with_reset_and_duplicates(ingest, store):
    def send(*points):
        return ok(post(ingest, metrics_request(DEPLOYMENT, [sum_metric("requests", list(points))])))

    send(number(T0, 10, start=S0), number(T0 + 10 * SEC, 15, start=S0))
    send(number(T0 + 10 * SEC, 15, start=S0))  # a retry: dropped
    send(number(T0 + 5 * SEC, 12, start=S0))  # older than the last seen: dropped
    send(number(T0 + 20 * SEC, 4, start=S0))  # a decrease: reset, counts from start
    restart = T0 + 25 * SEC
    send(number(T0 + 30 * SEC, 7, start=restart))  # greater, but a new start: reset
    send(number(T0 + 40 * SEC, 9, start=restart))
    got = rows(store)
    assert [(r["t"], r["st"], r["value"]) for r in got] == [
        (T0, S0, 10.0), (T0 + 10 * SEC, T0, 5.0), (T0 + 20 * SEC, S0, 4.0),
        (T0 + 30 * SEC, restart, 7.0), (T0 + 40 * SEC, T0 + 30 * SEC, 2.0),
    ]
    assert all(r["kind"] == "sum" and r["monotonic"] for r in got)
    assert '"v":9' in got[-1]["cum_state"]
    state = store.ex.query(f"SELECT state, toUnixTimestamp64Nano(ts) AS t FROM {store.t('series_state')} FINAL")
    assert len(state) == 1 and state[0]["t"] == T0 + 40 * SEC and '"v":9' in state[0]["state"]


def test_out_of_order_points_in_one_request_are_sorted(ingest, store):
    ok(post(ingest, metrics_request(DEPLOYMENT, [sum_metric("c", [
        number(T0 + 20 * SEC, 30, start=S0), number(T0, 10, start=S0), number(T0 + 10 * SEC, 25, start=S0)])])))
    assert [(r["t"], r["value"]) for r in rows(store)] == [(T0, 10.0), (T0 + 10 * SEC, 15.0), (T0 + 20 * SEC, 5.0)]


def test_large_int_counter_deltas_are_exact(ingest, store):
    big = 2**62
    ok(post(ingest, metrics_request(DEPLOYMENT, [sum_metric("bytes", [
        number(T0, big, start=S0), number(T0 + SEC, big + 3, start=S0)])])))
    assert [r["value"] for r in rows(store)] == [float(big), 3.0]


def test_delta_sums_gauges_and_up_down_counters(ingest, store):
    ok(post(ingest, metrics_request(DEPLOYMENT, [
        sum_metric("delta.mono", [number(T0, 3, start=S0), number(T0 + SEC, 4, start=T0)], cumulative=False),
        sum_metric("cum.updown", [number(T0, 5, start=S0), number(T0 + SEC, 2, start=S0)], monotonic=False),
        sum_metric("delta.updown", [number(T0, 5), number(T0 + SEC, -2), number(T0 + 2 * SEC, 3)],
                   cumulative=False, monotonic=False),
    ])))
    ok(post(ingest, metrics_request(DEPLOYMENT, [
        sum_metric("delta.updown", [number(T0 + 2 * SEC, 3)], cumulative=False, monotonic=False)])))  # retry
    got = {}
    for r in rows(store):
        got.setdefault(r["metric"], []).append((r["value"], r["monotonic"], r["cum_state"] != ""))
    assert got["delta.mono"] == [(3.0, True, False), (4.0, True, False)]
    assert got["cum.updown"] == [(5.0, False, False), (2.0, False, False)]
    # one request's points of a series: only the newest carries the state (cumulative.py)
    assert got["delta.updown"] == [(5.0, False, False), (3.0, False, False), (6.0, False, True)]


def test_explicit_histogram_deltas_and_resets(ingest, store):
    b = [1.0, 5.0]

    def send(p):
        ok(post(ingest, metrics_request(DEPLOYMENT, [histogram("latency", [p])])))

    send(hist_point(T0, [1, 2, 3], b, start=S0, sum=20.0, min=0.5, max=9.0))
    send(hist_point(T0 + 10 * SEC, [2, 2, 5], b, start=S0, sum=35.0, min=0.5, max=12.0))
    send(hist_point(T0 + 20 * SEC, [1, 0, 0], b, start=S0, sum=0.2, min=0.2, max=0.2))  # decrease: reset
    send(hist_point(T0 + 30 * SEC, [1, 0, 0, 1], [1.0, 5.0, 10.0], start=S0, sum=20.2))  # new bounds: reset
    send(hist_point(T0 + 30 * SEC, [1, 0, 0, 1], [1.0, 5.0, 10.0], start=S0, sum=20.2))  # duplicate
    got = rows(store)
    assert [(r["t"], r["st"], r["count"], r["sum"], r["buckets"], r["bounds"]) for r in got] == [
        (T0, S0, 6, 20.0, [1, 2, 3], b),
        (T0 + 10 * SEC, T0, 3, 15.0, [1, 0, 2], b),
        (T0 + 20 * SEC, S0, 1, 0.2, [1, 0, 0], b),
        (T0 + 30 * SEC, S0, 2, 20.2, [1, 0, 0, 1], [1.0, 5.0, 10.0]),
    ]
    assert (got[0]["min"], got[0]["max"]) == (0.5, 9.0)
    assert math.isnan(got[1]["min"]) and got[1]["max"] == 12.0  # min did not move: unknown in the window
    assert (got[2]["min"], got[2]["max"]) == (0.2, 0.2)
    assert math.isnan(got[3]["min"]) and math.isnan(got[3]["max"])
    assert all(r["kind"] == "histogram" for r in got)


def test_delta_histogram_is_stored_as_sent(ingest, store):
    ok(post(ingest, metrics_request(DEPLOYMENT, [histogram("latency", [
        hist_point(T0, [1, 2, 3], [1.0, 5.0], start=S0, sum=20.0),
        hist_point(T0 + SEC, [0, 1, 0], [1.0, 5.0], start=T0, sum=2.0)], cumulative=False)])))
    got = rows(store)
    assert [(r["count"], r["buckets"], r["cum_state"]) for r in got] == [(6, [1, 2, 3], ""), (1, [0, 1, 0], "")]
    assert store.ex.query(f"SELECT count() AS n FROM {store.t('series_state')}")[0]["n"] == 0


def test_exponential_histogram_delta_across_a_scale_change(ingest, store):
    def send(p):
        ok(post(ingest, metrics_request(DEPLOYMENT, [exp_histogram("ttfb", [p])])))

    # scale 3: positive buckets 4..7, one negative at -2, one zero
    send(exp_point(T0, scale=3, positive=(4, [1, 2, 3, 4]), negative=(-2, [1]), zero_count=1, start=S0, sum=30.0))
    # scale 2: the SDK halved the resolution; at scale 2 the first point is (2, [3, 7]), negative (-1, [1])
    send(exp_point(T0 + 10 * SEC, scale=2, positive=(2, [5, 7, 2]), negative=(-1, [1]), zero_count=3,
                   start=S0, sum=50.0))
    got = rows(store)
    assert [(r["scale"], r["count"], r["zero_count"], r["pos_offset"], r["pos_buckets"], r["neg_offset"],
             r["neg_buckets"], r["sum"]) for r in got] == [
        (3, 12, 1, 4, [1, 2, 3, 4], -2, [1], 30.0),
        (2, 6, 2, 2, [2, 0, 2], 0, [], 20.0),
    ]
    assert got[1]["st"] == T0 and all(r["kind"] == "exp_histogram" for r in got)
    # the scale going back up is fine too: the new point is brought down to scale 2
    send(exp_point(T0 + 20 * SEC, scale=3, positive=(4, [5, 6, 7, 8, 4]), negative=(-2, [1]), zero_count=3,
                   start=S0, sum=60.0))
    last = rows(store)[-1]
    # scale 3 -> 2: (4,[5,6,7,8,4]) is (2,[11,15,4]); minus (2,[5,7,2]) = (2,[6,8,2])
    assert (last["scale"], last["pos_offset"], last["pos_buckets"], last["count"]) == (2, 2, [6, 8, 2], 16)


def test_rejected_points_are_reported_and_the_rest_is_stored(ingest, store):
    good = metrics_request(DEPLOYMENT, [
        gauge("g", [number(T0, 1.0), number(T0, float("nan")), number(0, 1.0), number(T0, None)]),
        sum_metric("c", [number(T0, float("inf"), start=S0), number(T0, 1, start=T0 + SEC)]),
        histogram("h", [hist_point(T0, [1, 2], [1.0, 2.0]), hist_point(T0, [1, 2, 3], [1.0, 2.0], count=5),
                        hist_point(T0, [1, 1, 1], [2.0, 1.0])]),
        exp_histogram("e", [exp_point(T0, scale=30, positive=(0, [1]))]),
        sum_metric("t", [number(T0, 1)], temporality=0),
        gauge("", [number(T0, 1.0)]),
    ])
    good.resource_metrics[0].scope_metrics[0].metrics.add(name="s").summary.data_points.add(time_unix_nano=T0)
    unplaced = metrics_request({"service.name": "x"}, [gauge("g", [number(T0, 1.0), number(T0, 2.0)])])
    bad_id = metrics_request({"sonde.deployment_id": "no/slash"}, [gauge("g", [number(T0, 1.0)])])
    resp = ok(post(ingest, merge(good, unplaced, bad_id)))
    ps = resp.partial_success
    assert ps.rejected_data_points == 15
    msg = ps.error_message
    for part in ("15 data points rejected", "sonde.loops_deployment_id) (2)",
                 "metric 'g': value is NaN or infinite (1)",
                 "metric 'g': time_unix_nano is 0 (1)", "metric 'g': data point has no value (1)"):
        assert part in msg, msg
    assert [(r["metric"], r["value"]) for r in rows(store)] == [("g", 1.0)]
    # the same request as JSON gets the same answer, in OTLP/JSON
    r = post(ingest, merge(good, unplaced, bad_id), json=True)
    assert r.status_code == 200
    body = r.json()["partialSuccess"]
    assert body["rejectedDataPoints"] == "15" and body["errorMessage"].startswith("15 data points rejected")


def test_each_point_problem_has_its_reason(ingest):
    cases = [
        (histogram("h", [hist_point(T0, [1, 2], [1.0, 2.0])]), "2 bucket_counts for 2 explicit_bounds (want 3)"),
        (histogram("h", [hist_point(T0, [1, 2, 3], [1.0, 2.0], count=5)]), "bucket_counts add up to 6, not count 5"),
        (histogram("h", [hist_point(T0, [1, 1, 1], [2.0, 1.0])]), "explicit_bounds are not strictly increasing"),
        (histogram("h", [hist_point(T0, [1], [], sum=float("nan"))]), "sum is NaN or infinite"),
        (exp_histogram("h", [exp_point(T0, scale=21, positive=(0, [1]))]), "scale 21 is outside [-10, 20]"),
        (exp_histogram("h", [exp_point(T0, scale=0, positive=(0, [1]), count=3)]), "add up to 1, not count 3"),
        (sum_metric("h", [number(T0, 1)], temporality=0), "has no aggregation_temporality"),
        (sum_metric("h", [number(T0, 1, start=T0 + 1)]), "start_time_unix_nano is after time_unix_nano"),
        (gauge("h", [number(2**63, 1.0)]), "after the year 2262"),
    ]
    for metric, reason in cases:
        ps = ok(post(ingest, metrics_request(DEPLOYMENT, [metric]))).partial_success
        assert ps.rejected_data_points == 1 and reason in ps.error_message, (reason, ps.error_message)
    summ = metrics_request(DEPLOYMENT, [])
    summ.resource_metrics[0].scope_metrics[0].metrics.add(name="s").summary.data_points.add(time_unix_nano=T0)
    ps = ok(post(ingest, summ)).partial_success
    assert ps.rejected_data_points == 1 and "metric 's' is a Summary, which Sonde does not store" in ps.error_message
    resources = [
        ({"sonde.deployment_id": "no/slash"}, "sonde.deployment_id='no/slash' is not 1 to 64 of"),
        ({"sonde.deployment_id": "d1", "sonde.model_id": "x" * 65}, "sonde.model_id="),
        ({"sonde.chainlet_id": "cl1"}, "sonde.chainlet_id but no sonde.chain_deployment_id"),
        ({"sonde.deployment_id": "d1", "sonde.node_rank": "first"}, "sonde.node_rank='first' is not an integer"),
        ({"service.name": "api"}, "resource has no placing attribute (sonde.deployment_id, sonde.chainlet_id"),
    ]
    for resource, reason in resources:
        req = metrics_request(resource, [gauge("g", [number(T0, 1.0), number(T0, 2.0)])])
        ps = ok(post(ingest, req)).partial_success
        assert ps.rejected_data_points == 2 and reason in ps.error_message, (reason, ps.error_message)


def test_no_recorded_value_points_are_skipped_silently(ingest, store):
    resp = ok(post(ingest, metrics_request(DEPLOYMENT, [
        gauge("g", [number(T0, 1.0), number(T0 + SEC, None, flags=1)]),
        histogram("h", [hist_point(T0, [], [], count=0, flags=1)]),
    ])))
    assert not resp.HasField("partial_success")
    assert [r["value"] for r in rows(store)] == [1.0]


def test_json_gzip_and_protobuf_give_the_same_rows(ingest, store):
    def req(metric):
        return metrics_request(DEPLOYMENT, [
            gauge(metric, [number(T0, 0.5, attrs={"k": 1})]),
            histogram(metric + ".h", [hist_point(T0, [1, 2, 0], [0.1, 1.0], start=S0, sum=1.25, min=0.05)]),
            exp_histogram(metric + ".e", [exp_point(T0, scale=-2, positive=(-3, [4, 0, 1]), negative=(1, [2]),
                                                   zero_count=1, start=S0, sum=-3.5)]),
        ])

    cols = "value, count, sum, min, bounds, buckets, scale, zero_count, pos_offset, pos_buckets, neg_buckets, attrs"
    for i, (js, gz) in enumerate([(False, False), (True, False), (False, True), (True, True)]):
        assert post(ingest, req(f"m{i}"), json=js, gzip=gz).status_code == 200
    got = store.ex.query(f"SELECT metric, {cols} FROM {store.t('metric_points')} ORDER BY metric")
    by_variant = {}
    for r in got:
        variant, _, rest = r.pop("metric").partition(".")
        by_variant.setdefault(variant, []).append((rest, str(r)))
    assert len(by_variant) == 4 and len({str(v) for v in by_variant.values()}) == 1


def test_several_resources_and_node_placement(ingest, store, app, creds):
    training = {"sonde.training_project_id": "p1", "sonde.training_job_id": "j1", "sonde.node_id": "node-a",
                "sonde.node_rank": 1, "service.instance.id": "pod-7"}
    chainlet = {"sonde.chain_id": "c1", "sonde.chain_deployment_id": "cd1", "sonde.chainlet_id": "cl1"}
    loops = {"sonde.loops_deployment_id": "L1"}
    ok(post(ingest, merge(*(metrics_request(res, [gauge("g", [number(T0, float(i))])])
                            for i, res in enumerate([training, chainlet, loops])))))
    got = {r["scope"]: r for r in rows(store)}
    assert {k: (r["entity"], r["parent"], r["replica"], r["node_rank"], r["attrs"]) for k, r in got.items()} == {
        "training_job": ("j1", "p1", "pod-7", 1, {"sonde.node_id": "node-a"}),
        "chainlet": ("cl1", "cd1", "", -1, {}),
        "loops": ("L1", "", "", -1, {}),
    }
    inv = app.state.inventory
    ws = creds["workspace_id"]
    assert inv.get(ws, "training_job", "j1")["parent"] == "p1"
    assert inv.get(ws, "training_job", "j1")["doc"] == {"current_status": "RUNNING"}
    assert inv.get(ws, "training_project", "p1")["parent"] == ""
    cd = inv.get(ws, "chain_deployment", "cd1")
    assert cd["parent"] == "c1" and cd["doc"]["chainlets"][0]["id"] == "cl1"
    assert inv.get(ws, "chain", "c1") and inv.get(ws, "loops_deployment", "L1")["doc"]["status"] == {"name": "RUNNING"}
