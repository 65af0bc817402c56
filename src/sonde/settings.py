"""Server settings: one table of name, default and help.

Each setting is read, in order of precedence, from the command line, the environment
variable ``SONDE_<NAME>`` (upper case), the config file (TOML, keys are the setting
names; ``--config FILE`` or ``SONDE_CONFIG``), or the default. ``docs/settings.md`` documents
each one; ``tests/test_settings.py`` keeps the two in step.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, fields
from typing import Any

from ._exceptions import BadRequest


@dataclass(frozen=True)
class Setting:
    name: str
    default: Any
    help: str
    choices: tuple[str, ...] = ()
    #: the smallest value allowed (numbers only); None: any
    minimum: float | None = None


SETTINGS: tuple[Setting, ...] = (
    Setting("data_dir", "./sonde-data", "Directory of the embedded store and credentials.json."),
    Setting("host", "127.0.0.1", "Address the HTTP server listens on."),
    Setting("port", 8080, "Port the HTTP server listens on."),
    Setting("store", "chdb", "Store URL: 'chdb' (embedded, in data_dir) or"
            " clickhouse://user:password@host:8123/db?cluster=NAME (docs/scale-out.md)."),
    Setting("retention_days", 30, "Days telemetry is kept: the server drops each day partition once it is wholly"
            " older, every retention_check_seconds (ClickHouse's TTL is the backstop).", minimum=1),
    Setting("retention_check_seconds", 3600.0, "Seconds between two passes dropping partitions older than"
            " retention_days (the first a minute after start, or sooner if this is shorter).", minimum=1),
    Setting("max_body_bytes", 16 * 1024 * 1024, "Largest OTLP or remote-write request body, after gzip or snappy is undone; larger: 413."),
    Setting("flush_interval_ms", 100, "Longest a row waits before its group commit starts where ingest is"
            " acknowledged on commit (no write-ahead log: see wal).", minimum=0),
    Setting("wal", "auto", "Whether ingest is acknowledged once written to a write-ahead log in data_dir/wal and"
            " committed in larger batches every wal_flush_interval_ms, reads flushing it first ('on'; 'auto':"
            " on the embedded store), or acknowledged on its commit ('off'; always on a ClickHouse store,"
            " where a read on one API replica cannot flush another's log; docs/architecture.md#write-ahead-log).",
            ("auto", "on", "off")),
    Setting("wal_flush_interval_ms", 1000, "Longest an acknowledged row waits in the write-ahead log before its"
            " group commit starts (a read commits what waits at once).", minimum=0),
    Setting("wal_live_flush_interval_ms", 250, "The same while a live tail is open: a tail sees a line once it is"
            " committed, and every commit wakes every open tail to read (docs/benchmarks.md, live tail).",
            minimum=0),
    Setting("batch_max_rows", 50_000, "Rows that start a group commit at once."),
    Setting("query_cache_mb", 64.0, "MiB of deployment-metrics answers (as sent) kept for identical questions,"
            " each dropped by any write that reaches its window (0: none; only where this server is the store's one"
            " writer; docs/api.md#caching).", minimum=0),
    Setting("recent_minutes", 120.0, "Minutes of the catalogue gauges' points (GPU, memory, concurrency, LLM engine)"
            " kept in memory to answer a metrics window within them without a statement (0: none; only where this"
            " server is the store's one writer; ~50 bytes a point; docs/metrics.md#recent-points).", minimum=0),
    Setting("request_count_hours", 192.0, "Hours of the request histograms summed per five minutes (observations"
            " by replica and status class; observations, sums, extremes and buckets by replica and bucket layout) kept"
            " in memory to answer requests by status and their latency over a window on five-minute boundaries without"
            " a statement (0: none; only where this server is the store's one writer; per replica, 37 KB a status class"
            " and ~250 KB a 12-bucket layout for 192 hours; docs/metrics.md#request-counts).", minimum=0),
    Setting("gauge_sum_hours", 192.0, "Hours of the catalogue gauges' holds (those recent_minutes keeps) summed per"
            " series in memory, per 5 minutes for the last 26 hours and per 30 minutes for the whole time, to answer a"
            " metrics window on those boundaries in steps of them without a statement (0: none; only where this server"
            " is the store's one writer; ~12 KB a series for 192 hours; docs/metrics.md#gauge-sums).", minimum=0),
    Setting("memory_load", "background", "When the memories above are loaded from the store as the server starts:"
            " on a thread of their own while it answers, each read from the store until it is in ('background'), or"
            " before it answers ('start': ~40 s for 6,400 GPU series over a day; docs/architecture.md#memories).",
            ("background", "start")),
    Setting("heap_keep_mb", 32.0, "MiB of freed memory each C heap (glibc's malloc) may keep for the next request"
            " instead of giving it back to the OS, and the largest block it serves from the heap; a question's"
            " temporaries are then not faulted in afresh every time (0: glibc's own policy; docs/benchmarks.md).",
            minimum=0),
    Setting("max_pending_rows", 2_000_000, "Rows waiting for commit past which ingest answers 503."),
    Setting("max_series_per_workspace", 1_000_000, "Distinct metric series one workspace may hold; points of a"
            " new series beyond it are rejected (OTLP partial_success, remote write X-Sonde-Rejected), known"
            " series go on. Counted per API replica (docs/reliability.md#hostile-input).", minimum=1),
    Setting("min_free_disk_mb", 256, "Free space on the embedded store's filesystem under which ingest answers"
            " 503 with Retry-After (reads go on; ingest resumes once space is freed; 0: only a write that"
            " finds no room is refused; docs/reliability.md#faults).", minimum=0),
    Setting("max_inflight_ingest", 32, "Ingest requests (OTLP, remote write) one replica serves at once; one more"
            " is answered 503 with Retry-After before its body is read (docs/reliability.md#load).", minimum=1),
    Setting("ingest_decoders", 1, "Ingest requests decoded into rows at once; the others wait their turn, bodies"
            " read. Decoding is Python holding the GIL: more at once only contend for it (docs/benchmarks.md,"
            " requests).", minimum=1),
    Setting("ingest_processes", 0, "Processes that decode OTLP span requests beside the server's own (0: the"
            " server decodes them itself). Each takes span decoding off the server's GIL: set 1 past ~40k"
            " spans/s (docs/benchmarks.md, requests).", minimum=0),
    Setting("max_inflight_reads", 16, "Other API requests (queries, inventory, /metrics) one replica serves at"
            " once; one more: 503 with Retry-After. Live streams are bounded by stream_limit_per_key.", minimum=1),
    Setting("auto_migrate", "embedded", "Whether `sonde serve` applies schema migrations at start: 'embedded'"
            " (on chDB only; a ClickHouse store is migrated once with `sonde migrate`), 'always' or 'never'.",
            ("embedded", "always", "never")),
    Setting("state_sync", "auto", "Where ingest keeps cumulative-to-delta state between requests: 'process'"
            " (in memory; one server writes the store), 'store' (read for every request; several API"
            " replicas share the store), 'auto' (process on chDB, store otherwise).", ("auto", "process", "store")),
    Setting("key_cache_seconds", 5.0, "How long a replica trusts an API key lookup; a revoked key stops"
            " working everywhere within this time."),
    Setting("rate_limit_per_key", 60_000, "Requests one API key may make per minute on one API replica, every"
            " route counted together (each key has one scope, so ingest and reads are separate budgets);"
            " beyond: 429 with Retry-After (docs/reliability.md#keys-and-rate-limits).", minimum=1),
    Setting("rate_limit_burst", 2_000, "Requests one key may make at once before rate_limit_per_key paces it;"
            " the bucket refills at rate_limit_per_key a minute.", minimum=1),
    Setting("metrics_rate_limit", 60, "Requests to GET /metrics a key may make per minute; beyond: 429 with"
            " Retry-After (docs/export.md).", minimum=1),
    Setting("alert_eval_seconds", 30.0, "Seconds between two evaluations of the alert rules (at least 1;"
            " docs/alerts.md).", minimum=1),
    Setting("stream_limit_per_key", 16, "Live log streams one key may hold open on one API replica; beyond:"
            " 429 (docs/logs.md#live-tail).", minimum=1),
    Setting("stream_heartbeat_seconds", 15.0, "Longest a live log stream stays silent: a heartbeat comment"
            " after this many seconds without a line.", minimum=0.1),
    Setting("stream_key_check_seconds", 60.0, "How often an open live log stream checks that its key is"
            " still valid; a revoked key ends the stream.", minimum=0.1),
    Setting("stream_settle_ms", 2000, "On a ClickHouse cluster, how long after another API replica numbered"
            " a log line a live tail takes it as committed (its commit time and clock skew). Unused on chDB.",
            minimum=0),
)

_BY_NAME = {s.name: s for s in SETTINGS}


def setting(name: str) -> Setting:
    """The row of the table called ``name`` (the CLI builds its flags from it)."""
    return _BY_NAME[name]


@dataclass(frozen=True)
class Config:
    data_dir: str = _BY_NAME["data_dir"].default
    host: str = _BY_NAME["host"].default
    port: int = _BY_NAME["port"].default
    store: str = _BY_NAME["store"].default
    retention_days: int = _BY_NAME["retention_days"].default
    retention_check_seconds: float = _BY_NAME["retention_check_seconds"].default
    max_body_bytes: int = _BY_NAME["max_body_bytes"].default
    flush_interval_ms: int = _BY_NAME["flush_interval_ms"].default
    wal: str = _BY_NAME["wal"].default
    wal_flush_interval_ms: int = _BY_NAME["wal_flush_interval_ms"].default
    wal_live_flush_interval_ms: int = _BY_NAME["wal_live_flush_interval_ms"].default
    batch_max_rows: int = _BY_NAME["batch_max_rows"].default
    query_cache_mb: float = _BY_NAME["query_cache_mb"].default
    recent_minutes: float = _BY_NAME["recent_minutes"].default
    request_count_hours: float = _BY_NAME["request_count_hours"].default
    gauge_sum_hours: float = _BY_NAME["gauge_sum_hours"].default
    memory_load: str = _BY_NAME["memory_load"].default
    heap_keep_mb: float = _BY_NAME["heap_keep_mb"].default
    max_pending_rows: int = _BY_NAME["max_pending_rows"].default
    max_series_per_workspace: int = _BY_NAME["max_series_per_workspace"].default
    min_free_disk_mb: int = _BY_NAME["min_free_disk_mb"].default
    max_inflight_ingest: int = _BY_NAME["max_inflight_ingest"].default
    ingest_decoders: int = _BY_NAME["ingest_decoders"].default
    ingest_processes: int = _BY_NAME["ingest_processes"].default
    max_inflight_reads: int = _BY_NAME["max_inflight_reads"].default
    auto_migrate: str = _BY_NAME["auto_migrate"].default
    state_sync: str = _BY_NAME["state_sync"].default
    key_cache_seconds: float = _BY_NAME["key_cache_seconds"].default
    rate_limit_per_key: int = _BY_NAME["rate_limit_per_key"].default
    rate_limit_burst: int = _BY_NAME["rate_limit_burst"].default
    metrics_rate_limit: int = _BY_NAME["metrics_rate_limit"].default
    alert_eval_seconds: float = _BY_NAME["alert_eval_seconds"].default
    stream_limit_per_key: int = _BY_NAME["stream_limit_per_key"].default
    stream_heartbeat_seconds: float = _BY_NAME["stream_heartbeat_seconds"].default
    stream_key_check_seconds: float = _BY_NAME["stream_key_check_seconds"].default
    stream_settle_ms: int = _BY_NAME["stream_settle_ms"].default

    @classmethod
    def load(cls, environ: dict[str, str] | None = None, *, config_file: str | None = None,
             **overrides: Any) -> "Config":
        """Defaults, then the config file, then ``SONDE_*`` variables, then the
        non-None ``overrides``. A wrong name or value is a BadRequest naming it."""
        env = os.environ if environ is None else environ
        path = config_file or env.get("SONDE_CONFIG")
        layers: list[tuple[str, dict[str, Any]]] = []
        if path:
            layers.append((f"config file {path}", _read_file(path)))
        layers.append(("environment", {f.name: env[f"SONDE_{f.name.upper()}"] for f in fields(cls)
                                       if f"SONDE_{f.name.upper()}" in env}))
        layers.append(("option", {k: v for k, v in overrides.items() if v is not None}))
        values: dict[str, Any] = {}
        for where, layer in layers:
            for name, raw in layer.items():
                values[name] = _coerce(_BY_NAME[name], raw, where)
        return cls(**values)


def _read_file(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise BadRequest(f"cannot read config file {path}: {exc.strerror}", field="config") from None
    except tomllib.TOMLDecodeError as exc:
        raise BadRequest(f"config file {path} is not TOML: {exc}", field="config") from None
    unknown = sorted(set(data) - set(_BY_NAME))
    if unknown:
        raise BadRequest(f"config file {path}: unknown setting {unknown[0]!r}", field=unknown[0])
    return data


_RULES = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


def _coerce(setting: Setting, raw: Any, where: str) -> Any:
    kind = type(setting.default)
    try:
        value = kind(raw) if not isinstance(raw, bool) or kind is bool else None
    except (TypeError, ValueError):
        value = None
    low = setting.minimum is not None and value is not None and value < setting.minimum
    if value is None or low or (setting.choices and value not in setting.choices):
        rule = f"one of {', '.join(setting.choices)}" if setting.choices else _RULES[kind]
        if low:
            rule = f"at least {setting.minimum:g}"
        raise BadRequest(f"{setting.name} ({where}) must be {rule}, not {raw!r}", field=setting.name)
    return value
