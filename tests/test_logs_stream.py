"""The live tail, ``.../logs/stream`` (docs/logs.md#live-tail), against real servers:
a ``sonde serve`` child for the protocol, and two API replicas on one store (uvicorn in
threads, each app with its own writer and numbering) for the client-held cursor."""

from __future__ import annotations

import json
import queue
import threading
import time

import httpx
import pytest
import uvicorn

from otlp_build import log_record, logs_request, post
from live_server import LiveServer, free_port
from sonde.api.app import create_app
from sonde.settings import Config
from sonde.store import Store

DEPLOY = "/v1/models/m-tail/deployments/d-tail/logs"
RES = {"sonde.model_id": "m-tail", "sonde.deployment_id": "d-tail", "sonde.replica": "r1"}


class Events:
    """An open stream read on a thread: events (id, LogV1), comments and its end."""

    def __init__(self, url: str, headers: dict, params: dict | None = None):
        self.q: queue.Queue = queue.Queue()
        self.comments: list[str] = []
        self.status: int | None = None
        self.body = b""
        self.ended = threading.Event()
        self._stop = threading.Event()
        self._opened = threading.Event()
        self._response: httpx.Response | None = None
        self._t = threading.Thread(target=self._run, args=(url, headers, params or {}), daemon=True)
        self._t.start()
        assert self._opened.wait(15), "the stream did not answer"

    def _run(self, url, headers, params):
        try:
            with httpx.stream("GET", url, headers=headers, params=params, timeout=httpx.Timeout(30, read=60)) as r:
                self._response = r
                self.status = r.status_code
                if r.status_code != 200:
                    self.body = r.read()
                    return
                self._opened.set()
                event: dict = {}
                for line in r.iter_lines():
                    if self._stop.is_set():
                        return
                    if line.startswith(":"):
                        self.comments.append(line)
                    elif line == "":
                        if event:
                            self.q.put(event)
                        event = {}
                    else:
                        field, _, value = line.partition(":")
                        event[field] = value.removeprefix(" ")
        except (httpx.HTTPError, OSError, RuntimeError):
            pass  # closed from the test's thread
        finally:
            self._opened.set()
            self.ended.set()

    def take(self, n: int, timeout: float = 10) -> list[dict]:
        out, deadline = [], time.monotonic() + timeout
        while len(out) < n:
            out.append(self.q.get(timeout=max(0.01, deadline - time.monotonic())))
        return out

    def lines(self, n: int, timeout: float = 10) -> list[tuple[str, dict]]:
        evs = self.take(n, timeout)
        assert all("data" in e and "event" not in e for e in evs), evs
        return [(e["id"], json.loads(e["data"])) for e in evs]

    def nothing_more(self, wait: float = 1.0) -> None:
        with pytest.raises(queue.Empty):
            self.q.get(timeout=wait)

    def close(self) -> None:
        """Hang up, as a client does: the connection closes now."""
        self._stop.set()
        if self._response is not None:
            try:
                self._response.close()
            except Exception:
                pass
        self.ended.wait(5)


def send(url: str, ingest_key: str, resource: dict, lines: list[tuple[int, str, str]]) -> None:
    """Lines (ts ns, message, severity text), acknowledged (durable) when this returns."""
    records = [log_record(ts, msg, severity_text=sev) for ts, msg, sev in lines]
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {ingest_key}"}) as c:
        r = post(c, logs_request(resource, records))
    assert r.status_code == 200, r.text


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data = tmp_path_factory.mktemp("tail")
    s = LiveServer(data, env={"SONDE_STREAM_HEARTBEAT_SECONDS": "0.5", "SONDE_STREAM_KEY_CHECK_SECONDS": "0.3",
                              "SONDE_KEY_CACHE_SECONDS": "0.1", "SONDE_STREAM_LIMIT_PER_KEY": "3",
                              "SONDE_FLUSH_INTERVAL_MS": "20"}).start()
    yield s
    s.stop()


def now_ns() -> int:
    return time.time_ns()


def test_backlog_then_live_in_arrival_order_each_once_and_resume(server):
    key = server.creds["ingest_key"]
    t0 = now_ns()
    send(server.url, key, RES, [(t0 + i, f"before {i}", "INFO") for i in range(3)])
    ev = Events(server.url + DEPLOY + "/stream", server.headers(), {"start_epoch_millis": t0 // 10**6})
    try:
        got = ev.lines(3)
        assert [line["message"] for _, line in got] == ["before 0", "before 1", "before 2"]
        assert got[0][1] == {"timestamp": str(t0), "message": "before 0", "replica": "r1", "request_id": None,
                             "level": "INFO"}
        # live: a line stamped an hour ago (an agent's spool replay) is new to the stream and
        # comes in arrival order, after the line sent before it
        send(server.url, key, RES, [(now_ns(), "live 1", "WARNING")])
        send(server.url, key, RES, [(t0 - 3600 * 10**9, "replayed", "ERROR")])
        live = ev.lines(2)
        assert [line["message"] for _, line in live] == ["live 1", "replayed"]
        ev.nothing_more(0.7)
        deadline = time.monotonic() + 5
        while not any(c.startswith(": heartbeat") for c in ev.comments) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert any(c.startswith(": heartbeat") for c in ev.comments)  # after 0.5 s of silence
    finally:
        ev.close()
    # Resume after the second line: the rest, no gap, no duplicate; the backlog's rule
    # (lines stored before the stream opened count from start_epoch_millis) still holds.
    send(server.url, key, RES, [(now_ns(), "while away", "INFO")])
    resumed = Events(server.url + DEPLOY + "/stream", {**server.headers(), "Last-Event-ID": got[1][0]},
                     {"start_epoch_millis": t0 // 10**6})
    try:
        rest = resumed.lines(4)
        assert [line["message"] for _, line in rest] == ["before 2", "live 1", "replayed", "while away"]
        assert [i for i, _ in rest[:3]] == [got[2][0], live[0][0], live[1][0]]  # the same ids
        resumed.nothing_more(0.5)
    finally:
        resumed.close()


def test_filters_and_every_log_target(server):
    key = server.creds["ingest_key"]
    streams = {
        DEPLOY: RES,
        "/v1/models/m-tail/environments/prod/logs": {**RES, "sonde.environment": "prod"},
        "/v1/chains/c1/deployments/cd1/chainlets/cl1/logs": {"sonde.chain_id": "c1", "sonde.chain_deployment_id": "cd1",
                                                             "sonde.chainlet_id": "cl1"},
        "/v1/training_projects/p1/jobs/j1/logs": {"sonde.training_project_id": "p1", "sonde.training_job_id": "j1"},
        "/v1/loops/deployments/lp1/logs": {"sonde.loops_deployment_id": "lp1"},
    }
    for res in streams.values():  # the entities exist once they sent something
        send(server.url, key, res, [(now_ns(), "hello", "INFO")])
    opened = []
    try:
        filtered = Events(server.url + DEPLOY + "/stream", server.headers(),
                          {"min_level": "WARNING", "search_pattern": r"id=\d+$", "excludes": "skip"})
        opened.append(filtered)
        send(server.url, key, RES, [(now_ns(), "a id=1", "ERROR"), (now_ns(), "b id=2", "INFO"),
                                    (now_ns(), "c id=3 skip", "ERROR"), (now_ns(), "d id=x", "ERROR"),
                                    (now_ns(), "e id=5", "WARNING")])
        assert [line["message"] for _, line in filtered.lines(2)] == ["a id=1", "e id=5"]
        filtered.nothing_more(0.5)
        filtered.close()
        for path, res in list(streams.items())[1:]:
            ev = Events(server.url + path + "/stream", server.headers(), {"min_level": "INFO"})
            opened.append(ev)
            send(server.url, key, res, [(now_ns(), f"to {path}", "INFO")])
            assert [line["message"] for _, line in ev.lines(1)] == [f"to {path}"], path
            ev.close()
    finally:
        for ev in opened:
            ev.close()


def _error(r: httpx.Response, status: int, field: str) -> None:
    assert r.status_code == status, r.text
    assert r.json()["error"]["field"] == field, r.text


def test_bad_requests_and_other_workspaces(server):
    h = server.headers()
    url = server.url + DEPLOY + "/stream"
    send(server.url, server.creds["ingest_key"], RES, [(now_ns(), "exists", "INFO")])
    with httpx.Client(timeout=10) as c:
        _error(c.get(url, headers={**h, "Last-Event-ID": "12x"}), 400, "Last-Event-ID")
        _error(c.get(url, headers=h, params={"start_epoch_millis": now_ns() // 10**6 - 8 * 86400_000}), 400,
               "start_epoch_millis")
        _error(c.get(url, headers=h, params={"min_level": "LOUD"}), 400, "min_level")
        _error(c.get(url, headers=h, params={"search_pattern": "(("}), 400, "search_pattern")
        _error(c.get(url), 401, "Authorization")
        _error(c.get(url, headers={"Authorization": f"Bearer {server.creds['ingest_key']}"}), 403, "Authorization")
        _error(c.get(server.url + "/v1/models/m-tail/deployments/nope/logs/stream", headers=h), 404, "deployment_id")
        admin = {"Authorization": f"Bearer {server.creds['admin_key']}"}
        ws = c.post(server.url + "/v1/admin/workspaces", headers=admin, json={"name": "other"}).json()
        other = c.post(server.url + f"/v1/admin/workspaces/{ws['id']}/api_keys", headers=admin,
                       json={"name": "o", "scope": "management"}).json()
        _error(c.get(url, headers={"Authorization": f"Bearer {other['key']}"}), 404, "model_id")


def test_limit_per_key_and_revoked_key_ends_the_stream(server):
    admin = {"Authorization": f"Bearer {server.creds['admin_key']}"}
    ws = httpx.post(server.url + "/v1/admin/workspaces", headers=admin, json={"name": "limits"}).json()
    new = httpx.post(server.url + f"/v1/admin/workspaces/{ws['id']}/api_keys", headers=admin,
                     json={"name": "tail", "scope": "management"}).json()
    ingest = httpx.post(server.url + f"/v1/admin/workspaces/{ws['id']}/api_keys", headers=admin,
                        json={"name": "in", "scope": "ingest"}).json()
    send(server.url, ingest["key"], RES, [(now_ns(), "mine", "INFO")])
    h = {"Authorization": f"Bearer {new['key']}"}
    url = server.url + DEPLOY + "/stream"
    three = [Events(url, h) for _ in range(3)]
    try:
        fourth = Events(url, h)
        assert fourth.status == 429, fourth.body
        assert json.loads(fourth.body)["error"]["code"] == "rate_limited"
        three[0].close()
        send(server.url, ingest["key"], RES, [(now_ns(), "wakes the closed one", "INFO")])
        assert three[0].ended.wait(10)
        deadline = time.monotonic() + 10
        while True:  # the server frees the slot once it notices the client went
            again = Events(url, h)
            if again.status == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert again.status == 200
        three[0] = again
        assert httpx.delete(server.url + f"/v1/admin/api_keys/{new['id']}", headers=admin).status_code == 204
        for ev in three:
            assert ev.ended.wait(10), "a revoked key's stream must end"
            last = [ev.q.get_nowait() for _ in range(ev.q.qsize())][-1]
            assert last["event"] == "error" and "revoked" in last["data"], last
    finally:
        for ev in three:
            ev.close()


def _serve(app, port: int) -> uvicorn.Server:
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=srv.run, daemon=True).start()
    deadline = time.monotonic() + 20
    while not srv.started:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return srv


def test_two_replicas_on_one_store_the_cursor_is_the_clients(executor, tmp_path):
    """Each replica numbers its own lines; a stream opened on one sees the other's, and
    its last id resumes on the other replica with no gap and no duplicate."""
    db = f"tail_{time.time_ns()}"
    config = Config(data_dir=str(tmp_path), state_sync="store", stream_settle_ms=300, flush_interval_ms=20)
    stores = [Store(executor, db, flush_interval_ms=20, migrate=True), Store(executor, db, flush_interval_ms=20,
                                                                             migrate=False)]
    ports = [free_port(), free_port()]
    servers = [_serve(create_app(config, store=s), p) for s, p in zip(stores, ports)]
    try:
        creds = json.loads((tmp_path / "credentials.json").read_text())
        urls = [f"http://127.0.0.1:{p}" for p in ports]
        h = {"Authorization": f"Bearer {creds['management_key']}"}
        send(urls[1], creds["ingest_key"], RES, [(now_ns(), "first", "INFO")])
        time.sleep(0.5)  # past stream_settle_ms: "first" is history when the stream opens
        ev = Events(urls[0] + DEPLOY + "/stream", h)
        sent = []
        for i in range(20):  # alternate replicas, as a load balancer would
            send(urls[i % 2], creds["ingest_key"], RES, [(now_ns(), f"n{i}", "INFO")])
            sent.append(f"n{i}")
        got = ev.lines(10)
        ev.close()
        resumed = Events(urls[1] + DEPLOY + "/stream", {**h, "Last-Event-ID": got[-1][0]})
        rest = resumed.lines(10)
        resumed.nothing_more(0.8)
        resumed.close()
        assert [line["message"] for _, line in got + rest] == sent
    finally:
        for srv in servers:
            srv.should_exit = True
        time.sleep(0.3)
        for s in stores:
            s.close(executor=False)


def test_a_store_from_before_the_tail_gets_the_arrival_index(executor):
    from sonde.store import migrations

    db = f"tail_mig_{time.time_ns()}"
    s = Store(executor, db)
    try:
        def indexes() -> set[str]:
            rows = executor.query("SELECT name FROM system.data_skipping_indices WHERE database = {db:String}"
                                  " AND table = 'logs'", {"db": db})
            return {r["name"] for r in rows}

        assert "seq_idx" in indexes()  # a new store has it from migration 1
        executor.command(f"ALTER TABLE {db}.logs DROP INDEX seq_idx")
        executor.command(f"ALTER TABLE {db}.meta DELETE WHERE key = 'schema_version' AND version > 5"
                         " SETTINGS mutations_sync = 2")
        # a merge may have left only the newest version's row, which the delete took
        executor.command(f"INSERT INTO {db}.meta (key, value, version) VALUES ('schema_version', '5', 5)")
        assert indexes() == {"request_idx"} and migrations.current_version(executor, db) == 5
        assert migrations.migrate(executor, db, 30) == (5, migrations.SCHEMA_VERSION)
        assert "seq_idx" in indexes()
        assert migrations.migrate(executor, db, 30) == (migrations.SCHEMA_VERSION, migrations.SCHEMA_VERSION)
    finally:
        s.close(executor=False)
        executor.command(f"DROP DATABASE IF EXISTS {db}")


def test_a_server_with_open_streams_stops_promptly(tmp_path):
    (tmp_path / "data").mkdir()
    s = LiveServer(tmp_path / "data").start()
    send(s.url, s.creds["ingest_key"], RES, [(now_ns(), "exists", "INFO")])
    streams = [Events(s.url + DEPLOY + "/stream", s.headers()) for _ in range(2)]
    t = time.monotonic()
    try:
        assert s.stop(timeout=30) == 0  # SIGINT: the store is committed and closed, exit 0
        assert time.monotonic() - t < 15
        for ev in streams:
            assert ev.ended.wait(10)
    finally:
        for ev in streams:
            ev.close()
