"""The executor seam and the group-commit writer, on a real chDB store."""

import threading
import time

import pyarrow as pa
import pytest

from sonde import Overloaded
from sonde.store.writer import BatchWriter

TRICKY = ['say \\"hi\\"', "a\\+b", "tab\there", "nl\nhere", "q'uote", "back\\\\slash", "\\N", "x\\0y", "nul\0x", "", "é✓"]


@pytest.mark.parametrize("value", TRICKY)
def test_string_parameters_round_trip(store, value):
    assert store.ex.query("SELECT {s:String} AS s", {"s": value}) == [{"s": value}]


def test_array_parameters_round_trip(store):
    assert store.ex.query("SELECT {a:Array(String)} AS a", {"a": TRICKY})[0]["a"] == TRICKY


def test_inventory_fields_with_quotes_and_backslashes(client):
    name = 'say "hi" \\ back'
    assert client.put("/v1/models/m1", json={"name": name}).json()["name"] == name
    assert client.get("/v1/models/m1").json()["name"] == name


def _writer_table(store):
    store.ex.command(f"CREATE TABLE {store.db}.w (k UInt64, v String) ENGINE = MergeTree ORDER BY k")
    return f"{store.db}.w"


def test_group_commit_shares_one_insert_and_acknowledges_after_commit(store):
    table = _writer_table(store)
    w = BatchWriter(store.ex, [table], flush_interval_ms=200)
    futures = []

    def submit(i):
        futures.append(w.submit({table: pa.table({"k": pa.array([i], pa.uint64()), "v": [str(i)]})}))

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(20)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    for f in futures:
        assert f.result(10) == 1
    assert store.ex.query(f"SELECT count() AS n FROM {table}")[0]["n"] == 20
    assert w.commits == 1
    w.close()


def test_writer_refuses_past_max_pending(store):
    table = _writer_table(store)
    w = BatchWriter(store.ex, [table], flush_interval_ms=60_000, batch_max_rows=10**9, max_pending_rows=5)
    w.submit({table: pa.table({"k": pa.array(range(5), pa.uint64()), "v": ["x"] * 5})})
    with pytest.raises(Overloaded) as exc:
        w.submit({table: pa.table({"k": pa.array([9], pa.uint64()), "v": ["y"]})})
    assert exc.value.retry_after >= 1
    w.close()  # close commits what was accepted
    assert store.ex.query(f"SELECT count() AS n FROM {table}")[0]["n"] == 5


def test_failed_commit_reaches_every_waiter(store):
    w = BatchWriter(store.ex, [f"{store.db}.missing"], flush_interval_ms=10)
    f = w.submit({f"{store.db}.missing": pa.table({"k": pa.array([1], pa.uint64())})})
    with pytest.raises(Exception):
        f.result(10)
    w.close()


def test_concurrent_parameterised_queries_and_inserts_do_not_interfere(store):
    # Without the executor's lock chDB loses a call's parameters to a concurrent call
    # ("Substitution `x` is not set") or hangs: readers with and without parameters
    # race each other and a writer for a fixed time.
    table = _writer_table(store)
    errors, stop = [], threading.Event()

    def reader(i):
        while not stop.is_set():
            try:
                if i % 2:
                    store.ex.query("SELECT 1 AS one")
                elif (got := store.ex.query("SELECT {x:String} AS x", {"x": f"v{i}"})) != [{"x": f"v{i}"}]:
                    errors.append(got)
            except Exception as exc:  # noqa: BLE001 - any failure is the finding
                errors.append(exc)

    threads = [threading.Thread(target=reader, args=(i,), daemon=True) for i in range(4)]
    [t.start() for t in threads]
    deadline, n = time.monotonic() + 3, 0
    while time.monotonic() < deadline:
        store.ex.insert_arrow(table, pa.table({"k": pa.array([n], pa.uint64()), "v": [str(n)]}))
        n += 1
    stop.set()
    [t.join(30) for t in threads]
    assert not any(t.is_alive() for t in threads), "a reader hung"
    assert errors == []
    assert store.ex.query(f"SELECT count() AS n FROM {table}")[0]["n"] == n


def test_cancelled_waiter_does_not_stop_the_writer(store):
    table = _writer_table(store)
    w = BatchWriter(store.ex, [table], flush_interval_ms=100)
    a = w.submit({table: pa.table({"k": pa.array([1], pa.uint64()), "v": ["a"]})})
    b = w.submit({table: pa.table({"k": pa.array([2], pa.uint64()), "v": ["b"]})})
    assert a.cancel()
    assert b.result(10) == 1
    w.close()
    assert store.ex.query(f"SELECT count() AS n FROM {table}")[0]["n"] == 2


def test_inventory_reads_stay_exact_across_objects_threads_and_caller_edits(store):
    """On chDB (exclusive) inventory records are kept in memory per executor: two
    `Inventory` objects on one store (two apps in a process) see each other's writes at
    once; a reader racing writers never ends on a stale record; editing what a read
    returned changes nothing stored."""
    from sonde.store.inventory import Inventory

    a, b = Inventory(store), Inventory(store)
    a.put("ws1", "model", "m1", "", {"name": "first"})
    assert b.get("ws1", "model", "m1")["doc"]["name"] == "first"  # now kept by b's cache
    a.put("ws1", "model", "m1", "", {"name": "second"})
    assert b.get("ws1", "model", "m1")["doc"]["name"] == "second"
    b.get("ws1", "model", "m1")["doc"]["name"] = "edited by a caller"
    assert a.get("ws1", "model", "m1")["doc"]["name"] == "second"
    assert b.find("ws1", "model", "absent") is None and b.find("ws2", "model", "m1") is None

    stop = threading.Event()
    seen: list[str] = []

    def read():
        while not stop.is_set():
            seen.append(b.get("ws1", "model", "m1")["doc"]["name"])

    readers = [threading.Thread(target=read) for _ in range(2)]
    for t in readers:
        t.start()
    for i in range(30):
        a.put("ws1", "model", "m1", "", {"name": f"v{i}"})
    stop.set()
    for t in readers:
        t.join()
    assert len(seen) > 30
    assert b.get("ws1", "model", "m1")["doc"]["name"] == "v29"
    assert Inventory(store).get("ws1", "model", "m1")["doc"]["name"] == "v29"
