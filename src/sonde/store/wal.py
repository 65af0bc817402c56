"""Write-ahead log: ingest acknowledged before its group commit.

A commit costs ClickHouse about as much for 100 rows as for 7,000 (a part per table,
the views' statements: docs/benchmarks.md), so commits want to be large, and a client
waiting for one wants it soon. With the log, a request's rows go to a file of their own
and the request is acknowledged; the writer (store/writer.py) commits what has gathered
every ``wal_flush_interval_ms`` and empties the files it committed. Reads flush first
(:class:`FlushingExecutor`), so a query sees every row acknowledged before it.

A file is written under a temporary name and renamed, so a crash leaves whole files or
none. Like ClickHouse's own parts (``fsync_after_insert`` is off) the files are not
fsynced: they outlive the process, not the machine's power. A committed file is not
deleted but emptied and kept in ``free/`` (up to ``POOL``), and the next request's rows
are written into one of those: creating a file cost ~0.5 ms of kernel CPU on the
project's ext4 VM, rewriting one ~0.05 (docs/benchmarks.md). A file in ``free/`` holds
nothing acknowledged, whatever a crash left in it.

At start, :func:`replay` commits the files a crash left, skipping rows a commit had
already stored (:func:`unstored`), so a row is stored once. A file ClickHouse refuses
again and again (a bug, since rows are checked before they are queued) is moved to
``rejected/`` and logged, never deleted.

A file: ``MAGIC``, then per table: the name's length (2 bytes), the name, the Arrow IPC
stream's length (8 bytes), the stream.
"""

from __future__ import annotations

import errno
import itertools
import logging
import os
import struct
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from .._exceptions import StoreError
from .base import Executor
from .disk import storage_full

log = logging.getLogger(__name__)

MAGIC = b"SONDEWAL1\n"
_SUFFIX = ".wal"
#: emptied files kept for reuse (an inode each, no data)
POOL = 1024


class Wal:
    def __init__(self, path: str):
        self.path = path
        self.rejected = os.path.join(path, "rejected")
        self.free = os.path.join(path, "free")
        for d in (self.rejected, self.free):
            os.makedirs(d, exist_ok=True)
        for name in os.listdir(path):  # a file a crash left half written was never acknowledged
            if name.endswith(".tmp"):
                os.unlink(os.path.join(path, name))
        # numbered after every file here, set aside or free, so none is ever overwritten
        ids = [int(f[: -len(_SUFFIX)]) for d in (path, self.rejected, self.free)
               for f in os.listdir(d) if f.endswith(_SUFFIX)]
        self._ids = itertools.count(max(ids, default=0) + 1)
        self._pool = sorted(os.path.join(self.free, f) for f in os.listdir(self.free) if f.endswith(_SUFFIX))
        self._pool_lock = threading.Lock()

    def append(self, rows: Mapping[str, pa.Table]) -> str:
        """Write ``{table: rows}`` to a new file; returns its path once it is whole."""
        parts = [MAGIC]
        for table, data in rows.items():
            sink = pa.BufferOutputStream()
            with pa.ipc.new_stream(sink, data.schema) as writer:
                writer.write_table(data)
            stream = sink.getvalue()
            name = table.encode()
            parts += [struct.pack("<H", len(name)), name, struct.pack("<Q", stream.size), stream]
        final = os.path.join(self.path, f"{next(self._ids):016d}{_SUFFIX}")
        with self._pool_lock:
            reused = self._pool.pop() if self._pool else None
        # an emptied file of the pool is written where it lies, then renamed into place
        scratch = reused or final + ".tmp"
        try:
            try:
                f = open(scratch, "r+b" if reused else "wb")
            except FileNotFoundError:
                if not reused:
                    raise
                scratch = final + ".tmp"  # gone from the pool (deleted by hand): a new one
                f = open(scratch, "wb")
            with f:
                f.writelines(parts)
                f.truncate()  # a pool file a crash left unemptied may be longer
            os.rename(scratch, final)
        except OSError as exc:
            _unlink(scratch)
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise storage_full(str(exc)) from exc
            raise StoreError(f"cannot write the ingest log in {self.path}: {exc}") from exc
        return final

    def files(self) -> list[str]:
        """The files not yet committed, oldest first."""
        return sorted(os.path.join(self.path, f) for f in os.listdir(self.path) if f.endswith(_SUFFIX))

    def remove(self, files: Sequence[str]) -> None:
        """Committed: each file emptied into the pool, or deleted when the pool is full."""
        for f in files:
            with self._pool_lock:
                keep = len(self._pool) < POOL
            if not keep:
                _unlink(f)
                continue
            kept = os.path.join(self.free, os.path.basename(f))
            try:
                os.rename(f, kept)  # first: a .wal file is never left empty
                os.truncate(kept, 0)
            except OSError:
                _unlink(f)
                _unlink(kept)
                continue
            with self._pool_lock:
                self._pool.append(kept)

    def reject(self, file: str, why: BaseException) -> None:
        log.error("the store refused the acknowledged rows in %s (%s); moved to %s, not stored", file, why,
                  self.rejected)
        os.replace(file, os.path.join(self.rejected, os.path.basename(file)))


def read(file: str) -> dict[str, pa.Table]:
    """The tables of one file; ValueError when it is not one."""
    with open(file, "rb") as f:
        data = f.read()
    if not data.startswith(MAGIC):
        raise ValueError(f"{file} is not an ingest log file")
    out, at = {}, len(MAGIC)
    try:
        while at < len(data):
            (n,) = struct.unpack_from("<H", data, at)
            table = data[at + 2: at + 2 + n].decode()
            (size,) = struct.unpack_from("<Q", data, at + 2 + n)
            at += 10 + n
            out[table] = pa.ipc.open_stream(pa.py_buffer(data[at: at + size])).read_all()
            at += size
    except (struct.error, pa.ArrowInvalid, UnicodeDecodeError) as exc:
        raise ValueError(f"{file} is cut short or damaged: {exc}") from exc
    return out


#: exemplars carry no ``seq``: a row is stored when one with these values is
_EXEMPLAR_KEY = ("ws", "scope", "entity", "metric", "replica", "trace_id", "span_id")


def unstored(ex: Executor, table: str, rows: pa.Table) -> pa.Table:
    """The rows of ``rows`` that ``table`` does not hold yet: after a crash, or a commit
    that failed after storing some of its tables, the rest goes in once."""
    if rows.num_rows == 0:
        return rows
    ts = rows.column("ts").cast(pa.int64())
    bounds: dict[str, Any] = {"lo": pc.min(ts).as_py(), "hi": pc.max(ts).as_py()}
    where = "ts BETWEEN fromUnixTimestamp64Nano({lo:Int64}) AND fromUnixTimestamp64Nano({hi:Int64})"
    if "seq" in rows.column_names:
        seq = rows.column("seq")
        bounds.update(slo=pc.min(seq).as_py(), shi=pc.max(seq).as_py())
        stored = ex.query_arrow(f"SELECT DISTINCT seq FROM {table} WHERE {where}"
                                " AND seq BETWEEN {slo:UInt64} AND {shi:UInt64}", bounds).column(0)
        return rows.filter(pc.invert(pc.is_in(seq, value_set=stored.cast(seq.type))))
    cols = ", ".join(_EXEMPLAR_KEY)
    stored = ex.query_arrow(f"SELECT {cols}, toUnixTimestamp64Nano(ts) AS t FROM {table} WHERE {where}", bounds)
    have = set(zip(*(stored.column(c).to_pylist() for c in (*_EXEMPLAR_KEY, "t"))))
    keys = zip(*(rows.column(c).to_pylist() for c in _EXEMPLAR_KEY), ts.to_pylist())
    return rows.filter(pa.array([k not in have for k in keys], pa.bool_()))


def insert(ex: Executor, order: Sequence[str], batch: Sequence[Mapping[str, pa.Table]], *,
           missing_only: bool) -> dict[str, pa.Table]:
    """One INSERT per table of ``order`` with the rows the ``batch``'s requests hold for
    it; ``missing_only``: only rows the table lacks (a retry, a replay). Returns what
    went in, by table."""
    committed: dict[str, pa.Table] = {}
    for table in order:
        parts = [rows[table] for rows in batch if table in rows and rows[table].num_rows]
        if not parts:
            continue
        data = pa.concat_tables(parts, promote_options="default") if len(parts) > 1 else parts[0]
        if missing_only:
            data = unstored(ex, table, data)
        if data.num_rows:
            ex.insert_arrow(table, data)
            committed[table] = data
    return committed


def replay(wal: Wal, ex: Executor, order: Sequence[str]) -> int:
    """Commit what the files ``wal`` holds add to the store, table by table in
    ``order``, then delete them; returns the rows committed."""
    files, batch = [], []
    for file in wal.files():
        try:
            batch.append(read(file))
        except (OSError, ValueError) as exc:
            wal.reject(file, exc)
            continue
        files.append(file)
    n = sum(t.num_rows for t in insert(ex, order, batch, missing_only=True).values())
    wal.remove(files)
    if files:
        log.warning("ingest log: %d rows of %d files a stop left uncommitted are now stored", n, len(files))
    return n


class FlushingExecutor(Executor):
    """The store's executor as readers see it: each statement waits first until every
    row acknowledged before it is committed (``flush``), so a client reads its writes."""

    def __init__(self, inner: Executor, flush: Callable[[], None]):
        self.inner, self._flush = inner, flush
        self.cluster, self.exclusive, self.local_path = inner.cluster, inner.exclusive, inner.local_path

    def command(self, sql: str, params: Mapping[str, Any] | None = None) -> None:
        self._flush()
        self.inner.command(sql, params)

    def query_arrow(self, sql: str, params: Mapping[str, Any] | None = None) -> pa.Table:
        self._flush()
        return self.inner.query_arrow(sql, params)

    def insert_arrow(self, table: str, data: pa.Table) -> None:
        self.inner.insert_arrow(table, data)

    def close(self) -> None:
        self.inner.close()


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
