"""Requests and their traces (docs/api.md#requests).

An entity's requests are its server spans (``kind`` 2). A request's log lines are the
lines carrying its request id or its trace id; its spans are every span of its trace
in the workspace, whichever entity recorded them (a chain's request crosses chainlets).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .._exceptions import NotFound
from ..store import Store
from .logs import LOG_COLUMNS, log_views, resolve_window
from .scan import QUERY_TIMEOUT_S

DEFAULT_WINDOW_MS = 3600_000
#: how far around a request its log lines are looked for: a line is written while the
#: request runs, give or take clocks and buffering
LOG_MARGIN_NS = 60 * 10**9
MAX_LOG_LINES = 1000
_SERVER = 2
_SETTINGS = f" SETTINGS max_execution_time = {QUERY_TIMEOUT_S}"


@dataclass(frozen=True)
class RequestQuery:
    start_ns: int
    end_ns: int
    order: Literal["slowest", "newest"] = "slowest"
    limit: int = 20
    status_class: int | None = None  # 2 for 2xx ...
    min_duration_ns: int = 0
    replica: str | None = None

    @classmethod
    def resolve(cls, start_ms: int | None, end_ms: int | None, now_ms: int, **kw) -> RequestQuery:
        """The window rules of the logs endpoints, with a default of one hour."""
        start, end = resolve_window(start_ms, end_ms, now_ms, DEFAULT_WINDOW_MS)
        return cls(start_ns=start * 1_000_000, end_ns=end * 1_000_000, **kw)


def _request(r: dict, log_count: int) -> dict:
    return {
        "request_id": r["request_id"],
        "trace_id": r["trace_id"],
        "timestamp": str(r["t"]),
        "duration_seconds": r["duration_ns"] / 1e9,
        "status_code": r["http_status"] or None,
        "replica": r["replica"] or None,
        "route": r["route"] or r["name"],
        "log_count": log_count,
    }


_REQUEST_COLUMNS = ("request_id, trace_id, toUnixTimestamp64Nano(ts) AS t, duration_ns, http_status, replica,"
                    " route, name")


def list_requests(store: Store, ws: str, scope: str, entity: str, q: RequestQuery) -> list[dict]:
    where = ["ws = {ws:String}", "scope = {scope:String}", "entity = {entity:String}",
             "ts >= fromUnixTimestamp64Nano({lo:Int64}, 'UTC')", "ts < fromUnixTimestamp64Nano({hi:Int64}, 'UTC')",
             f"kind = {_SERVER}"]
    params = {"ws": ws, "scope": scope, "entity": entity, "lo": q.start_ns, "hi": q.end_ns, "limit": q.limit}
    if q.status_class is not None:
        where.append("intDiv(http_status, 100) = {cls:UInt16}")
        params["cls"] = q.status_class
    if q.min_duration_ns:
        where.append("duration_ns >= {min_ns:UInt64}")
        params["min_ns"] = q.min_duration_ns
    if q.replica is not None:
        where.append("replica = {replica:String}")
        params["replica"] = q.replica
    order = "duration_ns DESC, ts DESC" if q.order == "slowest" else "ts DESC, duration_ns DESC"
    rows = store.ex.query_arrow(
        f"SELECT {_REQUEST_COLUMNS} FROM {store.t('spans')} WHERE {' AND '.join(where)}"
        f" ORDER BY {order}, seq DESC LIMIT {{limit:UInt32}}{_SETTINGS}", params).to_pylist()
    if not rows:
        return []
    counts = _log_counts(store, ws, scope, entity, rows)
    return [_request(r, counts.get((r["request_id"], r["trace_id"]), 0)) for r in rows]


def _log_counts(store: Store, ws: str, scope: str, entity: str, rows: list[dict]) -> dict[tuple, int]:
    """Per (request id, trace id): its log lines, a line matching both counted once."""
    lo = min(r["t"] for r in rows) - LOG_MARGIN_NS
    hi = max(r["t"] + r["duration_ns"] for r in rows) + LOG_MARGIN_NS
    found = store.ex.query_arrow(
        "SELECT request_id, attrs['trace_id'] AS trace, count() AS n"
        f" FROM {store.t('logs')} WHERE ws = {{ws:String}} AND scope = {{scope:String}} AND entity = {{entity:String}}"
        " AND ts >= fromUnixTimestamp64Nano({lo:Int64}, 'UTC') AND ts < fromUnixTimestamp64Nano({hi:Int64}, 'UTC')"
        " AND (request_id IN {ids:Array(String)} OR attrs['trace_id'] IN {traces:Array(String)})"
        f" GROUP BY request_id, trace{_SETTINGS}",
        {"ws": ws, "scope": scope, "entity": entity, "lo": lo, "hi": hi,
         "ids": [r["request_id"] for r in rows], "traces": [r["trace_id"] for r in rows]}).to_pylist()
    out: dict[tuple, int] = {}
    for r in rows:
        key = (r["request_id"], r["trace_id"])
        out[key] = sum(f["n"] for f in found if f["request_id"] == key[0] or f["trace"] == key[1])
    return out


def _span(r: dict) -> dict:
    return {
        "trace_id": r["trace_id"], "span_id": r["span_id"], "parent_span_id": r["parent_span_id"] or None,
        "name": r["name"], "kind": r["kind"], "start": str(r["t"]), "duration_seconds": r["duration_ns"] / 1e9,
        "status_code": r["status_code"], "status_message": r["status_message"] or None,
        "http_status": r["http_status"] or None, "scope": r["scope"], "entity": r["entity"],
        "replica": r["replica"] or None, "attributes": dict(r["attrs"]),
    }


def get_request(store: Store, ws: str, scope: str, entity: str, request_id: str) -> dict:
    """The request with its spans (start order) and its log lines (ascending); 404 when
    the entity has no such request in this workspace."""
    rows = store.ex.query_arrow(
        f"SELECT {_REQUEST_COLUMNS} FROM {store.t('spans')}"
        " WHERE ws = {ws:String} AND scope = {scope:String} AND entity = {entity:String}"
        f" AND request_id = {{rid:String}} AND kind = {_SERVER} ORDER BY ts LIMIT 1{_SETTINGS}",
        {"ws": ws, "scope": scope, "entity": entity, "rid": request_id}).to_pylist()
    if not rows:
        raise NotFound(f"request {request_id!r} not found", field="request_id")
    r = rows[0]
    spans = store.ex.query_arrow(
        "SELECT trace_id, span_id, parent_span_id, name, kind, toUnixTimestamp64Nano(ts) AS t, duration_ns,"
        " status_code, status_message, http_status, scope, entity, replica, attrs"
        f" FROM {store.t('spans')} WHERE ws = {{ws:String}} AND trace_id = {{trace:String}}"
        f" ORDER BY ts, seq LIMIT 10000{_SETTINGS}", {"ws": ws, "trace": r["trace_id"]}).to_pylist()
    lo, hi = r["t"] - LOG_MARGIN_NS, r["t"] + r["duration_ns"] + LOG_MARGIN_NS
    # the lines of every entity the trace crossed (a chain's chainlets), none of others'
    where = sorted({f"{x['scope']}/{x['entity']}" for x in spans} | {f"{scope}/{entity}"})
    logs = log_views(store.ex.query_arrow(
        f"SELECT {LOG_COLUMNS} FROM {store.t('logs')} WHERE ws = {{ws:String}}"
        " AND concat(scope, '/', entity) IN {where:Array(String)}"  # ids never hold a '/'
        " AND ts >= fromUnixTimestamp64Nano({lo:Int64}, 'UTC') AND ts < fromUnixTimestamp64Nano({hi:Int64}, 'UTC')"
        " AND (request_id = {rid:String} OR attrs['trace_id'] = {trace:String})"
        f" ORDER BY ts, seq LIMIT {MAX_LOG_LINES}{_SETTINGS}",
        {"ws": ws, "where": where, "lo": lo, "hi": hi, "rid": request_id, "trace": r["trace_id"]}))
    return {**_request(r, len(logs)), "spans": [_span(s) for s in spans], "logs": logs}
