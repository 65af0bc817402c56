"""Retention: a real ``sonde serve`` drops the day partitions older than ``retention_days``
while it goes on taking and answering requests (docs/reliability.md, Faults;
store/retention.py).

Data is placed in the past through OTLP (log lines and gauge points 6 and 2 days old,
and now) by a server keeping a year; the server is then started again keeping 4 days
and checking every second. The 6-day-old day goes, the 2-day-old and today's stay,
and every write and read made meanwhile was answered 200 and is there. The TTL in the
tables' DDL says 365 days (it was created so): only the server's own pass can drop it.
"""

from __future__ import annotations

import threading
import time

import httpx
import pytest
from live_server import LiveServer
from otlp_build import SEC, gauge, log_record, logs_request, metrics_request, number, post
from test_ingest_e2e import read_store

pytestmark = pytest.mark.e2e

RESOURCE = {"sonde.model_id": "m-ret", "sonde.deployment_id": "d-ret", "sonde.replica": "ret"}
DAY = 86400 * SEC
NOW = time.time_ns() // SEC * SEC
AGES = {"old": 6, "mid": 2, "new": 0}  # days


def place(c: httpx.Client, label: str, ts: int, n: int = 3) -> None:
    logs = logs_request(RESOURCE, [log_record(ts + j, f"{label} {j}") for j in range(n)])
    points = metrics_request(RESOURCE, [gauge("ret.g", [number(ts + j, 1.0, attrs={"label": label, "j": j})
                                                      for j in range(n)])])
    for msg in (logs, points):
        r = post(c, msg)
        assert r.status_code == 200, (label, r.status_code, r.content[:300])


def lines_between(server: LiveServer, start: int, end: int) -> list[str]:
    r = httpx.get(f"{server.url}/v1/models/m-ret/deployments/d-ret/logs", headers=server.headers(), timeout=30,
                  params={"start_epoch_millis": start // 10**6, "end_epoch_millis": end // 10**6, "limit": 1000})
    assert r.status_code == 200, r.text
    return sorted(line["message"] for line in r.json()["logs"])


def test_retention_drops_old_partitions_while_reads_and_writes_go_on(tmp_path):
    old_window = (NOW - 7 * DAY, NOW - 5 * DAY)
    year = LiveServer(tmp_path, env={"SONDE_RETENTION_DAYS": "365"}).start()
    try:
        with httpx.Client(base_url=year.url, headers=year.headers("ingest_key"), timeout=30) as c:
            for label, days in AGES.items():
                place(c, label, NOW - days * DAY)
        assert lines_between(year, *old_window) == ["old 0", "old 1", "old 2"]
    finally:
        assert year.stop() == 0

    server = LiveServer(tmp_path, env={"SONDE_RETENTION_DAYS": "4", "SONDE_RETENTION_CHECK_SECONDS": "1"}).start()
    failures: list[str] = []
    written: list[str] = []
    stop = threading.Event()

    def traffic() -> None:  # writes and reads while the pass runs
        try:
            with httpx.Client(base_url=server.url, headers=server.headers("ingest_key"), timeout=30) as c:
                i = 0
                while not stop.is_set():
                    place(c, f"live{i}", time.time_ns(), n=1)
                    written.append(f"live{i} 0")
                    lines_between(server, NOW - 3 * DAY, time.time_ns() + SEC)
                    i += 1
        except Exception as exc:  # a write or read refused meanwhile
            failures.append(repr(exc))

    thread = threading.Thread(target=traffic, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while lines_between(server, *old_window) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert lines_between(server, *old_window) == [], "the old day was not dropped within a minute"
        stop.set()
        thread.join(30)
        assert not failures, failures
        assert not thread.is_alive() and written, "no writes and reads went on meanwhile"
        kept = lines_between(server, NOW - 3 * DAY, time.time_ns() + SEC)
        assert kept == sorted(["mid 0", "mid 1", "mid 2", "new 0", "new 1", "new 2", *written])
    finally:
        stop.set()
        assert server.stop() == 0
    points, ttl = read_store(
        tmp_path,
        "SELECT attrs['label'] AS label, count() AS n FROM sonde.metric_points WHERE metric = 'ret.g'"
        " GROUP BY label ORDER BY label",
        "SELECT engine_full FROM system.tables WHERE database = 'sonde' AND name = 'logs'",
    )
    assert {r["label"]: r["n"] for r in points} == {"mid": 3, "new": 3} | {w.split()[0]: 1 for w in written}
    assert "toIntervalDay(365)" in ttl[0]["engine_full"]
