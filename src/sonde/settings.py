"""Server settings: one table of name, default and help.

Each setting is read, in order of precedence, from the command line, the environment
variable ``SONDE_<NAME>`` (upper case), or the default. ``docs/settings.md`` documents
each one; ``tests/test_settings.py`` keeps the two in step.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from typing import Any


@dataclass(frozen=True)
class Setting:
    name: str
    default: Any
    help: str


SETTINGS: tuple[Setting, ...] = (
    Setting("data_dir", "./sonde-data", "Directory of the embedded store and credentials.json."),
    Setting("host", "127.0.0.1", "Address the HTTP server listens on."),
    Setting("port", 8080, "Port the HTTP server listens on."),
    Setting("store", "chdb", "Store URL: 'chdb' (embedded, in data_dir)."),
    Setting("retention_days", 30, "Days telemetry is kept before ClickHouse's TTL drops it."),
    Setting("max_body_bytes", 16 * 1024 * 1024, "Largest OTLP request body, after gzip is undone; larger: 413."),
    Setting("flush_interval_ms", 100, "Longest a row waits before its group commit starts."),
    Setting("batch_max_rows", 50_000, "Rows that start a group commit at once."),
    Setting("max_pending_rows", 2_000_000, "Rows waiting for commit past which ingest answers 503."),
)

_BY_NAME = {s.name: s for s in SETTINGS}


@dataclass(frozen=True)
class Config:
    data_dir: str = _BY_NAME["data_dir"].default
    host: str = _BY_NAME["host"].default
    port: int = _BY_NAME["port"].default
    store: str = _BY_NAME["store"].default
    retention_days: int = _BY_NAME["retention_days"].default
    max_body_bytes: int = _BY_NAME["max_body_bytes"].default
    flush_interval_ms: int = _BY_NAME["flush_interval_ms"].default
    batch_max_rows: int = _BY_NAME["batch_max_rows"].default
    max_pending_rows: int = _BY_NAME["max_pending_rows"].default

    @classmethod
    def load(cls, environ: dict[str, str] | None = None, **overrides: Any) -> "Config":
        """Defaults, then ``SONDE_*`` variables, then the non-None ``overrides``."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            default = _BY_NAME[f.name].default
            raw = env.get(f"SONDE_{f.name.upper()}")
            if raw is not None:
                values[f.name] = type(default)(raw)
            if overrides.get(f.name) is not None:
                values[f.name] = type(default)(overrides[f.name])
        return cls(**values)
