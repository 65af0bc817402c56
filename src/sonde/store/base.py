"""The store seam: the one narrow interface every backend implements.

Everything above this line (schema, writer, queries) is shared SQL in ClickHouse's
dialect; an executor only moves statements and Arrow tables to an engine and back.
A new backend is one module with one class implementing :class:`Executor`.

Parameters use ClickHouse's server-side binding, ``{name:Type}`` in the SQL and a
``params`` mapping, which chDB and clickhouse-connect both speak, so no value is ever
formatted into SQL text.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any

import pyarrow as pa

from .._exceptions import SondeError, StoreError
from .disk import is_space_error, storage_full


class Executor(ABC):
    #: the ClickHouse cluster the schema is spread over (``ON CLUSTER``, Distributed
    #: tables: store/schema.py); None for one server or the embedded engine
    cluster: str | None = None
    #: whether this process is the store's only writer (chDB's rule), so ingest may
    #: keep cumulative-to-delta state in memory between requests
    exclusive: bool = False
    #: the directory on this machine the data lives in (the embedded engine's), whose
    #: free space ingest checks (store/disk.py); None when the engine is elsewhere
    local_path: str | None = None

    @abstractmethod
    def command(self, sql: str, params: Mapping[str, Any] | None = None) -> None:
        """Run a statement that returns nothing (DDL, ALTER, INSERT ... VALUES)."""

    @abstractmethod
    def query_arrow(self, sql: str, params: Mapping[str, Any] | None = None) -> pa.Table:
        """Run a SELECT and return its result as an Arrow table."""

    @abstractmethod
    def insert_arrow(self, table: str, data: pa.Table) -> None:
        """Insert an Arrow table; returns once the rows are committed to the store."""

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        return self.query_arrow(sql, params).to_pylist()

    def close(self) -> None:  # pragma: no cover - backends without resources
        pass


def refused(exc: BaseException) -> SondeError:
    """What a statement the engine refused raises: :class:`StorageFull` (503, retried
    later by the client) when it found no room on disk, else :class:`StoreError`."""
    message = str(exc).strip()
    return storage_full(message) if is_space_error(message) else StoreError(message)
