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
"""

from __future__ import annotations

import json
import threading
import time

from .._exceptions import Conflict, NotFound
from . import Store

#: doc fields written by telemetry, not by clients: a PUT keeps them (docs/agent.md)
OBSERVED = ("observed_instance_type", "observed_instance_types")

KINDS = ("model", "deployment", "chain", "chain_deployment", "training_project", "training_job", "loops_deployment")


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class Inventory:
    def __init__(self, store: Store):
        self.store = store
        self._known: set[tuple[str, str, str]] = set()
        self._lock = threading.Lock()

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
        rows = self._select("kind = {kind:String} AND id = {id:String}", {"ws": ws, "kind": kind, "id": id})
        if not rows or (parent is not None and rows[0]["parent"] != parent):
            raise NotFound(f"{kind.replace('_', ' ')} {id!r} not found", field=f"{kind}_id")
        return rows[0]

    def find(self, ws: str, kind: str, id: str) -> dict | None:
        rows = self._select("kind = {kind:String} AND id = {id:String}", {"ws": ws, "kind": kind, "id": id})
        return rows[0] if rows else None

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

    def _write(self, ws, kind, id, parent, doc, created_ms, updated_ms, version) -> None:
        self.store.ex.command(
            f"INSERT INTO {self.store.t('inventory')} (ws, kind, id, parent, doc, created_at, updated_at, version)"
            " VALUES ({ws:String}, {kind:String}, {id:String}, {parent:String}, {doc:String},"
            " fromUnixTimestamp64Milli({c:Int64}), fromUnixTimestamp64Milli({u:Int64}), {v:UInt64})",
            {"ws": ws, "kind": kind, "id": id, "parent": parent, "doc": json.dumps(doc, sort_keys=True),
             "c": created_ms, "u": updated_ms, "v": version},
        )
