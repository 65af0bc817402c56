"""Embedded executor: ClickHouse inside this process through chDB.

chDB opens one database path per process, and no second process may open it: the
server owns the data directory, and every other client (CLI, tests) talks HTTP.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from typing import Any

import pyarrow as pa
from chdb import session as chdb_session

from .._exceptions import StoreError
from .base import Executor, refused

_lock = threading.Lock()
_open_paths: dict[str, "ChdbExecutor"] = {}


def _literal(v: Any) -> str:
    if isinstance(v, str):
        return "'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(_literal(x) for x in v) + "]"
    return str(v)


_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r", "\0": "\\0"})


def _param(v: Any) -> Any:
    # ClickHouse reads parameter values in its escaped text format: a backslash starts
    # an escape and a raw tab or newline ends the value, so strings are escaped; arrays
    # must be in ClickHouse's literal form.
    if isinstance(v, str):
        return v.translate(_ESCAPES)
    return _literal(v) if isinstance(v, (list, tuple)) else v


class ChdbExecutor(Executor):
    """Use :meth:`open` rather than the constructor: it hands back the one executor
    a process may have, and refuses a second path."""

    #: chDB lets one process open a path, so the server is the store's only writer
    exclusive = True

    def __init__(self, path: str):
        self.path = self.local_path = path
        self._session = chdb_session.Session(path)
        # chDB's embedded engine keeps per-call state (query parameters among it) that
        # concurrent calls overwrite, even from separate connections: one call at a
        # time. Each statement still runs on all cores inside ClickHouse.
        self._calls = threading.Lock()

    @classmethod
    def open(cls, path: str) -> "ChdbExecutor":
        path = os.path.abspath(path)
        with _lock:
            if path in _open_paths:
                return _open_paths[path]
            if _open_paths:
                held = next(iter(_open_paths))
                raise StoreError(f"chDB already holds {held!r} in this process; one path per process")
            try:
                ex = cls(path)
            except Exception as exc:
                # ClickHouse's own flock on <path>/status refuses a second process
                raise StoreError(f"cannot open the chDB store at {path}: another process (a running"
                                 f" `sonde serve`?) holds it; chDB allows one process per path ({exc})") from exc
            _open_paths[path] = ex
            return ex

    def _run(self, sql: str, fmt: str, params: Mapping[str, Any] | None):
        bound = {k: _param(v) for k, v in params.items()} if params else None
        try:
            with self._calls:
                if bound:
                    return self._session.query(sql, fmt, params=bound)
                return self._session.query(sql, fmt)
        except Exception as exc:  # chDB raises a bare RuntimeError-like type
            raise refused(exc) from exc

    def command(self, sql: str, params: Mapping[str, Any] | None = None) -> None:
        self._run(sql, "CSV", params)

    def query_arrow(self, sql: str, params: Mapping[str, Any] | None = None) -> pa.Table:
        return self._run(sql, "ArrowTable", params)

    def insert_arrow(self, table: str, data: pa.Table) -> None:
        # chDB resolves Python(name) in the frame that calls query(), so call it here.
        sonde_rows = data  # noqa: F841
        cols = ", ".join(f"`{c}`" for c in data.column_names)
        try:
            with self._calls:
                self._session.query(f"INSERT INTO {table} ({cols}) SELECT {cols} FROM Python(sonde_rows)", "CSV")
        except Exception as exc:
            raise refused(exc) from exc

    def close(self) -> None:
        with _lock:
            if _open_paths.get(self.path) is self:
                with self._calls:
                    self._session.close()
                del _open_paths[self.path]
