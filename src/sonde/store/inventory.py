"""Inventory: models, deployments, chains, training projects and jobs, loops deployments.

Each resource is one row of ``inventory`` keyed by (workspace, kind, id) holding the
fields a client writes as JSON; derived fields (counts, replica numbers, timestamps)
are computed on read (replica numbers by ``sonde.query.presence``). Writes are upserts
with a millisecond version, so the newest write wins on every replica. Telemetry that
names an unknown entity registers it with version 1, which any explicit PUT outranks.

Telemetry also amends records (:meth:`Inventory.amend`): the instance type the agent
observed (``observed_*`` doc fields, read only where the written field is absent, and
carried over by a PUT so a PUT never loses them) and a training job's end status. An
amendment is written with the record's version + 1, so a PUT written after it wins.

On a store only this process can open (chDB's executor is ``exclusive``) every write
goes through this module, so the records read are kept in memory, exactly, one cache
per executor (several apps in one process share it): a write drops its key, and a read
that overlapped any write is not kept. Every API request looks up its model and
deployment, and each lookup is a ClickHouse statement (~7 ms embedded). On a cluster
another API replica may write, so nothing is kept.
"""

from __future__ import annotations

import copy
import json
import threading
import time
import weakref

from .._exceptions import Conflict, NotFound
from . import Store

#: doc fields written by telemetry, not by clients: a PUT keeps them (docs/agent.md)
OBSERVED = ("observed_instance_type", "observed_instance_types")

KINDS = ("model", "deployment", "chain", "chain_deployment", "training_project", "training_job", "loops_deployment")


#: records kept in memory at most (exclusive stores); past it the cache starts over
CACHE_MAX = 100_000


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class _Cache:
    def __init__(self):
        self.lock = threading.Lock()
        self.rows: dict[tuple[str, str, str, str], dict] = {}  # (table, ws, kind, id) -> row
        self.writes = 0  # writes begun or ended: a read during which this moved is not kept


_CACHES: "weakref.WeakKeyDictionary[object, _Cache]" = weakref.WeakKeyDictionary()
_CACHES_LOCK = threading.Lock()


def _cache_of(executor) -> _Cache | None:
    if not executor.exclusive:
        return None
    engine = getattr(executor, "inner", executor)  # a store's FlushingExecutor shares its engine's cache
    with _CACHES_LOCK:
        return _CACHES.setdefault(engine, _Cache())


class Inventory:
    def __init__(self, store: Store):
        self.store = store
        self._known: set[tuple[str, str, str]] = set()
        self._lock = threading.Lock()
        self._cache = _cache_of(store.ex)
        self._table = store.t("inventory")

    def _select(self, where: str, params: dict) -> list[dict]:
        rows = self.store.ex.query(
            f"SELECT kind, id, parent, doc, toUnixTimestamp64Milli(created_at) AS created_ms,"
            f" toUnixTimestamp64Milli(updated_at) AS updated_ms, version"
            f" FROM {self.store.t('inventory')} FINAL WHERE ws = {{ws:String}} AND {where}"
            f" ORDER BY created_at, id",
            params,
        )
        for r in rows:
            r["doc"] = json.loads(r["doc"])
        return rows

    def get(self, ws: str, kind: str, id: str, parent: str | None = None) -> dict:
        """The resource, or NotFound when absent or under another parent."""
        row = self.find(ws, kind, id)
        if row is None or (parent is not None and row["parent"] != parent):
            raise NotFound(f"{kind.replace('_', ' ')} {id!r} not found", field=f"{kind}_id")
        return row

    def find(self, ws: str, kind: str, id: str) -> dict | None:
        """The resource, or None; a copy the caller may change."""
        cache, key = self._cache, (self._table, ws, kind, id)
        row = writes = None
        if cache is not None:
            with cache.lock:
                row, writes = cache.rows.get(key), cache.writes
        if row is None:
            rows = self._select("kind = {kind:String} AND id = {id:String}", {"ws": ws, "kind": kind, "id": id})
            if not rows or cache is None:
                return rows[0] if rows else None  # absent ids are not kept: anyone may ask for any number
            row = rows[0]
            with cache.lock:
                if cache.writes == writes:  # no write began or ended meanwhile: the row is current
                    if len(cache.rows) >= CACHE_MAX:
                        cache.rows.clear()
                    cache.rows[key] = row
        return {**row, "doc": copy.deepcopy(row["doc"])}

    def list(self, ws: str, kind: str, parent: str | None = None) -> list[dict]:
        if parent is None:
            return self._select("kind = {kind:String}", {"ws": ws, "kind": kind})
        return self._select(
            "kind = {kind:String} AND parent = {parent:String}", {"ws": ws, "kind": kind, "parent": parent}
        )

    def put(self, ws: str, kind: str, id: str, parent: str, doc: dict) -> dict:
        """Upsert; the id may not move to another parent (409)."""
        existing = self.find(ws, kind, id)
        if existing and existing["parent"] != parent:
            raise Conflict(
                f"{kind.replace('_', ' ')} {id!r} already belongs to {existing['parent']!r}", field=f"{kind}_id"
            )
        now = _now_ms()
        created = existing["created_ms"] if existing else now
        if existing:
            doc = {**doc, **{k: existing["doc"][k] for k in OBSERVED if k in existing["doc"]}}
        self._write(ws, kind, id, parent, doc, created, now, now)
        with self._lock:
            self._known.add((ws, kind, id))
        return self.get(ws, kind, id)

    def ensure(self, ws: str, kind: str, id: str, parent: str, doc: dict) -> None:
        """Register ``id`` if the inventory lacks it; never overwrites a stored record."""
        key = (ws, kind, id)
        with self._lock:
            if key in self._known:
                return
        if self.find(ws, kind, id) is None:
            now = _now_ms()
            self._write(ws, kind, id, parent, doc, now, now, 1)
        with self._lock:
            self._known.add(key)

    def amend(self, ws: str, kind: str, id: str, change, *, touch: bool = False) -> dict | None:
        """Read-modify-write from telemetry: ``change(doc)`` edits the doc in place and
        returns True to write it (False: leave the record alone). Written with version + 1
        (a later PUT outranks it); ``updated_at`` moves only with ``touch``. Returns the
        new doc, or None when nothing was written (unknown record or no change)."""
        row = self.find(ws, kind, id)
        if row is None:
            return None
        doc = row["doc"]
        if not change(doc):
            return None
        self._write(ws, kind, id, row["parent"], doc, row["created_ms"],
                    _now_ms() if touch else row["updated_ms"], int(row["version"]) + 1)
        return doc

    def _forget(self, ws: str, kind: str, id: str) -> None:
        if self._cache is not None:
            with self._cache.lock:
                self._cache.writes += 1
                self._cache.rows.pop((self._table, ws, kind, id), None)

    def _write(self, ws, kind, id, parent, doc, created_ms, updated_ms, version) -> None:
        # Forgotten before and after: a read that overlapped the insert in any way is not kept.
        self._forget(ws, kind, id)
        try:
            self.store.ex.command(
                f"INSERT INTO {self._table} (ws, kind, id, parent, doc, created_at, updated_at, version)"
                " VALUES ({ws:String}, {kind:String}, {id:String}, {parent:String}, {doc:String},"
                " fromUnixTimestamp64Milli({c:Int64}), fromUnixTimestamp64Milli({u:Int64}), {v:UInt64})",
                {"ws": ws, "kind": kind, "id": id, "parent": parent, "doc": json.dumps(doc, sort_keys=True),
                 "c": created_ms, "u": updated_ms, "v": version},
            )
        finally:
            self._forget(ws, kind, id)
