"""Alert documents and the evaluation lease (docs/alerts.md).

Rules, receivers and the state of each alert instance are JSON documents in
``alert_docs``, keyed by (workspace, kind, id) and read with FINAL, so every API
replica sees the same rules and a restarted server finds its alerts where it left
them. A deletion is a newer row flagged ``deleted``. Versions are wall-clock
nanoseconds, bumped past the stored one, so the newest write wins everywhere.

The lease names the one process that evaluates rules: a ``meta`` row
``alert_lease`` holding the holder's id and an expiry. A process takes the lease
when it is free or expired (or already its own) by writing its own row, then reads
the row back: ReplacingMergeTree keeps the highest version, so of two processes that
wrote at once both read the same winner, and only that one evaluates.
"""

from __future__ import annotations

import json
import time

import pyarrow as pa

from . import Store
from .schema import ARROW_SCHEMAS

KINDS = ("rule", "receiver", "state")
LEASE_KEY = "alert_lease"


class AlertDocs:
    def __init__(self, store: Store):
        self.store = store

    def _select(self, where: str, params: dict) -> list[tuple[str, str, dict]]:
        rows = self.store.ex.query(
            f"SELECT ws, id, doc FROM {self.store.t('alert_docs')} FINAL"
            f" WHERE {where} AND deleted = 0 ORDER BY ws, id", params)
        return [(r["ws"], r["id"], json.loads(r["doc"])) for r in rows]

    def get(self, ws: str, kind: str, id: str) -> dict | None:
        found = self._select("ws = {ws:String} AND kind = {kind:String} AND id = {id:String}",
                             {"ws": ws, "kind": kind, "id": id})
        return found[0][2] if found else None

    def list(self, ws: str, kind: str) -> list[dict]:
        return [doc for _, _, doc in self._select("ws = {ws:String} AND kind = {kind:String}", {"ws": ws, "kind": kind})]

    def all(self, kind: str) -> list[tuple[str, str, dict]]:
        """(workspace, id, doc) of every workspace: what the evaluator reads."""
        return self._select("kind = {kind:String}", {"kind": kind})

    def put(self, ws: str, kind: str, id: str, doc: dict) -> None:
        self.write([(ws, kind, id, doc)])

    def delete(self, ws: str, kind: str, id: str) -> bool:
        """Delete the document; False when there was none."""
        if self.get(ws, kind, id) is None:
            return False
        self.write([(ws, kind, id, None)])
        return True

    def write(self, docs: list[tuple[str, str, str, dict | None]]) -> None:
        """Write many documents in one INSERT (one part): (ws, kind, id, doc), doc None
        deletes it."""
        if not docs:
            return
        for _, kind, _, _ in docs:
            if kind not in KINDS:
                raise ValueError(f"unknown alert document kind {kind!r}")
        # Versions strictly increase within this process, so two writes of one
        # document in the same nanosecond still order.
        first = time.time_ns()
        table = pa.Table.from_pydict({
            "ws": [d[0] for d in docs], "kind": [d[1] for d in docs], "id": [d[2] for d in docs],
            "doc": ["{}" if d[3] is None else json.dumps(d[3], sort_keys=True) for d in docs],
            "deleted": [int(d[3] is None) for d in docs],
            "version": [first + i for i in range(len(docs))],
        }, schema=ARROW_SCHEMAS["alert_docs"])
        self.store.ex.insert_arrow(self.store.t("alert_docs"), table)

    # --- the evaluation lease ------------------------------------------------------------

    def _lease(self) -> tuple[str, int, int]:
        rows = self.store.ex.query(
            f"SELECT value, version FROM {self.store.t('meta')} FINAL WHERE key = {{k:String}}", {"k": LEASE_KEY})
        if not rows:
            return "", 0, 0
        held = json.loads(rows[0]["value"])
        return held["holder"], int(held["until_ms"]), int(rows[0]["version"])

    def lease(self, holder: str, ttl_s: float, now_ms: int | None = None) -> bool:
        """Take or renew the lease for ``ttl_s`` seconds; True when ``holder`` has it."""
        now = time.time_ns() // 1_000_000 if now_ms is None else now_ms
        current, until, version = self._lease()
        if current != holder and until > now:
            return False
        self.store.ex.command(
            f"INSERT INTO {self.store.t('meta')} (key, value, version) VALUES ({{k:String}}, {{v:String}}, {{ver:UInt64}})",
            {"k": LEASE_KEY, "v": json.dumps({"holder": holder, "until_ms": now + int(ttl_s * 1000)}),
             "ver": max(time.time_ns(), version + 1)})
        return self._lease()[0] == holder

    def release(self, holder: str) -> None:
        """Give the lease up at once (a clean shutdown), so another process need not wait for it to expire."""
        current, _, version = self._lease()
        if current == holder:
            self.store.ex.command(
                f"INSERT INTO {self.store.t('meta')} (key, value, version)"
                " VALUES ({k:String}, {v:String}, {ver:UInt64})",
                {"k": LEASE_KEY, "v": json.dumps({"holder": "", "until_ms": 0}),
                 "ver": max(time.time_ns(), version + 1)})
