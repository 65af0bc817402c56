"""Recent points kept in memory (store/recent.py) answer a gauge window exactly as the
statement does (query/recent.py against query/gauges.py), on the real app and store.

Each comparison asks the same question twice of the same store: once with the points
in memory, once with them set aside, so the statement answers.
"""

from __future__ import annotations

import time

import numpy as np
import pyarrow as pa
import pytest

from otlp_build import SEC, gauge, number, sum_metric
from spec_schema import validate
from test_metrics_values import NEEDS_DISCOVERY, metric, record_statements, res, send

from sonde.ingest.metrics import MAX_AHEAD_NS
from sonde.query import recent
from sonde.store import recent as recent_store
from sonde.store.recent import Recent

URL = "/v1/models/m1/deployments/d1/metrics"
NOW = time.time_ns() // SEC * SEC
GAUGES = ["baseten_gpu_utilization", "baseten_gpu_memory_used", "baseten_concurrent_requests"]


def query(client, names, mode, window) -> dict:
    """An answer computed now, not one kept from an earlier question (docs/api.md#caching)."""
    r = client.get(URL, params={"mode": mode, "metrics": ",".join(names), **window},
                   headers={"Cache-Control": "no-cache"})
    assert r.status_code == 200, r.text
    assert r.headers["X-Sonde-Cache"] == "miss"
    body = r.json()
    validate(body, "GetDeploymentMetricsResponseV1")
    return body


def both_ways(client, store, statements, names, mode, window, memory: str = "recent") -> tuple[dict, dict, list[str]]:
    """(the answer from memory, the statement's answer, the statements the first ran);
    ``statements``: test_metrics_values.record_statements' list; ``memory``: the
    store's attribute holding it, set aside for the second answer."""
    before = len(statements)
    fast = query(client, names, mode=mode, window=window)
    ran = statements[before:]
    kept = getattr(store, memory)
    setattr(store, memory, None)
    try:
        slow = query(client, names, mode=mode, window=window)
    finally:
        setattr(store, memory, kept)
    return fast, slow, ran


def assert_same(a: dict, b: dict) -> None:
    assert a["metric_descriptors"] == b["metric_descriptors"]
    assert [v["start_epoch_millis"] for v in a["metric_values"]] == [v["start_epoch_millis"] for v in b["metric_values"]]
    for x, y in zip(a["metric_values"], b["metric_values"]):
        for gx, gy in zip(x["values"], y["values"]):
            assert [v is None for v in gx] == [v is None for v in gy]
            assert [v for v in gx if v is not None] == pytest.approx([v for v in gy if v is not None], rel=1e-12)


def _series(rng, start: int, end: int) -> list[int]:
    """Irregular sample times: an interval of 5-30 s with jitter, outages, a burst."""
    every = int(rng.integers(5, 31)) * SEC
    t, out = start + int(rng.integers(0, every)), []
    while t < end:
        out.append(t)
        r = rng.random()
        t += every * (int(rng.integers(3, 12)) if r < 0.03 else 1) + int(rng.integers(-2, 3)) * SEC // 4
        if r > 0.98:
            out.append(t - every // 3)  # a sample out of rhythm
    return sorted(set(out))


def _send_fleet(client, creds, rng) -> None:
    start, end = NOW - 100 * 60 * SEC, NOW - 30 * SEC
    for r in range(5):
        replica = f"r{r}"
        # per replica, which sources it sends: NVML, DCGM (percent), Triton, or several
        nvml, dcgm, triton = (rng.random() < p for p in (0.7, 0.5, 0.3))
        metrics = []
        for g in range(int(rng.integers(1, 4))):
            if nvml:
                pts = [number(t, float(rng.random()), attrs={"hw.gpu.index": str(g)}) for t in _series(rng, start, end)]
                # one replica's NVML name as a monotonic sum: never a gauge row, yet it
                # still takes that replica's source choice
                metrics.append(sum_metric("hw.gpu.utilization", pts) if r == 4 else
                               gauge("hw.gpu.utilization", pts, unit="1"))
                metrics.append(gauge("hw.gpu.memory.usage", [
                    number(t, float(rng.integers(1, 80)) * 2**30, attrs={"hw.gpu.index": str(g)})
                    for t in _series(rng, start, end)], unit="By"))
            if dcgm:
                metrics.append(gauge("DCGM_FI_DEV_GPU_UTIL", [
                    number(t, float(rng.integers(0, 101)), attrs={"gpu": str(g)}) for t in _series(rng, start, end)],
                    unit="%" if rng.random() < 0.5 else ""))
                metrics.append(gauge("DCGM_FI_DEV_FB_USED", [
                    number(t, float(rng.integers(1, 80000)), attrs={"gpu": str(g), "UUID": f"GPU-{r}{g}"})
                    for t in _series(rng, start, end)]))
            if triton:
                metrics.append(gauge("nv_gpu_utilization", [
                    number(t, float(rng.random()), attrs={"gpu_uuid": f"GPU-{r}{g}"}) for t in _series(rng, start, end)]))
            if nvml and g == 0:
                # a second series of one GPU (one more attribute): RATIO gauges average
                # a label set's series; and one of three samples, gaps 7 s and 40 s,
                # whose interval is the lower of the two
                lone = [start + 3600 * SEC + d * SEC for d in (0, 7, 47)]
                metrics.append(gauge("hw.gpu.utilization", [
                    number(t, float(rng.random()), attrs={"hw.gpu.index": "0", "hw.gpu.name": "H100"})
                    for t in _series(rng, start, end)] + [
                    number(t, 0.9, attrs={"hw.gpu.index": "0", "hw.gpu.name": "spare"}) for t in lone], unit="1"))
        times = _series(rng, start, end)
        if rng.random() < 0.8:
            metrics.append(gauge("http.server.active_requests", [number(t, float(rng.integers(0, 9))) for t in times]))
        # a series with a single sample: its hold is the default interval
        metrics.append(gauge("http.server.active_requests", [number(int(rng.integers(start, end)), 3.0,
                                                                    attrs={"lone": replica})]))
        late = []
        if r == 2:  # the earlier half of each of this replica's gauge series arrives last
            for m in metrics:
                if m.HasField("gauge") and len(m.gauge.data_points) > 4:
                    half = len(m.gauge.data_points) // 2
                    late.append(gauge(m.name, list(m.gauge.data_points[:half]), unit=m.unit))
                    del m.gauge.data_points[:half]
        for i in range(0, len(metrics), 3):  # several requests, as exporters send them
            send(client, creds, res(replica), metrics[i:i + 3])
        for i in range(0, len(late), 3):
            send(client, creds, res(replica), late[i:i + 3])


@pytest.mark.steady_only("compares the two paths on one store, toggled in place")
def test_memory_answers_equal_the_statements_on_random_fleets(client, creds, store, monkeypatch):
    if store.recent is None:
        pytest.skip("points are kept in memory only where this server is the store's one writer")
    statements = record_statements(store, monkeypatch)
    rng = np.random.default_rng(20261205)
    _send_fleet(client, creds, rng)
    windows = [("SERIES", NOW - 60 * 60 * SEC, NOW), ("SERIES", NOW - 87 * 60 * SEC + 7 * SEC, NOW - 5 * 60 * SEC),
               ("SUMMARY", NOW - 45 * 60 * SEC, NOW - 15 * 60 * SEC), ("SERIES", NOW - 20 * 60 * SEC, NOW + 60 * SEC)]
    answered = 0
    for mode, a, b in windows:
        window = {"start_epoch_millis": a // 10**6, "end_epoch_millis": b // 10**6}
        for names in ([n] for n in GAUGES):
            fast, slow, ran = both_ways(client, store, statements, names, mode, window)
            assert not any("metric_points" in s for s in ran), ran  # memory alone answered
            assert_same(fast, slow)
            answered += sum(v is not None for s in fast["metric_values"] for g in s["values"] for v in g)
        # beside a metric that needs the discovery: its choice leaves series out of the read
        fast, slow, _ = both_ways(client, store, statements, [GAUGES[0], NEEDS_DISCOVERY, GAUGES[1]], mode, window)
        assert_same(fast, slow)
    assert answered > 1000  # the comparison compared something


@pytest.mark.steady_only("reads the store's memory directly")
def test_windows_before_the_horizon_are_read_from_the_store(client, creds, store, monkeypatch):
    if store.recent is None:
        pytest.skip("points are kept in memory only where this server is the store's one writer")
    statements = record_statements(store, monkeypatch)
    t = NOW - 3 * 3600 * SEC  # older than the default 120 minutes
    send(client, creds, res("ra"), [gauge("hw.gpu.utilization", [number(t + i * 10 * SEC, 0.5, attrs={"hw.gpu.index": "0"})
                                                                 for i in range(60)], unit="1")])
    window = {"start_epoch_millis": (t + 60 * SEC) // 10**6, "end_epoch_millis": (t + 5 * 60 * SEC) // 10**6}
    fast, slow, ran = both_ways(client, store, statements, ["baseten_gpu_utilization"], "SERIES", window)
    assert any("metric_points" in s for s in ran)  # the statement answered
    assert fast == slow and metric(fast, "baseten_gpu_utilization")[1] == [[0.5]] * 4
    # and they are not kept: they were older than the horizon when they arrived
    assert store.recent.rows(_ws(store), "deployment", "d1", NOW - 3600 * SEC, ["hw.gpu.utilization"]).num_rows == 0


@pytest.mark.steady_only("reopens the memory of the test's own store")
def test_a_server_starting_loads_the_horizon_from_the_store(client, creds, store, monkeypatch):
    if store.recent is None:
        pytest.skip("points are kept in memory only where this server is the store's one writer")
    statements = record_statements(store, monkeypatch)
    _send_fleet(client, creds, np.random.default_rng(7))
    horizon_s = store.recent.horizon_ns / SEC
    store.recent = None
    store.keep_recent(recent.METRICS, horizon_s, future_ns=MAX_AHEAD_NS)  # as the server does at start
    window = {"start_epoch_millis": (NOW - 3600 * SEC) // 10**6, "end_epoch_millis": NOW // 10**6}
    fast, slow, ran = both_ways(client, store, statements, GAUGES, "SERIES", window)
    assert not any("metric_points" in s for s in ran)
    assert_same(fast, slow)
    assert fast["metric_descriptors"]


class Clock:
    def __init__(self, now: int):
        self.now = now

    def __call__(self) -> int:
        return self.now


def _points(rows: list[tuple]) -> pa.Table:
    """Ingest-shaped rows (ws, entity, metric, ts, value, gpu attribute)."""
    from sonde.store.schema import ARROW_SCHEMAS

    schema = ARROW_SCHEMAS["metric_points"]
    cols = {f.name: pa.nulls(len(rows), f.type) for f in schema}
    cols.update(ws=pa.array([r[0] for r in rows]), scope=pa.array(["deployment"] * len(rows)),
                entity=pa.array([r[1] for r in rows]), metric=pa.array([r[2] for r in rows]),
                ts=pa.array([r[3] for r in rows], pa.timestamp("ns", "UTC")),
                value=pa.array([r[4] for r in rows], pa.float64()), series=pa.array(range(len(rows)), pa.uint64()),
                kind=pa.array(["gauge"] * len(rows)), monotonic=pa.array([False] * len(rows)),
                unit=pa.array([""] * len(rows)), replica=pa.array(["r"] * len(rows)),
                node_rank=pa.array([-1] * len(rows), pa.int32()),
                attrs=pa.array([[(k, v) for k, v in r[5].items()] for r in rows], schema.field("attrs").type))
    return pa.table([cols[f.name].cast(f.type) for f in schema], schema=schema)


def test_recent_keeps_the_horizon_of_its_metrics_per_entity(monkeypatch):
    clock = Clock(10_000 * SEC)
    recent = Recent(["g", "h"], horizon_s=100, future_ns=50 * SEC, clock=clock)
    recent.add(_points([("w", "d1", "g", 9_950 * SEC, 1.0, {"hw.gpu.index": "3"}),
                        ("w", "d1", "other", 9_960 * SEC, 2.0, {}),  # not a kept metric
                        ("w", "d1", "g", 9_800 * SEC, 3.0, {}),  # older than the horizon
                        ("w", "d2", "g", 9_990 * SEC, 4.0, {"gpu": "1", "UUID": "u"}),
                        ("v", "d1", "g", 9_991 * SEC, 5.0, {"gpu_uuid": "x"})]))
    d1 = recent.rows("w", "deployment", "d1", 9_900 * SEC, ["g"])
    assert d1.column("value").to_pylist() == [1.0] and d1.column("gpu").to_pylist() == ["3"]
    assert recent.rows("w", "deployment", "d2", 9_900 * SEC, ["g"]).column("gpu").to_pylist() == ["1"]
    assert recent.rows("v", "deployment", "d1", 9_900 * SEC, ["g"]).column("gpu").to_pylist() == ["x"]
    assert recent.rows("w", "deployment", "d3", 9_900 * SEC, ["g"]).num_rows == 0
    assert recent.rows("w", "deployment", "d1", 9_899 * SEC, ["g"]) is None  # before the horizon
    assert recent.rows("w", "deployment", "d1", 9_900 * SEC, ["g", "other"]) is None  # a metric not kept
    clock.now += 30 * SEC  # the horizon moves with the clock
    assert recent.rows("w", "deployment", "d1", 9_930 * SEC, ["g"]) is not None
    assert recent.rows("w", "deployment", "d1", 9_929 * SEC, ["g"]) is None
    # every 10 rows a segment is sealed; one goes once its newest row is past the horizon
    monkeypatch.setattr(recent_store, "_SEAL_AT", 10)
    recent.add(_points([("w", "d9", "g", clock.now, 1.0, {})]))  # an entity that then goes quiet
    for i in range(60):
        clock.now += 5 * SEC
        recent.add(_points([("w", "d1", "g", clock.now - SEC, float(i), {})]))
    assert recent.rows("w", "deployment", "d9", clock.now - 99 * SEC, ["g"]).num_rows == 0
    kept = recent.rows("w", "deployment", "d1", clock.now - 99 * SEC, ["g"]).column("ts").to_pylist()
    assert kept[-1] == clock.now - SEC and len(kept) == len(recent) <= 30
    assert min(kept) >= clock.now - 100 * SEC - 10 * 5 * SEC  # at most a segment's worth past the horizon
    # a reader's joined parts serve the next reader until a write to the entity
    served = recent.rows("w", "deployment", "d1", clock.now - 99 * SEC, ["g"])
    assert recent.rows("w", "deployment", "d1", clock.now - 99 * SEC, ["g"]) is served
    recent.add(_points([("w", "d1", "g", clock.now, 99.0, {})]))
    assert recent.rows("w", "deployment", "d1", clock.now - 99 * SEC, ["g"]).column("value").to_pylist()[-1] == 99.0
    # a reader gets the metrics it asked for, not the entity's others
    recent.add(_points([("w", "d1", "h", clock.now, 7.0, {})]))
    assert 7.0 not in recent.rows("w", "deployment", "d1", clock.now - 99 * SEC, ["g"]).column("value").to_pylist()
    both = recent.rows("w", "deployment", "d1", clock.now - 99 * SEC, ["g", "h"])
    assert set(both.column("metric").to_pylist()) == {"g", "h"}
    # retention dropped partitions: nothing answered from before now plus the future ingest accepts
    recent.reset()
    assert len(recent) == 0
    assert recent.rows("w", "deployment", "d1", clock.now, ["g"]) is None
    assert recent.rows("w", "deployment", "d1", clock.now + 50 * SEC, ["g"]).num_rows == 0


@pytest.mark.steady_only("sets a table of the test's own store aside")
def test_a_commit_that_fails_after_storing_points_leaves_them_to_the_statement(client, creds, store):
    """A group commit inserts table after table: when a later one fails, the points went
    in unreported. The memory then answers nothing reaching back to them; the statement
    does, and finds them."""
    if store.recent is None:
        pytest.skip("points are kept in memory only where this server is the store's one writer")
    aside = f"{store.db}.series_state_aside"
    store.ex.inner.command(f"RENAME TABLE {store.t('series_state')} TO {aside}")
    try:
        t0 = NOW - 20 * 60 * SEC
        gpu = [number(t0 + i * 10 * SEC, 0.25, attrs={"hw.gpu.index": "0"}) for i in range(60)]
        # a new cumulative series: its state row goes in the same commit, after the points
        send(client, creds, res("ra"), [gauge("hw.gpu.utilization", gpu, unit="1"),
                                        sum_metric("vllm:prompt_tokens_total", [number(t0, 5.0, start=t0 - SEC)])])
        window = {"start_epoch_millis": (t0 + 60 * SEC) // 10**6, "end_epoch_millis": (t0 + 5 * 60 * SEC) // 10**6}
        body = query(client, ["baseten_gpu_utilization"], "SERIES", window)  # its flush: the commit fails
        assert store.recent.rows(_ws(store), "deployment", "d1", t0 - 10 * 60 * SEC, ["hw.gpu.utilization"]) is None
        assert metric(body, "baseten_gpu_utilization")[1] == [[0.25]] * 4
    finally:
        store.ex.inner.command(f"RENAME TABLE {aside} TO {store.t('series_state')}")


def _ws(store) -> str:
    return store.ex.query(f"SELECT any(ws) AS ws FROM {store.t('metric_points')}")[0]["ws"]
