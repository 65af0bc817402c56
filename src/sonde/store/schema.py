"""The one schema: every table, declared once, rendered as DDL for every layout.

Telemetry tables are MergeTree, partitioned by day, ordered so the API's reads are
range scans: (workspace, scope, entity, metric, series, time) for samples and
(workspace, scope, entity, time, arrival) for logs. Time columns use DoubleDelta,
values Gorilla, text ZSTD. TTL drops telemetry after ``retention_days``.

Small mutable state (workspaces, keys, inventory, counter state) lives in
ReplacingMergeTree tables read with FINAL, so every API replica sees the same state
and nothing in process memory is needed for correctness.

On a cluster (``Executor.cluster`` set) each table ``T`` becomes ``T_local``, a
Replicated* table created ON CLUSTER, behind a Distributed table named ``T`` sharded by
:attr:`Table.shard_by`. Every shard key is a function of the table's replacing key
(state tables) or of (workspace, entity) (telemetry), so FINAL deduplicates within one
shard and one deployment's data lives on one shard. The SQL above the store only ever
names ``T``, so it is the same on both layouts.

Materialized views (:data:`VIEWS`) fill summary tables inside the INSERT into
metric_points, on each shard from and into its local tables.

Schema changes are :data:`MIGRATIONS`, applied in order by :func:`migrate` and recorded
in ``meta``; each statement is idempotent (IF NOT EXISTS), so a migration interrupted
half way is simply run again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .._exceptions import StoreError
from .base import Executor

#: the newest entry of MIGRATIONS; a store at an older version needs ``sonde migrate``
SCHEMA_VERSION = 2

#: scope values: which vendor entity a row of telemetry belongs to.
SCOPES = ("deployment", "chainlet", "training_job", "loops")

#: log levels as stored; 0 is "no level detected".
LEVELS = {"DEBUG": 1, "INFO": 2, "WARNING": 3, "ERROR": 4}
LEVEL_NAMES = {v: k for k, v in LEVELS.items()}

#: metric point kinds as stored (ClickHouse Enum8).
KINDS = {"gauge": 1, "sum": 2, "histogram": 3, "exp_histogram": 4}

_TS = "DateTime64(9, 'UTC') CODEC(DoubleDelta, ZSTD(1))"
_KINDS = ", ".join(f"'{k}' = {v}" for k, v in KINDS.items())


@dataclass(frozen=True)
class Table:
    name: str
    columns: str
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


TABLES: tuple[Table, ...] = (
    Table("meta", "key String, value String, version UInt64", "key", "cityHash64(key)", version="version"),
    Table("workspaces", "id String, name String, created_at DateTime64(3, 'UTC'), version UInt64",
          "id", "cityHash64(id)", version="version"),
    Table("api_keys", """id String, ws String, name String, scope LowCardinality(String),
            hash String, created_at DateTime64(3, 'UTC'), revoked UInt8, version UInt64""",
          "id", "cityHash64(id)", version="version"),
    # doc holds the resource's written fields as JSON; derived fields are computed.
    Table("inventory", """ws String, kind LowCardinality(String), id String, parent String,
            doc String CODEC(ZSTD(1)), created_at DateTime64(3, 'UTC'),
            updated_at DateTime64(3, 'UTC'), version UInt64""",
          "(ws, kind, id)", "cityHash64(ws, kind, id)", version="version"),
    # One row per data point. Sums and histograms are stored as deltas; for cumulative
    # series, cum_state keeps the raw cumulative point so the delta state can be
    # rebuilt from this table alone after a crash.
    Table("metric_points", f"""ws LowCardinality(String),
            scope LowCardinality(String),
            entity String,
            parent String,
            metric LowCardinality(String),
            kind Enum8({_KINDS}),
            monotonic Bool,
            unit LowCardinality(String),
            series UInt64,
            replica LowCardinality(String),
            node_rank Int32,
            attrs Map(LowCardinality(String), String) CODEC(ZSTD(1)),
            ts {_TS},
            start_ts {_TS},
            value Float64 CODEC(Gorilla, ZSTD(1)),
            count UInt64 CODEC(T64, ZSTD(1)),
            sum Float64 CODEC(Gorilla, ZSTD(1)),
            min Float64 CODEC(Gorilla, ZSTD(1)),
            max Float64 CODEC(Gorilla, ZSTD(1)),
            bounds Array(Float64) CODEC(ZSTD(1)),
            buckets Array(UInt64) CODEC(ZSTD(1)),
            scale Int8,
            zero_count UInt64,
            pos_offset Int32,
            pos_buckets Array(UInt64) CODEC(ZSTD(1)),
            neg_offset Int32,
            neg_buckets Array(UInt64) CODEC(ZSTD(1)),
            cum_state String CODEC(ZSTD(3)),
            seq UInt64 CODEC(DoubleDelta, ZSTD(1)),
            INDEX seq_idx seq TYPE minmax GRANULARITY 1""",
          "(ws, scope, entity, metric, series, ts)", "cityHash64(ws, entity)", telemetry=True),
    Table("series_state", "ws String, series UInt64, ts DateTime64(9, 'UTC'), state String, seq UInt64",
          "(ws, series)", "cityHash64(ws, series)", version="seq"),
    Table("logs", f"""ws LowCardinality(String),
            scope LowCardinality(String),
            entity String,
            parent String,
            environment LowCardinality(String),
            ts {_TS},
            seq UInt64 CODEC(Delta, ZSTD(1)),
            replica LowCardinality(String),
            request_id String CODEC(ZSTD(1)),
            component LowCardinality(String),
            level UInt8,
            message String CODEC(ZSTD(1)),
            attrs Map(LowCardinality(String), String) CODEC(ZSTD(1)),
            INDEX request_idx request_id TYPE bloom_filter(0.01) GRANULARITY 4""",
          "(ws, scope, entity, ts, seq)", "cityHash64(ws, entity)", telemetry=True),
    # Training-job metrics per series and bucket (ROLLUP_LEVELS_S), filled by the
    # materialized view of VIEWS inside every insert into metric_points; rows of one key
    # add up at merges (and under FINAL when read). Bucket start in ``ts`` (seconds);
    # gpu, mount and node_id are the point's attributes, read once here instead of from
    # every point's map at query time (query/training_values.py, docs/training.md).
    Table("training_rollup", """ws LowCardinality(String),
            entity String,
            res UInt32,
            metric LowCardinality(String),
            monotonic Bool,
            series UInt64,
            ts DateTime('UTC') CODEC(DoubleDelta, LZ4),
            unit LowCardinality(String),
            replica LowCardinality(String),
            node_rank Int32,
            gpu LowCardinality(String),
            mount LowCardinality(String),
            node_id LowCardinality(String),
            n SimpleAggregateFunction(sum, UInt64),
            total SimpleAggregateFunction(sum, Float64),
            first_ns SimpleAggregateFunction(min, Int64) CODEC(Delta, LZ4),
            last_ns SimpleAggregateFunction(max, Int64) CODEC(Delta, LZ4)""",
          "(ws, entity, res, metric, series, ts, monotonic, unit, replica, node_rank, gpu, mount, node_id)",
          # small granules: a query reads one level, one metric or a few days of it
          "cityHash64(ws, entity)", telemetry=True, engine="AggregatingMergeTree",
          settings="index_granularity = 1024"),
)
BY_NAME = {t.name: t for t in TABLES}

#: metrics the training rollup keeps (the sources of query/training.METRICS), and its
#: bucket lengths in seconds: the values' levels, and one day for each series' labels
ROLLUP_METRICS = ("hw.gpu.memory.usage", "hw.gpu.utilization", "process.cpu.time", "container.cpu.time",
                  "process.memory.usage", "container.memory.working_set", "system.filesystem.usage",
                  "system.filesystem.limit")
ROLLUP_LEVELS_S = (60, 300, 600, 86400)
#: meta key: one more than the largest ``seq`` when the rollup's view was created;
#: points below it may be missing from the rollup, so windows holding any are read raw
ROLLUP_FROM_SEQ = "training_rollup_from_seq"


@dataclass(frozen=True)
class View:
    """A materialized view from metric_points into ``target`` (on a cluster: from and
    to the shard's local tables; both are sharded alike, so rows stay on their shard)."""

    name: str
    target: str
    #: SELECT with ``{src}`` where the source table goes
    select: str


_ROLLUP_SELECT = f"""SELECT ws, entity, res, metric, monotonic, series,
       toDateTime(intDiv(t_ns, res * 1000000000) * res, 'UTC') AS ts, unit, replica, node_rank, gpu, mount, node_id,
       count() AS n, sum(value) AS total, min(t_ns) AS first_ns, max(t_ns) AS last_ns
FROM (
    SELECT ws, entity, metric, monotonic, series, toUnixTimestamp64Nano(ts) AS t_ns, unit, replica, node_rank,
           if(mapContains(attrs, 'hw.gpu.index'), attrs['hw.gpu.index'], attrs['gpu']) AS gpu,
           attrs['sonde.mount'] AS mount, attrs['sonde.node_id'] AS node_id, value
    FROM {{src}}
    WHERE scope = 'training_job' AND kind IN ('gauge', 'sum')
      AND metric IN ({", ".join(f"'{m}'" for m in ROLLUP_METRICS)})
)
ARRAY JOIN [{", ".join(str(r) for r in ROLLUP_LEVELS_S)}] AS res
GROUP BY ws, entity, res, metric, monotonic, series, ts, unit, replica, node_rank, gpu, mount, node_id"""

VIEWS: tuple[View, ...] = (View("training_rollup_mv", "training_rollup", _ROLLUP_SELECT),)


def _on(cluster: str | None) -> str:
    return f" ON CLUSTER '{cluster}'" if cluster else ""


def create_database(db: str, cluster: str | None) -> str:
    return f"CREATE DATABASE IF NOT EXISTS {db}{_on(cluster)}"


def create_table(t: Table, db: str, retention_days: int, cluster: str | None = None) -> list[str]:
    """DDL for ``t``: one statement embedded; the replicated local table and the
    Distributed table in front of it on a cluster."""
    engine = t.engine or ("ReplacingMergeTree" if t.version else "MergeTree")
    local = f"{t.name}_local" if cluster else t.name
    args = [f"'/clickhouse/tables/{{shard}}/{db}/{local}'", "'{replica}'"] if cluster else []
    args += [t.version] if t.version else []
    parts = [f"CREATE TABLE IF NOT EXISTS {db}.{local}{_on(cluster)} ({t.columns})",
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
        ddl.append(f"CREATE TABLE IF NOT EXISTS {db}.{t.name}{_on(cluster)} AS {db}.{local}"
                   f" ENGINE = Distributed('{cluster}', '{db}', '{local}', {t.shard_by})")
    return ddl


def create_view(v: View, db: str, cluster: str | None = None) -> str:
    suffix = "_local" if cluster else ""
    return (f"CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.{v.name}{_on(cluster)} TO {db}.{v.target}{suffix}"
            f" AS {v.select.format(src=f'{db}.metric_points{suffix}')}")


@dataclass(frozen=True)
class Migration:
    version: int
    what: str
    #: (db, retention_days, cluster) -> idempotent statements
    statements: Callable[[str, int, str | None], Sequence[str]]


def _v1(db: str, retention_days: int, cluster: str | None) -> list[str]:
    return [s for t in TABLES for s in create_table(t, db, retention_days, cluster)]


def _v2(db: str, retention_days: int, cluster: str | None) -> list[str]:
    # Migration 1 renders every table, so a new store already has the rollup; a store
    # at version 1 gets it here. The view sees inserts from its creation on; the seq
    # recorded after it marks which points the rollup may lack (re-running records a
    # later one, which is only more cautious).
    return [*create_table(BY_NAME["training_rollup"], db, retention_days, cluster),
            *(create_view(v, db, cluster) for v in VIEWS),
            f"INSERT INTO {db}.meta (key, value, version) SELECT '{ROLLUP_FROM_SEQ}', toString(max(seq) + 1), 2"
            f" FROM {db}.metric_points"]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "workspaces, keys, inventory, metric points, series state, logs", _v1),
    Migration(2, "training rollup: per-bucket summaries of training-job metrics, filled at insert", _v2),
)


def current_version(ex: Executor, db: str) -> int:
    """The schema version recorded in ``db``; 0 when it has no schema yet."""
    exists = ex.query("SELECT count() AS n FROM system.tables WHERE database = {db:String} AND name = 'meta'",
                      {"db": db})
    if not exists[0]["n"]:
        return 0
    rows = ex.query(f"SELECT max(version) AS v FROM {db}.meta FINAL WHERE key = 'schema_version'")
    return int(rows[0]["v"] or 0)


def migrate(ex: Executor, db: str, retention_days: int,
            migrations: Sequence[Migration] = MIGRATIONS) -> tuple[int, int]:
    """Bring ``db`` to the newest version; returns (version before, version after).
    Safe to run any number of times, from any number of processes."""
    cluster = ex.cluster
    ex.command(create_database(db, cluster))
    before = current_version(ex, db)
    after = before
    for m in migrations:
        if m.version <= before:
            continue
        for sql in m.statements(db, retention_days, cluster):
            ex.command(sql)
        # meta exists from version 1 on; the newest version row wins under FINAL
        ex.command(f"INSERT INTO {db}.meta (key, value, version) VALUES ('schema_version', {{v:String}}, {{v:UInt64}})",
                   {"v": m.version})
        after = m.version
    return before, after


def require(ex: Executor, db: str, version: int = SCHEMA_VERSION) -> None:
    """Refuse a store whose schema is older (or newer) than this build's."""
    have = current_version(ex, db)
    if have != version:
        hint = "run `sonde migrate`" if have < version else "upgrade Sonde"
        raise StoreError(f"store {db!r} is at schema version {have}; this build needs {version}: {hint}")


def _arrow_schemas():
    import pyarrow as pa

    ts = pa.timestamp("ns", tz="UTC")
    attrs = pa.map_(pa.string(), pa.string())
    u64s = pa.list_(pa.uint64())
    return {
        "metric_points": pa.schema([
            ("ws", pa.string()), ("scope", pa.string()), ("entity", pa.string()),
            ("parent", pa.string()), ("metric", pa.string()), ("kind", pa.string()),
            ("monotonic", pa.bool_()), ("unit", pa.string()), ("series", pa.uint64()),
            ("replica", pa.string()), ("node_rank", pa.int32()), ("attrs", attrs),
            ("ts", ts), ("start_ts", ts), ("value", pa.float64()), ("count", pa.uint64()),
            ("sum", pa.float64()), ("min", pa.float64()), ("max", pa.float64()),
            ("bounds", pa.list_(pa.float64())), ("buckets", u64s), ("scale", pa.int8()),
            ("zero_count", pa.uint64()), ("pos_offset", pa.int32()), ("pos_buckets", u64s),
            ("neg_offset", pa.int32()), ("neg_buckets", u64s), ("cum_state", pa.string()),
            ("seq", pa.uint64()),
        ]),
        "series_state": pa.schema([
            ("ws", pa.string()), ("series", pa.uint64()), ("ts", ts),
            ("state", pa.string()), ("seq", pa.uint64()),
        ]),
        "logs": pa.schema([
            ("ws", pa.string()), ("scope", pa.string()), ("entity", pa.string()),
            ("parent", pa.string()), ("environment", pa.string()), ("ts", ts),
            ("seq", pa.uint64()), ("replica", pa.string()), ("request_id", pa.string()),
            ("component", pa.string()), ("level", pa.uint8()), ("message", pa.string()),
            ("attrs", attrs),
        ]),
    }


#: Arrow schema of each table the BatchWriter fills; ingest builds rows to these.
ARROW_SCHEMAS = _arrow_schemas()
