"""Deployment metric values against ground truth computed here from what the test sent.

Telemetry goes in through the real OTLP/HTTP receiver as hand-built protobuf with exact
timestamps; the expected values are computed in Python from the same samples (the
time-weighted hold rule, counter increases per status class, exact numpy quantiles of
the raw values behind exponential histograms, linear interpolation for explicit ones).
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from opentelemetry.sdk.metrics._internal.exponential_histogram.mapping.logarithm_mapping import LogarithmMapping

from otlp_build import (SEC, T0, encode, exp_histogram, exp_point, gauge, hist_point, histogram, metrics_request,
                        number, sum_metric)
from spec_schema import validate

URL = "/v1/models/m1/deployments/d1/metrics"
QS = (0.5, 0.9, 0.95, 0.99)
STEP = 60 * SEC
# A 30-minute window ending ten minutes before the test started: 30 steps of 60 s.
W0, W1 = T0 - 30 * 60 * SEC, T0
WINDOW = {"start_epoch_millis": W0 // 10**6, "end_epoch_millis": W1 // 10**6}
NSTEPS = 30


def res(replica: str, deployment: str = "d1") -> dict:
    return {"sonde.model_id": "m1", "sonde.deployment_id": deployment, "sonde.replica": replica}


def send(client, creds, resource, metrics) -> None:
    body, headers = encode(metrics_request(resource, metrics))
    r = client.post("/v1/otlp/v1/metrics", content=body, headers=headers, key=creds["ingest_key"])
    assert r.status_code == 200, r.text
    assert b"rejected" not in r.content, r.content


def query(client, names, mode="SERIES", url=URL, window=WINDOW) -> dict:
    params = {"mode": mode, "metrics": ",".join(names)}
    if window:
        params.update(window)
    r = client.get(url, params=params)
    assert r.status_code == 200, r.text
    body = r.json()
    validate(body, "GetDeploymentMetricsResponseV1")
    return body


def metric(body, name) -> tuple[list[dict], list[list]]:
    """(label sets, per step the values aligned to them)."""
    names = [d["name"] for d in body["metric_descriptors"]]
    i = names.index(name)
    return body["metric_descriptors"][i]["label_sets"], [v["values"][i] for v in body["metric_values"]]


def assert_values(got: list[list], want: list[list], rel=1e-9):
    assert len(got) == len(want)
    for k, (g, w) in enumerate(zip(got, want)):
        assert [x is None for x in g] == [x is None for x in w], (k, g, w)
        assert [x for x in g if x is not None] == pytest.approx([x for x in w if x is not None], rel=rel), (k, g, w)


def step_of(t: int, w0: int = W0, step: int = STEP) -> int:
    return (t - w0) // step


# --- the reference time-weighted mean ---------------------------------------------


def hold_segments(samples: list[tuple[int, float]]):
    """(from, to, value) per sample: until the next sample if it comes within two of the
    sample's intervals, else one interval; a sample's interval is the time since the
    previous one where that is at most 5 minutes, else (the first sample, one after a
    longer gap) 60 s."""
    samples = sorted(samples)
    out = []
    for i, (t, v) in enumerate(samples):
        since = t - samples[i - 1][0] if i else None
        interval = since if since is not None and since <= 300 * SEC else 60 * SEC
        if i + 1 < len(samples) and samples[i + 1][0] - t <= 2 * interval:
            end = samples[i + 1][0]
        else:
            end = t + interval
        out.append((t, end, v))
    return out


def tw_mean(samples, a: int, b: int) -> float | None:
    integral = covered = 0.0
    for s, e, v in hold_segments(samples):
        overlap = min(e, b) - max(s, a)
        if overlap > 0:
            integral += v * overlap
            covered += overlap
    return integral / covered if covered else None


def steps(w0=W0, n=NSTEPS, step=STEP):
    return [(w0 + k * step, w0 + (k + 1) * step) for k in range(n)]


# --- gauges ------------------------------------------------------------------------


def _times(rng, start, end, every, jitter=0):
    t, out = start, []
    while t < end:
        out.append(t + (int(rng.integers(-jitter, jitter + 1)) if jitter else 0))
        t += every
    return out


def test_gauges_are_time_weighted_per_label_set(client, creds):
    rng = np.random.default_rng(1)
    # replica A, GPU 0: every 15 s (jittered) from before the window to after it, with a
    # 200 s hole (> 2 intervals: uncovered); GPU 1 only in the middle (its last sample
    # holds one interval); replica B names its GPU with `gpu` and samples every 30 s.
    a0 = [t for t in _times(rng, W0 - 100 * SEC, W1 + 30 * SEC, 15 * SEC, 3 * SEC)
          if not W0 + 600 * SEC <= t < W0 + 800 * SEC]
    # ... and two samples missing at 1500 s: a ~45 s gap, which 2 intervals do not bridge
    a0 = [t for t in a0 if not W0 + 1495 * SEC <= t < W0 + 1525 * SEC]
    a1 = _times(rng, W0 + 300 * SEC, W0 + 1200 * SEC, 20 * SEC)
    b0 = _times(rng, W0 - 50 * SEC, W1 - 400 * SEC, 30 * SEC)
    util = {("ra", "0"): [(t, float(rng.uniform())) for t in a0],
            ("ra", "1"): [(t, float(rng.uniform())) for t in a1],
            ("rb", "0"): [(t, float(rng.uniform())) for t in b0]}
    # rb's GPU 0 also reports its decoder: two series of one label set, averaged (RATIO)
    decoder = [(t + 7 * SEC, float(rng.uniform())) for t in b0[:20]]
    mem = [(t, int(rng.integers(2**30, 2**34))) for t in a0]  # bytes, shown in MiB
    active = {"ra": [(t, int(rng.integers(0, 9))) for t in _times(rng, W0 - 30 * SEC, W1, 10 * SEC)],
              "rb": [(t, int(rng.integers(0, 9))) for t in _times(rng, W0 + 100 * SEC, W1 - 500 * SEC, 10 * SEC)]}
    working = {"ra": [(t, float(rng.uniform(1e8, 2e8))) for t in a0], "rb": [(t, 5e8 + t % 1000) for t in b0]}
    for replica in ("ra", "rb"):
        metrics = [gauge("hw.gpu.utilization", [
            number(t, v, attrs={"hw.gpu.index": int(g)} if replica == "ra" else {"gpu": g})
            for (r, g), pts in util.items() if r == replica for t, v in pts]
            + ([number(t, v, attrs={"gpu": "0", "hw.gpu.task": "decoder"}) for t, v in decoder]
               if replica == "rb" else []), unit="1"),
            sum_metric("http.server.active_requests", [number(t, v, start=W0 - 3600 * SEC)
                                                       for t, v in active[replica]], monotonic=False, unit="{request}")]
        if replica == "ra":
            metrics.append(gauge("hw.gpu.memory.usage", [number(t, v, attrs={"hw.gpu.index": 0}) for t, v in mem],
                                 unit="By"))
            metrics.append(sum_metric("process.memory.usage", [number(t, v, start=W0 - 3600 * SEC)
                                                               for t, v in working["ra"]], monotonic=False, unit="By"))
            # ra also sends the container view: the process one is preferred, never added
            metrics.append(gauge("container.memory.working_set", [number(t, 1e12) for t, _ in working["ra"]],
                                 unit="By"))
        else:
            metrics.append(gauge("container.memory.working_set", [number(t, v) for t, v in working["rb"]], unit="KiBy"))
        send(client, creds, res(replica), metrics)

    names = ["baseten_gpu_utilization", "baseten_gpu_memory_used", "baseten_concurrent_requests",
             "baseten_container_cpu_memory_working_set_bytes"]
    body = query(client, names)
    assert [d["name"] for d in body["metric_descriptors"]] == names
    kinds = {d["name"]: (d["kind"], d["unit_hint"]) for d in body["metric_descriptors"]}
    assert kinds == {"baseten_gpu_utilization": ("GAUGE", "RATIO"), "baseten_gpu_memory_used": ("GAUGE", "MEBIBYTES"),
                     "baseten_concurrent_requests": ("GAUGE", "COUNT"),
                     "baseten_container_cpu_memory_working_set_bytes": ("GAUGE", "BYTES")}

    labels, got = metric(body, "baseten_gpu_utilization")
    assert labels == [{"replica": "ra", "gpu": "0"}, {"replica": "ra", "gpu": "1"}, {"replica": "rb", "gpu": "0"}]
    want = [[tw_mean(util[(lab["replica"], lab["gpu"])], a, b) for lab in labels] for a, b in steps()]
    for k, (a, b) in enumerate(steps()):
        means = [m for m in (want[k][2], tw_mean(decoder, a, b)) if m is not None]
        want[k][2] = sum(means) / len(means) if means else None
    assert_values(got, want)
    assert any(w[0] is None for w in want) and any(w[1] is None for w in want)  # holes and ends do show

    labels, got = metric(body, "baseten_gpu_memory_used")
    assert labels == [{"replica": "ra", "gpu": "0"}]
    assert_values(got, [[tw_mean([(t, v / 2**20) for t, v in mem], a, b)] for a, b in steps()])

    # deployment total: the sum of each series' own time-weighted mean
    labels, got = metric(body, "baseten_concurrent_requests")
    assert labels == [{}]
    want = []
    for a, b in steps():
        means = [m for m in (tw_mean(active[r], a, b) for r in ("ra", "rb")) if m is not None]
        want.append([sum(means) if means else None])
    assert_values(got, want)

    labels, got = metric(body, "baseten_container_cpu_memory_working_set_bytes")
    assert labels == [{"replica": "ra"}, {"replica": "rb"}]
    rb_bytes = [(t, v * 1024) for t, v in working["rb"]]  # sent in KiBy
    assert_values(got, [[tw_mean(working["ra"], a, b), tw_mean(rb_bytes, a, b)] for a, b in steps()])


def test_current_mode_covers_the_last_60_seconds(client, creds):
    now = time.time_ns()
    samples = [(now - k * 20 * SEC, float(k * k)) for k in range(1, 7)]  # 20 s apart, oldest 120 s ago
    send(client, creds, res("ra"), [sum_metric("http.server.active_requests",
                                               [number(t, v, start=now - 3600 * SEC) for t, v in samples],
                                               monotonic=False)])
    body = query(client, ["baseten_concurrent_requests"], mode="CURRENT", window=None)
    a, b = body["start_epoch_millis"] * 10**6, body["end_epoch_millis"] * 10**6
    assert b - a == 60 * SEC and body["step_seconds"] is None
    _, got = metric(body, "baseten_concurrent_requests")
    assert_values(got, [[tw_mean(samples, a, b)]])


# --- counters ----------------------------------------------------------------------


def test_requests_total_by_status_class(client, creds):
    rng = np.random.default_rng(2)
    bounds = [0.1, 1.0]
    expected = [[None] * 4 for _ in range(NSTEPS)]

    def count(t, status, n):
        k = step_of(t)
        cls = {2: 0, 3: 1, 4: 2, 5: 3}.get(status // 100) if status else None
        if 0 <= k < NSTEPS and cls is not None:
            expected[k][cls] = (expected[k][cls] or 0) + n

    new, old, dup_old = [], [], []
    quiet = set(range(5, 9))  # steps where nobody sends anything
    for t in _times(rng, W0, W1, 10 * SEC, 2 * SEC):
        if step_of(t) in quiet:
            continue
        for status in rng.choice([200, 201, 302, 404, 500, 503, 101, 0], size=3, replace=False):
            status = int(status)
            counts = [int(x) for x in rng.integers(0, 5, 3)]
            attrs = {"http.request.method": "POST"} | ({"http.response.status_code": status} if status else {})
            new.append(hist_point(t, counts, bounds, start=t - 10 * SEC, sum=1.0, attrs=attrs))
            count(t, status, sum(counts))
        # replica rb runs the older conventions (ms, http.status_code); only 2xx/4xx
        status = int(rng.choice([200, 404]))
        counts = [int(x) for x in rng.integers(0, 5, 3)]
        old.append(hist_point(t + 1, counts, [100.0, 1000.0], start=t - 10 * SEC, sum=10.0,
                              attrs={"http.status_code": status}))
        count(t + 1, status, sum(counts))
        # replica rc sends both conventions (http/dup): counted once, from the stable one
        dup_old.append(hist_point(t + 2, [50, 50, 50], [100.0, 1000.0], start=t - 10 * SEC, sum=10.0,
                                  attrs={"http.status_code": 500}))
    dup_new = [hist_point(t + 2, [1, 0, 0], bounds, start=t - 10 * SEC, sum=0.05,
                          attrs={"http.response.status_code": 200}) for t in _times(rng, W0, W0 + 300 * SEC, 60 * SEC)]
    for t in _times(rng, W0, W0 + 300 * SEC, 60 * SEC):
        count(t + 2, 200, 1)
    send(client, creds, res("ra"), [histogram("http.server.request.duration", new, cumulative=False)])
    send(client, creds, res("rb"), [histogram("http.server.duration", old, cumulative=False, unit="ms")])
    send(client, creds, res("rc"), [histogram("http.server.request.duration", dup_new, cumulative=False),
                                    histogram("http.server.duration", dup_old, cumulative=False, unit="ms")])

    body = query(client, ["baseten_inference_requests_total"])
    labels, got = metric(body, "baseten_inference_requests_total")
    assert body["metric_descriptors"][0]["kind"] == "COUNTER"
    assert labels == [{"status": "2xx"}, {"status": "3xx"}, {"status": "4xx"}, {"status": "5xx"}]
    assert_values(got, expected)
    assert all(got[k] == [None] * 4 for k in quiet)
    # SUMMARY is the same totals over the whole window
    _, got = metric(query(client, ["baseten_inference_requests_total"], mode="SUMMARY"),
                    "baseten_inference_requests_total")
    assert got == [[sum(row[i] or 0 for row in expected) for i in range(4)]]
    # asked alone, totals read only counts; asked with the latency, the shared statement: same answer
    both = query(client, ["baseten_inference_requests_total", "baseten_end_to_end_response_time_seconds"])
    assert metric(both, "baseten_inference_requests_total") == (labels, metric(body, "baseten_inference_requests_total")[1])


def test_value_counters_per_replica(client, creds):
    rng = np.random.default_rng(3)
    expected = {"ra": [None] * NSTEPS, "rb": [None] * NSTEPS}

    def add(replica, t, v):
        k = step_of(t)
        if 0 <= k < NSTEPS:
            expected[replica][k] = (expected[replica][k] or 0) + v

    # ra: cumulative process.cpu.time per cpu.mode, as the SDK sends it; the first point
    # counts from its start time, so its whole value is an increase
    points = []
    for mode in ("user", "system"):
        total = 0.0
        for t in _times(rng, W0 + 5 * SEC, W1 - 200 * SEC, 30 * SEC):
            inc = float(rng.uniform(0, 20))
            total += inc
            points.append(number(t, total, start=W0, attrs={"cpu.mode": mode}))
            add("ra", t, inc)
    restarts, total = [], 0
    for t in _times(rng, W0 + 5 * SEC, W1, 120 * SEC):
        inc = int(rng.integers(0, 2))
        total += inc
        restarts.append(number(t, total, start=W0))
    send(client, creds, res("ra"), [sum_metric("process.cpu.time", points, unit="s"),
                                    sum_metric("sonde.process.restarts", restarts)])
    # rb: delta container.cpu.time in ms (converted to seconds)
    deltas = []
    for t in _times(rng, W0 + 400 * SEC, W1, 60 * SEC):
        inc = int(rng.integers(0, 30_000))
        deltas.append(number(t, inc, start=t - 60 * SEC))
        add("rb", t, inc / 1000)
    send(client, creds, res("rb"), [sum_metric("container.cpu.time", deltas, cumulative=False, unit="ms")])

    body = query(client, ["baseten_container_cpu_usage_seconds_total", "baseten_container_restarts_total"])
    labels, got = metric(body, "baseten_container_cpu_usage_seconds_total")
    assert labels == [{"replica": "ra"}, {"replica": "rb"}]
    assert_values(got, [[expected["ra"][k], expected["rb"][k]] for k in range(NSTEPS)])
    labels, got = metric(body, "baseten_container_restarts_total")
    assert labels == [{"replica": "ra"}]
    want = [None] * NSTEPS
    prev = 0
    for p in restarts:
        k = step_of(p.time_unix_nano)
        want[k] = (want[k] or 0) + p.as_int - prev
        prev = p.as_int
    assert [g[0] for g in got] == want


def test_replicas_active_and_starting(client, creds):
    t = [W0 + k * STEP for k in range(5)]

    def state(ts, s, v=1):
        return number(ts, v, attrs={"state": s})

    send(client, creds, res("ra"), [gauge("sonde.replica.state", [
        state(t[0] + 5 * SEC, "starting"), state(t[0] + 40 * SEC, "ready"), state(t[1] + 10 * SEC, "ready")])])
    send(client, creds, res("rb"), [gauge("sonde.replica.state", [
        state(t[0] + 20 * SEC, "starting"), state(t[1] + 5 * SEC, "starting"), state(t[1] + 50 * SEC, "ready")])])
    # rc never reports a state: any telemetry makes it active
    send(client, creds, res("rc"), [gauge("hw.gpu.utilization", [number(t[k] + SEC, 0.5) for k in range(3)])])
    # rd: a 0 for "starting" is not its state; at step 3 it is starting again
    send(client, creds, res("rd"), [gauge("sonde.replica.state", [
        state(t[2] + SEC, "starting", 0), state(t[2] + SEC, "ready"), state(t[3] + SEC, "ready", 0),
        state(t[3] + SEC, "starting")])])
    window = {"start_epoch_millis": W0 // 10**6, "end_epoch_millis": (W0 + 5 * STEP) // 10**6}
    body = query(client, ["baseten_replicas_active", "baseten_replicas_starting"], window=window)
    assert metric(body, "baseten_replicas_active") == ([{}], [[2], [3], [2], [0], [None]])
    assert metric(body, "baseten_replicas_starting") == ([{}], [[1], [0], [0], [1], [None]])
    body = query(client, ["baseten_replicas_active", "baseten_replicas_starting"], mode="SUMMARY", window=window)
    # over the whole window: rd's latest state is starting; everyone else is active
    assert [v["values"] for v in body["metric_values"]] == [[[3], [1]]]


# --- histograms --------------------------------------------------------------------


def exp_buckets(values: np.ndarray, scale: int) -> tuple[int, list[int]]:
    """(offset, counts) of positive values bucketed by the OpenTelemetry SDK's mapping."""
    mapping = LogarithmMapping(scale)
    idx = np.array([mapping.map_to_index(float(v)) for v in values])
    lo = int(idx.min())
    return lo, [int(c) for c in np.bincount(idx - lo)]


def _exp_point(t, values, scale, **kw):
    pos = values[values > 0]
    neg = -values[values < 0]
    return exp_point(t, scale=scale, positive=exp_buckets(pos, scale) if len(pos) else (0, []),
                     negative=exp_buckets(neg, scale) if len(neg) else (0, []),
                     zero_count=int((values == 0).sum()), sum=float(values.sum()), start=t - 60 * SEC,
                     min=float(values.min()), max=float(values.max()), **kw)


def test_exponential_quantiles_within_one_percent(client, creds):
    rng = np.random.default_rng(4)
    attrs = {"http.response.status_code": 200}
    per_step: dict[int, list[np.ndarray]] = {}
    points = {"ra": [], "rb": []}
    for k in range(0, NSTEPS, 3):
        t = W0 + k * STEP + 30 * SEC
        # ra at scale 6, rb at 7 (8 now and then): merged at the step's smallest scale
        a = rng.lognormal(-2.5, 0.8, 1500)
        b = rng.lognormal(-1.8, 0.5, 800)
        points["ra"].append(_exp_point(t, a, 6, attrs=attrs))
        points["rb"].append(_exp_point(t + 5 * SEC, b, 8 if k % 2 else 7, attrs=attrs))
        per_step[k] = [a, b]
    for replica, pts in points.items():
        send(client, creds, res(replica), [exp_histogram("http.server.request.duration", pts, cumulative=False)])

    body = query(client, ["baseten_end_to_end_response_time_seconds"], mode="SUMMARY")
    labels, got = metric(body, "baseten_end_to_end_response_time_seconds")
    assert labels == [{"quantile": "0.5"}, {"quantile": "0.9"}, {"quantile": "0.95"}, {"quantile": "0.99"},
                      {"stat": "avg"}]
    values = np.concatenate([v for vs in per_step.values() for v in vs])
    exact = np.quantile(values, QS)
    assert np.all(np.abs(np.array(got[0][:4]) - exact) / exact <= 0.01), (got, exact)
    assert got[0][4] == pytest.approx(values.mean(), rel=1e-9)

    _, got = metric(query(client, ["baseten_end_to_end_response_time_seconds"]),
                    "baseten_end_to_end_response_time_seconds")
    for k in range(NSTEPS):
        if k not in per_step:
            assert got[k] == [None] * 5
            continue
        v = np.concatenate(per_step[k])
        exact = np.quantile(v, QS)
        assert np.all(np.abs(np.array(got[k][:4]) - exact) / exact <= 0.01), (k, got[k], exact)
        assert got[k][4] == pytest.approx(v.mean(), rel=1e-9)


def test_exponential_negative_zero_and_milliseconds(client, creds):
    rng = np.random.default_rng(5)
    # values of both signs and exact zeros, at mixed scales, for a histogram metric
    parts = []
    points = []
    for i in range(4):
        v = np.concatenate([-rng.lognormal(0, 0.7, 400), np.zeros(150), rng.lognormal(1, 0.4, 450)])
        parts.append(v)
        points.append(_exp_point(W0 + (i * 5 + 1) * STEP, v, 6 + i % 2))
    send(client, creds, res("ra"), [exp_histogram("sonde.server.time_to_first_byte", points, cumulative=False)])
    values = np.concatenate(parts)
    qs = (0.1, 0.3, 0.42, 0.5, 0.9, 0.99)
    exact = np.quantile(values, qs)
    from sonde.query import catalogue

    body = query(client, ["baseten_time_to_first_byte_seconds"], mode="SUMMARY")
    _, got = metric(body, "baseten_time_to_first_byte_seconds")
    est = dict(zip(catalogue.QUANTILES, got[0][:4]))
    for q in (0.5, 0.9, 0.99):
        e = exact[qs.index(q)]
        assert abs(est[q] - e) <= 0.01 * abs(e) + 1e-12, (q, est[q], e)
    assert got[0][4] == pytest.approx(values.mean(), rel=1e-9)

    # the older HTTP convention in milliseconds, alone on another deployment: seconds out
    ms = rng.lognormal(3, 0.6, 3000)  # ~20 ms
    send(client, creds, res("ra", "d2"), [exp_histogram("http.server.duration", [
        _exp_point(W0 + 90 * SEC, ms, 6, attrs={"http.status_code": 200})], cumulative=False, unit="ms")])
    body = query(client, ["baseten_end_to_end_response_time_seconds"], mode="SUMMARY",
                 url="/v1/models/m1/deployments/d2/metrics")
    _, got = metric(body, "baseten_end_to_end_response_time_seconds")
    exact = np.quantile(ms / 1000, QS)
    assert np.all(np.abs(np.array(got[0][:4]) - exact) / exact <= 0.01)
    assert got[0][4] == pytest.approx(ms.mean() / 1000, rel=1e-9)


def interpolate(bounds, counts, q, lo, hi) -> float:
    """Linear interpolation within the bucket holding rank q*N; the first bucket starts
    at ``lo``, the +Inf bucket ends at ``hi``; bucket edges are clamped into [lo, hi]."""
    edges = [lo] + list(bounds) + [hi]
    rank, seen = q * sum(counts), 0
    for i, c in enumerate(counts):
        if c and seen + c >= rank:
            a, b = min(max(edges[i], lo), hi), min(max(edges[i + 1], lo), hi)
            return a + (b - a) * (rank - seen) / c
        seen += c
    raise AssertionError("rank beyond the data")


def test_explicit_quantiles_interpolate_within_buckets(client, creds):
    rng = np.random.default_rng(6)
    bounds = [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10]
    merged = np.zeros(len(bounds) + 1, dtype=int)
    all_values = []
    for replica in ("ra", "rb"):
        pts, old = [], []
        for i in range(6):
            v = rng.lognormal(-2.2 if replica == "ra" else -1.5, 0.9, 700)
            all_values.append(v)
            counts = np.bincount(np.searchsorted(bounds, v, side="left"), minlength=len(bounds) + 1)
            merged += counts
            t = W0 + (i * 4 + 1) * STEP
            if replica == "ra":
                pts.append(hist_point(t, [int(c) for c in counts], bounds, start=t - STEP, sum=float(v.sum()),
                                      min=float(v.min()), max=float(v.max()), attrs={"http.response.status_code": 200}))
            else:  # the older convention: the same buckets in milliseconds
                old.append(hist_point(t, [int(c) for c in counts], [b * 1000 for b in bounds], start=t - STEP,
                                      sum=float(v.sum() * 1000), min=float(v.min() * 1000), max=float(v.max() * 1000),
                                      attrs={"http.status_code": 200}))
        metrics = ([histogram("http.server.request.duration", pts, cumulative=False)] if pts else
                   [histogram("http.server.duration", old, cumulative=False, unit="ms")])
        send(client, creds, res(replica), metrics)
    values = np.concatenate(all_values)
    body = query(client, ["baseten_end_to_end_response_time_seconds"], mode="SUMMARY")
    _, got = metric(body, "baseten_end_to_end_response_time_seconds")
    want = [interpolate(bounds, merged, q, values.min(), values.max()) for q in QS]
    assert got[0][:4] == pytest.approx(want, rel=1e-6)
    assert got[0][4] == pytest.approx(values.mean(), rel=1e-9)
    # and each estimate lies in the bucket of the exact quantile
    for g, e in zip(got[0][:4], np.quantile(values, QS)):
        i = np.searchsorted(bounds, e)
        assert (bounds[i - 1] if i else 0) <= g <= (bounds[i] if i < len(bounds) else values.max()) * (1 + 1e-9)


def test_explicit_layouts_that_differ_merge_as_one_cdf(client, creds):
    # ra: 10 values uniform on (1, 2]; rb: 10 on (0, 4]; no min/max sent. The merged CDF
    # 10*clip(x-1, 0, 1) + 10*clip(x/4, 0, 1) reaches 10 at x = 1.6 and 18 at x = 3.2.
    t = W0 + 30 * SEC
    send(client, creds, res("ra"), [histogram("http.server.request.body.size", [
        hist_point(t, [0, 10, 0], [1.0, 2.0], start=t - STEP, sum=15.0)], cumulative=False, unit="By")])
    send(client, creds, res("rb"), [histogram("http.server.request.size", [
        hist_point(t, [0, 10, 0], [0.0, 4.0], start=t - STEP, sum=20.0)], cumulative=False, unit="By")])
    body = query(client, ["baseten_request_size_bytes", "baseten_response_size_bytes"], mode="SUMMARY")
    assert [d["name"] for d in body["metric_descriptors"]] == ["baseten_request_size_bytes"]
    assert body["metric_descriptors"][0]["unit_hint"] == "BYTES"
    _, got = metric(body, "baseten_request_size_bytes")
    assert got[0][0] == pytest.approx(1.6) and got[0][1] == pytest.approx(3.2)
    assert got[0][4] == pytest.approx(35.0 / 20)


def test_exponential_downscaling_is_exact_and_skips_late_points(app, client, creds):
    # Statement 2 downscales to the smallest scale statement 1 saw, placing arrays at
    # the lowest index it saw; a point that arrived in between with a smaller scale or
    # index cannot be placed, and must be left out rather than break the query.
    from sonde.query import histograms, window
    from sonde.query.catalogue import CATALOGUE
    from sonde.query.scan import Scan

    t = W0 + 30 * SEC
    send(client, creds, res("ra"), [exp_histogram("http.server.request.duration", [
        exp_point(t, scale=7, positive=(100, [1, 2, 3]), start=t - STEP, sum=1.0),
        exp_point(t + SEC, scale=5, positive=(10, [4]), start=t - STEP, sum=1.0)], cumulative=False)])
    w = window.resolve("SUMMARY", W0 // 10**6, W1 // 10**6)
    scan = Scan(app.state.store, creds["workspace_id"], "deployment", "d1", w)
    vm = CATALOGUE["baseten_end_to_end_response_time_seconds"]
    # as if statement 1 had only seen the scale-7 point: min scale 6, lowest index 50
    rows = histograms._exp_buckets(scan, vm, "pos", [6], [50])
    # indexes 100, 101, 102 at scale 7 are 50, 50, 51 at scale 6
    assert [(r["k"], list(r["counts"])) for r in rows] == [(0, [1 + 2, 3])]
    # with what statement 1 really sees, both points are merged at scale 5
    rows = histograms._exp_buckets(scan, vm, "pos", [5], [10])
    # ... at scale 5 all three are index 25; the scale-5 point is index 10
    assert [list(r["counts"]) for r in rows] == [[4] + [0] * 14 + [6]]
    # negative indexes (values below 1) shift arithmetically: -101, -100, -99 -> -51, -50, -50
    send(client, creds, res("ra", "d3"), [exp_histogram("http.server.request.duration", [
        exp_point(t, scale=7, positive=(-101, [1, 2, 3]), negative=(-101, [1, 2, 3]), start=t - STEP, sum=0.0)],
        cumulative=False)])
    scan = Scan(app.state.store, creds["workspace_id"], "deployment", "d3", w)
    for side in ("pos", "neg"):
        assert [list(r["counts"]) for r in histograms._exp_buckets(scan, vm, side, [6], [-51])] == [[1, 5]]


def test_a_single_sample_holds_for_the_default_interval(client, creds):
    # A series' first sample has no gap before it to take its interval from: with no
    # successor it holds DEFAULT_INTERVAL_NS (60 s).
    from sonde.query.gauges import DEFAULT_INTERVAL_NS

    t = W0 + 90 * SEC
    send(client, creds, res("solo"), [gauge("process.memory.usage", [number(t, 1234.0)], unit="By")])
    labels, values = metric(query(client, ["baseten_container_cpu_memory_working_set_bytes"]),
                            "baseten_container_cpu_memory_working_set_bytes")
    assert labels == [{"replica": "solo"}]
    covered = set(range(step_of(t), step_of(t + DEFAULT_INTERVAL_NS - 1) + 1))
    assert len(covered) == 2
    assert {k for k, v in enumerate(values) if v[0] is not None} == covered
    assert all(v[0] == 1234.0 for v in values if v[0] is not None)


def test_filesystem_gauges_by_replica_and_mount(client, creds):
    # The agent's disk samples: usage and size per mount, every 10 s from before the window.
    times = list(range(W0 - 20 * SEC, W1, 10 * SEC))
    usage = {("ra", "ephemeral"): 5e9, ("ra", "cache"): 7e10, ("rb", "ephemeral"): 6e9}
    for replica in ("ra", "rb"):
        pts = [number(t, v + (t - W0) // SEC, attrs={"sonde.mount": m})
               for (r, m), v in usage.items() if r == replica for t in times]
        limit = [number(t, 1e11, attrs={"sonde.mount": "ephemeral"}) for t in times]
        send(client, creds, res(replica), [gauge("system.filesystem.usage", pts, unit="By"),
                                           gauge("system.filesystem.limit", limit, unit="By")])
    body = query(client, ["sonde_filesystem_usage_bytes", "sonde_filesystem_limit_bytes"], mode="SUMMARY")
    labels, values = metric(body, "sonde_filesystem_usage_bytes")
    assert labels == [{"replica": "ra", "mount": "cache"}, {"replica": "ra", "mount": "ephemeral"},
                      {"replica": "rb", "mount": "ephemeral"}]
    for (label, got) in zip(labels, values[0]):
        samples = [(t, usage[(label["replica"], label["mount"])] + (t - W0) // SEC) for t in times]
        assert got == pytest.approx(tw_mean(samples, W0, W1), rel=1e-9)
    labels, values = metric(body, "sonde_filesystem_limit_bytes")
    assert values[0] == pytest.approx([1e11, 1e11], rel=1e-12)
    assert [x["mount"] for x in labels] == ["ephemeral", "ephemeral"]


# a metric with a source narrowed by attributes: asking for it runs the discovery
NEEDS_DISCOVERY = "baseten_llm_input_tokens_per_request"


def record_statements(store, monkeypatch) -> list[str]:
    """The statements the store runs from now on, in order."""
    statements = []
    run = store.ex.query_arrow

    def counted(sql, *args, **kwargs):
        statements.append(sql)
        return run(sql, *args, **kwargs)

    monkeypatch.setattr(store.ex, "query_arrow", counted)
    return statements


def test_one_source_metrics_skip_the_discovery_and_answer_alike(client, creds, store, monkeypatch):
    statements = record_statements(store, monkeypatch)
    # only after the window (its look-around reads them): present there, no value inside
    name = "baseten_concurrent_requests"
    send(client, creds, res("ra"), [gauge("http.server.active_requests", [number(W1 + 5 * SEC, 2.0)])])
    assert query(client, [name])["metric_descriptors"] == []
    send(client, creds, res("ra"), [gauge("http.server.active_requests", [number(W1 - 65 * SEC, 3.0)])])
    labels, values = metric(query(client, [name]), name)
    assert labels == [{}] and values[-2:] == [[3.0], [3.0]] and values[-3] == [None]
    # concurrent requests have one source: no statement asked which sources sent data
    assert statements and not any("groupUniqArray" in s for s in statements)
    # a metric with a source narrowed by attributes needs the discovery
    query(client, [NEEDS_DISCOVERY])
    assert any("groupUniqArray" in s for s in statements)


# the statement, not the recent points kept in memory (tests/test_recent.py holds those to it)
@pytest.mark.server_config(recent_minutes=0)
def test_gauges_choose_their_source_per_replica_in_their_own_statement(client, creds, store, monkeypatch):
    """A gauge with several sources asked alone makes the discovery's choice itself: per
    replica the first source in catalogue order that sent any point around the window,
    of whatever kind. The answer equals the one where the discovery ran (asked beside
    request totals, whose two sources need it)."""
    statements = record_statements(store, monkeypatch)
    times = [W0 + 30 * SEC + i * 60 * SEC for i in range(NSTEPS)]
    gpu = {"hw.gpu.index": "0"}

    def points(value, unit_scale=1.0):
        return [number(t, value * unit_scale, attrs=gpu) for t in times]

    # ra: the agent's NVML and a DCGM page: NVML wins. rb: DCGM alone (percent).
    send(client, creds, res("ra"), [gauge("hw.gpu.utilization", points(0.5), unit="1"),
                                    gauge("DCGM_FI_DEV_GPU_UTIL", [number(t, 90.0, attrs={"gpu": "0"})
                                                                   for t in times], unit="%")])
    send(client, creds, res("rb"), [gauge("DCGM_FI_DEV_GPU_UTIL", [number(t, 30.0, attrs={"gpu": "0"})
                                                                   for t in times], unit="%")])
    # rc: NVML's name sent as a monotonic sum (never a gauge's row) still takes the
    # replica's choice from DCGM, as the discovery counts it: rc has no values.
    send(client, creds, res("rc"), [sum_metric("hw.gpu.utilization", points(1.0), monotonic=True),
                                    gauge("DCGM_FI_DEV_GPU_UTIL", [number(t, 70.0, attrs={"gpu": "0"})
                                                                   for t in times], unit="%")])
    # rd: NVML only just after the window (the look-around reads it), so NVML wins there too
    send(client, creds, res("rd"), [gauge("hw.gpu.utilization", [number(W1 + 5 * SEC, 0.25, attrs=gpu)], unit="1"),
                                    gauge("DCGM_FI_DEV_GPU_UTIL", [number(t, 10.0, attrs={"gpu": "0"})
                                                                   for t in times[-3:]], unit="%")])
    name = "baseten_gpu_utilization"
    statements.clear()
    alone = query(client, [name])
    assert any("QUALIFY" in s for s in statements) and not any("groupUniqArray" in s for s in statements)
    labels, values = metric(alone, name)
    # rc and rd: their chosen source has no gauge point inside the window, so no label set
    assert labels == [{"replica": "ra", "gpu": "0"}, {"replica": "rb", "gpu": "0"}]
    assert values == [pytest.approx([0.5, 0.3], rel=1e-12)] * NSTEPS
    statements.clear()
    beside = query(client, [name, NEEDS_DISCOVERY])
    assert any("groupUniqArray" in s for s in statements)
    assert not any("QUALIFY" in s for s in statements)
    assert metric(beside, name) == metric(alone, name)


def test_latency_requests_and_counters_choose_their_source_per_replica_in_their_own_statement(
        client, creds, store, monkeypatch):
    """Request totals, latency (exponential points, statement 2 reading only the kept
    replicas) and value counters asked alone pick each replica's source in their own
    statements: the same answer as a deployment sent only the chosen sources' points,
    and as the discovery's choice."""
    statements = record_statements(store, monkeypatch)
    times = [W0 + 30 * SEC + i * 60 * SEC for i in range(NSTEPS)]

    def stable(offset):  # seconds, exponential
        return exp_histogram("http.server.request.duration", [
            exp_point(t, scale=3, positive=(offset, [1, 2, 3]), start=t - STEP, sum=1.0,
                      attrs={"http.response.status_code": 200}) for t in times], cumulative=False)

    def older(offset, status):  # milliseconds, exponential, the older convention
        return exp_histogram("http.server.duration", [
            exp_point(t + SEC, scale=2, positive=(offset, [5, 1]), start=t - STEP, sum=9.0,
                      attrs={"http.status_code": status}) for t in times], cumulative=False, unit="ms")

    def cpu(name, per_step):
        return sum_metric(name, [number(t, per_step * (i + 1), start=W0 - 60 * SEC) for i, t in enumerate(times)],
                          unit="s")

    sent = {  # replica: (points of both conventions, the points the choice keeps)
        "ra": ([stable(-4), older(20, 500), cpu("process.cpu.time", 2.0), cpu("container.cpu.time", 7.0)],
               [stable(-4), cpu("process.cpu.time", 2.0)]),
        "rb": ([older(24, 404), cpu("container.cpu.time", 3.0)], [older(24, 404), cpu("container.cpu.time", 3.0)]),
    }
    for replica, (both, chosen) in sent.items():
        send(client, creds, res(replica, "dup"), both)
        send(client, creds, res(replica, "chosen"), chosen)
    names = ["baseten_inference_requests_total", "baseten_end_to_end_response_time_seconds"]
    cpu_name = "baseten_container_cpu_usage_seconds_total"
    for asked in (names, names[:1], names[1:], [cpu_name]):
        statements.clear()
        dup = query(client, asked, url="/v1/models/m1/deployments/dup/metrics")
        assert not any("groupUniqArray" in s for s in statements), asked
        chosen = query(client, asked, url="/v1/models/m1/deployments/chosen/metrics")
        statements.clear()
        discovered = query(client, [*asked, NEEDS_DISCOVERY], url="/v1/models/m1/deployments/dup/metrics")
        assert any("groupUniqArray" in s for s in statements), asked
        # where the discovery chose, the statements do not choose again
        assert not any("QUALIFY" in s for s in statements), asked
        for name in asked:
            assert metric(dup, name) == metric(chosen, name) == metric(discovered, name), name
    labels, values = metric(dup, cpu_name)
    assert labels == [{"replica": "ra"}, {"replica": "rb"}] and values[3] == pytest.approx([2.0, 3.0])
    labels, values = metric(query(client, names[:1], url="/v1/models/m1/deployments/dup/metrics"), names[0])
    assert values[0] == [6, None, 6, None]  # ra's stable 2xx, rb's older 4xx; ra's older 5xx left out
