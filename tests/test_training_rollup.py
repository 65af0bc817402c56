"""Training metrics over the rollup (steps of 3 minutes or more) against ground truth.

Telemetry goes in through the real OTLP/HTTP receiver a few samples a request, as the
agent sends it, so each rollup bucket is made of rows from several inserts (and one
sample arrives late, after all the others). Expected values come from the samples
sent: ``tw_mean`` of test_metrics_values (the hold rule) and counter sums.

docs/training.md states what the rollup gives: the exact time-weighted mean when every
step boundary falls on a sample time of evenly sampled series; otherwise a step's mean
is off by at most the cut buckets' share of the step times their values' spread.
Windows whose points may predate the rollup are read raw, exactly.
"""

from __future__ import annotations

import numpy as np
import pytest

from otlp_build import SEC, T0, encode, gauge, merge, metrics_request, number, sum_metric
from spec_schema import validate
from sonde.query import training as tq
from sonde.query import training_values as tv
from sonde.query.window import Window, iso
from sonde.store import migrations, schema
from test_metrics_values import tw_mean

URL = "/v1/training_projects/pr/jobs/jr/metrics"
W0, W1 = T0 - 90 * 60 * SEC, T0
EVERY = 10 * SEC
TIMES = list(range(W0 - 5 * 60 * SEC, W1 + 5 * 60 * SEC, EVERY))
LATE = TIMES[len(TIMES) // 2]  # sent after all the others
CPU_PER_SAMPLE = 7.5  # CPU seconds per 10 s: constant, so counters split exactly
GIB = 2**30


def _series(seed: int, lo: float, hi: float) -> list[tuple[int, float]]:
    rng = np.random.default_rng(seed)
    return [(t, float(v)) for t, v in zip(TIMES, rng.uniform(lo, hi, len(TIMES)))]


# (rank, GPU) -> samples; GPU 1 of rank 0 has a second series (its decoder), averaged
UTIL = {(0, "0"): _series(1, 0, 1), (0, "1"): _series(2, 0, 1), (1, "0"): _series(3, 0, 1)}
DECODER = _series(4, 0, 1)
MEM_KIB = {0: _series(5, 1e6, 2e6), 1: _series(6, 1e6, 2e6)}  # sent in KiBy
RSS = _series(7, 1 * GIB, 2 * GIB)
WORKING_SET = _series(8, 5 * GIB, 6 * GIB)  # container source: process.memory.usage wins
FS = [(t, 10.0 * GIB + i * 2**20) for i, t in enumerate(TIMES)]
LIMIT = 100.0 * GIB


def _request(rank: int, metrics):
    res = {"sonde.training_project_id": "pr", "sonde.training_job_id": "jr", "sonde.node_rank": rank,
           "sonde.node_id": f"host{rank}", "sonde.replica": f"r{rank}"}
    return metrics_request(res, metrics)


def _send(client, creds, rank: int, metrics) -> None:
    _post(client, creds, _request(rank, metrics))


def _post(client, creds, req) -> None:
    body, headers = encode(req)
    r = client.post("/v1/otlp/v1/metrics", content=body, headers=headers, key=creds["ingest_key"])
    assert r.status_code == 200 and b"rejected" not in r.content, r.content


def _batch(rank: int, times: set[int], gauges: set[int]) -> list:
    """The metrics of one request: counter points at ``times``, gauge points at ``gauges``."""
    def pts(samples, attrs=None):
        return [number(t, v, attrs=attrs) for t, v in samples if t in gauges]

    ms = [gauge("hw.gpu.utilization", [p for (r, g), s in UTIL.items() if r == rank
                                       for p in pts(s, {"hw.gpu.index": g})], unit="1"),
          gauge("hw.gpu.memory.usage", pts(MEM_KIB[rank], {"hw.gpu.index": "0"}), unit="KiBy")]
    if rank == 0:
        ms += [gauge("hw.gpu.utilization", pts(DECODER, {"hw.gpu.index": "1", "hw.gpu.task": "decoder"}), unit="1"),
               gauge("process.memory.usage", pts(RSS), unit="By"),
               gauge("container.memory.working_set", pts(WORKING_SET), unit="By"),
               gauge("system.filesystem.usage", pts(FS, {"sonde.mount": "ephemeral"}), unit="By"),
               gauge("system.filesystem.limit", [number(t, LIMIT, attrs={"sonde.mount": "ephemeral"})
                                                 for t in TIMES if t in gauges], unit="By")]
        cpu = [number(t, CPU_PER_SAMPLE * (i + 1), start=TIMES[0] - EVERY) for i, t in enumerate(TIMES) if t in times]
        if cpu:
            ms.append(sum_metric("process.cpu.time", cpu, unit="s"))
    return [m for m in ms if len(m.gauge.data_points) or len(m.sum.data_points)]


@pytest.fixture
def job(app, client, creds):
    # 65 requests: fed to one server (a restart before each would be most of the suite's
    # time); in restart mode the queries still each meet a fresh one
    with app.held():
        for i in range(0, len(TIMES), 10):  # 100 s a request: a minute's bucket may span two
            chunk = set(TIMES[i:i + 10])
            # both nodes in one request (two resources), as a collector in front of them would
            _post(client, creds, merge(*(_request(rank, _batch(rank, chunk, chunk - {LATE})) for rank in (0, 1))))
        # A gauge sample arriving after all the others (a cumulative counter's would be a
        # duplicate, dropped at ingest, so the counter sent it on time).
        for rank in (0, 1):
            _send(client, creds, rank, _batch(rank, set(), {LATE}))
    return client


def _get(client, start: int, end: int, step_s: int) -> dict:
    r = client.get(URL, params={"start_epoch_millis": start // 10**6, "end_epoch_millis": end // 10**6,
                                "step_seconds": step_s})
    assert r.status_code == 200, r.text
    body = r.json()
    validate(body, "GetTrainingJobMetricsResponseV1")
    return body


def _steps(start: int, end: int, step: int) -> list[tuple[int, int]]:
    return [(a, min(a + step, end)) for a in range(start, end, step)]


def _cpu_sent() -> list[tuple[int, float]]:
    return [(t, CPU_PER_SAMPLE) for t in TIMES]


def _expected(start: int, end: int, step: int) -> dict[str, list[float]]:
    """Per answer field (rank 0 unless named), the exact value of each step."""
    steps = _steps(start, end, step)
    tw = {name: [tw_mean(s, a, b) for a, b in steps] for name, s in (
        ("u00", UTIL[(0, "0")]), ("u01", UTIL[(0, "1")]), ("dec", DECODER), ("u10", UTIL[(1, "0")]),
        ("m0", MEM_KIB[0]), ("m1", MEM_KIB[1]), ("rss", RSS), ("fs", FS))}
    return {
        "gpu_utilization/0": tw["u00"], "gpu_utilization/1": [(x + y) / 2 for x, y in zip(tw["u01"], tw["dec"])],
        "gpu_memory_usage_bytes/0": [x * 1024 for x in tw["m0"]], "rank1/gpu_utilization/0": tw["u10"],
        "rank1/gpu_memory_usage_bytes/0": [x * 1024 for x in tw["m1"]], "cpu_memory_usage_bytes": tw["rss"],
        "cpu_usage": [sum(v for t, v in _cpu_sent() if a <= t < b) / ((b - a) / SEC) for a, b in steps],
        "ephemeral_storage/usage_bytes": tw["fs"], "ephemeral_storage/utilization": [x / LIMIT for x in tw["fs"]],
    }


def _got(body: dict, field: str) -> list[float]:
    node = body["per_node_metrics"][1]["metrics"] if field.startswith("rank1/") else body
    v = node
    for part in field.removeprefix("rank1/").split("/"):
        v = v[part]
    return [p["value"] for p in v]


def _cut_bound(samples, a: int, b: int, bucket: int) -> float:
    """The documented bound for one step: per bucket whose span (its samples spread
    over [first, last + spacing)) a boundary of [a, b) cuts, the span's part inside the
    step times the spread of its values, over the step's covered time."""
    buckets: dict[int, list] = {}
    for t, v in sorted(samples):
        buckets.setdefault(t // bucket, []).append((t, v))
    many = [p for p in buckets.values() if len(p) > 1]
    lone = sum(p[-1][0] - p[0][0] for p in many) // sum(len(p) - 1 for p in many) if many else bucket
    err = 0.0
    for pts in buckets.values():
        f, last, n = pts[0][0], pts[-1][0], len(pts)
        end = last + ((last - f) // (n - 1) if n > 1 else lone)
        if f < a < end or f < b < end:
            vals = [v for _, v in pts]
            err += max(0, min(end, b) - max(f, a)) * (max(vals) - min(vals))
    return err / (b - a)


def test_rollup_is_exact_when_steps_start_on_samples(job):
    # 90 minutes, 10-minute steps: one-minute buckets, every boundary on a sample time.
    body = _get(job, W0, W1, 600)
    want = _expected(W0, W1, 600 * SEC)
    for field, values in want.items():
        assert _got(body, field) == pytest.approx(values, rel=1e-9), field
    # Rank 1 sends GPU series only, and node ids come from the per-node series.
    assert [n["node_id"] for n in body["per_node_metrics"]] == ["host0", "node-1"]
    # The container source of the same replica is left out, not added.
    assert body["cpu_memory_usage_bytes"][0]["value"] == pytest.approx(want["cpu_memory_usage_bytes"][0], rel=1e-9)


def test_rollup_off_the_sample_grid_stays_within_the_documented_bound(job):
    start, end = W0 + 17_250 * 10**6, W1 - 42_500 * 10**6  # boundaries cut buckets; a partial last step
    body = _get(job, start, end, 900)
    want = _expected(start, end, 900 * SEC)
    steps = _steps(start, end, 900 * SEC)
    bucket = tv.rollup_level(Window("SERIES", start // 10**6, end // 10**6, 900)) * SEC
    assert bucket == 300 * SEC
    stamps = [p["timestamp"] for p in body["gpu_utilization"]["0"]]
    assert stamps == [iso(a // 10**6) for a, _ in steps]
    for field, samples, scale in (("gpu_utilization/0", UTIL[(0, "0")], 1), ("rank1/gpu_utilization/0",
                                  UTIL[(1, "0")], 1), ("gpu_memory_usage_bytes/0", MEM_KIB[0], 1024),
                                  ("cpu_memory_usage_bytes", RSS, 1), ("ephemeral_storage/usage_bytes", FS, 1)):
        got = _got(body, field)
        assert len(got) == len(steps), field
        for k, (a, b) in enumerate(steps):
            bound = _cut_bound(samples, a, b, bucket) * scale
            assert abs(got[k] - want[field][k]) <= bound + 1e-9 * abs(want[field][k]), (field, k)
            # at most the share of two buckets in the step, times the values' spread
            spread = scale * (max(v for _, v in samples) - min(v for _, v in samples))
            assert bound <= 2 * bucket / (b - a) * spread
    # Counters whose samples are evenly spaced and equal split exactly.
    assert _got(body, "cpu_usage") == pytest.approx(want["cpu_usage"], rel=1e-9)


def test_short_steps_and_old_points_are_read_raw_and_exact(job, store, monkeypatch):
    start, end = W0 + 17_250 * 10**6, W1 - 42_500 * 10**6
    # A 2-minute step is too short for the rollup: raw points, the exact hold rule.
    body = _get(job, start, end, 120)
    for field, values in _expected(start, end, 120 * SEC).items():
        assert _got(body, field) == pytest.approx(values, rel=1e-9), field
    # Too many points to bring to Python: ClickHouse computes each metric, the same answer.
    monkeypatch.setattr(tq, "RAW_MAX_POINTS", 0)
    again = _get(job, start, end, 120)
    for field in _expected(start, end, 120 * SEC):
        assert _got(again, field) == pytest.approx(_got(body, field), rel=1e-12), field
    assert [n["node_id"] for n in again["per_node_metrics"]] == [n["node_id"] for n in body["per_node_metrics"]]
    monkeypatch.undo()
    # Points that arrived before the rollup existed (a store migrated with data in it):
    # a long step is read raw too, so exact off the sample grid.
    store.ex.command(f"INSERT INTO {store.t('meta')} (key, value, version) VALUES ({{k:String}}, {{v:String}}, 2)",
                     {"k": schema.ROLLUP_FROM_SEQ, "v": str(2**63)})
    monkeypatch.setattr(tv, "_marks", type(tv._marks)())
    raw = []
    monkeypatch.setattr(tv, "raw_values", lambda *a, _f=tv.raw_values: raw.append(1) or _f(*a))
    body = _get(job, start, end, 900)
    assert raw
    for field, values in _expected(start, end, 900 * SEC).items():
        assert _got(body, field) == pytest.approx(values, rel=1e-9), field
    # Rank 1 sends GPU series only, and node ids come from the per-node series.
    assert [n["node_id"] for n in body["per_node_metrics"]] == ["host0", "node-1"]


def test_rollup_level_and_timestamps():
    def window(start_ms, end_ms, step_s):
        return Window("SERIES", start_ms, end_ms, step_s)

    assert tv.rollup_level(window(0, 3600_000, 10)) is None
    assert tv.rollup_level(window(0, 3600_000, 179)) is None
    assert tv.rollup_level(window(0, 6 * 3600_000, 300)) == 60
    assert tv.rollup_level(window(0, 3 * 86400_000, 900)) == 300
    assert tv.rollup_level(window(0, 7 * 86400_000, 1800)) == 600
    assert tv.rollup_level(window(0, 120_000, 3600)) is None  # a window shorter than 3 buckets
    w = window(1_700_000_000_123, 1_700_000_900_123, 300)
    text = tq._points({(0, 0, "0"): np.array([0.5, np.nan, 1e22])}, w)[(0, 0, "0")]
    import json
    assert json.loads(text) == [{"value": 0.5, "timestamp": iso(1_700_000_000_123)},
                                {"value": 1e22, "timestamp": iso(1_700_000_600_123)}]
    w = window(1_700_000_000_000, 1_700_000_600_000, 300)
    assert json.loads(tq._points({(0, 0, ""): np.array([-0.0, 2.0])}, w)[(0, 0, "")])[1]["timestamp"] == iso(
        1_700_000_300_000)


def test_the_rollup_keeps_what_training_metrics_read():
    assert set(schema.ROLLUP_METRICS) == {s for vm in tq.METRICS for s in vm.source_names}
    assert tuple(tv.LEVELS_S) + (tv.LABEL_LEVEL_S,) == schema.ROLLUP_LEVELS_S
    view = schema.VIEWS_BY_NAME["training_rollup_mv"]
    embedded = schema.create_view(view, "db")
    cluster = schema.create_view(view, "db", "c")
    assert embedded.startswith("CREATE MATERIALIZED VIEW IF NOT EXISTS db.training_rollup_mv TO db.training_rollup AS")
    assert "FROM db.metric_points\n" in embedded
    assert cluster.startswith("CREATE MATERIALIZED VIEW IF NOT EXISTS db.training_rollup_mv ON CLUSTER 'c'"
                              " TO db.training_rollup_local AS")
    assert "FROM db.metric_points_local\n" in cluster


def test_migrating_a_store_with_points_marks_them_as_older_than_the_rollup(executor):
    db = "rollup_mig"
    executor.command(f"DROP DATABASE IF EXISTS {db} SYNC")
    try:
        assert migrations.migrate(executor, db, 30, migrations.MIGRATIONS[:1]) == (0, 1)
        executor.command(f"INSERT INTO {db}.metric_points (ws, scope, entity, metric, kind, ts, value, seq)"
                         " VALUES ('w', 'training_job', 'j', 'hw.gpu.utilization', 'gauge', now64(9), 0.5, 123)")
        assert migrations.migrate(executor, db, 30) == (1, migrations.SCHEMA_VERSION)
        marks = executor.query(f"SELECT value FROM {db}.meta WHERE key = {{k:String}}", {"k": schema.ROLLUP_FROM_SEQ})
        assert [m["value"] for m in marks] == ["124"]
        # The view fills the rollup from the next insert on, at every level.
        executor.command(f"INSERT INTO {db}.metric_points (ws, scope, entity, metric, kind, ts, value, seq)"
                         " VALUES ('w', 'training_job', 'j', 'hw.gpu.utilization', 'gauge', now64(9), 0.25, 124)")
        rows = executor.query(f"SELECT res, n, total FROM {db}.training_rollup FINAL ORDER BY res")
        assert [(r["res"], r["n"], r["total"]) for r in rows] == [(s, 1, 0.25) for s in schema.ROLLUP_LEVELS_S]
    finally:
        executor.command(f"DROP DATABASE IF EXISTS {db} SYNC")


def test_series_changing_unit_or_node_mid_bucket(client, creds):
    # Half a minute into a bucket, one GPU's memory goes from bytes to KiB (the unit is
    # no part of a series: the rollup holds a row for each in that bucket), and rank 0
    # moves from host "a" to "b" (a node id is: the memory series of each add up).
    turn = (W0 + W1) // 2 + 30 * SEC
    mem, rss = _series(9, 1 * GIB, 2 * GIB), _series(10, 1 * GIB, 2 * GIB)
    for i in range(0, len(TIMES), 30):
        part = set(TIMES[i:i + 30])
        for host, unit, scale, inside in (("a", "By", 1, lambda t: t < turn), ("b", "KiBy", 1024, lambda t: t >= turn)):
            res = {"sonde.training_project_id": "pr", "sonde.training_job_id": "ju", "sonde.node_rank": 0}
            for node, m in (({}, gauge("hw.gpu.memory.usage", [number(t, v / scale, attrs={"hw.gpu.index": "0"})
                                                              for t, v in mem if t in part and inside(t)], unit=unit)),
                            ({"sonde.node_id": host}, gauge("process.memory.usage", [
                                number(t, v) for t, v in rss if t in part and inside(t)], unit="By"))):
                if len(m.gauge.data_points):
                    body, headers = encode(metrics_request({**res, **node}, [m]))
                    assert client.post("/v1/otlp/v1/metrics", content=body, headers=headers,
                                       key=creds["ingest_key"]).status_code == 200
    for step_s in (120, 600):  # raw points, then the rollup (boundaries on samples: exact)
        r = client.get("/v1/training_projects/pr/jobs/ju/metrics",
                       params={"start_epoch_millis": W0 // 10**6, "end_epoch_millis": W1 // 10**6,
                               "step_seconds": step_s})
        assert r.status_code == 200, r.text
        body = r.json()
        steps = _steps(W0, W1, step_s * SEC)
        got = [p["value"] for p in body["gpu_memory_usage_bytes"]["0"]]
        assert got == pytest.approx([tw_mean(mem, a, b) for a, b in steps], rel=1e-9)
        means = [[tw_mean([(t, v) for t, v in rss if on(t)], a, b) for a, b in steps]
                 for on in (lambda t: t < turn, lambda t: t >= turn)]
        got = [p["value"] for p in body["cpu_memory_usage_bytes"]]
        assert got == pytest.approx([(x or 0) + (y or 0) for x, y in zip(*means)], rel=1e-9)
        assert [n["node_id"] for n in body["per_node_metrics"]] == ["b"]


def test_a_lone_sample_in_a_bucket_holds_the_series_spacing(client, creds):
    # The series starts 10 s before the window: its first one-minute bucket holds one
    # sample, which holds 10 s (its spacing elsewhere), as the hold rule says.
    util = [(t, v) for t, v in _series(11, 0, 1) if W0 - 10 * SEC <= t < W1 - 30 * 60 * SEC]
    res = {"sonde.training_project_id": "pr", "sonde.training_job_id": "js", "sonde.node_rank": 0}
    body, headers = encode(metrics_request(res, [gauge("hw.gpu.utilization", [
        number(t, v, attrs={"hw.gpu.index": "0"}) for t, v in util], unit="1")]))
    assert client.post("/v1/otlp/v1/metrics", content=body, headers=headers, key=creds["ingest_key"]).status_code == 200
    r = client.get("/v1/training_projects/pr/jobs/js/metrics",
                   params={"start_epoch_millis": W0 // 10**6, "end_epoch_millis": W1 // 10**6, "step_seconds": 600})
    assert r.status_code == 200, r.text
    want = [tw_mean(util, a, b) for a, b in _steps(W0, W1, 600 * SEC)]
    assert [p["value"] for p in r.json()["gpu_utilization"]["0"]] == pytest.approx([x for x in want if x is not None],
                                                                                  rel=1e-9)
