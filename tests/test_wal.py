"""The write-ahead log (store/wal.py): acknowledged before the commit, read after it,
committed once after a crash, retried when the store refuses a commit."""

from __future__ import annotations

import os
import time

import httpx
import pyarrow as pa
import pytest
from live_server import LiveServer
from otlp_build import SEC, gauge, log_record, logs_request, metrics_request, number, post
from test_ingest_e2e import read_store

from sonde import BadRequest
from sonde.store import ARROW_SCHEMAS, Store, open_store
from sonde.store import wal as wal_module
from sonde.store.wal import Wal, read, replay
from sonde.store.writer import BatchWriter

T0 = (time.time_ns() // SEC - 3600) * SEC  # inside the retention, which TTL enforces


def _logs(ws: str, seqs, entity: str = "d1") -> pa.Table:
    return pa.Table.from_pylist([
        dict(ws=ws, scope="deployment", entity=entity, parent="m1", environment="production", ts=T0 + i * SEC,
             seq=s, replica="r", request_id="", component="", level=9, message=f"line {s}", attrs={})
        for i, s in enumerate(seqs)], schema=ARROW_SCHEMAS["logs"])


def _count(store: Store, where: str = "1") -> int:
    return store.ex.query(f"SELECT count() AS n FROM {store.t('logs')} WHERE {where}")[0]["n"]


@pytest.fixture
def logged(store_executor, tmp_path):
    """A store with a log whose commits wait a minute unless a read flushes them."""
    from conftest import drop_database, new_db_name

    s = Store(store_executor, new_db_name(), wal_dir=str(tmp_path / "wal"), wal_flush_interval_ms=60_000,
              wal_live_flush_interval_ms=5)
    yield s
    s.close(executor=False)
    drop_database(store_executor, s.db)


def test_acknowledged_at_once_committed_on_read(logged):
    first = logged.next_seq(5)
    sub = logged.submit({"logs": _logs("ws1", range(first, first + 5))}, seq=first)
    assert sub.acknowledged.done() and sub.acknowledged.result() == 5
    assert not sub.committed.done()  # still waiting for its minute
    assert logged.committed_seq() < first  # so a live tail does not read past it yet
    files = logged.writer.wal.files()
    assert len(files) == 1 and read(files[0])[logged.t("logs")].num_rows == 5
    assert _count(logged) == 5  # the read flushed the log first
    assert sub.committed.done() and logged.writer.wal.files() == []
    assert logged.committed_seq() >= first + 4


def test_a_live_reader_makes_commits_prompt(logged):
    logged.writer.watch(+1)  # what an open live tail does
    try:
        sub = logged.submit({"logs": _logs("ws1", range(1, 4))})
        assert sub.committed.result(5) == 3  # not after the log's minute: wal_live_flush_interval_ms
    finally:
        logged.writer.watch(-1)
    sub = logged.submit({"logs": _logs("ws1", range(4, 6))})
    time.sleep(0.3)
    assert not sub.committed.done()  # nobody watching: the log's interval again


def test_replay_stores_each_row_once(store, tmp_path):
    wal_dir = str(tmp_path / "wal")
    wal = Wal(wal_dir)
    # a crash after the first file's rows were committed and half of the second's
    wal.append({store.t("logs"): _logs("ws1", range(1, 4))})
    wal.append({store.t("logs"): _logs("ws1", range(4, 10))})
    store.ex.insert_arrow(store.t("logs"), _logs("ws1", [1, 2, 3, 4, 5, 6]))
    with open(os.path.join(wal_dir, "0000000000000099.wal.tmp"), "wb") as f:
        f.write(b"half a file: the crash came before its rename, so never acknowledged")
    assert replay(Wal(wal_dir), store.ex, [store.t("logs")]) == 3
    assert store.ex.query(f"SELECT groupArraySorted(100)(seq) AS s FROM {store.t('logs')}")[0]["s"] == list(range(1, 10))
    assert sorted(os.listdir(wal_dir)) == ["free", "rejected"]
    kept = os.listdir(os.path.join(wal_dir, "free"))  # emptied, for the next requests
    assert len(kept) == 2 and all(os.path.getsize(os.path.join(wal_dir, "free", f)) == 0 for f in kept)


def test_committed_files_are_emptied_and_written_again(store, tmp_path, monkeypatch):
    wal_dir = str(tmp_path / "wal")
    wal = Wal(wal_dir)
    first = wal.append({store.t("logs"): _logs("ws1", range(1, 40))})
    inode = os.stat(first).st_ino
    wal.remove([first])
    assert wal.files() == []
    second = wal.append({store.t("logs"): _logs("ws1", range(40, 42))})
    assert second != first and os.stat(second).st_ino == inode  # the same file, renamed
    assert read(second)[store.t("logs")].column("seq").to_pylist() == [40, 41]  # nothing of the longer first
    # a crash between a file's move to free/ and its emptying: the next write cuts the rest
    wal.remove([second])
    junk = os.path.join(wal_dir, "free", os.listdir(os.path.join(wal_dir, "free"))[0])
    with open(junk, "wb") as f:
        f.write(b"x" * 100_000)
    again = Wal(wal_dir)
    third = again.append({store.t("logs"): _logs("ws1", [42])})
    assert os.stat(third).st_ino == inode and read(third)[store.t("logs")].num_rows == 1
    again.remove([third])
    os.unlink(os.path.join(wal_dir, "free", os.path.basename(third)))  # gone from the pool: a new file
    fourth = again.append({store.t("logs"): _logs("ws1", [43])})
    assert read(fourth)[store.t("logs")].num_rows == 1 and os.listdir(os.path.join(wal_dir, "free")) == []
    monkeypatch.setattr(wal_module, "POOL", 0)  # a full pool: committed files are deleted
    again.remove([fourth])
    assert os.listdir(os.path.join(wal_dir, "free")) == [] and again.files() == []


def test_replay_finds_stored_exemplars_by_their_key(store, tmp_path):
    def exemplars(spans):
        return pa.Table.from_pylist([
            dict(ws="ws1", scope="deployment", entity="d1", metric="http.server.request.duration", replica="r",
                 ts=T0 + i * SEC, value=0.1 * i, trace_id="ab" * 16, span_id=span, attrs={})
            for i, span in enumerate(spans)], schema=ARROW_SCHEMAS["exemplars"])

    table = store.t("exemplars")
    wal = Wal(str(tmp_path / "wal"))
    wal.append({table: exemplars(["s0", "s1", "s2"])})
    store.ex.insert_arrow(table, exemplars(["s0", "s1"]))  # the crash came after their commit
    assert replay(Wal(str(tmp_path / "wal")), store.ex, [table]) == 1
    rows = store.ex.query(f"SELECT span_id, count() AS n FROM {table} GROUP BY span_id ORDER BY span_id")
    assert rows == [{"span_id": s, "n": 1} for s in ("s0", "s1", "s2")]


def test_damaged_file_is_set_aside_not_lost(store, tmp_path):
    wal = Wal(str(tmp_path / "wal"))
    path = wal.append({store.t("logs"): _logs("ws1", range(1, 4))})
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) - 40)
    assert replay(Wal(str(tmp_path / "wal")), store.ex, [store.t("logs")]) == 0
    assert os.listdir(tmp_path / "wal" / "rejected") == [os.path.basename(path)]
    assert Wal(str(tmp_path / "wal")).append({}) != path  # numbered past what was set aside


def test_a_failed_commit_is_retried_until_the_table_takes_it(store, tmp_path):
    table = f"{store.db}.later"
    w = BatchWriter(store.ex, [table], flush_interval_ms=10, wal=Wal(str(tmp_path / "wal")), retry_s=(0.2,))
    fut = w.submit({table: _logs("ws1", range(1, 4))})
    deadline = time.monotonic() + 10
    while w._failures == 0 and time.monotonic() < deadline:  # the store refused it once: no table yet
        time.sleep(0.02)
    assert w._failures >= 1 and not fut.done()
    store.ex.command(f"CREATE TABLE {table} AS {store.t('logs')}")
    assert fut.result(10) == 3
    assert store.ex.query(f"SELECT count() AS n FROM {table}")[0]["n"] == 3
    assert w.wal.files() == []
    w.close()


def test_a_request_the_store_refuses_is_set_aside_and_the_others_go_in(store, tmp_path):
    missing = f"{store.db}.missing"
    w = BatchWriter(store.ex, [store.t("logs"), missing], flush_interval_ms=200, wal=Wal(str(tmp_path / "wal")),
                    retry_s=(0.05,))
    good = w.submit({store.t("logs"): _logs("ws1", range(1, 4))})
    bad = w.submit({missing: _logs("ws1", range(4, 6))})
    assert good.result(15) == 3
    with pytest.raises(Exception):
        bad.result(15)
    assert _count(store) == 3
    assert w.wal.files() == [] and len(os.listdir(tmp_path / "wal" / "rejected")) == 1
    w.close()


def test_a_killed_server_keeps_what_it_acknowledged(tmp_path):
    # commits wait ten minutes: every acknowledged row is only in the log when the kill comes
    server = LiveServer(tmp_path, env={"SONDE_WAL_FLUSH_INTERVAL_MS": "600000"}).start()
    resource = {"sonde.model_id": "m-wal", "sonde.deployment_id": "d-wal", "sonde.replica": "r1"}
    t = time.time_ns()
    with httpx.Client(base_url=server.url, headers=server.headers("ingest_key")) as c:
        for i in range(3):
            assert post(c, metrics_request(resource, [gauge("wal.g", [number(t + i, float(i))])])).status_code == 200
            assert post(c, logs_request(resource, [log_record(t + i, f"wal line {i}")])).status_code == 200
    assert len(os.listdir(tmp_path / "wal")) == 2 + 6  # rejected/, free/ and six files
    server.kill9()
    points, lines = read_store(tmp_path, "SELECT count() AS n FROM sonde.metric_points WHERE metric = 'wal.g'",
                               "SELECT count() AS n FROM sonde.logs WHERE message LIKE 'wal line%'")
    assert points == [{"n": 0}] and lines == [{"n": 0}]  # nothing was committed before the kill
    server.start()  # replays the log
    try:
        with httpx.Client(base_url=server.url, headers=server.headers()) as c:
            r = c.get("/v1/models/m-wal/deployments/d-wal/logs",
                      params={"start_epoch_millis": t // 1_000_000 - 60_000, "end_epoch_millis": t // 1_000_000 + 60_000})
            assert r.status_code == 200, r.text
            assert sorted(x["message"] for x in r.json()["logs"]) == [f"wal line {i}" for i in range(3)]
    finally:
        server.stop()
    assert read_store(tmp_path, "SELECT count() AS n FROM sonde.metric_points WHERE metric = 'wal.g'")[0] == [{"n": 3}]
    assert sorted(os.listdir(tmp_path / "wal")) == ["free", "rejected"]


def test_wal_on_is_refused_on_a_clickhouse_store(tmp_path):
    with pytest.raises(BadRequest) as exc:
        open_store("clickhouse://u:p@127.0.0.1:1/db", str(tmp_path), wal="on")
    assert exc.value.field == "wal" and "embedded store" in exc.value.message
