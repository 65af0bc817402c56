"""Schema changes: :data:`MIGRATIONS`, applied in order by :func:`migrate` and recorded
in ``meta``. Each statement is idempotent (IF NOT EXISTS), so a migration interrupted
half way is simply run again; migration 1 renders every table of ``store/schema.py``,
so a new store is at the newest version at once and the later ones bring older stores
there.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .._exceptions import StoreError
from .base import Executor
from .schema import (BY_NAME, FLOAT_CODEC, LABEL_COLUMNS, LOGS_SEQ_INDEX, SPANS_MERGES, TABLES, create_database,
                     create_table, create_view, on_cluster)
from .views import ROLLUP_FROM_SEQ, TOTALS_SELECT, VIEWS_BY_NAME

#: the newest entry of MIGRATIONS; a store at an older version needs ``sonde migrate``
SCHEMA_VERSION = 9


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
            create_view(VIEWS_BY_NAME["training_rollup_mv"], db, cluster),
            f"INSERT INTO {db}.meta (key, value, version) SELECT '{ROLLUP_FROM_SEQ}', toString(max(seq) + 1), 2"
            f" FROM {db}.metric_points"]


def _v3(db: str, retention_days: int, cluster: str | None) -> list[str]:
    # Migration 1 renders every table (so a new store has these already); an older one
    # gets them here.
    return [s for name in ("spans", "exemplars") for s in create_table(BY_NAME[name], db, retention_days, cluster)]


def _v4(db: str, retention_days: int, cluster: str | None) -> list[str]:
    return create_table(BY_NAME["alert_docs"], db, retention_days, cluster)


def _v5(db: str, retention_days: int, cluster: str | None) -> list[str]:
    # The view sees inserts from its creation on; the points already stored are added
    # once, here. Migrations run before ingest (at start embedded, `sonde migrate` on a
    # cluster), so no insert falls between the two. On a new store there is nothing to add.
    # On a cluster the Distributed tables read every shard and route each row to its own.
    return [*create_table(BY_NAME["series_totals"], db, retention_days, cluster),
            create_view(VIEWS_BY_NAME["series_totals_mv"], db, cluster),
            f"INSERT INTO {db}.series_totals " + TOTALS_SELECT.format(src=f"{db}.metric_points")]


def _v6(db: str, retention_days: int, cluster: str | None) -> list[str]:
    # A new store has the index from migration 1; an older one gets it here, and its
    # parts already written get it by the mutation (ClickHouse runs it in the background;
    # until it is done the tail reads those parts unpruned, correct and slower).
    local = f"{db}.logs_local" if cluster else f"{db}.logs"
    return [f"ALTER TABLE {local}{on_cluster(cluster)} ADD INDEX IF NOT EXISTS {LOGS_SEQ_INDEX}",
            f"ALTER TABLE {local}{on_cluster(cluster)} MATERIALIZE INDEX seq_idx"]


def _v7(db: str, retention_days: int, cluster: str | None) -> list[str]:
    local = f"{db}.spans_local" if cluster else f"{db}.spans"
    return [f"ALTER TABLE {local}{on_cluster(cluster)} MODIFY SETTING {SPANS_MERGES}"]


#: the float columns stores made before migration 8 hold, per table; fixed, as any
#: migration's list is (a table added later is created with FLOAT_CODEC already)
FLOAT_COLUMNS = {"metric_points": ("value", "sum", "min", "max"), "exemplars": ("value",)}


def _v8(db: str, retention_days: int, cluster: str | None) -> list[str]:
    # Metadata only: parts written from now on, and every part a merge rewrites, use it.
    return [f"ALTER TABLE {db}.{table}{'_local' if cluster else ''}{on_cluster(cluster)} "
            + ", ".join(f"MODIFY COLUMN {c} CODEC({FLOAT_CODEC})" for c in columns)
            for table, columns in FLOAT_COLUMNS.items()]


def _v9(db: str, retention_days: int, cluster: str | None) -> list[str]:
    # Older parts compute the columns when read until the (background) mutation writes them.
    tables = [f"{db}.metric_points_local", f"{db}.metric_points"] if cluster else [f"{db}.metric_points"]
    add = ", ".join(f"ADD COLUMN IF NOT EXISTS {c.ddl()}" for c in LABEL_COLUMNS)
    materialize = ", ".join(f"MATERIALIZE COLUMN {c.name}" for c in LABEL_COLUMNS)
    # the local table first: the Distributed one reads its columns
    return [*(f"ALTER TABLE {t}{on_cluster(cluster)} {add}" for t in tables),
            f"ALTER TABLE {tables[0]}{on_cluster(cluster)} {materialize}"]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "workspaces, keys, inventory, metric points, series state, logs", _v1),
    Migration(2, "training rollup: per-bucket summaries of training-job metrics, filled at insert", _v2),
    Migration(3, "spans and histogram exemplars: requests and their traces", _v3),
    Migration(4, "alert rules, receivers and alert state", _v4),
    Migration(5, "running totals of deployment counters and histograms (GET /metrics)", _v5),
    Migration(6, "an index of log lines by arrival, for the live tail", _v6),
    Migration(7, "spans merge more parts at once (less merge work per span ingested)", _v7),
    Migration(8, "metric values compressed with ZSTD(3) instead of Gorilla (about half the bytes)", _v8),
    Migration(9, "each metric point's GPU label and HTTP status as columns computed at insert", _v9),
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
