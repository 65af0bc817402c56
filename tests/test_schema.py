"""The one schema: migrations on a real store, the cluster layout's DDL, store URLs."""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import sys

import httpx
import pyarrow as pa
import pytest
from live_server import LiveServer

from sonde._exceptions import BadRequest, StoreError
from sonde.ingest import columns, logs
from sonde.store import ARROW_SCHEMAS, Store, migrations, open_executor, schema
from sonde.store.clickhouse import ClickHouseURL

_dbs = itertools.count()


@pytest.fixture
def db(executor):
    name = f"mig{next(_dbs)}"
    yield name
    executor.command(f"DROP DATABASE IF EXISTS {name} SYNC")


def _tables(ex, db: str) -> set[str]:
    return {r["name"] for r in ex.query("SELECT name FROM system.tables WHERE database = {d:String}", {"d": db})}


def test_migrate_creates_every_table_once_and_is_idempotent(executor, db):
    assert migrations.migrate(executor, db, 30) == (0, migrations.SCHEMA_VERSION)
    assert _tables(executor, db) == {t.name for t in schema.TABLES} | {v.name for v in schema.VIEWS}
    assert migrations.migrate(executor, db, 30) == (migrations.SCHEMA_VERSION, migrations.SCHEMA_VERSION)
    assert migrations.current_version(executor, db) == migrations.SCHEMA_VERSION


def test_a_new_migration_applies_once_and_survives_being_rerun(executor, db):
    migrations.migrate(executor, db, 30)
    ran = []

    def v2(d, retention_days, cluster):
        ran.append(d)
        return [f"ALTER TABLE {d}.logs ADD COLUMN IF NOT EXISTS trace_id String"]

    later = (*migrations.MIGRATIONS, migrations.Migration(migrations.SCHEMA_VERSION + 1, "trace ids on logs", v2))
    assert migrations.migrate(executor, db, 30, later) == (migrations.SCHEMA_VERSION, migrations.SCHEMA_VERSION + 1)
    assert migrations.migrate(executor, db, 30, later) == (migrations.SCHEMA_VERSION + 1,) * 2
    assert ran == [db]
    # a migration interrupted after its statements but before its version row: run again, no error
    for sql in v2(db, 30, None):
        executor.command(sql)
    cols = executor.query("SELECT name FROM system.columns WHERE database = {d:String} AND table = 'logs'", {"d": db})
    assert "trace_id" in {c["name"] for c in cols}


def test_spans_of_a_store_made_before_migration_7_get_its_merge_setting(executor, db):
    assert migrations.migrate(executor, db, 30, migrations.MIGRATIONS[:6]) == (0, 6)
    # a table as migration 3 made it before spans carried the setting
    executor.command(f"ALTER TABLE {db}.spans RESET SETTING merge_selector_base")

    def ddl() -> str:
        return executor.query(f"SHOW CREATE TABLE {db}.spans")[0]["statement"]

    assert "merge_selector_base" not in ddl()
    assert migrations.migrate(executor, db, 30) == (6, migrations.SCHEMA_VERSION)
    assert schema.SPANS_MERGES in ddl()


def test_metric_values_of_a_store_made_before_migration_8_get_its_codec(executor, db):
    assert migrations.migrate(executor, db, 30, migrations.MIGRATIONS[:7]) == (0, 7)
    for table, names in migrations.FLOAT_COLUMNS.items():  # as migrations 1 and 3 made them
        executor.command(f"ALTER TABLE {db}.{table} "
                         + ", ".join(f"MODIFY COLUMN {c} CODEC(Gorilla, ZSTD(1))" for c in names))

    def codecs() -> set[tuple[str, str, str]]:
        return {(r["table"], r["name"], r["compression_codec"]) for r in executor.query(
            "SELECT table, name, compression_codec FROM system.columns WHERE database = {d:String}"
            " AND type = 'Float64' AND table IN ('metric_points', 'exemplars')", {"d": db})}

    old = {(t, c, "CODEC(Gorilla(8), ZSTD(1))") for t, cs in migrations.FLOAT_COLUMNS.items() for c in cs}
    assert codecs() == old
    assert migrations.migrate(executor, db, 30) == (7, migrations.SCHEMA_VERSION)
    assert codecs() == {(t, c, "CODEC(ZSTD(3))") for t, c, _ in old}


def test_metric_points_of_a_store_made_before_migration_9_get_their_label_columns(executor, db):
    assert migrations.migrate(executor, db, 30, migrations.MIGRATIONS[:8]) == (0, 8)
    # one point per way a GPU is named (OTel, DCGM exporter's index, DCGM's and Triton's
    # UUIDs), the first convention winning where a point has two, and a non-GPU point;
    # the same for the HTTP status (stable and older conventions, a non-number)
    attrs = [{"hw.gpu.index": "3", "http.response.status_code": "200"}, {"gpu": "5", "UUID": "GPU-a"},
             {"UUID": "GPU-b", "http.status_code": "503"}, {"gpu_uuid": "GPU-c", "http.status_code": "x"},
             {"hw.gpu.index": "1", "gpu": "7", "http.response.status_code": "429", "http.status_code": "500"},
             {"cpu": "0"}]
    executor.command(f"INSERT INTO {db}.metric_points (ws, scope, entity, metric, kind, series, attrs, ts, seq)"
                     " SELECT 'w', 'deployment', 'd', 'm', 'gauge', number, {a:Array(Map(String, String))}[number + 1],"
                     " now64(9), number FROM numbers(6)", {"a": attrs})
    assert migrations.migrate(executor, db, 30) == (8, migrations.SCHEMA_VERSION)

    def labels() -> list[tuple[str, int]]:
        return [(r["gpu"], r["http_status"]) for r in
                executor.query(f"SELECT gpu, http_status FROM {db}.metric_points ORDER BY series")]

    want = [("3", 200), ("5", 0), ("GPU-b", 503), ("GPU-c", 0), ("1", 429), ("", 0)]
    assert labels() == want  # parts written before: computed when read, then by the mutation
    executor.command(f"OPTIMIZE TABLE {db}.metric_points FINAL")
    assert labels() == want
    executor.command(f"INSERT INTO {db}.metric_points (ws, scope, entity, metric, kind, series, attrs, ts, seq)"
                     " VALUES ('w', 'deployment', 'd', 'm', 'gauge', 6, map('gpu', '2', 'http.status_code', '404'),"
                     " now64(9), 6)")
    assert labels() == [*want, ("2", 404)]  # computed at insert


def test_the_request_sources_name_the_status_attributes_the_schema_computes_from():
    from sonde.query.catalogue import CATALOGUE
    from sonde.store.views import STATUS_ATTRS

    named = {tuple(s.status_attr for s in vm.sources) for vm in CATALOGUE.values()
             if any(s.status_attr for s in vm.sources)}
    assert named == {STATUS_ATTRS}


def test_a_store_behind_this_build_is_refused_without_migrate(executor, db):
    with pytest.raises(StoreError, match="schema version 0.*sonde migrate"):
        Store(executor, db, migrate=False)
    migrations.migrate(executor, db, 30)
    s = Store(executor, db, migrate=False)
    s.close(executor=False)
    with pytest.raises(StoreError, match=f"needs {migrations.SCHEMA_VERSION + 1}: run `sonde migrate`"):
        migrations.require(executor, db, migrations.SCHEMA_VERSION + 1)
    with pytest.raises(StoreError, match="upgrade Sonde"):
        migrations.require(executor, db, migrations.SCHEMA_VERSION - 1)


def test_embedded_ddl_is_one_statement_per_table_with_ttl_and_codecs():
    ddl = schema.create_table(schema.BY_NAME["metric_points"], "db", 7)
    assert len(ddl) == 1
    assert "ENGINE = MergeTree()" in ddl[0] and "TTL toDateTime(ts) + INTERVAL 7 DAY" in ddl[0]
    assert "value Float64 CODEC(ZSTD(3))" in ddl[0] and "ON CLUSTER" not in ddl[0]


@pytest.mark.parametrize("table", schema.TABLES, ids=lambda t: t.name)
def test_cluster_ddl_is_the_embedded_table_replicated_behind_a_distributed_one(table):
    embedded, = schema.create_table(table, "db", 30)
    local, dist = schema.create_table(table, "db", 30, cluster="obs")
    path = f"'/clickhouse/tables/{{shard}}/db/{table.name}_local', '{{replica}}'"
    engine = table.engine or ("ReplacingMergeTree" if table.version else "MergeTree")
    assert f"CREATE TABLE IF NOT EXISTS db.{table.name}_local ON CLUSTER 'obs' (" in local
    assert f"ENGINE = Replicated{engine}({path}{', ' + table.version if table.version else ''})" in local
    # columns, codecs, partitioning, order and TTL are the embedded table's, character for character
    strip = re.compile(r"^CREATE TABLE .*? \(|ENGINE = [^\n]*")
    assert strip.sub("", local) == strip.sub("", embedded)
    assert dist == (f"CREATE TABLE IF NOT EXISTS db.{table.name} ON CLUSTER 'obs' AS db.{table.name}_local"
                    f" ENGINE = Distributed('obs', 'db', '{table.name}_local', {table.shard_by})")


def _arrow_for(ch: str) -> pa.DataType:
    """The Arrow type ClickHouse takes as is into a column DESCRIBE calls ``ch``: this
    test's own reading of ClickHouse types, not the schema module's mapping."""
    m = re.fullmatch(r"(\w+)\((.*)\)", ch)
    if m is None:
        return {"String": pa.string(), "Bool": pa.bool_()}.get(ch) or getattr(pa, ch.lower())()
    head, inner = m.groups()
    if head == "LowCardinality":
        return _arrow_for(inner)
    if head in ("Enum8", "Enum16"):  # written by label
        return pa.string()
    if head == "Array":
        return pa.list_(_arrow_for(inner))
    if head == "Map":
        key, value = inner.rsplit(", ", 1)
        return pa.map_(_arrow_for(key), _arrow_for(value))
    if head == "SimpleAggregateFunction":
        return _arrow_for(inner.split(", ", 1)[1])
    if head == "DateTime64":
        precision, tz = inner.split(", ")
        return pa.timestamp({"3": "ms", "6": "us", "9": "ns"}[precision], tz=tz.strip("'"))
    if head == "DateTime":
        return pa.timestamp("s", tz=inner.strip("'"))
    raise AssertionError(f"this test does not know the ClickHouse type {ch!r}")


def test_ingest_builds_its_rows_to_the_shared_arrow_schemas():
    assert columns.SCHEMA is ARROW_SCHEMAS["metric_points"] and logs.SCHEMA is ARROW_SCHEMAS["logs"]
    assert columns.Group._fields == schema.group_columns("metric_points") == (
        "ws", "scope", "entity", "parent", "metric", "kind", "monotonic", "unit", "replica", "node_rank")
    assert logs.LogGroup._fields == ("ws", "scope", "entity", "parent", "environment", "replica")


@pytest.mark.parametrize("table", [t.name for t in schema.TABLES])
def test_the_store_as_created_matches_the_arrow_schema_rows_are_built_with(store, table):
    # the columns a migrated store has, in its order, against what ingest sends: a column
    # added by a migration but not to the spec (or the other way round) fails here
    everything = store.ex.query(f"DESCRIBE TABLE {store.t(table)}")
    # MATERIALIZED columns: computed by ClickHouse at insert, never sent by ingest
    computed = [c["name"] for c in everything if c["default_type"] == "MATERIALIZED"]
    assert computed == [c.name for c in schema.BY_NAME[table].columns if c.materialized]
    described = [c for c in everything if c["name"] not in computed]
    arrow = ARROW_SCHEMAS[table]
    assert [c["name"] for c in described] == arrow.names
    assert [(c["name"], _arrow_for(c["type"])) for c in described] == [(f.name, f.type) for f in arrow]
    kinds = [c["type"] for c in described if c["type"].startswith("Enum8")]
    assert all(re.findall(r"'(\w+)' = (\d+)", k) == [(n, str(v)) for n, v in schema.KINDS.items()] for k in kinds)


def test_a_clickhouse_type_without_an_arrow_type_is_named():
    nested = schema.arrow_type("Map(LowCardinality(String), Array(UInt64))")
    assert nested == pa.map_(pa.string(), pa.list_(pa.uint64()))
    with pytest.raises(ValueError, match="Decimal"):
        schema.arrow_type("Decimal(18, 4)")


def test_telemetry_shards_by_workspace_and_entity_and_state_by_its_replacing_key():
    for name in ("metric_points", "logs"):
        assert schema.BY_NAME[name].shard_by == "cityHash64(ws, entity)"
    for t in schema.TABLES:
        if t.version:  # FINAL deduplicates within a shard: the shard key must be made of the order key
            key = {c.strip() for c in t.order_by.strip("()").split(",")}
            used = {c.strip() for c in t.shard_by[len("cityHash64("):-1].split(",")}
            assert used <= key, t.name


def test_store_urls_parse_and_bad_ones_name_the_store_setting():
    u = ClickHouseURL.parse("clickhouse://sonde:p%40ss@ch1:9000/obs?cluster=main&insert_quorum=2")
    assert (u.host, u.port, u.database, u.username, u.password, u.cluster, u.secure) == (
        "ch1", 9000, "obs", "sonde", "p@ss", "main", False)
    assert u.settings == {"insert_quorum": "2"}
    d = ClickHouseURL.parse("clickhouses://h")
    assert (d.port, d.database, d.username, d.cluster, d.secure) == (8443, "sonde", "default", None, True)
    for bad, rule in [
        ("clickhouse://h/db?async_insert=1", "async_insert"),
        ("clickhouse:///db", "must look like"),
        ("clickhouse://h/db-1", "letters, digits"),
        ("clickhouse://h:99999/db", "port"),
    ]:
        with pytest.raises(BadRequest, match=rule) as e:
            ClickHouseURL.parse(bad)
        assert e.value.field == "store"
    with pytest.raises(BadRequest, match="unknown store 'postgres'") as e:
        open_executor("postgres://h/db", "/tmp")
    assert e.value.field == "store"


def test_sonde_migrate_command_on_the_embedded_store(tmp_path):
    def migrate():
        return subprocess.run([sys.executable, "-m", "sonde", "migrate", "--data-dir", str(tmp_path)],
                              capture_output=True, text=True, timeout=120)

    first = migrate()
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines() == [f"schema migrated from version 0 to {migrations.SCHEMA_VERSION}",
                                         f"first start: keys written to {tmp_path}/credentials.json"]
    creds = json.loads((tmp_path / "credentials.json").read_text())
    again = migrate()
    assert again.stdout.strip() == f"schema is at version {migrations.SCHEMA_VERSION}; nothing to do"
    # the server started afterwards finds the workspace and keys migrate created
    server = LiveServer(str(tmp_path)).start()
    try:
        assert server.creds == creds
        r = httpx.get(f"{server.url}/v1/models", headers=server.headers())
        assert r.status_code == 200
    finally:
        server.stop()


def test_an_unreachable_clickhouse_is_a_clear_error_at_start(tmp_path):
    # a real connection attempt, to a port nothing listens on
    r = subprocess.run([sys.executable, "-m", "sonde", "migrate", "--store", "clickhouse://127.0.0.1:9/obs",
                        "--data-dir", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1
    assert "Error: cannot reach ClickHouse at 127.0.0.1:9" in r.stderr


CLICKHOUSE = os.environ.get("SONDE_TEST_CLICKHOUSE_URL")


@pytest.mark.skipif(not CLICKHOUSE, reason="SONDE_TEST_CLICKHOUSE_URL is not set: no ClickHouse server to test against")
def test_migrate_on_a_real_clickhouse_server_or_cluster():
    from sonde.store.clickhouse import ClickHouseExecutor

    ex = ClickHouseExecutor.from_url(CLICKHOUSE)
    db = f"mig_{os.getpid()}"
    on = f" ON CLUSTER '{ex.cluster}'" if ex.cluster else ""
    try:
        assert migrations.migrate(ex, db, 30) == (0, migrations.SCHEMA_VERSION)
        assert migrations.migrate(ex, db, 30) == (migrations.SCHEMA_VERSION,) * 2
        names = {t.name for t in schema.TABLES}
        expect = names | {f"{n}_local" for n in names} if ex.cluster else names
        assert _tables(ex, db) == expect | {v.name for v in schema.VIEWS}
    finally:
        ex.command(f"DROP DATABASE IF EXISTS {db}{on} SYNC")
        ex.close()
