"""Shared fixtures: a real store, the real app in process, over every executor and
in every server mode (docs/architecture.md, "Testing").

Executors (``store_executor``, under ``store``): ``chdb`` always; chDB allows one
database path per process, so the session opens one path and each test gets its own
database inside it. ``clickhouse`` when ``SONDE_TEST_CLICKHOUSE_URL`` names a real
server or cluster (each test its own database there too); otherwise it is reported
as skipped. Nothing ever stands in for ClickHouse.

Server modes (``server_mode``, under ``app`` and ``client``): ``steady`` is one
long-running process; ``restart`` rebuilds the server before every request, as a
process restart would, so an answer can only come from the store; ``replicas`` is
two API replicas behind one store taking turns, with the state sync multi-replica
deployments use. A test whose subject is per-process memory says so with
``@pytest.mark.steady_only(reason)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import json
import os
import pathlib
import site
import sys
import tempfile
import threading

import httpx
import pytest

from sonde.api.app import create_app
from sonde.settings import Config
from sonde.store import Store
from sonde.store.chdb import ChdbExecutor

CLICKHOUSE_URL = os.environ.get("SONDE_TEST_CLICKHOUSE_URL")
NO_CLICKHOUSE = "SONDE_TEST_CLICKHOUSE_URL is not set: no ClickHouse server to test against"
EXECUTORS = (
    pytest.param("chdb", id="chdb"),
    pytest.param("clickhouse", id="clickhouse", marks=pytest.mark.skipif(not CLICKHOUSE_URL, reason=NO_CLICKHOUSE)),
)
MODES = ("steady", "restart", "replicas")
_db_ids = itertools.count()


REPO = pathlib.Path(__file__).resolve().parents[1]


class Beside:
    """Whether an opened path lies beside the checkout: under its parent folder, outside it.

    The suite must pass in a clone with nothing beside it, so an audit hook below records
    every such open. The interpreter's own folders (a venv, site-packages) may sit beside
    the checkout and are allowed, as are dot-folders (a home directory's ``.cache``).
    With the checkout at the root or in the temp dir everything is beside it (system files,
    every test's temp files): the guard is off there.
    """

    def __init__(self, repo: pathlib.Path, allowed=()):
        parent = os.path.dirname(str(repo))
        self.active = parent not in (os.sep, tempfile.gettempdir())
        self.parent = os.path.join(parent, "")
        self.repo = os.path.join(str(repo), "")
        self.allowed = tuple(a for a in (os.path.join(os.path.abspath(r), "") for r in allowed)
                             if a.startswith(self.parent) and a != self.parent)

    def __call__(self, path) -> str | None:
        """The normalised path when it is beside the checkout, else None. Runs on every
        open, so the common case (a path elsewhere) costs a prefix test."""
        if not self.active:
            return None
        try:
            p = os.fsdecode(os.fspath(path))
            if not os.path.isabs(p) or "/.." in p or "/./" in p:
                p = os.path.normpath(os.path.join(os.getcwd(), p))
        except (TypeError, OSError):  # a file descriptor; a working directory since removed
            return None
        if not p.startswith(self.parent) or len(p) == len(self.parent):
            return None
        if (p + os.sep).startswith(self.repo) or p.startswith(self.allowed) or p.startswith(".", len(self.parent)):
            return None
        return p


BESIDE = Beside(REPO, (sys.prefix, sys.base_prefix, sys.exec_prefix, site.getusersitepackages(),
                       *site.getsitepackages()))
OPENED_BESIDE: list[str] = []


def _audit(event: str, args: tuple) -> None:
    if event == "open" and args[0] is not None and (p := BESIDE(args[0])):
        OPENED_BESIDE.append(p)


sys.addaudithook(_audit)


@pytest.fixture(autouse=True)
def _stands_alone():
    """Fail the test that opened a file beside the checkout."""
    seen = len(OPENED_BESIDE)
    yield
    if len(OPENED_BESIDE) > seen:
        pytest.fail(f"opened outside the checkout: {OPENED_BESIDE[seen:]}", pytrace=False)


def pytest_sessionfinish(session, exitstatus):
    # Opens outside any test (collection, imports, session fixtures) fail the run too.
    if OPENED_BESIDE and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter):
    if OPENED_BESIDE:
        terminalreporter.write_line(f"files opened outside the checkout: {sorted(set(OPENED_BESIDE))}", red=True)


def pytest_configure(config):
    config.addinivalue_line("markers", "steady_only(reason): runs in the steady server mode only")
    config.addinivalue_line("markers", "server_config(**settings): Config fields for the app fixture")


def pytest_generate_tests(metafunc):
    # Parametrized here rather than with fixture params so the executor comes first in
    # every id (test[chdb-restart]) and a pinned test gets no skipped twins.
    if "store_executor" in metafunc.fixturenames:
        metafunc.parametrize("store_executor", EXECUTORS, indirect=True)
    if "server_mode" in metafunc.fixturenames:
        pinned = metafunc.definition.get_closest_marker("steady_only")
        metafunc.parametrize("server_mode", ["steady"] if pinned else MODES, indirect=True)


def new_db_name() -> str:
    # A shared ClickHouse server may serve several test sessions at once.
    return f"t{os.getpid()}_{next(_db_ids)}"


def drop_database(ex, db: str) -> None:
    on = f" ON CLUSTER '{ex.cluster}'" if ex.cluster else ""
    ex.command(f"DROP DATABASE IF EXISTS {db}{on} SYNC")


@pytest.fixture(scope="session")
def executor(tmp_path_factory) -> ChdbExecutor:
    """The session's chDB executor (tests of chDB itself use it directly)."""
    return ChdbExecutor.open(str(tmp_path_factory.mktemp("chdb") / "store"))


@pytest.fixture(scope="session")
def clickhouse_executor():
    from sonde.store.clickhouse import ClickHouseExecutor

    ex = ClickHouseExecutor.from_url(CLICKHOUSE_URL)
    yield ex
    ex.close()


@pytest.fixture
def store_executor(request):
    return request.getfixturevalue("executor" if request.param == "chdb" else "clickhouse_executor")


@pytest.fixture
def store(store_executor, tmp_path_factory):
    # as the server opens it: on chDB, ingest is acknowledged from the write-ahead log
    wal = str(tmp_path_factory.mktemp("wal")) if store_executor.exclusive else None
    s = Store(store_executor, new_db_name(), flush_interval_ms=5, wal_dir=wal, wal_flush_interval_ms=200,
              wal_live_flush_interval_ms=5)
    yield s
    s.close(executor=False)
    drop_database(store_executor, s.db)


@pytest.fixture
def server_mode(request) -> str:
    return request.param


class Server:
    """The API tier as one ASGI app, in one of the server modes.

    ``steady`` serves from one app on the test's own store. The other modes build
    what a ``sonde serve`` process builds at start (a Store with its writer, the app
    with its key cache, inventory, registrar and cumulative state) on the test's
    executor and database; the test's ``store`` stays usable beside them. Requests
    come one at a time (each Client call runs to completion), as a restart between
    them needs.
    """

    def __init__(self, mode: str, store: Store, config: Config):
        self.mode = mode
        self._ex, self._db = store.ex, store.db
        self._lock = threading.Lock()
        self._served = False
        self._holding = False
        self._turn = 0
        self._stores: list[Store] = []
        if mode == "steady":
            self.config = config
            self.apps = [create_app(config, store=store)]
            # the memories load on a thread of their own (memory_load): a test of what
            # they answer needs them in; the other modes query while they load
            assert store.wait_loaded(60)
        else:
            # Several replicas may only share counters through the store; one process
            # alone keeps the default, so restart mode exercises the state reload.
            self.config = dataclasses.replace(config, state_sync="store") if mode == "replicas" else config
            self.apps = [self._open() for _ in range(2 if mode == "replicas" else 1)]
        self.current = self.apps[0]

    def _open(self):
        # Like open_store with auto_migrate=embedded: only an exclusive store migrates.
        s = Store(self._ex, self._db, flush_interval_ms=5, migrate=self._ex.exclusive)
        self._stores.append(s)
        return create_app(self.config, store=s)

    def restart(self) -> None:
        """Stop the process gracefully (its writer commits what is pending; every
        acknowledged request is already committed) and start a new one."""
        self._stores.pop().close(executor=False)
        self.apps = [self._open()]
        self.current = self.apps[0]

    @contextlib.contextmanager
    def held(self):
        """No restart between the requests made inside (a restart follows the block): for
        feeding a test's data when its subject is what the store answers, not how ingest
        state survives restarts (tests/test_ingest_state.py is about that)."""
        self._holding = True
        try:
            yield
        finally:
            self._holding = False

    def _pick(self):
        with self._lock:
            if self.mode == "restart" and self._served and not self._holding:
                self.restart()
            elif self.mode == "replicas":
                self.current = self.apps[self._turn]
                self._turn = (self._turn + 1) % len(self.apps)
            self._served = True
            return self.current

    async def __call__(self, scope, receive, send):
        app = self._pick() if scope["type"] == "http" else self.current
        await app(scope, receive, send)

    @property
    def state(self):
        """The state of the app that served last (the first one before any request)."""
        return self.current.state

    def close(self) -> None:
        for s in self._stores:
            s.close(executor=False)
        self._stores = []


class Client:
    """Synchronous face of ``httpx.AsyncClient(transport=ASGITransport(app))``.

    Copies made by :meth:`with_key` share ``app``, so one server serves them all."""

    def __init__(self, app, key: str | None = None):
        self.app = app
        self.key = key

    def with_key(self, key: str | None) -> "Client":
        return Client(self.app, key)

    def request(self, method: str, url: str, *, key: str | None = ..., **kw) -> httpx.Response:
        headers = dict(kw.pop("headers", None) or {})
        k = self.key if key is ... else key
        if k is not None and "Authorization" not in headers:
            headers["Authorization"] = f"Bearer {k}"

        async def go():
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://sonde.test") as c:
                return await c.request(method, url, headers=headers, **kw)

        return asyncio.run(go())

    def get(self, url, **kw):
        return self.request("GET", url, **kw)

    def post(self, url, **kw):
        return self.request("POST", url, **kw)

    def put(self, url, **kw):
        return self.request("PUT", url, **kw)

    def delete(self, url, **kw):
        return self.request("DELETE", url, **kw)


@pytest.fixture
def app(store, tmp_path, server_mode, request) -> Server:
    marker = request.node.get_closest_marker("server_config")
    config = Config(data_dir=str(tmp_path / "data"), **(marker.kwargs if marker else {}))
    server = Server(server_mode, store, config)
    yield server
    server.close()


@pytest.fixture
def creds(app, tmp_path) -> dict:
    return json.loads((tmp_path / "data" / "credentials.json").read_text())


@pytest.fixture
def client(app, creds) -> Client:
    """A client holding the default workspace's management key."""
    return Client(app, creds["management_key"])
