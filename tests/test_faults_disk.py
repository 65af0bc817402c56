"""Full disk: a real ``sonde serve`` with its data directory on a small tmpfs the test
fills (docs/reliability.md, Faults; store/disk.py).

While the filesystem has less than ``min_free_disk_mb`` free, or a write found no room
(ClickHouse's NOT_ENOUGH_SPACE), ingest answers 503 with Retry-After and says why, in
OTLP's ``google.rpc.Status`` to a protobuf request and in the JSON envelope otherwise;
reads keep answering; once space is freed ingest resumes without a restart; and every
batch acknowledged is stored, exactly once.

Mounting needs root (or CAP_SYS_ADMIN), as the development and CI containers have;
where it is impossible the test fails saying so rather than passing untested.
"""

from __future__ import annotations

import os
import subprocess
import time

import httpx
import pytest
from google.rpc import code_pb2, status_pb2
from live_server import LiveServer
from otlp_build import SEC, gauge, log_record, logs_request, metrics_request, number, post
from test_ingest_e2e import read_store

pytestmark = pytest.mark.e2e

RESOURCE = {"sonde.model_id": "m-disk", "sonde.deployment_id": "d-disk", "sonde.replica": "disk"}
DISK_MB, FLOOR_MB = 64, 16
T0 = (time.time_ns() // SEC - 60) * SEC


@pytest.fixture
def small_disk(tmp_path):
    mnt = tmp_path / "disk"
    mnt.mkdir()
    out = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK_MB}m", "tmpfs", str(mnt)],
                         capture_output=True, text=True)
    if out.returncode != 0:
        pytest.fail(f"the full-disk drill puts the data directory on a {DISK_MB} MiB tmpfs and could not mount one"
                    f" (uid {os.geteuid()}: {out.stderr.strip() or out.returncode}); run the suite as root or with"
                    f" CAP_SYS_ADMIN, as the development and CI containers do")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def batches(i: int):
    """Batch i: one log request and one gauge request, each committed as one INSERT
    (one table), so a 503 means none of it was stored and a retry stores it once."""
    return (logs_request(RESOURCE, [log_record(T0 + i * 10 + j, f"b{i} l{j}") for j in range(3)]),
            metrics_request(RESOURCE, [gauge("disk.g", [number(T0 + i * 10 + j, 1.0, attrs={"id": i * 3 + j})
                                                        for j in range(3)])]))


def free_bytes(path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def fill(disk, leave: int) -> None:
    """Write a ballast file until ``leave`` bytes are free (0: until the disk refuses)."""
    with open(disk / "ballast", "ab") as f:
        try:
            while free_bytes(disk) > leave:
                f.write(b"\0" * min(1 << 20, max(4096, free_bytes(disk) - leave)))
                f.flush()
        except OSError:  # ENOSPC: as full as it gets
            pass


def assert_storage_full(r: httpx.Response, *, protobuf: bool) -> None:
    assert r.status_code == 503, (r.status_code, r.content[:300])
    assert int(r.headers["Retry-After"]) >= 1
    if protobuf:  # OTLP/HTTP: a google.rpc.Status
        assert r.headers["Content-Type"] == "application/x-protobuf"
        status = status_pb2.Status.FromString(r.content)
        assert status.code == code_pb2.UNAVAILABLE and "disk is full" in status.message, status
    else:
        body = r.json()
        assert body["error"]["code"] == "storage_full" and "disk is full" in body["message"], body


def logs_read(server: LiveServer) -> list[str]:
    r = httpx.get(f"{server.url}/v1/models/m-disk/deployments/d-disk/logs", headers=server.headers(),
                  params={"limit": 1000, "direction": "asc"}, timeout=30)
    assert r.status_code == 200, r.text
    return [line["message"] for line in r.json()["logs"]]


def test_full_disk_refuses_ingest_with_503_keeps_reads_and_resumes(small_disk):
    data = small_disk / "data"
    data.mkdir()
    acked: list[int] = []

    def send_ok(c, i: int) -> None:
        for msg in batches(i):
            r = post(c, msg)
            assert r.status_code == 200, (i, r.status_code, r.content[:300])
        acked.append(i)

    # 1. the floor: under min_free_disk_mb free, ingest is refused before anything is written
    server = LiveServer(data, env={"SONDE_MIN_FREE_DISK_MB": str(FLOOR_MB)}).start()
    try:
        with httpx.Client(base_url=server.url, headers=server.headers("ingest_key"), timeout=30) as c:
            for i in range(3):
                send_ok(c, i)
            fill(small_disk, leave=FLOOR_MB * 2**20 // 2)
            logs, points = batches(3)
            assert_storage_full(post(c, logs), protobuf=True)
            assert_storage_full(post(c, points, json=True), protobuf=False)
            assert logs_read(server) == [f"b{i} l{j}" for i in range(3) for j in range(3)]
            os.truncate(small_disk / "ballast", 0)
            send_ok(c, 3)  # resumed: no restart, no wait
    finally:
        assert server.stop() == 0
    told = (data / f"server-{server.port}.log").read_text()
    assert "store disk full" in told and "room again" in told, told[-2000:]  # the operator hears of it

    # 2. no floor: the write itself finds no room (ClickHouse's NOT_ENOUGH_SPACE), still a 503
    server = LiveServer(data, env={"SONDE_MIN_FREE_DISK_MB": "0"}).start()
    try:
        with httpx.Client(base_url=server.url, headers=server.headers("ingest_key"), timeout=30) as c:
            send_ok(c, 4)
            assert len(logs_read(server)) == 5 * 3  # committed: a read commits the write-ahead log
            fill(small_disk, leave=0)
            logs, points = batches(5)
            first = post(c, logs)
            assert_storage_full(first, protobuf=True)
            assert_storage_full(post(c, points, json=True), protobuf=False)
            assert len(logs_read(server)) == 5 * 3
            os.remove(small_disk / "ballast")
            # retried until taken (sooner than Retry-After, which a real client honours)
            for _ in range(20):
                time.sleep(0.5)
                first = post(c, logs)
                if first.status_code == 200:
                    break
                assert_storage_full(first, protobuf=True)
            assert first.status_code == 200
            assert post(c, points).status_code == 200
            acked.append(5)
            send_ok(c, 6)
    finally:
        assert server.stop() == 0

    lines, points = read_store(
        data,
        "SELECT message, count() AS n FROM sonde.logs WHERE entity = 'd-disk' GROUP BY message",
        "SELECT toUInt64(attrs['id']) AS id, count() AS n FROM sonde.metric_points WHERE metric = 'disk.g' GROUP BY id",
    )
    assert acked == list(range(7))
    assert {r["message"]: r["n"] for r in lines} == {f"b{i} l{j}": 1 for i in acked for j in range(3)}
    assert {int(r["id"]): r["n"] for r in points} == {i * 3 + j: 1 for i in acked for j in range(3)}
