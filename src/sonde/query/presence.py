"""Presence: which replicas are active and which chainlets have been seen, defined once.

*Active*: a replica (a non-empty ``replica``) that sent a metric point within the last
``ACTIVE_WINDOW_S`` seconds. Logs do not make a replica active: a replica that only
logs may be shutting down. This is a deployment's and a chainlet's
``active_replica_count``.

*Seen*: a chainlet that sent any telemetry (metric points or logs) under its chain
deployment within the last ``SEEN_WINDOW_S`` seconds, the longest window the query
endpoints take. A seen chainlet appears in its deployment's list and serves logs even
when no PUT listed it (docs/chains-loops.md).
"""

from __future__ import annotations

from ..store import Store

ACTIVE_WINDOW_S = 60
SEEN_WINDOW_S = 7 * 86400

# Over metric_points; binds {active:UInt32}. The one definition of an active replica.
_ACTIVE = "replica != '' AND ts >= now64(9) - toIntervalSecond({active:UInt32})"
# Binds {seen:UInt32}.
_SEEN = "ts >= now64(9) - toIntervalSecond({seen:UInt32})"


def active_replicas(store: Store, ws: str, scope: str, entities: list[str]) -> dict[str, int]:
    """entity -> its active replicas, for the entities of ``scope`` that have any."""
    if not entities:
        return {}
    rows = store.ex.query(
        f"SELECT entity, uniqExact(replica) AS n FROM {store.t('metric_points')}"
        " WHERE ws = {ws:String} AND scope = {scope:String} AND entity IN {ents:Array(String)}"
        f" AND {_ACTIVE} GROUP BY entity",
        {"ws": ws, "scope": scope, "ents": entities, "active": ACTIVE_WINDOW_S},
    )
    return {r["entity"]: int(r["n"]) for r in rows}


def _chainlet_telemetry(store: Store, where: str, columns: str) -> str:
    """Metric points (``src`` 'm') and logs ('l') of chainlets seen under ``where``."""
    return " UNION ALL ".join(
        f"SELECT {columns}, '{src}' AS src FROM {store.t(table)}"
        f" WHERE ws = {{ws:String}} AND scope = 'chainlet' AND {where} AND {_SEEN}"
        for src, table in (("m", "metric_points"), ("l", "logs"))
    )


def seen_chainlets(store: Store, ws: str, deployments: list[str]) -> dict[str, dict[str, int]]:
    """chain deployment -> {seen chainlet: its active replicas}."""
    if not deployments:
        return {}
    rows = store.ex.query(
        f"SELECT parent, entity, uniqExactIf(replica, src = 'm' AND {_ACTIVE}) AS active FROM ("
        + _chainlet_telemetry(store, "parent IN {cds:Array(String)}", "parent, entity, replica, ts")
        + ") GROUP BY parent, entity ORDER BY parent, entity",
        {"ws": ws, "cds": deployments, "seen": SEEN_WINDOW_S, "active": ACTIVE_WINDOW_S},
    )
    out: dict[str, dict[str, int]] = {}
    for r in rows:
        out.setdefault(r["parent"], {})[r["entity"]] = int(r["active"])
    return out


def chainlet_seen(store: Store, ws: str, deployment: str, chainlet: str) -> bool:
    """Whether ``chainlet`` was seen under ``deployment``: the first row answers, so the
    scan stops there instead of counting replicas as :func:`seen_chainlets` does."""
    rows = store.ex.query(
        "SELECT 1 AS one FROM ("
        + _chainlet_telemetry(store, "entity = {cl:String} AND parent = {cd:String}", "ts")
        + ") LIMIT 1",
        {"ws": ws, "cl": chainlet, "cd": deployment, "seen": SEEN_WINDOW_S},
    )
    return bool(rows)


def points_between(store: Store, ws: str, scope: str, entity: str, start_ns: int, end_ns: int) -> int:
    """How many metric points ``entity`` sent with timestamps in [start, end): an alert's
    "no data" (docs/alerts.md)."""
    rows = store.ex.query(
        f"SELECT count() AS n FROM {store.t('metric_points')}"
        " WHERE ws = {ws:String} AND scope = {scope:String} AND entity = {entity:String}"
        " AND ts >= fromUnixTimestamp64Nano({t0:Int64}, 'UTC') AND ts < fromUnixTimestamp64Nano({t1:Int64}, 'UTC')",
        {"ws": ws, "scope": scope, "entity": entity, "t0": start_ns, "t1": end_ns},
    )
    return int(rows[0]["n"])
