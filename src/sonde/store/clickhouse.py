"""Cluster executor: a ClickHouse server or cluster over HTTP, through clickhouse-connect.

``clickhouse://user:password@host:8123/db?cluster=NAME`` (``clickhouses://`` for TLS).
Query-string parameters other than ``cluster`` are ClickHouse settings sent with every
statement (``insert_quorum=2``, ``max_threads=8``, ...).

The acknowledged-means-durable rule: an insert returns once ClickHouse has committed
it. Sonde's own group commit (store/writer.py) does the batching, so inserts are
synchronous (``async_insert=0``); into Distributed tables they are forwarded to the
shard before the answer (``insert_distributed_sync=1``), and ``insert_quorum`` makes a
replicated shard confirm on that many replicas.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import pyarrow as pa

from .._exceptions import BadRequest, StoreError
from .base import Executor, refused

#: what the URL's query string may not override: the durability rule depends on them
_FIXED = {"async_insert": 0}
_CLUSTER_INSERTS = {"insert_distributed_sync": 1}


@dataclass(frozen=True)
class ClickHouseURL:
    host: str
    port: int
    database: str
    username: str = "default"
    password: str = ""
    secure: bool = False
    cluster: str | None = None
    settings: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, url: str) -> "ClickHouseURL":
        parts = urlsplit(url)
        if parts.scheme not in ("clickhouse", "clickhouses") or not parts.hostname:
            raise BadRequest("store URL must look like clickhouse://user:password@host:8123/db?cluster=NAME",
                             field="store")
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        cluster = query.pop("cluster", None) or None
        bad = sorted(set(query) & set(_FIXED))
        if bad:
            raise BadRequest(f"store URL may not set {', '.join(bad)}: acknowledged inserts must be durable",
                             field="store")
        database = parts.path.strip("/") or "sonde"
        if not database.replace("_", "").isalnum():
            raise BadRequest("store URL database must be letters, digits and underscores", field="store")
        secure = parts.scheme == "clickhouses"
        try:
            port = parts.port or (8443 if secure else 8123)
        except ValueError as exc:
            raise BadRequest(f"store URL port: {exc}", field="store") from None
        return cls(host=parts.hostname, port=port, database=database,
                   username=unquote(parts.username or "default"), password=unquote(parts.password or ""),
                   secure=secure, cluster=cluster, settings=query)


def _param(v: Any) -> Any:
    # clickhouse-connect renders lists as ClickHouse arrays and tuples as tuples; the
    # store's SQL only binds arrays, and Bool as 0/1.
    if isinstance(v, tuple):
        return [_param(x) for x in v]
    if isinstance(v, bool):
        return int(v)
    return v


class ClickHouseExecutor(Executor):
    def __init__(self, url: ClickHouseURL):
        try:
            import clickhouse_connect
        except ImportError:
            raise StoreError("a clickhouse:// store needs clickhouse-connect: pip install 'sonde[cluster]'") from None

        self.url = url
        self.cluster = url.cluster
        self.exclusive = False
        self._settings = {**url.settings, **_FIXED}
        self._insert_settings = {**self._settings, **(_CLUSTER_INSERTS if url.cluster else {})}
        # One client for every thread: clickhouse-connect keeps each call's state in its
        # own context and draws connections from a urllib3 pool, and without a session
        # id concurrent calls do not collide.
        try:
            self._client = clickhouse_connect.get_client(
                host=url.host, port=url.port, username=url.username, password=url.password,
                secure=url.secure, database="default", settings=self._settings,
                autogenerate_session_id=False,
            )
        except Exception as exc:  # fail at start, not at the first request, on a wrong URL
            raise StoreError(f"cannot reach ClickHouse at {url.host}:{url.port}: {exc}") from exc

    @classmethod
    def from_url(cls, url: str) -> "ClickHouseExecutor":
        return cls(ClickHouseURL.parse(url))

    def _params(self, params: Mapping[str, Any] | None) -> dict[str, Any] | None:
        return {k: _param(v) for k, v in params.items()} if params else None

    def command(self, sql: str, params: Mapping[str, Any] | None = None) -> None:
        settings = self._insert_settings if sql.lstrip()[:6].upper() == "INSERT" else None
        try:
            self._client.command(sql, parameters=self._params(params), settings=settings)
        except StoreError:
            raise
        except Exception as exc:
            raise refused(exc) from exc

    def query_arrow(self, sql: str, params: Mapping[str, Any] | None = None) -> pa.Table:
        try:
            return self._client.query_arrow(sql, parameters=self._params(params), use_strings=True)
        except StoreError:
            raise
        except Exception as exc:
            raise refused(exc) from exc

    def insert_arrow(self, table: str, data: pa.Table) -> None:
        try:
            self._client.insert_arrow(table, data, settings=self._insert_settings)
        except StoreError:
            raise
        except Exception as exc:
            raise refused(exc) from exc

    def close(self) -> None:
        self._client.close()
