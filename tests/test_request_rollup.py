"""Request totals read from the request rollup against ground truth, window by window.

A week of sparse request histograms goes in through the real OTLP/HTTP receiver: two
conventions, a replica sending both (the stable one counts), one sending the stable
name as a sum (present, so chosen, but counting nothing), exponential points, points
exactly on bucket boundaries, points without a status, and one point sent late. Every
window's answer is compared with the totals computed here from what was sent, and the
statements show which windows read the rollup (query/requests_rollup.py: those that
start on a bucket boundary with a step of whole buckets) and which read raw points.
"""

from __future__ import annotations

import numpy as np
import pytest

from otlp_build import SEC, T0, exp_histogram, exp_point, hist_point, histogram, number, sum_metric
from sonde.query import requests_rollup
from sonde.query.window import resolve
from sonde.store import migrations, schema
from test_export import back_to_schema
from test_metrics_values import metric, query, record_statements, res, send

NAME = "baseten_inference_requests_total"
URL = "/v1/models/m1/deployments/rr/metrics"
NEW, OLD = schema.REQUEST_METRICS
MIN = 60 * SEC
END = T0 // (30 * MIN) * (30 * MIN)  # a half-hour boundary before the test started
CLASSES = ("2xx", "3xx", "4xx", "5xx")
BOUNDS = [0.1, 1.0]


def _times(rng, every_s: int) -> list[int]:
    """Sparse times over the week before END, some exactly on 30-minute boundaries."""
    ts = list(range(END - 7 * 86400 * SEC + 7 * SEC, END, every_s * SEC))
    ts += [END - k * 30 * MIN for k in range(1, 300, 7)]
    return sorted(t + int(rng.integers(0, 3)) * SEC if i % 3 else t for i, t in enumerate(ts))


def _sent() -> tuple[dict, list[tuple[str, str, int, int, int]]]:
    """{replica: OTLP metrics}, and every point as (replica, metric, ts, status, n)
    (n = -1: a point of another kind, which counts only as present)."""
    rng = np.random.default_rng(15)
    points: list[tuple[str, str, int, int, int]] = []

    def hist(replica, name, ts, status, counts, *, unit_attr):
        attrs = {unit_attr: status} if status else {}
        points.append((replica, name, ts, status, sum(counts)))
        return hist_point(ts, counts, BOUNDS, start=ts - 10 * SEC, sum=1.0, attrs=attrs)

    def statuses():
        return int(rng.choice([200, 201, 302, 404, 500, 503, 0]))

    ra = [hist("ra", NEW, t, statuses(), [int(x) for x in rng.integers(0, 9, 3)], unit_attr="http.response.status_code")
          for t in _times(rng, 1013)]
    rb = [hist("rb", OLD, t, int(rng.choice([200, 404])), [int(x) for x in rng.integers(0, 9, 3)],
               unit_attr="http.status_code") for t in _times(rng, 1409)]
    # rc: the stable convention only in the week's second half; the older one throughout
    rc_new = [hist("rc", NEW, t, 200, [1, 2, 0], unit_attr="http.response.status_code")
              for t in _times(rng, 2003) if t > END - 3 * 86400 * SEC]
    rc_old = [hist("rc", OLD, t, 500, [5, 5, 5], unit_attr="http.status_code") for t in _times(rng, 1777)]
    rd = []
    for t in _times(rng, 3001):
        n = int(rng.integers(1, 6))
        points.append(("rd", NEW, t, 503, n))
        rd.append(exp_point(t, scale=2, positive=(3, [n]), start=t - 10 * SEC, sum=1.0,
                            attrs={"http.response.status_code": 503}))
    re_sum = []
    for t in _times(rng, 4001):
        points.append(("re", NEW, t, 0, -1))
        re_sum.append(number(t, 1.0, start=t - 10 * SEC))
    re_old = [hist("re", OLD, t, 200, [3, 0, 0], unit_attr="http.status_code") for t in _times(rng, 3333)]
    late = hist("ra", NEW, END - 2 * 86400 * SEC + 1234 * SEC, 404, [7, 0, 0], unit_attr="http.response.status_code")
    return {
        "ra": [histogram(NEW, ra, cumulative=False)],
        "rb": [histogram(OLD, rb, cumulative=False, unit="ms")],
        "rc": [histogram(NEW, rc_new, cumulative=False), histogram(OLD, rc_old, cumulative=False, unit="ms")],
        "rd": [exp_histogram(NEW, rd, cumulative=False)],
        "re": [sum_metric(NEW, re_sum, cumulative=False, monotonic=True), histogram(OLD, re_old, cumulative=False,
                                                                                   unit="ms")],
        "late": [histogram(NEW, [late], cumulative=False)],
    }, points


def expected(points, start_ms: int, end_ms: int, step_s: int | None) -> list[list]:
    """Per step, per status class: the requests of each replica's first source (in
    catalogue order) among those it sent inside the window; None where none counted."""
    t0, t1 = start_ms * 10**6, end_ms * 10**6
    step = step_s * SEC if step_s else t1 - t0
    inside = [p for p in points if t0 <= p[2] < t1]
    chosen = {}
    for replica, name, *_ in inside:
        chosen[replica] = min(chosen.get(replica, name), name, key=[NEW, OLD].index)
    out = [[None] * 4 for _ in range(-(-(t1 - t0) // step))]
    for replica, name, ts, status, n in inside:
        if name == chosen[replica] and n >= 0 and 2 <= status // 100 <= 5:
            row, i = out[(ts - t0) // step], status // 100 - 2
            row[i] = (row[i] or 0) + n
    return out


@pytest.fixture
def sent(client, creds):
    metrics, points = _sent()
    for replica, ms in metrics.items():
        send(client, creds, res("ra" if replica == "late" else replica, "rr"), ms)
    return points


H = 3600_000
END_MS = END // 10**6
#: (what, start ms, end ms, mode, the rollup level read)
WINDOWS = [
    ("a week at 30 minutes", END_MS - 7 * 24 * H, END_MS, "SERIES", 1800),
    ("a day starting on a 5-minute boundary", END_MS - 24 * H - 5 * 60_000, END_MS - 5 * 60_000, "SERIES", 300),
    ("two hours ending inside a minute", END_MS - 3 * H, END_MS - H + 25_000, "SERIES", 60),
    ("a day starting off the minute", END_MS - 24 * H + 13_000, END_MS, "SERIES", None),
    ("three days, one step, ending inside a bucket", END_MS - 72 * H, END_MS - 7 * 60_000 - 1, "SUMMARY", 1800),
    ("one step starting on a 5-minute boundary", END_MS - 50 * H - 5 * 60_000, END_MS - H, "SUMMARY", 300),
    ("under one bucket", END_MS - 30 * 60_000 - 20_000, END_MS - 30 * 60_000 + 40_000, "SUMMARY", None),
]


@pytest.mark.parametrize("what, start, end, mode, level", WINDOWS, ids=[w[0] for w in WINDOWS])
def test_request_totals_equal_what_was_sent(sent, client, store, monkeypatch, what, start, end, mode, level):
    window = resolve(mode, start, end, now_ms=END_MS + H)
    assert requests_rollup.level(window) == level
    statements = record_statements(store, monkeypatch)
    body = query(client, [NAME], mode=mode, url=URL, window={"start_epoch_millis": start, "end_epoch_millis": end})
    labels, got = metric(body, NAME)
    assert labels == [{"status": c} for c in CLASSES]
    want = expected(sent, start, end, window.step_s)
    assert got == want
    assert sum(v or 0 for row in got for v in row) > 0
    assert any("request_rollup" in s for s in statements) == (level is not None), statements
    # with the latency in the same request, totals come from the shared raw statement: alike
    both = query(client, [NAME, "baseten_end_to_end_response_time_seconds"], mode=mode, url=URL,
                 window={"start_epoch_millis": start, "end_epoch_millis": end})
    assert metric(both, NAME) == (labels, want)


def _week(client) -> list[list]:
    return metric(query(client, [NAME], url=URL, window={"start_epoch_millis": WINDOWS[0][1],
                                                         "end_epoch_millis": WINDOWS[0][2]}), NAME)[1]


@pytest.mark.steady_only("reads the store the one app writes to")
def test_an_upgrade_rolls_up_what_is_stored_and_a_crash_is_repaired(sent, client, creds, store):
    want = expected(sent, WINDOWS[0][1], WINDOWS[0][2], 1800)
    # back to schema 9, without the rollup, every point still stored: migrating adds them up
    view = schema.VIEWS_BY_NAME["request_rollup_mv"]
    back_to_schema(store, 9, view)
    assert migrations.migrate(store.ex, store.db, 30) == (9, migrations.SCHEMA_VERSION)
    assert _week(client) == want
    # a crash between the points' part and the view's: the points are stored, the
    # rollup lacks them; the repair at the next start adds them, once
    store.ex.command(f"DROP VIEW {store.t(view.name)}")
    newest = [(END - 10 * MIN + i * MIN, [i, 1, 1]) for i in range(1, 5)]
    send(client, creds, res("ra", "rr"), [histogram(NEW, [
        hist_point(t, c, BOUNDS, start=t - 10 * SEC, sum=1.0, attrs={"http.response.status_code": 201})
        for t, c in newest], cumulative=False)])
    store.ex.command(schema.create_view(view, store.db))
    sent += [("ra", NEW, t, 201, sum(c)) for t, c in newest]
    want = expected(sent, WINDOWS[0][1], WINDOWS[0][2], 1800)
    assert _week(client) != want
    store.repair_views()
    assert _week(client) == want
    store.repair_views()
    assert _week(client) == want
