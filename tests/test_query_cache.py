"""Deployment-metrics answers kept for identical questions (query/cache.py): a kept
answer is always the one the store gives, since every write that reaches a window drops
its answers, late points included; other workspaces never see it."""

from __future__ import annotations

import json
import threading
import time

import pyarrow as pa
import pytest

from conftest import Client, drop_database, new_db_name
from otlp_build import DEPLOYMENT, SEC, T0, encode, gauge, metrics_request, number
from sonde.api.app import create_app
from sonde.query.cache import ResultCache
from sonde.settings import Config
from sonde.store import Store



@pytest.fixture
def store(executor, tmp_path_factory):
    """The conftest's store, on chDB alone: a store other processes write keeps no answers."""
    s = Store(executor, new_db_name(), flush_interval_ms=5, wal_dir=str(tmp_path_factory.mktemp("wal")),
              wal_flush_interval_ms=200, wal_live_flush_interval_ms=5)
    yield s
    s.close(executor=False)
    drop_database(executor, s.db)


URL = "/v1/models/m1/deployments/d1/metrics"
GPU = "baseten_gpu_utilization"
START = T0 - 3600 * SEC  # an hour of data before T0
WINDOW = {"mode": "SERIES", "metrics": GPU, "start_epoch_millis": START // 10**6,
          "end_epoch_millis": (START + 1800 * SEC) // 10**6}  # its first half hour


def _client(store: Store, tmp_path, **settings) -> tuple[Client, dict]:
    app = create_app(Config(data_dir=str(tmp_path / "data"), **settings), store=store)
    creds = json.loads((tmp_path / "data" / "credentials.json").read_text())
    return Client(app, creds["management_key"]), creds


def _send(client: Client, creds: dict, points: list, deployment: str = "d1", replica: str = "r0001") -> None:
    resource = {**DEPLOYMENT, "sonde.deployment_id": deployment, "sonde.replica": replica}
    body, headers = encode(metrics_request(resource, [gauge("hw.gpu.utilization", points, unit="1")]))
    r = client.post("/v1/otlp/v1/metrics", content=body, headers=headers, key=creds["ingest_key"])
    assert r.status_code == 200, r.text


def _gpu(t_s: float, value: float, gpu: int = 0):
    return number(int(START + t_s * SEC), value, attrs={"hw.gpu.index": gpu})


def _hour(client, creds):
    """An hour of utilisation 0.5 every 10 s on GPU 0 of replica r0001."""
    _send(client, creds, [_gpu(5 + 10 * i, 0.5) for i in range(360)])


def _ask(client: Client, **headers):
    r = client.get(URL, params=WINDOW, headers=headers)
    assert r.status_code == 200, r.text
    return r.json(), r.headers.get("X-Sonde-Cache")


def test_a_repeated_question_is_answered_from_the_cache_until_a_write_reaches_it(store, tmp_path):
    client, creds = _client(store, tmp_path)
    _hour(client, creds)
    first, how = _ask(client)
    assert how == "miss" and first["metric_descriptors"][0]["name"] == GPU
    assert _ask(client) == (first, "hit")
    # Writes that cannot change the answer keep it: another deployment, and points
    # past the window and its look-around (15 minutes).
    _send(client, creds, [_gpu(100, 0.9)], deployment="d2")
    _send(client, creds, [_gpu(1800 + 901, 0.9)])
    assert _ask(client) == (first, "hit")
    # A late point inside the window (a second GPU's, in its fifth minute) drops it: the
    # next answer is the store's, with the new label set.
    _send(client, creds, [_gpu(245, 0.25, gpu=1)])
    second, how = _ask(client)
    assert how == "miss" and second != first
    labels = second["metric_descriptors"][0]["label_sets"]
    assert {"replica": "r0001", "gpu": "1"} in labels
    step4 = second["metric_values"][4]["values"][0]
    assert step4[labels.index({"replica": "r0001", "gpu": "1"})] == pytest.approx(0.25)
    # ... and equals an answer computed afresh
    fresh, how = _ask(client, **{"Cache-Control": "no-cache"})
    assert how == "miss" and fresh == second
    assert _ask(client) == (second, "hit")
    # a point just inside the look-around before the window drops it too
    _send(client, creds, [number(START - 590 * SEC, 0.7, attrs={"hw.gpu.index": 0})])
    assert _ask(client)[1] == "miss"


def test_cache_control_no_cache_computes_the_answer_again(store, tmp_path):
    client, creds = _client(store, tmp_path)
    _hour(client, creds)
    kept, _ = _ask(client)
    for directive in ("no-cache", "max-age=0, no-store"):
        assert _ask(client, **{"Cache-Control": directive}) == (kept, "miss")
    assert _ask(client) == (kept, "hit")


def test_another_workspace_never_gets_a_kept_answer(store, tmp_path):
    client, creds = _client(store, tmp_path)
    _hour(client, creds)
    _ask(client)
    admin = client.with_key(creds["admin_key"])
    ws = admin.post("/v1/admin/workspaces", json={"name": "other"}).json()["id"]
    other = client.with_key(admin.post(f"/v1/admin/workspaces/{ws}/api_keys",
                                       json={"name": "m", "scope": "management"}).json()["key"])
    r = other.get(URL, params=WINDOW)
    assert r.status_code == 404 and "X-Sonde-Cache" not in r.headers


def test_no_cache_where_other_replicas_write_the_store_or_when_turned_off(store, tmp_path):
    for settings in ({"state_sync": "store"}, {"query_cache_mb": 0}):
        client, creds = _client(store, tmp_path, **settings)
        _hour(client, creds)
        assert _ask(client)[1] is None and _ask(client)[1] is None


def test_without_the_log_an_answer_read_before_the_commit_is_dropped_by_it(executor, tmp_path):
    # No write-ahead log: a read sees submitted rows only from their commit, so the
    # commit, not the submission, is what must drop the answers read in between.
    store = Store(executor, new_db_name(), flush_interval_ms=60_000)
    try:
        client, creds = _client(store, tmp_path)
        store.writer.flush()
        gate = threading.Event()
        ack = threading.Thread(target=lambda: (_hour(client, creds), gate.set()))
        ack.start()  # acknowledged only at its commit, a minute away: answers before it see nothing
        assert _wait_for_rows_pending(store)
        empty, how = _ask(client)
        assert how == "miss" and empty["metric_descriptors"] == []
        assert _ask(client) == (empty, "hit")
        store.writer.flush()
        ack.join(30)
        assert gate.is_set()
        after, how = _ask(client)
        assert how == "miss" and after["metric_descriptors"][0]["name"] == GPU
    finally:
        store.close(executor=False)
        drop_database(executor, store.db)


def test_without_the_log_a_commit_drops_answers_before_its_requests_are_acknowledged(executor, tmp_path):
    # The race the test above can lose only sometimes, made certain: the commit's
    # notification must come while the write's acknowledgement is still unresolved.
    store = Store(executor, new_db_name(), flush_interval_ms=60_000)
    try:
        client, creds = _client(store, tmp_path)
        store.writer.flush()
        submitted: list = []
        seen: list[bool] = []  # per notification with rows: was the write acknowledged yet?
        store.on_change(lambda tables: seen.append(bool(submitted) and submitted[0].acknowledged.done())
                        if tables and "metric_points" in tables else None)
        submit = store.submit
        store.submit = lambda rows, **kw: submitted.append(submit(rows, **kw)) or submitted[-1]
        ack = threading.Thread(target=_hour, args=(client, creds))
        ack.start()
        assert _wait_for_rows_pending(store)
        store.writer.flush()
        ack.join(30)
        assert submitted and submitted[0].acknowledged.done()
        assert seen == [False, False]  # at the submission, then at the commit: both before the 200
    finally:
        store.close(executor=False)
        drop_database(executor, store.db)


def _wait_for_rows_pending(store: Store, timeout_s: float = 10) -> bool:
    until = time.monotonic() + timeout_s
    while time.monotonic() < until:
        if store.writer.pending_rows:
            return True
        time.sleep(0.01)
    return False


def _points(ws: str, entity: str, *ts_ns: int) -> dict[str, pa.Table]:
    return {"metric_points": pa.table({"ws": [ws] * len(ts_ns), "entity": [entity] * len(ts_ns),
                                       "ts": pa.array(ts_ns, pa.timestamp("ns", "UTC"))})}


def test_an_answer_computed_while_a_write_reaches_it_is_not_kept():
    cache = ResultCache(1000)

    def racing():
        cache.observe(_points("w", "d", 150))  # written while the answer is computed
        return b"old"

    assert cache.get_or_compute("k", "w", "d", 100, 200, racing) == (b"old", False)
    assert len(cache) == 0
    # a write elsewhere, or outside the range, while computing: kept
    for ws, entity, ts in (("w2", "d", 150), ("w", "d2", 150), ("w", "d", 200), ("w", "d", 99)):
        cache.get_or_compute("k", "w", "d", 100, 200, lambda: cache.observe(_points(ws, entity, ts)) or b"v")
        assert cache.get_or_compute("k", "w", "d", 100, 200, lambda: b"other") == (b"v", True)
        cache.observe(None)  # what retention's dropped partitions do
        assert len(cache) == 0 and cache.bytes == 0


def test_least_recently_used_answers_go_first_to_stay_within_the_bytes():
    cache = ResultCache(20)
    for k in "abc":
        cache.get_or_compute(k, "w", "d", 0, 10, lambda k=k: k.encode() * 8)
        if k == "b":
            assert cache.get_or_compute("a", "w", "d", 0, 10, lambda: b"x") == (b"a" * 8, True)
    assert cache.bytes == 16
    assert [cache.get_or_compute(k, "w", "d", 0, 10, lambda: b"new")[1] for k in "acb"] == [True, True, False]
    cache.get_or_compute("big", "w", "d", 0, 10, lambda: b"z" * 21)  # larger than the whole budget
    assert cache.get_or_compute("big", "w", "d", 0, 10, lambda: b"z")[1] is False and cache.bytes <= 20


def test_retention_dropping_a_day_drops_every_kept_answer(store, tmp_path):
    client, creds = _client(store, tmp_path)
    old = (T0 // (86400 * SEC) - 6) * 86400 * SEC + 3600 * SEC  # an hour into a day 6 days back
    _send(client, creds, [number(old + i * 10 * SEC, 0.5, attrs={"hw.gpu.index": 0}) for i in range(30)])
    window = {**WINDOW, "start_epoch_millis": old // 10**6, "end_epoch_millis": old // 10**6 + 600_000}
    kept = client.get(URL, params=window)
    assert kept.json()["metric_descriptors"] and client.get(URL, params=window).headers["X-Sonde-Cache"] == "hit"
    store.retention.days = 4  # as a server started again with retention_days = 4
    assert store.retention.run() >= 1
    r = client.get(URL, params=window)
    assert r.headers["X-Sonde-Cache"] == "miss" and r.json()["metric_descriptors"] == []


def test_a_kept_answer_is_byte_for_byte_what_the_server_sends_without_the_cache(store, tmp_path):
    client, creds = _client(store, tmp_path)
    _hour(client, creds)
    plain, _ = _client(store, tmp_path, query_cache_mb=0)
    sent = plain.get(URL, params=WINDOW)
    for _ in range(2):  # the miss, then the hit
        r = client.get(URL, params=WINDOW)
        assert r.content == sent.content and r.headers["content-type"] == sent.headers["content-type"]


def test_a_write_the_cache_cannot_read_drops_every_kept_answer():
    cache = ResultCache(100)
    cache.get_or_compute("k", "w", "d", 0, 10, lambda: b"v")
    with pytest.raises(KeyError):  # the store logs it and goes on; nothing stale is left
        cache.observe({"metric_points": pa.table({"ws": ["w"], "entity": ["d"]})})
    assert len(cache) == 0
