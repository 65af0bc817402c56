"""Gauge holds summed per bucket in memory (store/gauge_sums.py) answer a gauge window on
their buckets exactly as the statement does (query/gauge_sums.py against
query/gauges.py), on the real app and store.

Each comparison asks the same question twice of the same store: once with the sums in
memory (and the recent points set aside, so they cannot answer instead), once with
both set aside, so the statement answers.
"""

from __future__ import annotations

import time

import numpy as np
import pyarrow as pa
import pytest

from otlp_build import SEC, gauge, number, sum_metric
from test_metrics_values import NEEDS_DISCOVERY, record_statements, res, send
from test_recent import Clock, _series, assert_same, query

from sonde.ingest.metrics import MAX_AHEAD_NS
from sonde.query import recent
from sonde.store.gauge_sums import COARSE_NS, FINE_NS, GaugeSums

B = time.time_ns() // COARSE_NS * COARSE_NS  # now, on a half-hour boundary
GAUGES = ["baseten_gpu_utilization", "baseten_gpu_memory_used", "baseten_concurrent_requests"]


@pytest.fixture
def statements(store, monkeypatch) -> list[str]:
    """The statements the store runs; skips where the sums are not kept."""
    if store.gauge_sums is None:
        pytest.skip("gauge sums are kept in memory only where this server is the store's one writer")
    return record_statements(store, monkeypatch)


def both_ways(client, store, statements, names, mode, window) -> tuple[dict, dict, list[str]]:
    """(the answer from the sums, the statement's answer, the statements the first ran)."""
    kept = store.recent, store.gauge_sums
    store.recent = None
    try:
        before = len(statements)
        fast = query(client, names, mode=mode, window=window)
        ran = statements[before:]
        store.gauge_sums = None
        slow = query(client, names, mode=mode, window=window)
    finally:
        store.recent, store.gauge_sums = kept
    return fast, slow, ran


def _send_fleet(client, creds, rng, start: int, end: int) -> None:
    """Replicas sending GPU utilisation and memory through one to three sources (two
    units of percent, DCGM's series changing unit halfway), concurrency, series with one sample and with two samples at one
    time, one replica's NVML name as a monotonic sum; each series in two requests, in
    time order, so holds settle across commits."""
    for r in range(5):
        replica = f"r{r}"
        nvml, dcgm, triton = (rng.random() < p for p in (0.7, 0.5, 0.3))
        series: list[tuple[str, str, list]] = []  # (name, unit, points)
        for g in range(int(rng.integers(1, 4))):
            if nvml:
                series.append(("hw.gpu.utilization", "1", [
                    number(t, float(rng.random()), attrs={"hw.gpu.index": str(g)}) for t in _series(rng, start, end)]))
                series.append(("hw.gpu.memory.usage", "By", [
                    number(t, float(rng.integers(1, 80)) * 2**30, attrs={"hw.gpu.index": str(g)})
                    for t in _series(rng, start, end)]))
            if dcgm:
                series.append(("DCGM_FI_DEV_GPU_UTIL", "%" if rng.random() < 0.5 else "", [
                    number(t, float(rng.integers(0, 101)), attrs={"gpu": str(g)}) for t in _series(rng, start, end)]))
                series.append(("DCGM_FI_DEV_FB_USED", "", [
                    number(t, float(rng.integers(1, 80000)), attrs={"gpu": str(g), "UUID": f"GPU-{r}{g}"})
                    for t in _series(rng, start, end)]))
            if triton:
                series.append(("nv_gpu_utilization", "", [
                    number(t, float(rng.random()), attrs={"gpu_uuid": f"GPU-{r}{g}"}) for t in _series(rng, start, end)]))
        if rng.random() < 0.8:
            series.append(("http.server.active_requests", "", [number(t, float(rng.integers(0, 9)))
                                                                for t in _series(rng, start, end)]))
        lone = int(rng.integers(start, end))
        series.append(("http.server.active_requests", "", [number(lone, 3.0, attrs={"lone": replica})]))
        twice = sorted(int(x) for x in rng.integers(start, end, 6))
        twice.insert(3, twice[2])  # two samples at one time
        series.append(("http.server.active_requests", "", [number(t, float(j), attrs={"twice": replica})
                                                           for j, t in enumerate(twice)]))
        for half in (0, 1):
            batch = []
            for name, unit, pts in series:
                cut = len(pts) * 2 // 5
                part = pts[:cut] if half == 0 else pts[cut:]
                if not part:
                    continue
                if name == "hw.gpu.utilization" and r == 4:
                    batch.append(sum_metric(name, part))  # never a gauge row; still takes the choice
                elif name == "DCGM_FI_DEV_GPU_UTIL" and half == 1:
                    batch.append(gauge(name, part, unit="1"))  # a series changing unit: a factor of 1, not 0.01
                else:
                    batch.append(gauge(name, part, unit=unit))
            for i in range(0, len(batch), 4):
                send(client, creds, res(replica), batch[i:i + 4])


def _window(a: int, b: int) -> dict:
    return {"start_epoch_millis": a // 10**6, "end_epoch_millis": b // 10**6}


@pytest.mark.steady_only("compares the two paths on one store, toggled in place")
def test_sums_answer_equal_the_statements_on_random_fleets(client, creds, store, statements):
    _send_fleet(client, creds, np.random.default_rng(20261206), B - 150 * 60 * SEC, B - 20 * SEC)
    windows = [("SERIES", B - 24 * 3600 * SEC, B),  # 300 s steps: the fine buckets
               ("SERIES", B - 7 * 86400 * SEC, B),  # 1800 s steps: the coarse ones
               ("SERIES", B - 12 * 3600 * SEC - 1800 * SEC, B - 1800 * SEC),
               ("SUMMARY", B - 90 * 60 * SEC, B - 30 * 60 * SEC),
               ("SUMMARY", B - 125 * 60 * SEC, B - 5 * 60 * SEC),
               ("SUMMARY", B - 3 * 3600 * SEC, B + 3600 * SEC)]
    answered = 0
    for mode, a, b in windows:
        for names in [[n] for n in GAUGES] + [GAUGES]:
            fast, slow, ran = both_ways(client, store, statements, names, mode, _window(a, b))
            assert not any("metric_points" in s for s in ran), (mode, a, b, names, ran)  # the sums alone
            assert_same(fast, slow)
            answered += sum(v is not None for s in fast["metric_values"] for g in s["values"] for v in g)
        # beside a metric that needs the discovery: its choice leaves series out of the read
        fast, slow, _ = both_ways(client, store, statements, [GAUGES[0], NEEDS_DISCOVERY, GAUGES[1]], mode,
                                  _window(a, b))
        assert_same(fast, slow)
    assert answered > 300  # the comparison compared something


@pytest.mark.steady_only("compares the two paths on one store, toggled in place")
def test_windows_off_the_buckets_are_read_from_the_store(client, creds, store, statements):
    _send_fleet(client, creds, np.random.default_rng(3), B - 60 * 60 * SEC, B - 20 * SEC)
    for a, b, mode in ((B - 3600 * SEC + 60 * SEC, B, "SUMMARY"),  # a start off the buckets
                       (B - 8 * 3600 * SEC - 60 * SEC, B - 60 * SEC, "SERIES"),
                       (B - 3600 * SEC, B, "SERIES")):  # 60 s steps
        fast, slow, ran = both_ways(client, store, statements, GAUGES[:1], mode, _window(a, b))
        assert any("metric_points" in s for s in ran)
        assert fast == slow


@pytest.mark.steady_only("compares the two paths on one store, toggled in place")
def test_a_late_sample_leaves_the_windows_around_it_to_the_statement(client, creds, store, statements):
    t = B - 3600 * SEC
    pts = [number(t + i * 10 * SEC, float(i % 7), attrs={"hw.gpu.index": "0"}) for i in range(300)]
    send(client, creds, res("ra"), [gauge("hw.gpu.utilization", pts[200:], unit="1")])
    store.writer.flush()  # committed: the next request's samples come after, older
    send(client, creds, res("ra"), [gauge("hw.gpu.utilization", pts[:200], unit="1")])
    window = _window(B - 2 * 3600 * SEC, B)
    fast, slow, ran = both_ways(client, store, statements, GAUGES[:1], "SUMMARY", window)
    assert any("metric_points" in s for s in ran)
    assert fast == slow
    # a window ending before the late samples' holds is not touched by them
    fast, slow, ran = both_ways(client, store, statements, GAUGES[:1], "SUMMARY",
                                _window(B - 3 * 3600 * SEC, B - 2 * 3600 * SEC))
    assert not any("metric_points" in s for s in ran)


@pytest.mark.steady_only("reopens the memory of the test's own store")
def test_a_server_starting_loads_the_sums_from_the_store(client, creds, store, statements):
    _send_fleet(client, creds, np.random.default_rng(11), B - 100 * 60 * SEC, B - 20 * SEC)
    store.writer.flush()  # committed: what the memory holds is what the store holds
    horizon_s = store.gauge_sums.horizon_ns / SEC
    live = store.gauge_sums
    store.gauge_sums = None
    store.keep_gauge_sums(recent.METRICS, horizon_s, future_ns=MAX_AHEAD_NS)  # as the server does at start
    loaded = store.gauge_sums
    assert len(loaded) == len(live) > 0
    for mode, a, b in (("SERIES", B - 24 * 3600 * SEC, B), ("SUMMARY", B - 90 * 60 * SEC, B - 5 * 60 * SEC)):
        fast, slow, ran = both_ways(client, store, statements, GAUGES, mode, _window(a, b))
        assert not any("metric_points" in s for s in ran)
        assert_same(fast, slow)
        assert fast["metric_descriptors"]
    # and then it settles the holds of what arrives after, as the live one does
    pts = [number(B - 15 * SEC + i * SEC, 0.5, attrs={"hw.gpu.index": "0"}) for i in range(5)]
    send(client, creds, res("r0"), [gauge("hw.gpu.utilization", pts, unit="1")])
    fast, slow, ran = both_ways(client, store, statements, GAUGES[:1], "SUMMARY", _window(B - 3600 * SEC, B))
    assert not any("metric_points" in s for s in ran)
    assert_same(fast, slow)


def _points(rows: list[tuple]) -> pa.Table:
    """Ingest-shaped gauge rows (entity, series, ts, value)."""
    from sonde.store.schema import ARROW_SCHEMAS

    schema = ARROW_SCHEMAS["metric_points"]
    n = len(rows)
    cols = {f.name: pa.nulls(n, f.type) for f in schema}
    cols.update(ws=pa.array(["w"] * n), scope=pa.array(["deployment"] * n), entity=pa.array([r[0] for r in rows]),
                metric=pa.array(["g"] * n), series=pa.array([r[1] for r in rows], pa.uint64()),
                ts=pa.array([r[2] for r in rows], pa.timestamp("ns", "UTC")),
                value=pa.array([r[3] for r in rows], pa.float64()), kind=pa.array(["gauge"] * n),
                monotonic=pa.array([False] * n), unit=pa.array([""] * n), replica=pa.array(["r"] * n),
                node_rank=pa.array([-1] * n, pa.int32()), gpu=pa.array(["0"] * n))
    return pa.table([cols[f.name].cast(f.type) for f in schema], schema=schema)


def test_sums_settle_each_hold_when_its_successor_arrives():
    clock = Clock(B)
    sums = GaugeSums(["g"], 48 * 3600, future_ns=3600 * SEC, clock=clock)
    t0 = B - 7200 * SEC
    # 10 s apart, then a 70 s gap (the sample before it holds one interval: 10 s), then
    # a sample 1 s later
    sums.add(_points([("d", 1, t0 + i * 10 * SEC, float(i)) for i in range(3)]))
    sums.add(_points([("d", 1, t0 + 90 * SEC, 5.0), ("d", 1, t0 + 91 * SEC, 6.0)]))
    got = sums.window("w", "deployment", "d", B - 3 * 3600 * SEC, B, FINE_NS, ["g"])
    assert got is not None and got.width == FINE_NS
    k = (t0 - (B - 3 * 3600 * SEC)) // FINE_NS
    # holds: 0 for 10 s, 1 for 10 s, 2 for 10 s (gap 70 s > 2 x 10 s), 5 for 1 s; 6 is the
    # newest: nothing settles its hold yet, one interval (1 s), left to the answer
    assert got.covered[0, k] == 31 * SEC
    assert got.integral[0, k] / SEC == pytest.approx(0 * 10 + 1 * 10 + 2 * 10 + 5 * 1.0)
    assert got.tail_t.tolist() == [t0 + 91 * SEC] and got.tail_e.tolist() == [SEC] and got.tail_v.tolist() == [6.0]
    # a late sample: windows from 15 minutes before it to 15 after the newest go to the store
    sums.add(_points([("d", 1, t0 + 45 * SEC, 9.0)]))
    assert sums.window("w", "deployment", "d", B - 3 * 3600 * SEC, B, FINE_NS, ["g"]) is None
    assert sums.window("w", "deployment", "d", B - 5 * 3600 * SEC, t0 - 1800 * SEC, FINE_NS, ["g"]) is not None
    # off the buckets, a last step shorter than the others, or a metric not kept: None
    assert sums.window("w", "deployment", "d", B - 3 * 3600 * SEC + SEC, B, FINE_NS, ["g"]) is None
    assert sums.window("w", "deployment", "d", B - 5 * 3600 * SEC, B - 5 * 3600 * SEC + 1200 * SEC, 900 * SEC,
                       ["g"]) is None
    assert sums.window("w", "deployment", "d", B - 5 * 3600 * SEC, t0 - 1800 * SEC, FINE_NS, ["g", "h"]) is None
    # before the fine buckets' 26 hours: the coarse ones, in half-hour steps only
    assert sums.window("w", "deployment", "d", B - 40 * 3600 * SEC, B - 30 * 3600 * SEC, FINE_NS, ["g"]) is None
    coarse = sums.window("w", "deployment", "d", B - 40 * 3600 * SEC, B - 30 * 3600 * SEC, COARSE_NS, ["g"])
    assert coarse is not None and coarse.width == COARSE_NS
    # a series and an entity whose newest sample is past the horizon are dropped
    sums.add(_points([("d2", 7, B - 10 * SEC, 1.0)]))
    assert len(sums) == 2
    clock.now += 48 * 3600 * SEC + 1800 * SEC
    sums.add(_points([("d2", 8, clock.now - 10 * SEC, 1.0), ("d2", 8, clock.now - 5 * SEC, 2.0)]))
    assert len(sums) == 1 and list(sums._entities) == [("w", "deployment", "d2")]
    got = sums.window("w", "deployment", "d2", clock.now // COARSE_NS * COARSE_NS - 3600 * SEC,
                      clock.now // COARSE_NS * COARSE_NS + COARSE_NS, FINE_NS, ["g"])
    assert [k[1] for k in got.keys] == [8] and got.covered.sum() == 5 * SEC
    # retention dropped partitions: nothing answered from before now and the future ingest accepts
    sums.reset()
    assert len(sums) == 0
    assert sums.window("w", "deployment", "d", B - 3600 * SEC, B, FINE_NS, ["g"]) is None

