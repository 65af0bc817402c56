"""Cumulative state survives restarts and crashes, and concurrent requests."""

from __future__ import annotations

import json
import threading
import time

import pytest
from conftest import Client
from otlp_build import DEPLOYMENT, S0, SEC, T0, exp_histogram, exp_point, metrics_request, number, post, sum_metric

from sonde.api.app import create_app
from sonde.settings import Config
from sonde.store import Store


def counter(ts: int, value: int, **attrs):
    return metrics_request(DEPLOYMENT, [sum_metric("c", [number(ts, value, start=S0, attrs=attrs)])])


def deltas(store) -> list[tuple[int, float]]:
    return [(r["t"], r["value"]) for r in store.ex.query(
        f"SELECT toUnixTimestamp64Nano(ts) AS t, value FROM {store.t('metric_points')} WHERE metric = 'c'"
        " ORDER BY ts")]


def on_cluster(store) -> str:
    return f" ON CLUSTER '{store.ex.cluster}'" if store.ex.cluster else ""


def rows_of(store, table: str) -> str:
    """Where ``table``'s rows live, for statements that change them in place: on a
    cluster, the local tables behind the Distributed one, on every node."""
    return store.t(table) + ("_local" if store.ex.cluster else "") + on_cluster(store)


class Server:
    """The in-process app on ``store``; :meth:`restart` closes the store and reopens
    it (same executor, same database) under a fresh app, as a process restart would."""

    def __init__(self, executor, store, data_dir: str):
        self.executor, self.store, self.data_dir = executor, store, data_dir
        self._start()

    def _start(self):
        self.app = create_app(Config(data_dir=self.data_dir), store=self.store)
        creds = json.loads(open(f"{self.data_dir}/credentials.json").read())
        self.ingest = Client(self.app, creds["ingest_key"])

    def restart(self):
        self.store.close(executor=False)
        wal = self.store.writer.wal
        self.store = Store(self.executor, self.store.db, flush_interval_ms=5, wal_dir=wal.path if wal else None)
        self._start()


@pytest.fixture
def server(store_executor, store, tmp_path):
    s = Server(store_executor, store, str(tmp_path / "data"))
    yield s
    if s.store is not store:
        s.store.close(executor=False)


def test_state_survives_a_restart(server):
    assert post(server.ingest, counter(T0, 10)).status_code == 200
    server.restart()
    assert post(server.ingest, counter(T0 + 10 * SEC, 15)).status_code == 200
    assert post(server.ingest, counter(T0 + 10 * SEC, 15)).status_code == 200  # a retry after the restart
    assert deltas(server.store) == [(T0, 10.0), (T0 + 10 * SEC, 5.0)]


def test_state_is_rebuilt_from_points_when_the_state_rows_were_lost(server):
    """A crash between the two inserts of a group commit: points in, state rows not."""
    ss = server.store.t("series_state")
    assert post(server.ingest, counter(T0, 10)).status_code == 200
    exp = metrics_request(DEPLOYMENT, [exp_histogram("e", [exp_point(T0, scale=1, positive=(0, [1, 1]), start=S0)])])
    assert post(server.ingest, exp).status_code == 200
    newest = server.store.ex.query(f"SELECT max(seq) AS s FROM {ss}")[0]["s"]
    assert post(server.ingest, counter(T0 + 10 * SEC, 15)).status_code == 200
    server.store.ex.command(f"DELETE FROM {rows_of(server.store, 'series_state')} WHERE seq > {{s:UInt64}}",
                            {"s": newest})
    assert server.store.ex.query(f"SELECT count() AS n FROM {ss} WHERE seq > {{s:UInt64}}", {"s": newest}) == [{"n": 0}]
    server.restart()
    assert post(server.ingest, counter(T0 + 20 * SEC, 18)).status_code == 200
    assert post(server.ingest, counter(T0 + 10 * SEC, 15)).status_code == 200  # retried: still a duplicate
    assert deltas(server.store) == [(T0, 10.0), (T0 + 10 * SEC, 5.0), (T0 + 20 * SEC, 3.0)]
    # every state row gone: everything is replayed from the points
    server.store.ex.command(f"TRUNCATE TABLE {rows_of(server.store, 'series_state')} SYNC")
    server.restart()
    exp2 = metrics_request(DEPLOYMENT, [exp_histogram("e", [exp_point(T0 + SEC, scale=1, positive=(0, [3, 1]),
                                                                      start=S0)])])
    assert post(server.ingest, exp2).status_code == 200
    assert post(server.ingest, counter(T0 + 30 * SEC, 20)).status_code == 200
    last_e = server.store.ex.query(f"SELECT count, pos_offset, pos_buckets FROM {server.store.t('metric_points')}"
                                   " WHERE metric = 'e' ORDER BY ts DESC LIMIT 1")
    assert last_e == [{"count": 2, "pos_offset": 0, "pos_buckets": [2]}]
    assert deltas(server.store)[-1] == (T0 + 30 * SEC, 2.0)


def test_a_request_of_many_points_a_series_keeps_only_the_newest_state_and_replays_it(server):
    body = metrics_request(DEPLOYMENT, [sum_metric("c", [number(T0 + i * 10 * SEC, 10 + i, start=S0)
                                                          for i in (2, 0, 1)])])  # out of order, too
    assert post(server.ingest, body).status_code == 200
    carried = server.store.ex.query(f"SELECT toUnixTimestamp64Nano(ts) AS t, cum_state != '' AS has"
                                    f" FROM {server.store.t('metric_points')} WHERE metric = 'c' ORDER BY ts")
    assert [(r["t"], r["has"]) for r in carried] == [(T0, False), (T0 + 10 * SEC, False), (T0 + 20 * SEC, True)]
    # the state rows lost (a crash between the two inserts): the newest point's cum_state is enough
    server.store.ex.command(f"TRUNCATE TABLE {rows_of(server.store, 'series_state')} SYNC")
    server.restart()
    assert post(server.ingest, counter(T0 + 30 * SEC, 20)).status_code == 200
    assert post(server.ingest, counter(T0 + 20 * SEC, 12)).status_code == 200  # a retry: a duplicate
    assert deltas(server.store) == [(T0, 10.0), (T0 + 10 * SEC, 1.0), (T0 + 20 * SEC, 1.0), (T0 + 30 * SEC, 8.0)]


def test_a_failed_commit_does_not_eat_the_retry(server):
    """Without a write-ahead log the client hears of a failed commit and retries; with
    one it was acknowledged from the log, and the writer retries the commit itself."""
    store = server.store
    logged = store.writer.wal is not None
    failed = 200 if logged else 500
    assert post(server.ingest, counter(T0, 10)).status_code == 200
    mp = store.t("metric_points")
    raw = store.ex.inner if logged else store.ex  # renames that must not wait for the commit they break
    raw.command(f"RENAME TABLE {mp} TO {mp}_away{on_cluster(store)}")
    try:
        r = post(server.ingest, counter(T0 + 10 * SEC, 15))
        assert r.status_code == failed
        if logged:
            time.sleep(0.1)  # its commit is refused at least once
    finally:
        raw.command(f"RENAME TABLE {mp}_away TO {mp}{on_cluster(store)}")
    assert post(server.ingest, counter(T0 + 10 * SEC, 15)).status_code == 200  # the client's retry
    assert deltas(store) == [(T0, 10.0), (T0 + 10 * SEC, 5.0)]
    # half a commit: points stored, state rows not; the retry is then a duplicate
    ss = store.t("series_state")
    raw.command(f"RENAME TABLE {ss} TO {ss}_away{on_cluster(store)}")
    try:
        assert post(server.ingest, counter(T0 + 20 * SEC, 18)).status_code == failed
        if logged:
            time.sleep(0.1)
    finally:
        raw.command(f"RENAME TABLE {ss}_away TO {ss}{on_cluster(store)}")
    assert post(server.ingest, counter(T0 + 20 * SEC, 18)).status_code == 200
    assert post(server.ingest, counter(T0 + 30 * SEC, 19)).status_code == 200
    assert deltas(store)[-2:] == [(T0 + 20 * SEC, 3.0), (T0 + 30 * SEC, 1.0)]


def test_concurrent_requests_on_one_series(server):
    """Eight clients race points of one counter (value = 10 x step). Whatever the
    arrival order, stored deltas must be exact differences and add up to the last."""
    step = iter(range(1, 10_000))
    lock = threading.Lock()
    errors = []
    # Warm the key and inventory caches first: chDB's session is not safe for a
    # parameterized query running next to another statement (reported), and the
    # ingest path itself runs none once these are cached.
    assert post(server.ingest, counter(T0, 0)).status_code == 200

    def client():
        try:
            for _ in range(12):
                with lock:
                    k = next(step)
                r = post(server.ingest, counter(T0 + k * SEC, 10 * k))
                assert r.status_code == 200, r.content
        except Exception as exc:  # reported below; a thread's assert is otherwise lost
            errors.append(exc)

    threads = [threading.Thread(target=client) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    got = deltas(server.store)
    steps = [(t - T0) // SEC for t, _ in got]
    assert steps == sorted(steps) and len(set(steps)) == len(steps)
    assert got[0] == (T0, 0.0)
    assert all(v == 10.0 * (k - prev) for (_, v), k, prev in zip(got[1:], steps[1:], steps))
    assert sum(v for _, v in got) == 10.0 * max(steps)
