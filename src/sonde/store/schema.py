"""The one schema: every table, as ClickHouse DDL, for every executor.

Telemetry tables are MergeTree, partitioned by day, ordered so the API's reads are
range scans: (workspace, scope, entity, metric, series, time) for samples and
(workspace, scope, entity, time, arrival) for logs. Time columns use DoubleDelta,
values Gorilla, text ZSTD. TTL drops telemetry after ``retention_days``.

Small mutable state (workspaces, keys, inventory, counter state) lives in
ReplacingMergeTree tables read with FINAL, so every API replica sees the same state
and nothing in process memory is needed for correctness.

Bump ``SCHEMA_VERSION`` with every change; ``migrate`` applies missing versions.
"""

from __future__ import annotations

from .base import Executor

SCHEMA_VERSION = 1

#: scope values: which vendor entity a row of telemetry belongs to.
SCOPES = ("deployment", "chainlet", "training_job", "loops")

#: log levels as stored; 0 is "no level detected".
LEVELS = {"DEBUG": 1, "INFO": 2, "WARNING": 3, "ERROR": 4}
LEVEL_NAMES = {v: k for k, v in LEVELS.items()}

#: metric point kinds as stored (ClickHouse Enum8).
KINDS = {"gauge": 1, "sum": 2, "histogram": 3, "exp_histogram": 4}

_TS = "DateTime64(9, 'UTC') CODEC(DoubleDelta, ZSTD(1))"


def _tables(ex: Executor, db: str, retention_days: int) -> list[str]:
    ttl = f"TTL toDateTime(ts) + INTERVAL {int(retention_days)} DAY"
    kinds = ", ".join(f"'{k}' = {v}" for k, v in KINDS.items())
    return [
        f"""CREATE TABLE IF NOT EXISTS {db}.meta (
            key String, value String, version UInt64
        ) ENGINE = {ex.engine('replacing', version='version')} ORDER BY (key)""",
        f"""CREATE TABLE IF NOT EXISTS {db}.workspaces (
            id String, name String, created_at DateTime64(3, 'UTC'), version UInt64
        ) ENGINE = {ex.engine('replacing', version='version')} ORDER BY (id)""",
        f"""CREATE TABLE IF NOT EXISTS {db}.api_keys (
            id String, ws String, name String, scope LowCardinality(String),
            hash String, created_at DateTime64(3, 'UTC'), revoked UInt8, version UInt64
        ) ENGINE = {ex.engine('replacing', version='version')} ORDER BY (id)""",
        # doc holds the resource's written fields as JSON; derived fields are computed.
        f"""CREATE TABLE IF NOT EXISTS {db}.inventory (
            ws String, kind LowCardinality(String), id String, parent String,
            doc String CODEC(ZSTD(1)), created_at DateTime64(3, 'UTC'),
            updated_at DateTime64(3, 'UTC'), version UInt64
        ) ENGINE = {ex.engine('replacing', version='version')} ORDER BY (ws, kind, id)""",
        # One row per data point. Sums and histograms are stored as deltas; for
        # cumulative series, cum_state keeps the raw cumulative point so the
        # delta state can be rebuilt from this table alone after a crash.
        f"""CREATE TABLE IF NOT EXISTS {db}.metric_points (
            ws LowCardinality(String),
            scope LowCardinality(String),
            entity String,
            parent String,
            metric LowCardinality(String),
            kind Enum8({kinds}),
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
            INDEX seq_idx seq TYPE minmax GRANULARITY 1
        ) ENGINE = {ex.engine('mergetree')}
        PARTITION BY toDate(ts)
        ORDER BY (ws, scope, entity, metric, series, ts)
        {ttl}""",
        f"""CREATE TABLE IF NOT EXISTS {db}.series_state (
            ws String, series UInt64, ts DateTime64(9, 'UTC'), state String, seq UInt64
        ) ENGINE = {ex.engine('replacing', version='seq')} ORDER BY (ws, series)""",
        f"""CREATE TABLE IF NOT EXISTS {db}.logs (
            ws LowCardinality(String),
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
            INDEX request_idx request_id TYPE bloom_filter(0.01) GRANULARITY 4
        ) ENGINE = {ex.engine('mergetree')}
        PARTITION BY toDate(ts)
        ORDER BY (ws, scope, entity, ts, seq)
        {ttl}""",
    ]


def create_all(ex: Executor, db: str, retention_days: int) -> None:
    """Create the database and every table; idempotent."""
    ex.command(f"CREATE DATABASE IF NOT EXISTS {db}")
    for ddl in _tables(ex, db, retention_days):
        ex.command(ddl)
    ex.command(
        f"INSERT INTO {db}.meta (key, value, version) VALUES ('schema_version', {{v:String}}, {{v:UInt64}})",
        {"v": SCHEMA_VERSION},
    )


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
