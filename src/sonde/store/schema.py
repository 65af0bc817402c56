"""The one schema: every table, declared once, rendered as DDL for every layout and as
the Arrow schemas ingest builds its rows with (:data:`ARROW_SCHEMAS`, through one small
table of type mappings), so the two cannot drift apart.

Telemetry tables are MergeTree, partitioned by day, ordered so the API's reads are
range scans: (workspace, scope, entity, metric, series, time) for samples and
(workspace, scope, entity, time, arrival) for logs. Time columns use DoubleDelta,
metric values ZSTD(3), text ZSTD. TTL drops telemetry after ``retention_days``.

Small mutable state (workspaces, keys, inventory, counter state) lives in
ReplacingMergeTree tables read with FINAL, so every API replica sees the same state
and nothing in process memory is needed for correctness.

On a cluster (``Executor.cluster`` set) each table ``T`` becomes ``T_local``, a
Replicated* table created ON CLUSTER, behind a Distributed table named ``T`` sharded by
:attr:`Table.shard_by`. Every shard key is a function of the table's replacing key
(state tables) or of (workspace, entity) (telemetry), so FINAL deduplicates within one
shard and one deployment's data lives on one shard. The SQL above the store only ever
names ``T``, so it is the same on both layouts.

Materialized views (:data:`VIEWS`, declared in ``store/views.py``) fill summary tables
inside the INSERT into metric_points, on each shard from and into its local tables.

Schema changes are ``store/migrations.py``'s numbered migrations, applied in order and
recorded in ``meta``.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from .arrowtypes import arrow_type
# the views, and names of theirs that callers read here (query/, tests)
from .views import (GPU_INDEX, HTTP_STATUS, ROLLUP_FROM_SEQ, ROLLUP_LEVELS_S,  # noqa: F401
                    ROLLUP_METRICS, TOTALS_SELECT, VIEWS, VIEWS_BY_NAME, View)

LOGS_SEQ_INDEX = "seq_idx seq TYPE minmax GRANULARITY 1"

#: scope values: which vendor entity a row of telemetry belongs to.
SCOPES = ("deployment", "chainlet", "training_job", "loops")

#: log levels as stored; 0 is "no level detected".
LEVELS = {"DEBUG": 1, "INFO": 2, "WARNING": 3, "ERROR": 4}
LEVEL_NAMES = {v: k for k, v in LEVELS.items()}

#: metric point kinds as stored (ClickHouse Enum8).
KINDS = {"gauge": 1, "sum": 2, "histogram": 3, "exp_histogram": 4}

_KINDS = ", ".join(f"'{k}' = {v}" for k, v in KINDS.items())


@dataclass(frozen=True)
class Column:
    name: str
    #: the ClickHouse type; :func:`arrow_type` gives the Arrow type rows are built with
    type: str
    #: ClickHouse codecs, e.g. "Gorilla, ZSTD(1)"; None: the server's default
    codec: str | None = None
    #: constant over a group of rows (one resource's metric, one resource's log records):
    #: ingest keeps one value per group and expands it when building the Arrow table
    group: bool = False
    #: computed by ClickHouse from the row's other columns at insert (MATERIALIZED):
    #: ingest never builds it, and ``SELECT *`` leaves it out
    materialized: str | None = None

    def ddl(self) -> str:
        return (f"{self.name} {self.type}" + (f" MATERIALIZED {self.materialized}" if self.materialized else "")
                + (f" CODEC({self.codec})" if self.codec else ""))


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[Column, ...]
    order_by: str
    #: expression of the columns choosing the shard on a cluster
    shard_by: str
    #: ReplacingMergeTree's version column; None: a plain MergeTree
    version: str | None = None
    #: telemetry: partitioned by day and dropped after the retention
    telemetry: bool = False
    #: another MergeTree-family engine (e.g. AggregatingMergeTree); None: as above
    engine: str | None = None
    #: table SETTINGS, e.g. "index_granularity = 1024"; None: the server's defaults
    settings: str | None = None
    #: data-skipping indexes, each "name expression TYPE type GRANULARITY n"
    indexes: tuple[str, ...] = ()


_LC = "LowCardinality(String)"
_TS = "DateTime64(9, 'UTC')"
_MS = "DateTime64(3, 'UTC')"
_ATTRS = f"Map({_LC}, String)"
_TIME = "DoubleDelta, ZSTD(1)"
#: Plain ZSTD(3), not Gorilla: GPU utilisations (ratios, noisy mantissas) took 7.1
#: bytes a value with Gorilla + ZSTD(1) and 3.0 with ZSTD(3); memory in 2 MiB blocks
#: 1.9 and 2.0, histogram sums 5.4 and 4.5 (bench/peers' week of one deployment;
#: docs/benchmarks.md, "Disk").
FLOAT_CODEC = "ZSTD(3)"
_Z = "ZSTD(1)"
#: Spans come in the largest numbers of any table, a part per group commit; merging more
#: parts at once than ClickHouse's default (base 5) took the merge work of span ingest
#: from ~7 to ~4.5 CPU-seconds per 1M spans, for more parts alive at a time (the
#: requests queries stayed near 50 ms: docs/benchmarks.md, "Requests").
SPANS_MERGES = "merge_selector_base = 50"
_U64 = "UInt64"


#: a point's GPU label and HTTP status code, computed once at insert: GPU and request
#: questions read them (a few bytes a part) instead of every point's attribute map, a
#: quarter of their time (benchmarks.md)
LABEL_COLUMNS = (GPU_COLUMN := Column("gpu", _LC, materialized=GPU_INDEX),
                 STATUS_COLUMN := Column("http_status", "UInt16", materialized=HTTP_STATUS))


def _cols(*spec: str | Column) -> tuple[Column, ...]:
    """Columns from ``"name Type"`` strings (no codec, not grouped) and :class:`Column` s."""
    return tuple(c if isinstance(c, Column) else Column(*c.split(" ", 1)) for c in spec)


def _group(*names_types: str) -> tuple[Column, ...]:
    """Group columns (:attr:`Column.group`) from ``"name Type"`` strings."""
    return tuple(Column(*c.split(" ", 1), group=True) for c in names_types)


TABLES: tuple[Table, ...] = (
    Table("meta", _cols("key String", "value String", "version UInt64"), "key", "cityHash64(key)",
          version="version"),
    Table("workspaces", _cols("id String", "name String", f"created_at {_MS}", "version UInt64"),
          "id", "cityHash64(id)", version="version"),
    Table("api_keys", _cols("id String", "ws String", "name String", f"scope {_LC}", "hash String",
                            f"created_at {_MS}", "revoked UInt8", "version UInt64"),
          "id", "cityHash64(id)", version="version"),
    # doc holds the resource's written fields as JSON; derived fields are computed.
    Table("inventory", _cols("ws String", f"kind {_LC}", "id String", "parent String",
                             Column("doc", "String", _Z), f"created_at {_MS}", f"updated_at {_MS}",
                             "version UInt64"),
          "(ws, kind, id)", "cityHash64(ws, kind, id)", version="version"),
    # One row per data point. Sums and histograms are stored as deltas; for cumulative
    # series, cum_state keeps the raw cumulative point so the delta state can be
    # rebuilt from this table alone after a crash.
    Table("metric_points", (
        *_group(f"ws {_LC}", f"scope {_LC}", "entity String", "parent String", f"metric {_LC}",
                f"kind Enum8({_KINDS})", "monotonic Bool", f"unit {_LC}"),
        Column("series", _U64),
        *_group(f"replica {_LC}", "node_rank Int32"),
        Column("attrs", _ATTRS, _Z),
        Column("ts", _TS, _TIME), Column("start_ts", _TS, _TIME),
        Column("value", "Float64", FLOAT_CODEC), Column("count", _U64, "T64, ZSTD(1)"),
        *(Column(name, "Float64", FLOAT_CODEC) for name in ("sum", "min", "max")),
        Column("bounds", "Array(Float64)", _Z), Column("buckets", "Array(UInt64)", _Z),
        Column("scale", "Int8"), Column("zero_count", _U64),
        Column("pos_offset", "Int32"), Column("pos_buckets", "Array(UInt64)", _Z),
        Column("neg_offset", "Int32"), Column("neg_buckets", "Array(UInt64)", _Z),
        Column("cum_state", "String", "ZSTD(3)"),
        Column("seq", _U64, _TIME),
        *LABEL_COLUMNS,
    ), "(ws, scope, entity, metric, series, ts)", "cityHash64(ws, entity)", telemetry=True,
        indexes=("seq_idx seq TYPE minmax GRANULARITY 1",)),
    Table("series_state", _cols("ws String", "series UInt64", f"ts {_TS}", "state String", "seq UInt64"),
          "(ws, series)", "cityHash64(ws, series)", version="seq"),
    Table("logs", (
        *_group(f"ws {_LC}", f"scope {_LC}", "entity String", "parent String", f"environment {_LC}"),
        Column("ts", _TS, _TIME), Column("seq", _U64, "Delta, ZSTD(1)"),
        *_group(f"replica {_LC}"),
        Column("request_id", "String", _Z), Column("component", _LC), Column("level", "UInt8"),
        Column("message", "String", _Z), Column("attrs", _ATTRS, _Z),
    ), "(ws, scope, entity, ts, seq)", "cityHash64(ws, entity)", telemetry=True,
        # seq_idx: the live tail reads an entity's lines by arrival (seq > cursor), not by time
        indexes=("request_idx request_id TYPE bloom_filter(0.01) GRANULARITY 4", LOGS_SEQ_INDEX)),
    # Training-job metrics per series and bucket (ROLLUP_LEVELS_S), filled by the
    # materialized view of VIEWS inside every insert into metric_points; rows of one key
    # add up at merges (and under FINAL when read). Bucket start in ``ts`` (seconds);
    # gpu, mount and node_id are the point's attributes, read once here instead of from
    # every point's map at query time (query/training_values.py, docs/training.md).
    Table("training_rollup", (
        *_cols(f"ws {_LC}", "entity String", "res UInt32", f"metric {_LC}", "monotonic Bool", "series UInt64"),
        Column("ts", "DateTime('UTC')", "DoubleDelta, LZ4"),
        *_cols(f"unit {_LC}", f"replica {_LC}", "node_rank Int32", f"gpu {_LC}", f"mount {_LC}",
               f"node_id {_LC}", "n SimpleAggregateFunction(sum, UInt64)",
               "total SimpleAggregateFunction(sum, Float64)"),
        Column("first_ns", "SimpleAggregateFunction(min, Int64)", "Delta, LZ4"),
        Column("last_ns", "SimpleAggregateFunction(max, Int64)", "Delta, LZ4"),
    ), "(ws, entity, res, metric, series, ts, monotonic, unit, replica, node_rank, gpu, mount, node_id)",
          # small granules: a query reads one level, one metric or a few days of it
          "cityHash64(ws, entity)", telemetry=True, engine="AggregatingMergeTree",
          settings="index_granularity = 1024"),
    # One row per OTLP span. Server spans (kind 2) are the entity's requests: request_id
    # is the request's X-Request-ID where the span carries one, else its trace id.
    # Ids in lower-case hex; ts is the start, duration in nanoseconds. kind is in the key:
    # an entity's requests (its server spans) in a window are one range.
    Table("spans", (
        *_group(f"ws {_LC}", f"scope {_LC}", "entity String", "parent String", f"replica {_LC}"),
        Column("ts", _TS, _TIME), Column("duration_ns", _U64, "T64, ZSTD(1)"),
        Column("trace_id", "String", _Z), Column("span_id", "String", _Z), Column("parent_span_id", "String", _Z),
        Column("name", "String", _Z), Column("kind", "UInt8"), Column("status_code", "UInt8"),
        Column("status_message", "String", _Z), Column("http_status", "UInt16"), Column("route", "String", _Z),
        Column("request_id", "String", _Z), Column("attrs", _ATTRS, _Z), Column("seq", _U64, "Delta, ZSTD(1)"),
    ), "(ws, scope, entity, kind, ts, seq)", "cityHash64(ws, entity)", telemetry=True,
        indexes=("span_request_idx request_id TYPE bloom_filter(0.01) GRANULARITY 4",
                 "span_trace_idx trace_id TYPE bloom_filter(0.01) GRANULARITY 4"), settings=SPANS_MERGES),
    # Histogram exemplars with a trace id: the request a latency sample came from (a chart step -> its requests).
    Table("exemplars", (
        *_group(f"ws {_LC}", f"scope {_LC}", "entity String", f"metric {_LC}", f"replica {_LC}"),
        Column("ts", _TS, _TIME), Column("value", "Float64", FLOAT_CODEC),
        Column("trace_id", "String", _Z), Column("span_id", "String", _Z), Column("attrs", _ATTRS, _Z),
    ), "(ws, scope, entity, metric, ts)", "cityHash64(ws, entity)", telemetry=True),
    # Running totals of every deployment counter and histogram series since Sonde first
    # stored it (``GET /metrics``: totals that neither a replica's reset nor the TTL of
    # metric_points lowers), filled by the materialized view of VIEWS inside every insert
    # into metric_points; rows of one key add up at merges. ``layout`` tells a histogram's
    # bucket layouts apart (its bounds, or its exponential scale); buckets are keyed by
    # index (exponential: the absolute index at that scale).
    Table("series_totals", (
        *_cols(f"ws {_LC}", "entity String", "series UInt64", "layout UInt64",
               # constant per key: the series' own facts
               *(f"{c} SimpleAggregateFunction(any, {t})" for c, t in (
                   ("metric", "String"), ("kind", f"Enum8({_KINDS})"), ("unit", "String"), ("replica", "String"),
                   ("attrs", "Map(String, String)"),
                   ("bounds", "Array(Float64)"), ("scale", "Int8"))),
               "total SimpleAggregateFunction(sum, Float64)", "n SimpleAggregateFunction(sum, UInt64)",
               "s SimpleAggregateFunction(sum, Float64)", "low SimpleAggregateFunction(sum, UInt64)",
               "buckets SimpleAggregateFunction(sumMap, Map(Int32, UInt64))",
               f"last_ts SimpleAggregateFunction(max, {_TS})"),
    ), "(ws, entity, series, layout)", "cityHash64(ws, entity)", engine="AggregatingMergeTree"),
    # Alert rules, receivers and alert state (kind 'rule', 'receiver', 'state'): JSON
    # documents, newest version wins, a deletion is a row with deleted = 1 (store/alerts.py).
    Table("alert_docs", _cols("ws String", f"kind {_LC}", "id String", Column("doc", "String", _Z),
                              "deleted UInt8", "version UInt64"),
          "(ws, kind, id)", "cityHash64(ws, kind, id)", version="version"),
)
BY_NAME = {t.name: t for t in TABLES}

def on_cluster(cluster: str | None) -> str:
    return f" ON CLUSTER '{cluster}'" if cluster else ""


def create_database(db: str, cluster: str | None) -> str:
    return f"CREATE DATABASE IF NOT EXISTS {db}{on_cluster(cluster)}"


def create_table(t: Table, db: str, retention_days: int, cluster: str | None = None) -> list[str]:
    """DDL for ``t``: one statement embedded; the replicated local table and the
    Distributed table in front of it on a cluster."""
    engine = t.engine or ("ReplacingMergeTree" if t.version else "MergeTree")
    local = f"{t.name}_local" if cluster else t.name
    args = [f"'/clickhouse/tables/{{shard}}/{db}/{local}'", "'{replica}'"] if cluster else []
    args += [t.version] if t.version else []
    body = ",\n    ".join([*(c.ddl() for c in t.columns), *(f"INDEX {i}" for i in t.indexes)])
    parts = [f"CREATE TABLE IF NOT EXISTS {db}.{local}{on_cluster(cluster)} (\n    {body}\n)",
             f"ENGINE = {'Replicated' if cluster else ''}{engine}({', '.join(args)})"]
    if t.telemetry:
        parts.append("PARTITION BY toDate(ts)")
    parts.append(f"ORDER BY {t.order_by}")
    if t.telemetry:
        parts.append(f"TTL toDateTime(ts) + INTERVAL {int(retention_days)} DAY")
    if t.settings:
        parts.append(f"SETTINGS {t.settings}")
    ddl = ["\n".join(parts)]
    if cluster:
        ddl.append(f"CREATE TABLE IF NOT EXISTS {db}.{t.name}{on_cluster(cluster)} AS {db}.{local}"
                   f" ENGINE = Distributed('{cluster}', '{db}', '{local}', {t.shard_by})")
    return ddl


def create_view(v: View, db: str, cluster: str | None = None) -> str:
    suffix = "_local" if cluster else ""
    return (f"CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.{v.name}{on_cluster(cluster)} TO {db}.{v.target}{suffix}"
            f" AS {v.select.format(src=f'{db}.metric_points{suffix}')}")


def arrow_schema(table: str) -> pa.Schema:
    return pa.schema([(c.name, arrow_type(c.type)) for c in BY_NAME[table].columns if not c.materialized])


def group_columns(table: str) -> tuple[str, ...]:
    """The :attr:`Column.group` columns of ``table``, in table order."""
    return tuple(c.name for c in BY_NAME[table].columns if c.group)


#: Arrow schema of every table, built once; ingest builds its rows to these.
ARROW_SCHEMAS = {t.name: arrow_schema(t.name) for t in TABLES}
