"""Request counts kept in memory per five minutes (store/request_counts.py) answer
requests by status over a window on their buckets exactly as the statement does
(query/recent_counts.py against query/histograms.status_counts), on the real app and store.

Each comparison asks the same question twice of the same store: once with the counts
in memory, once with them set aside, so the statement answers.
"""

from __future__ import annotations

import time

import numpy as np
import pyarrow as pa
import pytest

from otlp_build import SEC, exp_histogram, exp_point, gauge, hist_point, histogram, number, sum_metric
from test_metrics_values import NEEDS_DISCOVERY, metric, record_statements, res, send
import test_recent
from test_recent import Clock, assert_same, query

from sonde.ingest.metrics import MAX_AHEAD_NS
from sonde.query import recent_counts
from sonde.store.request_counts import BUCKET_NS, RequestCounts, RequestLatency, status_classes
from sonde.store.views import HTTP_STATUS

NEW, OLD = "http.server.request.duration", "http.server.duration"
A = time.time_ns() // BUCKET_NS * BUCKET_NS  # now, on a bucket boundary
REQUESTS = "baseten_inference_requests_total"
LATENCY = "baseten_end_to_end_response_time_seconds"
CODES = ["200", "201", "404", "500", "503", "302", "+200", "0429", "abc", "", "700", "199", None]


def both_ways(client, store, statements, names, mode, window, memory: str = "request_counts") -> tuple[dict, dict,
                                                                                                      list[str]]:
    return test_recent.both_ways(client, store, statements, names, mode, window, memory=memory)


@pytest.fixture
def statements(store, monkeypatch) -> list[str]:
    """The statements the store runs; skips where the counts are not kept."""
    if store.request_counts is None:
        pytest.skip("request counts are kept in memory only where this server is the store's one writer")
    return record_statements(store, monkeypatch)


def _times(rng, start: int, end: int) -> list[int]:
    every = int(rng.integers(10, 61)) * SEC
    t, out = start + int(rng.integers(0, every)), []
    while t < end:
        out.append(t)
        t += every * (int(rng.integers(3, 30)) if rng.random() < 0.02 else 1) + int(rng.integers(-3, 4)) * SEC
    return out


def _attrs(rng) -> dict:
    code = CODES[int(rng.integers(0, len(CODES)))]
    if code is None:
        return {"http.route": "/predict"}
    key = NEW if rng.random() < 0.7 else OLD
    return {("http.response.status_code" if key == NEW else "http.status_code"): code}


def _send_fleet(client, creds, rng, start: int, end: int, *, exp: bool = True) -> None:
    """``exp``: replica r3 sends exponential histograms (else explicit ones in ms)."""
    for r in range(6):
        replica = f"r{r}"
        # which sources a replica sends: the stable name, the older one, or both (the
        # stable one wins); r5 sends the stable name only as a sum, never a histogram,
        # so its older histograms are left out by the choice
        names = {0: [NEW], 1: [OLD], 2: [NEW, OLD], 3: [NEW], 4: [OLD, NEW], 5: [OLD]}[r]
        metrics, late = [], []
        # two bucket layouts; points with and without min and max
        bounds, unit = ([0.1, 0.5, 1.0], "s") if r % 2 else ([50.0, 250.0, 500.0, 1000.0], "ms")
        if r == 2:
            unit = "s"
        for name in names:
            for s in range(int(rng.integers(1, 4))):
                attrs = _attrs(rng)
                pts = []
                for t in _times(rng, start, end):
                    counts = [int(x) for x in rng.integers(0, 4 if rng.random() < 0.9 else 1, len(bounds) + 1)]
                    # (in the last two hours every point sends them: the quantiles use them there)
                    lo_hi = {"min": float(rng.random()) / 100, "max": 2.0 + float(rng.random())} \
                        if rng.random() < 0.6 or t > end - 7200 * SEC else {}
                    pts.append(hist_point(t, counts, bounds, start=t - 10 * SEC, sum=float(rng.random()) * 5,
                                          attrs=attrs, **lo_hi))
                half = len(pts) // 3
                if r == 3 and exp:  # exponential histograms, delta
                    pts = [exp_point(t, scale=2, positive=(0, [int(x) for x in rng.integers(0, 3, 3)]),
                                     zero_count=int(rng.integers(0, 2)), start=t - 10 * SEC, sum=1.0, attrs=attrs)
                           for t in _times(rng, start, end)]
                    metrics.append(exp_histogram(name, pts, cumulative=False))
                    continue
                metrics.append(histogram(name, pts[half:], cumulative=False, unit=unit))
                late.append(histogram(name, pts[:half], cumulative=False, unit=unit))  # the earlier third arrives last
        if r == 5:
            metrics.append(sum_metric(NEW, [number(t, 1.0, start=start) for t in _times(rng, start, end)[:5]]))
        metrics.append(gauge("hw.gpu.utilization", [number(end - SEC, 0.5, attrs={"hw.gpu.index": "0"})], unit="1"))
        for batch in (metrics, late):
            for m in batch:
                send(client, creds, res(replica), [m])


@pytest.mark.steady_only("compares the two paths on one store, toggled in place")
def test_memory_counts_equal_the_statements_on_random_fleets(client, creds, store, statements):
    _send_fleet(client, creds, np.random.default_rng(20261206), A - 10 * 3600 * SEC, A - 30 * SEC)
    h = 3600 * SEC
    aligned = [("SERIES", A - 8 * h, A), ("SERIES", A - 24 * h, A + h), ("SUMMARY", A - 7 * h, A - 2 * h),
               ("SERIES", A - 9 * h - 25 * 60 * SEC, A - 35 * 60 * SEC)]
    unaligned = [("SERIES", A - 8 * h + 7 * SEC, A), ("SERIES", A - 6 * h, A)]  # an edge, or 60 s steps
    answered = 0
    for mode, a, b in aligned + unaligned:
        window = {"start_epoch_millis": a // 10**6, "end_epoch_millis": b // 10**6}
        fast, slow, ran = both_ways(client, store, statements, [REQUESTS], mode, window)
        memory = not any("metric_points" in s for s in ran)
        assert memory == ((mode, a, b) in aligned), (mode, a, b, ran)
        assert_same(fast, slow)
        answered += sum(v is not None for s in fast["metric_values"] for g in s["values"] for v in g)
        # beside a metric that needs the discovery: its choice leaves series out of the read
        fast, slow, _ = both_ways(client, store, statements, [REQUESTS, NEEDS_DISCOVERY], mode, window)
        assert_same(fast, slow)
    assert answered > 200  # the comparison compared something
    # and a replica whose first source never sent a histogram counts nothing
    window = {"start_epoch_millis": (A - 8 * h) // 10**6, "end_epoch_millis": A // 10**6}
    counts = store.request_counts.window(_ws(store), "deployment", "d1", A - 8 * h, A, [NEW, OLD])
    assert {k[1] for k in counts.keys} >= {"r5"}
    assert metric(query(client, [REQUESTS], "SUMMARY", window), REQUESTS)[1]


GPU = "baseten_gpu_utilization"


def _all_memories_or_none(client, store, statements, names, mode, window) -> tuple[dict, dict, list[str]]:
    """(the answer with the store's memories, without any, the statements the first ran)."""
    before = len(statements)
    fast = query(client, names, mode=mode, window=window)
    ran = statements[before:]
    kept = {m: getattr(store, m) for m in ("recent", "request_counts", "request_latency", "gauge_sums")}
    try:
        for m in kept:
            setattr(store, m, None)
        slow = query(client, names, mode=mode, window=window)
    finally:
        for m, memory in kept.items():
            setattr(store, m, memory)
    return fast, slow, ran


@pytest.mark.steady_only("compares the two paths on one store, toggled in place")
def test_memory_latency_equals_the_statements_on_random_fleets(client, creds, store, statements):
    _send_fleet(client, creds, np.random.default_rng(20261207), A - 10 * 3600 * SEC, A - 30 * SEC, exp=False)
    h = 3600 * SEC
    aligned = [("SERIES", A - 8 * h, A), ("SERIES", A - 24 * h, A + h), ("SUMMARY", A - 7 * h, A - 2 * h),
               ("SERIES", A - 9 * h - 25 * 60 * SEC, A - 35 * 60 * SEC)]
    unaligned = [("SERIES", A - 8 * h + 7 * SEC, A), ("SERIES", A - 6 * h, A)]
    answered = 0
    for mode, a, b in aligned + unaligned:
        window = {"start_epoch_millis": a // 10**6, "end_epoch_millis": b // 10**6}
        fast, slow, ran = both_ways(client, store, statements, [LATENCY], mode, window, "request_latency")
        memory = not any("metric_points" in s for s in ran)
        assert memory == ((mode, a, b) in aligned), (mode, a, b, ran)
        assert_same(fast, slow)
        answered += sum(v is not None for s in fast["metric_values"] for g in s["values"] for v in g)
        # with the requests by status of the same histograms: each from its memory, else
        # one statement reads both (the latency set aside: the answer it gives)
        fast, slow, ran = both_ways(client, store, statements, [REQUESTS, LATENCY], mode, window, "request_latency")
        assert (not any("metric_points" in s for s in ran)) == ((mode, a, b) in aligned), (mode, a, b, ran)
        assert_same(fast, slow)
        # and a GPU gauge beside them: three metrics choosing their sources each in its
        # memory, with no discovery statement first (query/sources.choose_sources)
        fast, slow, ran = _all_memories_or_none(client, store, statements, [REQUESTS, LATENCY, GPU], mode, window)
        assert (not any("metric_points" in s for s in ran)) == ((mode, a, b) in aligned), (mode, a, b, ran)
        assert_same(fast, slow)
        fast, slow, _ = both_ways(client, store, statements, [LATENCY, NEEDS_DISCOVERY], mode, window,
                                  "request_latency")
        assert_same(fast, slow)
    assert answered > 200


@pytest.mark.steady_only("compares the two paths on one store, toggled in place")
def test_an_exponential_histogram_in_the_window_leaves_the_latency_to_the_statement(client, creds, store,
                                                                                    statements):
    _send_fleet(client, creds, np.random.default_rng(5), A - 3 * 3600 * SEC, A - 30 * SEC)  # r3: exponential
    window = {"start_epoch_millis": (A - 8 * 3600 * SEC) // 10**6, "end_epoch_millis": A // 10**6}
    fast, slow, ran = both_ways(client, store, statements, [LATENCY], "SERIES", window, "request_latency")
    assert any("metric_points" in s for s in ran)
    assert_same(fast, slow)
    assert metric(fast, LATENCY)[1]


@pytest.mark.steady_only("reopens the memory of the test's own store")
def test_a_server_starting_loads_the_counts_from_the_store(client, creds, store, statements):
    _send_fleet(client, creds, np.random.default_rng(7), A - 5 * 3600 * SEC, A - 30 * SEC, exp=False)
    horizon_s = store.request_counts.horizon_ns / SEC
    store.request_counts = store.request_latency = None
    store.keep_request_counts(recent_counts.METRICS, horizon_s, future_ns=MAX_AHEAD_NS)  # as the server does
    window = {"start_epoch_millis": (A - 8 * 3600 * SEC) // 10**6, "end_epoch_millis": A // 10**6}  # 300 s steps
    for name, memory in ((REQUESTS, "request_counts"), (LATENCY, "request_latency")):
        fast, slow, ran = both_ways(client, store, statements, [name], "SERIES", window, memory)
        assert not any("metric_points" in s for s in ran)
        assert_same(fast, slow)
        assert fast["metric_descriptors"]


@pytest.mark.steady_only("reopens the memory of the test's own store")
def test_counts_are_kept_no_longer_than_the_retention(client, store, statements, monkeypatch):
    """The tables' TTL deletes rows past the retention in merges, unannounced: counts
    older than that could be ones the store no longer holds."""
    monkeypatch.setattr(store.retention, "days", 1)
    kept = store.request_counts
    try:
        store.keep_request_counts(recent_counts.METRICS, 192 * 3600, future_ns=MAX_AHEAD_NS)
        assert store.request_counts.horizon_ns == 86400 * SEC
        assert store.request_counts.window(_ws(store), "deployment", "d1", A - 25 * 3600 * SEC, A, [NEW]) is None
    finally:
        store.request_counts = kept


def _points(rows: list[tuple]) -> pa.Table:
    """Ingest-shaped rows (entity, metric, replica, ts, kind, count, attributes); one
    series per (entity, metric, replica, attributes), as ingest keys them."""
    from sonde.store.schema import ARROW_SCHEMAS

    schema = ARROW_SCHEMAS["metric_points"]
    n = len(rows)
    cols = {f.name: pa.nulls(n, f.type) for f in schema}
    cols.update(ws=pa.array(["w"] * n), scope=pa.array(["deployment"] * n), entity=pa.array([r[0] for r in rows]),
                metric=pa.array([r[1] for r in rows]), replica=pa.array([r[2] for r in rows]),
                ts=pa.array([r[3] for r in rows], pa.timestamp("ns", "UTC")), kind=pa.array([r[4] for r in rows]),
                count=pa.array([r[5] for r in rows], pa.uint64()),
                series=pa.array([hash((r[0], r[1], r[2], *sorted(r[6].items()))) % 2**63 for r in rows], pa.uint64()),
                attrs=pa.array([list(r[6].items()) for r in rows], schema.field("attrs").type))
    return pa.table([cols[f.name].cast(f.type) for f in schema], schema=schema)


def test_counts_keep_the_horizon_per_entity_in_five_minute_buckets():
    clock = Clock(10_000 * BUCKET_NS + 17 * SEC)
    counts = RequestCounts([NEW, OLD], horizon_s=3 * 3600, future_ns=3600 * SEC, clock=clock)
    now = clock.now
    ok = {"http.response.status_code": "200"}
    counts.add(_points([("d1", NEW, "r", now - 10 * SEC, "histogram", 5, ok),
                        ("d1", NEW, "r", now - 20 * SEC, "histogram", 2, {"http.status_code": "503"}),
                        ("d1", NEW, "r", now - 400 * SEC, "exp_histogram", 7, ok),
                        ("d1", NEW, "r", now - 30 * SEC, "sum", 9, ok),  # of another kind: a point, no count
                        ("d1", "other", "r", now - 30 * SEC, "histogram", 9, ok),  # not a kept metric
                        ("d1", NEW, "r", now - 4 * 3600 * SEC, "histogram", 9, ok),  # older than the horizon
                        ("d2", OLD, "q", now + 1800 * SEC, "histogram", 1, ok)]))
    t0, t1 = now // BUCKET_NS * BUCKET_NS - 2 * BUCKET_NS, now // BUCKET_NS * BUCKET_NS + BUCKET_NS
    c = counts.window("w", "deployment", "d1", t0, t1, [NEW, OLD])
    got = {k: tuple(c.values[f][i].tolist() for f in ("n", "points", "rows")) for i, k in enumerate(c.keys)}
    # now is 17 s into its bucket: 10 s ago is in it, 20 s and 30 s ago in the one before, 400 s ago two before
    assert got == {(NEW, "r", 2): ([7, 0, 5], [1, 0, 1], [1, 1, 1]), (NEW, "r", 5): ([0, 2, 0], [0, 1, 0], [0, 1, 0])}
    assert counts.window("w", "deployment", "d1", t0 + SEC, t1, [NEW]) is None  # not on a bucket boundary
    assert counts.window("w", "deployment", "d1", t0, t1, [NEW, "other"]) is None  # a metric not kept
    assert counts.window("w", "deployment", "d1", now - 4 * 3600 * SEC // BUCKET_NS * BUCKET_NS, t1, [NEW]) is None
    assert counts.window("w", "deployment", "d3", t0, t1, [NEW]).keys == []
    # the ring: a bucket a horizon and more later takes an old bucket's slot over
    clock.now += 4 * 3600 * SEC
    counts.add(_points([("d1", NEW, "r", clock.now, "histogram", 1, ok)]))
    c = counts.window("w", "deployment", "d1", clock.now // BUCKET_NS * BUCKET_NS - 3600 * SEC,
                      clock.now // BUCKET_NS * BUCKET_NS + BUCKET_NS, [NEW])
    assert c.values["n"].sum() == 1 and c.values["rows"].sum() == 1
    # and what the horizon left is dropped: the 503s' key, d2 (no write since) as a whole
    assert list(counts._rings) == [("w", "deployment", "d1")]
    assert list(counts._rings[("w", "deployment", "d1")].index) == [(NEW, "r", 2)]
    # a failed commit's points, and retention dropping partitions: nothing answered reaching back to them
    counts.lost([_points([("d1", NEW, "r", clock.now - 600 * SEC, "histogram", 1, ok)])])
    assert counts.window("w", "deployment", "d1", clock.now // BUCKET_NS * BUCKET_NS - BUCKET_NS * 2,
                         clock.now // BUCKET_NS * BUCKET_NS, [NEW]) is None
    counts.reset()
    assert len(counts) == 0
    assert counts.window("w", "deployment", "d1", (clock.now // BUCKET_NS + 20) * BUCKET_NS,
                         (clock.now // BUCKET_NS + 21) * BUCKET_NS, [NEW]).keys == []


def test_latency_sums_keep_each_layout_of_a_series_apart():
    clock = Clock(10_000 * BUCKET_NS + 17 * SEC)
    sums = RequestLatency([NEW], horizon_s=3 * 3600, future_ns=3600 * SEC, clock=clock)
    t = clock.now - 10 * SEC
    ok = {"http.response.status_code": "200"}
    rows = _points([("d1", NEW, "r", t, "histogram", 3, ok), ("d1", NEW, "r", t - SEC, "histogram", 4, ok),
                    ("d1", NEW, "r", t - 2 * SEC, "histogram", 5, ok), ("d1", NEW, "r", t - 3 * SEC, "sum", 0, ok)])
    schema = rows.schema
    rows = rows.set_column(schema.get_field_index("bounds"), "bounds", pa.array(
        [[1.0, 2.0], [1.0, 2.0], [1.0, 5.0], None], schema.field("bounds").type))
    rows = rows.set_column(schema.get_field_index("buckets"), "buckets", pa.array(
        [[1, 1, 1], [2, 1, 1], [5, 0, 0], None], schema.field("buckets").type))
    rows = rows.set_column(schema.get_field_index("min"), "min", pa.array([0.5, float("nan"), 0.2, None], pa.float64()))
    rows = rows.set_column(schema.get_field_index("sum"), "sum", pa.array([3.0, 4.0, 1.0, None], pa.float64()))
    sums.add(rows)
    b0 = clock.now // BUCKET_NS * BUCKET_NS
    got = sums.window("w", "deployment", "d1", b0, b0 + BUCKET_NS, [NEW])
    by_key = {k[2:]: {f: (v[i] if f != "buckets" else v[i]).tolist() for f, v in got.values.items()}
              for i, k in enumerate(got.keys)}
    assert by_key[("histogram", "", (1.0, 2.0))] == {"n": [7], "s": [7.0], "mn": [0.5], "mx": [float("-inf")],
                                                     "no_min": [1], "no_max": [2], "rows": [2], "buckets": [[3, 2, 2]]}
    assert by_key[("histogram", "", (1.0, 5.0))]["buckets"] == [[5, 0, 0]]
    assert by_key[("sum", "", ())]["rows"] == [1] and by_key[("sum", "", ())]["n"] == [0]


def test_a_window_reads_its_buckets_across_the_ring_end():
    """Buckets sit in a ring of slots; a window whose slots run past the ring's end reads
    on from its start, and a slot holding another bucket reads as empty."""
    clock = Clock(0)
    counts = RequestCounts([NEW], horizon_s=3600, future_ns=2 * BUCKET_NS, clock=clock)
    sums = RequestLatency([NEW], horizon_s=3600, future_ns=2 * BUCKET_NS, clock=clock)
    size = counts._size
    now_b = size * 1000 + 5  # the hour's first whole bucket is in slot size - 6: its slots wrap
    first = now_b - 11
    ok = {"http.response.status_code": "200"}

    def add(buckets: list[int], n) -> None:
        rows = _points([("d1", NEW, "r", b * BUCKET_NS + 30 * SEC, "histogram", n(b), ok) for b in buckets])
        schema = rows.schema
        rows = rows.set_column(schema.get_field_index("bounds"), "bounds", pa.array(
            [[1.0]] * rows.num_rows, schema.field("bounds").type))
        rows = rows.set_column(schema.get_field_index("buckets"), "buckets", pa.array(
            [[n(b) - 1, 1] for b in buckets], schema.field("buckets").type))
        counts.add(rows)
        sums.add(rows)

    # an earlier moment: the two buckets whose slots the two after now's take, and the
    # hour's first buckets; then now: the rest
    clock.now = (now_b - 5) * BUCKET_NS + 17 * SEC
    add([now_b + 1 - size, now_b + 2 - size], lambda b: 100)
    add(list(range(first, now_b - 4)), lambda b: b % 7 + 1)
    clock.now = now_b * BUCKET_NS + 17 * SEC
    add(list(range(now_b - 4, now_b + 1)), lambda b: b % 7 + 1)
    assert first % size + (now_b + 1 - first) > size
    for lo in range(first, now_b + 1):
        for hi in range(lo, now_b + 3):  # the last two: slots still holding the buckets of long ago
            want = [b % 7 + 1 if b <= now_b else 0 for b in range(lo, hi)]
            c = counts.window("w", "deployment", "d1", lo * BUCKET_NS, hi * BUCKET_NS, [NEW])
            assert c.values["n"].sum(axis=0).tolist() == want
            assert c.values["rows"].sum(axis=0).tolist() == [int(w > 0) for w in want]
            latency = sums.window("w", "deployment", "d1", lo * BUCKET_NS, hi * BUCKET_NS, [NEW])
            assert [b.tolist() for b in latency.values["buckets"]] == [
                [[w - 1, 1] if w else [0, 0] for w in want]]
    # a window longer than the ring (it reaches far past what ingest accepts) goes round it
    c = counts.window("w", "deployment", "d1", first * BUCKET_NS, (first + 3 * size) * BUCKET_NS, [NEW])
    assert c.values["n"].sum(axis=0).tolist() == [b % 7 + 1 if b <= now_b else 0 for b in range(first, first + 3 * size)]


def test_status_classes_read_the_status_as_the_store_does(store):
    """As the store's ``http_status`` column (store/views.HTTP_STATUS: the first status
    attribute present, read with toUInt16OrZero), classed 2-5 for 200-599, else 0."""
    codes = ["200", "0200", " 200", "+200", "++200", "-1", "70000", "599", "600", "2e2", "", "199", "0x200",
             "00000000000000000404", "+0404", "404 ", "abc", "\u0662\u0660\u0660"]
    attrs = [[("http.response.status_code", c)] for c in codes] + [[("http.status_code", "503")], [],
                                                                   [("http.response.status_code", "201"),
                                                                    ("http.status_code", "503")]]
    got = status_classes(pa.array(attrs, pa.map_(pa.string(), pa.string()))).to_pylist()
    want = []
    for a in attrs:
        row = store.ex.query(f"SELECT {HTTP_STATUS} AS code FROM (SELECT mapFromArrays({{k:Array(String)}},"
                             " {v:Array(String)}) AS attrs)", {"k": [k for k, _ in a], "v": [v for _, v in a]})
        code = int(row[0]["code"])
        want.append(code // 100 if 200 <= code <= 599 else 0)
    assert got == want
    assert want.count(2) == 4 and want.count(4) == 2  # the store read some as codes, too


def _ws(store) -> str:
    return store.ex.query(f"SELECT any(ws) AS ws FROM {store.t('metric_points')}")[0]["ws"]
