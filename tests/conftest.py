"""Shared fixtures: a real chDB store on disk, the real app in process.

chDB allows one database path per process, so the test session opens one path and
each test gets its own database inside it.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import pathlib

import httpx
import pytest

from sonde.api.app import create_app
from sonde.settings import Config
from sonde.store import Store
from sonde.store.chdb import ChdbExecutor

SPEC = pathlib.Path(__file__).resolve().parents[2] / "shared" / "spec"
_db_ids = itertools.count()


@pytest.fixture(scope="session")
def executor(tmp_path_factory) -> ChdbExecutor:
    return ChdbExecutor.open(str(tmp_path_factory.mktemp("chdb") / "store"))


@pytest.fixture
def store(executor):
    s = Store(executor, f"t{next(_db_ids)}", flush_interval_ms=5)
    yield s
    s.close(executor=False)
    executor.command(f"DROP DATABASE IF EXISTS {s.db} SYNC")


class Client:
    """Synchronous face of ``httpx.AsyncClient(transport=ASGITransport(app))``."""

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
def app(store, tmp_path):
    return create_app(Config(data_dir=str(tmp_path / "data")), store=store)


@pytest.fixture
def creds(app, tmp_path) -> dict:
    return json.loads((tmp_path / "data" / "credentials.json").read_text())


@pytest.fixture
def client(app, creds) -> Client:
    """A client holding the default workspace's management key."""
    return Client(app, creds["management_key"])
