"""Logs: one query shape for every log endpoint (docs/api.md#logs).

``LogWindow`` / ``LogFilters`` are the vendor's request shapes (GetTrainingJobLogsRequestV1
and GetDeploymentLogsRequestV1): pydantic checks types, enums, lengths and list sizes, so
FastAPI reports those as 400s naming the field. ``LogQuery.resolve`` applies the rules that
need more than one field or an outside library (defaults from the clock, the 7-day window,
RE2 syntax). ``Target`` says whose logs (scope + entity, or a model's environment);
``build_sql`` turns both into one ClickHouse statement and ``query_logs`` runs it and
shapes the rows into LogV1 dicts.

Every value a client typed is a bound parameter; the executor carries strings byte-exact
(``tests/test_store.py`` locks that), so a backslash in a regex arrives as typed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import re2
from pydantic import BaseModel, ConfigDict, Field

from .._exceptions import BadRequest
from ..store import Store
from ..store.schema import LEVEL_NAMES, LEVELS, SCOPES

DEFAULT_WINDOW_MS = 30 * 60 * 1000
MAX_WINDOW_MS = 7 * 24 * 3600 * 1000
DEFAULT_LIMIT = 500
MAX_TEXT = 256
MAX_TERMS = 8
# ts is stored as Int64 nanoseconds; larger millis would overflow it.
MAX_EPOCH_MS = (2**63 - 1) // 1_000_000

Text = Annotated[str, Field(max_length=MAX_TEXT)]
Terms = Annotated[list[Text], Field(max_length=MAX_TERMS)]
EpochMs = Annotated[int, Field(ge=0, le=MAX_EPOCH_MS)]


class LogWindow(BaseModel):
    """The fields every log endpoint takes (GetTrainingJobLogsRequestV1).

    Unknown fields are ignored, as the vendor schema allows them; ``null`` means the default.
    """

    model_config = ConfigDict(extra="ignore")
    start_epoch_millis: EpochMs | None = None
    end_epoch_millis: EpochMs | None = None
    direction: Literal["asc", "desc"] | None = None
    limit: Annotated[int, Field(ge=1, le=1000)] | None = DEFAULT_LIMIT
    min_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] | None = None


class LineFilters(BaseModel):
    """Which lines: the filters of deployment, environment and chainlet logs (alert rules' too)."""

    replica: Text | None = None
    request_id: Text | None = None
    component: Text | None = None
    search_pattern: Text | None = None
    includes: Terms | None = None
    excludes: Terms | None = None


class LogFilters(LogWindow, LineFilters):
    """Deployment, environment and chainlet logs: the window and the line filters (GetDeploymentLogsRequestV1)."""


class StreamWindow(BaseModel):
    """A live tail of training-job or loops logs: the level, and the backlog's start
    (absent: only lines that arrive after the stream opens)."""

    model_config = ConfigDict(extra="ignore")
    start_epoch_millis: EpochMs | None = None
    min_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] | None = None


class StreamFilters(StreamWindow, LineFilters):
    """A live tail of deployment, environment or chainlet logs: the GET's line filters too."""


#: the stream's request shape for each GET's
STREAM_SHAPES: dict[type, type] = {LogFilters: StreamFilters, LogWindow: StreamWindow}


def _re2_options() -> re2.Options:
    opts = re2.Options()
    opts.log_errors = False  # a client's bad pattern is a 400, not a line on stderr
    return opts


_RE2_OPTIONS = _re2_options()


def check_pattern(pattern: str) -> None:
    """400 naming ``search_pattern`` unless RE2 compiles it."""
    try:
        re2.compile(pattern, _RE2_OPTIONS)
    except re2.error as exc:
        reason = exc.args[0].decode("utf-8", "replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise BadRequest(f"search_pattern is not a valid RE2 pattern: {reason}", field="search_pattern") from None


def resolve_window(start_ms: int | None, end_ms: int | None, now_ms: int, default_ms: int) -> tuple[int, int]:
    """[start, end) in epoch ms by the logs endpoints' rules: end defaults to now, start to
    ``default_ms`` before end; end <= start or over 7 days is a 400 naming the field."""
    end = end_ms if end_ms is not None else now_ms
    start = start_ms if start_ms is not None else end - default_ms
    if end <= start:
        field = "end_epoch_millis" if end_ms is not None else "start_epoch_millis"
        raise BadRequest(f"end_epoch_millis ({end}) must be after start_epoch_millis ({start})", field=field)
    if end - start > MAX_WINDOW_MS:
        raise BadRequest(
            f"the window from start_epoch_millis to end_epoch_millis is {end - start} ms;"
            f" at most 7 days ({MAX_WINDOW_MS} ms)",
            field="start_epoch_millis",
        )
    return start, end


@dataclass(frozen=True)
class LogQuery:
    """Resolved filters: a half-open window [start_ns, end_ns) and the line predicates."""

    start_ns: int
    end_ns: int
    descending: bool = True
    limit: int = DEFAULT_LIMIT
    min_level: int = 0  # 0: every line, including lines with no level
    replica: str | None = None
    request_id: str | None = None
    component: str | None = None
    search_pattern: str | None = None
    includes: tuple[str, ...] = ()
    excludes: tuple[str, ...] = ()

    @classmethod
    def resolve(cls, f: LogWindow, now_ms: int | None = None) -> "LogQuery":
        if now_ms is None:
            now_ms = time.time_ns() // 1_000_000
        start, end = resolve_window(f.start_epoch_millis, f.end_epoch_millis, now_ms, DEFAULT_WINDOW_MS)
        return cls(
            start_ns=start * 1_000_000,
            end_ns=end * 1_000_000,
            descending=(f.direction or "desc") == "desc",
            limit=f.limit if f.limit is not None else DEFAULT_LIMIT,
            **_line_rules(f),
        )

    @classmethod
    def for_stream(cls, f: StreamWindow, limit: int, now_ms: int | None = None) -> "LogQuery":
        """The stream's filters; ``start_ns`` is the backlog's start (0: no backlog), at
        most 7 days back as for a window, and the lines come ``limit`` at a time."""
        if now_ms is None:
            now_ms = time.time_ns() // 1_000_000
        start = f.start_epoch_millis
        if start is not None and now_ms - start > MAX_WINDOW_MS:
            raise BadRequest(f"start_epoch_millis ({start}) is more than 7 days ({MAX_WINDOW_MS} ms) ago",
                             field="start_epoch_millis")
        return cls(start_ns=(start or 0) * 1_000_000, end_ns=0, descending=False, limit=limit, **_line_rules(f))


def _line_rules(f: BaseModel) -> dict[str, Any]:
    """The line predicates of any request shape (absent fields: no predicate)."""
    pattern = getattr(f, "search_pattern", None)
    if pattern is not None:
        check_pattern(pattern)
    level = getattr(f, "min_level", None)
    return {
        "min_level": LEVELS[level] if level else 0,
        "replica": getattr(f, "replica", None),
        "request_id": getattr(f, "request_id", None),
        "component": getattr(f, "component", None),
        "search_pattern": pattern,
        "includes": tuple(getattr(f, "includes", None) or ()),
        "excludes": tuple(getattr(f, "excludes", None) or ()),
    }


@dataclass(frozen=True)
class Target:
    """Whose logs: rows of ``scope`` narrowed by any of entity, parent, environment.

    A deployment is (deployment, entity=id); a model's environment is (deployment,
    parent=model id, environment=name); a chainlet, training job or loops deployment is
    its scope with its entity. ``entity`` completes the sort-key prefix (ws, scope,
    entity), so those reads are a range scan in (ts, seq) order.
    """

    scope: str
    entity: str | None = None
    parent: str | None = None
    environment: str | None = None

    def __post_init__(self):
        if self.scope not in SCOPES:
            raise ValueError(f"unknown scope {self.scope!r}")


class _Params:
    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    def text(self, value: str) -> str:
        return self.typed(value, "String")

    def typed(self, value: Any, type_: str) -> str:
        name = f"v{len(self.values)}"
        self.values[name] = value
        return f"{{{name}:{type_}}}"


#: what a LogV1 is read from: SELECT these columns and hand the result to :func:`log_views`
LOG_COLUMNS = "toString(toUnixTimestamp64Nano(ts)) AS timestamp, message, replica, request_id, level"


@dataclass(frozen=True)
class Arrival:
    """Lines by arrival instead of by time (the live tail): ``after < seq <= upto``, in
    seq order; ``since_ns``: of the lines numbered up to ``backlog_upto`` (those already
    stored when the stream opened) only those stamped at or after it."""

    after: int
    upto: int
    since_ns: int | None = None
    backlog_upto: int = 0


def build_sql(table: str, ws: str, target: Target, q: LogQuery, *, count: bool = False,
              arrival: Arrival | None = None) -> tuple[str, dict]:
    """The statement and its parameters. ``table`` is the qualified logs table;
    ``count``: the number of matching lines (``n``) instead of the lines; ``arrival``:
    the lines of that arrival range (with their ``seq``) instead of ``q``'s window."""
    p = _Params()
    where = [f"ws = {p.typed(ws, 'String')}", f"scope = {p.typed(target.scope, 'String')}"]
    if target.entity is not None:
        where.append(f"entity = {p.text(target.entity)}")
    if arrival is None:
        where.append(f"ts >= fromUnixTimestamp64Nano({p.typed(q.start_ns, 'Int64')}, 'UTC')")
        where.append(f"ts < fromUnixTimestamp64Nano({p.typed(q.end_ns, 'Int64')}, 'UTC')")
    else:
        # seq_idx (minmax per granule) skips the granules that arrived before the cursor
        where.append(f"seq > {p.typed(arrival.after, 'UInt64')}")
        where.append(f"seq <= {p.typed(arrival.upto, 'UInt64')}")
        if arrival.since_ns is not None and arrival.after < arrival.backlog_upto:
            where.append(f"(seq > {p.typed(arrival.backlog_upto, 'UInt64')}"
                         f" OR ts >= fromUnixTimestamp64Nano({p.typed(arrival.since_ns, 'Int64')}, 'UTC'))")
    # The other predicates go in PREWHERE, cheapest first. Left to itself ClickHouse moves
    # the key and window conditions there instead and decodes every ts (DoubleDelta, slow)
    # before it looks at a message; this way a granule's ts, message and the rest are read
    # only where the earlier steps left a line, which more than halves a rare search over a
    # day. parent and environment come first: an environment's query spans every model's
    # deployments in the workspace, and they skip the granules of other models and
    # environments before any message is decoded.
    pre = []
    if target.environment is not None:
        pre.append(f"environment = {p.text(target.environment)}")
    if target.parent is not None:
        pre.append(f"parent = {p.text(target.parent)}")
    if q.min_level:
        pre.append(f"level >= {p.typed(q.min_level, 'UInt8')}")  # level 0 (none) never passes
    for column in ("replica", "component", "request_id"):
        value = getattr(q, column)
        if value is not None:
            pre.append(f"{column} = {p.text(value)}")
    for term in q.includes:
        pre.append(f"position(message, {p.text(term)}) > 0")
    for term in q.excludes:
        pre.append(f"position(message, {p.text(term)}) = 0")
    if q.search_pattern is not None:
        # ClickHouse's match() is RE2 but lets '.' match '\n' by default; (?-s) restores
        # RE2's own default so results equal re2.search. A (?s) in the pattern still wins.
        pre.append(f"match(message, {p.text('(?-s)' + q.search_pattern)})")
    order = "DESC" if q.descending else "ASC"
    if count:
        select, tail = "count() AS n", ""
    elif arrival is not None:
        select, tail = f"{LOG_COLUMNS}, seq", f" ORDER BY seq LIMIT {p.typed(q.limit, 'UInt32')}"
    else:
        select, tail = LOG_COLUMNS, f" ORDER BY ts {order}, seq {order} LIMIT {p.typed(q.limit, 'UInt32')}"
    sql = (
        f"SELECT {select} FROM {table}"
        + (" PREWHERE " + " AND ".join(pre) if pre else "")
        + " WHERE " + " AND ".join(where)
        + tail
    )
    return sql, p.values


def log_views(t) -> list[dict]:
    """LogV1 dicts from rows selected with :data:`LOG_COLUMNS`."""
    cols = {name: t.column(name).to_pylist() for name in ("timestamp", "message", "replica", "request_id", "level")}
    return [
        {
            "timestamp": ts,
            "message": msg,
            "replica": replica or None,
            "request_id": request_id or None,
            "level": LEVEL_NAMES.get(level),
        }
        for ts, msg, replica, request_id, level in zip(
            cols["timestamp"], cols["message"], cols["replica"], cols["request_id"], cols["level"]
        )
    ]


def query_logs(store: Store, ws: str, target: Target, q: LogQuery) -> list[dict]:
    """LogV1 dicts, in the order asked for."""
    sql, params = build_sql(store.t("logs"), ws, target, q)
    return log_views(store.ex.query_arrow(sql, params))


def count_logs(store: Store, ws: str, target: Target, q: LogQuery) -> int:
    """How many lines match (the window and filters of ``q``; its order and limit aside)."""
    sql, params = build_sql(store.t("logs"), ws, target, q, count=True)
    return int(store.ex.query(sql, params)[0]["n"])
