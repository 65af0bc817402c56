"""Workspaces and API keys: stored hashed, shown once, revocable.

A key is ``sonde_`` + 32 random bytes (URL-safe base64); only its SHA-256 is stored.
With that much entropy a fast hash is enough: nothing can be guessed offline.
Lookups are cached for ``cache_ttl`` seconds, so a revocation made on another API
replica takes effect within that time; on this replica, at once.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from dataclasses import dataclass

from .._exceptions import NotFound
from . import Store

SCOPES = ("admin", "management", "ingest")


@dataclass(frozen=True)
class ApiKey:
    id: str
    ws: str
    name: str
    scope: str


def hash_key(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class Accounts:
    def __init__(self, store: Store, *, cache_ttl: float = 5.0):
        self.store = store
        self._ttl = cache_ttl
        self._cache: dict[str, tuple[float, ApiKey | None]] = {}
        self._lock = threading.Lock()

    def create_workspace(self, name: str) -> dict:
        ws_id = "ws_" + secrets.token_hex(8)
        self.store.ex.command(
            f"INSERT INTO {self.store.t('workspaces')} (id, name, created_at, version)"
            " VALUES ({id:String}, {name:String}, fromUnixTimestamp64Milli({now:Int64}), {now:UInt64})",
            {"id": ws_id, "name": name, "now": _now_ms()},
        )
        return {"id": ws_id, "name": name}

    def workspace(self, ws_id: str) -> dict:
        rows = self.store.ex.query(
            f"SELECT id, name FROM {self.store.t('workspaces')} FINAL WHERE id = {{id:String}}", {"id": ws_id}
        )
        if not rows:
            raise NotFound(f"workspace {ws_id!r} not found", field="workspace_id")
        return rows[0]

    def workspace_by_name(self, name: str) -> dict | None:
        rows = self.store.ex.query(
            f"SELECT id, name FROM {self.store.t('workspaces')} FINAL WHERE name = {{n:String}}"
            " ORDER BY created_at LIMIT 1",
            {"n": name},
        )
        return rows[0] if rows else None

    def create_key(self, ws_id: str, name: str, scope: str) -> dict:
        key_id = "key_" + secrets.token_hex(8)
        raw = "sonde_" + secrets.token_urlsafe(32)
        self.store.ex.command(
            f"INSERT INTO {self.store.t('api_keys')} (id, ws, name, scope, hash, created_at, revoked, version)"
            " VALUES ({id:String}, {ws:String}, {name:String}, {scope:String}, {hash:String},"
            " fromUnixTimestamp64Milli({now:Int64}), 0, {now:UInt64})",
            {"id": key_id, "ws": ws_id, "name": name, "scope": scope, "hash": hash_key(raw), "now": _now_ms()},
        )
        return {"id": key_id, "name": name, "scope": scope, "key": raw}

    def revoke_key(self, key_id: str) -> None:
        rows = self.store.ex.query(
            f"SELECT id, ws, name, scope, hash, toUnixTimestamp64Milli(created_at) AS created, version"
            f" FROM {self.store.t('api_keys')} FINAL WHERE id = {{id:String}} AND revoked = 0",
            {"id": key_id},
        )
        if not rows:
            raise NotFound(f"api key {key_id!r} not found", field="key_id")
        r = rows[0]
        self.store.ex.command(
            f"INSERT INTO {self.store.t('api_keys')} (id, ws, name, scope, hash, created_at, revoked, version)"
            " VALUES ({id:String}, {ws:String}, {name:String}, {scope:String}, {hash:String},"
            " fromUnixTimestamp64Milli({created:Int64}), 1, {version:UInt64})",
            {**r, "version": max(_now_ms(), int(r["version"]) + 1)},
        )
        with self._lock:
            self._cache.pop(r["hash"], None)

    def cached(self, raw: str) -> tuple[bool, ApiKey | None]:
        """``(True, what lookup answers)`` when it would answer from memory, without
        the store; else ``(False, None)``."""
        h = hash_key(raw)
        with self._lock:
            hit = self._cache.get(h)
        if hit and hit[0] > time.monotonic():
            return True, hit[1]
        return False, None

    def lookup(self, raw: str) -> ApiKey | None:
        found, key = self.cached(raw)
        if found:
            return key
        h, now = hash_key(raw), time.monotonic()
        rows = self.store.ex.query(
            f"SELECT id, ws, name, scope FROM {self.store.t('api_keys')} FINAL"
            " WHERE hash = {h:String} AND revoked = 0",
            {"h": h},
        )
        key = ApiKey(**rows[0]) if rows else None
        with self._lock:
            self._cache[h] = (now + self._ttl, key)
        return key

    def has_any_workspace(self) -> bool:
        return bool(self.store.ex.query(f"SELECT 1 AS x FROM {self.store.t('workspaces')} LIMIT 1"))


def bootstrap(accounts: Accounts, data_dir: str) -> dict | None:
    """On first start: workspace ``default``, an admin key and its management and
    ingest keys, written to ``DATA_DIR/credentials.json`` (mode 0600). Later starts
    change nothing and return None."""
    import json
    import os

    if accounts.has_any_workspace():
        return None
    ws = accounts.create_workspace("default")
    creds = {
        "admin_key": accounts.create_key("", "admin", "admin")["key"],
        "workspace_id": ws["id"],
        "management_key": accounts.create_key(ws["id"], "management", "management")["key"],
        "ingest_key": accounts.create_key(ws["id"], "ingest", "ingest")["key"],
    }
    os.makedirs(data_dir, exist_ok=True)
    path = os.path.join(data_dir, "credentials.json")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(creds, f, indent=2)
    os.chmod(path, 0o600)
    return creds
