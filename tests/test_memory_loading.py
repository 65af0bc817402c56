"""The store's memories load while the server answers (store/loading.py), and see every
committed row once: those committed before the load was asked, those reserved before it
and committed after, and those committed while it reads.

The store here commits only when asked (its write-ahead log's interval is hours), so a
test decides which requests are acknowledged and not yet committed when a load starts.
The load's statements run on the loader's thread; a hook on the executor sends a request
before each of them (and commits every other one), so commits land between a load's
statements and between one memory's load and the next. A memory loaded that way must
hold exactly what one loaded afterwards, with nothing arriving, holds.
"""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest

import test_gauge_sums
import test_request_counts
from conftest import Client, drop_database, new_db_name
from otlp_build import SEC, gauge, hist_point, histogram, number
from test_metrics_values import record_statements, res, send
from test_recent import assert_same, query

from sonde.api.app import create_app
from sonde.ingest.metrics import MAX_AHEAD_NS
from sonde.query import recent, recent_counts
from sonde.settings import Config
from sonde.store import Store

H = 3600 * SEC
B = test_gauge_sums.B  # now, on a half-hour boundary
NEW = test_request_counts.NEW
MEMORIES = ("recent", "request_counts", "request_latency", "gauge_sums")
KEEP = {"recent_minutes": 0, "request_count_hours": 0, "gauge_sum_hours": 0}  # the tests keep them


class Held:
    """A store whose commits wait until asked, an app on it keeping no memory of its own,
    and a hook run before each statement on the loader's thread."""

    def __init__(self, ex, tmp_path, monkeypatch):
        self.ex = ex
        self.hook = lambda sql: None
        run = ex.query_arrow

        def hooked(sql, *args, **kwargs):
            if threading.current_thread().name.startswith("sonde-memory-load"):
                self.hook(sql)
            return run(sql, *args, **kwargs)

        monkeypatch.setattr(ex, "query_arrow", hooked)  # before the store takes it
        self.store = Store(ex, new_db_name(), wal_dir=str(tmp_path / "wal"), wal_flush_interval_ms=10**8,
                           wal_live_flush_interval_ms=10**8)
        app = create_app(Config(data_dir=str(tmp_path / "data"), **KEEP), store=self.store)
        self.creds = json.loads((tmp_path / "data" / "credentials.json").read_text())
        self.client = Client(app, self.creds["management_key"])

    def keep(self, *, background: bool) -> None:
        """What the server keeps, as it asks at start."""
        s = self.store
        s.keep_recent(recent.METRICS, 7200, future_ns=MAX_AHEAD_NS, background=background)
        s.keep_request_counts(recent_counts.METRICS, 192 * 3600, future_ns=MAX_AHEAD_NS, background=background)
        s.keep_gauge_sums(recent.METRICS, 192 * 3600, future_ns=MAX_AHEAD_NS, background=background)

    def close(self) -> None:
        self.store.close(executor=False)
        drop_database(self.ex, self.store.db)


@pytest.fixture
def held(store_executor, tmp_path, monkeypatch):
    if not store_executor.exclusive:
        pytest.skip("the write-ahead log that holds commits back is the embedded store's")
    h = Held(store_executor, tmp_path, monkeypatch)
    yield h
    h.close()


def _one_point(h: Held, i: int) -> None:
    """A GPU sample and a request histogram point of replica r{i % 3}, after the fleet's."""
    t = B - 19 * SEC + i * SEC
    send(h.client, h.creds, res(f"r{i % 3}"), [
        gauge("hw.gpu.utilization", [number(t, 0.1 * i, attrs={"hw.gpu.index": "0"})], unit="1"),
        histogram(NEW, [hist_point(t, [i, 1, 0, 2], [0.1, 0.5, 1.0], start=t - 10 * SEC, sum=1.5,
                                   attrs={"http.response.status_code": "200"})], cumulative=False)])


OTHERS = [f"d{k}" for k in range(2, 12)]  # beside d1: more entities than a load reads in one statement


def _feed(h: Held) -> None:
    test_gauge_sums._send_fleet(h.client, h.creds, np.random.default_rng(5), B - 150 * 60 * SEC, B - 20 * SEC)
    test_request_counts._send_fleet(h.client, h.creds, np.random.default_rng(6), B - 150 * 60 * SEC,
                                    B - 20 * SEC, exp=False)
    for k, dep in enumerate(OTHERS):
        pts = [number(B - 3 * H + i * 60 * SEC, 0.01 * (i + k), attrs={"hw.gpu.index": "0"}) for i in range(170)]
        send(h.client, h.creds, res("r0", dep), [gauge("hw.gpu.utilization", pts, unit="1")])


def _ws(h: Held) -> str:
    return h.store.ex.query(f"SELECT any(ws) AS ws FROM {h.store.t('metric_points')}")[0]["ws"]


def _same_memories(a: dict, b: dict, ws: str) -> None:
    """Memories ``a`` and ``b`` (by name) hold the same."""
    key = (ws, "deployment", "d1")
    lo = time.time_ns() - 7000 * SEC  # from ~2 h ago: each keeps older rows, back to its horizon when loaded
    for dep in ("d1", *OTHERS):
        rows = [_rows(m, ws, dep, lo) for m in (a["recent"], b["recent"])]
        assert rows[0] and rows[0] == rows[1]  # each row once: a row twice would count twice
    for name in ("request_counts", "request_latency"):
        x, y = (_buckets(m[name].window(*key, B - 24 * H, B, recent_counts.METRICS)) for m in (a, b))
        assert x.keys() == y.keys() and x
        for k in x:
            assert all(np.array_equal(p, q) for p, q in zip(x[k], y[k], strict=True)), (name, k)
    for (_, _, dep), t0, step in ((key, B - 24 * H, 300 * SEC), (key, B - 168 * H, 1800 * SEC),
                                  *(((ws, "deployment", d), B - 24 * H, 300 * SEC) for d in OTHERS)):
        x, y = (m["gauge_sums"].window(ws, "deployment", dep, t0, B, step, recent.METRICS) for m in (a, b))
        assert sorted(x.keys) == sorted(y.keys) and x.keys
        xo, yo = (sorted(range(len(z.keys)), key=lambda j: z.keys[j]) for z in (x, y))
        assert np.allclose(x.integral[xo], y.integral[yo], rtol=1e-12, atol=0)
        assert np.array_equal(x.covered[xo], y.covered[yo])
        tails = [sorted(zip([z.keys[j] for j in z.tail_key], z.tail_t.tolist(), z.tail_v.tolist(), z.tail_e.tolist()))
                 for z in (x, y)]
        assert tails[0] == tails[1]
        px, py = _buckets(x.presence), _buckets(y.presence)
        assert px.keys() == py.keys() and all(np.array_equal(px[k][0], py[k][0]) for k in px)


def _rows(memory, ws: str, dep: str, lo: int) -> list[tuple]:
    """A deployment's recent rows from ``lo``, sorted."""
    t = memory.rows(ws, "deployment", dep, lo, recent.METRICS)
    return sorted(r for r in zip(*(t.column(c).to_pylist() for c in t.column_names)) if r[1] >= lo)


def _buckets(b) -> dict:
    """A Buckets' arrays by key, whatever order its keys came in."""
    out = {}
    for j, k in enumerate(b.keys):
        out[k] = [v[j] for v in b.values.values()]
    return out


def test_a_background_load_sees_every_row_once(held):
    h, s = held, held.store
    _feed(h)
    s.writer.flush()
    _one_point(h, 0)  # acknowledged, not committed: reserved before the loads, committed during them
    seen: list[dict] = []
    calls = iter(range(1, 100))

    def during(sql):
        i = next(calls)
        seen.append({m: getattr(s, m) for m in MEMORIES})
        _one_point(h, i)  # acknowledged; numbered after the load's upto
        if i % 2:
            s.writer.flush()  # committed while the load reads; else left for the next load to wait on

    h.hook = during
    h.keep(background=True)
    assert s.wait_loaded(60)
    assert len(seen) >= 6  # a statement each for three memories, three for the sums of one entity
    assert all(seen[0][m] is None for m in MEMORIES)  # none handed to readers before its load was in
    assert all(getattr(s, m) is not None for m in MEMORIES)
    _one_point(h, 50)  # and after: added as they are committed
    s.writer.flush()
    loaded = {m: getattr(s, m) for m in MEMORIES}

    h.hook = lambda sql: None
    h.keep(background=False)  # the same memories read from the store, nothing arriving meanwhile
    _same_memories(loaded, {m: getattr(s, m) for m in MEMORIES}, _ws(h))


def test_readers_read_the_store_until_the_memories_are_in(held, monkeypatch):
    h, s = held, held.store
    _feed(h)
    windows = [(["baseten_gpu_utilization"], {"start_epoch_millis": (B - 24 * H) // 10**6,
                                              "end_epoch_millis": B // 10**6}),
               (["baseten_inference_requests_total"], {"start_epoch_millis": (B - 24 * H) // 10**6,
                                                       "end_epoch_millis": B // 10**6})]
    answers: list[dict] = []
    answered, release = threading.Event(), threading.Event()

    def during(sql):
        if not answered.is_set():  # the first load's first statement: nothing kept yet
            answers.extend(query(h.client, names, "SERIES", w) for names, w in windows)
            answered.set()
            release.wait(30)

    h.hook = during
    statements = record_statements(s, monkeypatch)
    h.keep(background=True)
    assert answered.wait(30)
    assert all(getattr(s, m) is None for m in MEMORIES)
    assert sum("metric_points" in q for q in statements) >= 2  # the statements answered
    release.set()
    assert s.wait_loaded(60)
    before = len(statements)
    later = [query(h.client, names, "SERIES", w) for names, w in windows]
    assert not any("metric_points" in q for q in statements[before:])  # the memories answer now
    for a, b in zip(answers, later):
        assert_same(a, b)


def test_closing_the_store_stops_a_load(held):
    h, s = held, held.store
    _feed(h)
    entered, release = threading.Event(), threading.Event()

    def during(sql):
        entered.set()
        release.wait(30)

    h.hook = during
    h.keep(background=True)
    assert entered.wait(30)
    closer = threading.Thread(target=s.close, kwargs={"executor": False})
    closer.start()
    while not s._loader._closing.is_set():
        time.sleep(0.01)
    release.set()
    closer.join(30)
    assert not closer.is_alive()
    assert s.gauge_sums is None and s.request_counts is None  # their statements never ran


def test_a_load_that_fails_leaves_its_memory_unkept_and_the_others_kept(held, caplog):
    h, s = held, held.store
    _feed(h)

    def during(sql):
        if "groupArray" in sql:  # the gauge sums' per-entity statement
            raise RuntimeError("the store refused the statement")

    h.hook = during
    h.keep(background=True)
    assert s.wait_loaded(60)
    assert s.gauge_sums is None
    assert s.recent is not None and s.request_counts is not None and s.request_latency is not None
    assert "loading GaugeSums from the store failed" in caplog.text
    _one_point(h, 1)  # commits go on, to the memories kept
    s.writer.flush()


def test_a_load_that_ingest_outruns_starts_again(held, monkeypatch, caplog):
    h, s = held, held.store
    _feed(h)
    s.writer.flush()
    # the limit is max_pending_rows (2M by default); the writer's own must stay large here
    monkeypatch.setattr(s._loader, "_max_rows", 5)
    monkeypatch.setattr(s._loader, "retry_s", 0.05)
    tries = []

    def during(sql):
        if "groupArray" in sql:  # the sums' statement: the first load is flooded, the next not
            tries.append(sql)
            if len(tries) == 1:
                for i in range(8):  # 8 GPU samples: more than 5 rows of the kept metrics set aside
                    _one_point(h, i)
                s.writer.flush()

    h.hook = during
    s.keep_gauge_sums(recent.METRICS, 192 * 3600, future_ns=MAX_AHEAD_NS, background=True)
    assert s.wait_loaded(60)
    assert len(tries) == 2 * (1 + len(OTHERS))  # a statement an entity, each load
    assert "GaugeSums: more than 5 rows committed while it loaded; loading it again" in caplog.text
    loaded = s.gauge_sums
    assert loaded is not None
    h.hook = lambda sql: None
    s.keep_gauge_sums(recent.METRICS, 192 * 3600, future_ns=MAX_AHEAD_NS)
    ws, t0 = _ws(h), B - 24 * H
    x, y = (m.window(ws, "deployment", "d1", t0, B, 300 * SEC, recent.METRICS) for m in (loaded, s.gauge_sums))
    assert sorted(x.keys) == sorted(y.keys) and x.keys
    assert np.allclose(np.sort(x.integral.sum(axis=1)), np.sort(y.integral.sum(axis=1)), rtol=1e-12, atol=0)
    px, py = _buckets(x.presence), _buckets(y.presence)  # emptied before it started again: nothing twice
    assert px.keys() == py.keys() and all(np.array_equal(px[k][0], py[k][0]) for k in px)


def test_memory_load_start_keeps_them_before_the_app_answers(store_executor, tmp_path):
    s = Store(store_executor, new_db_name(), flush_interval_ms=5)
    try:
        create_app(Config(data_dir=str(tmp_path / "data"), memory_load="start"), store=s)
        if s.shared("auto"):
            pytest.skip("memories are kept only where this server is the store's one writer")
        assert all(getattr(s, m) is not None for m in MEMORIES)
    finally:
        s.close(executor=False)
        drop_database(store_executor, s.db)
