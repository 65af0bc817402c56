"""Two real ``sonde serve`` replicas behind one ClickHouse store.

Cumulative counters, histograms and logs go in through both replicas by turns (with
retries through the other one, as a load balancer would send them); what either
replica then reads back is the exact ground truth computed here. A key made through one
replica works through the other, and a revoked one stops working on both within
``key_cache_seconds``.

Runs only against a real ClickHouse server or cluster (``SONDE_TEST_CLICKHOUSE_URL``);
nothing stands in for one. The embedded store allows one process per store, so it has
no multi-replica form: its restart case is tests/test_ingest_e2e.py.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
from conftest import CLICKHOUSE_URL, NO_CLICKHOUSE, drop_database, new_db_name
from live_server import LiveServer
from otlp_build import SEC, encode, hist_point, histogram, log_record, logs_request, metrics_request, number, \
    sum_metric

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(not CLICKHOUSE_URL, reason=NO_CLICKHOUSE)]

RESOURCE = {"sonde.model_id": "m1", "sonde.deployment_id": "d1", "sonde.replica": "ra"}
MIN = 60 * SEC
# A 30-minute window ending ten minutes ago, on minute boundaries: all telemetry lies in it.
W1 = (time.time_ns() // MIN - 10) * MIN
W0 = W1 - 30 * MIN
WINDOW = {"start_epoch_millis": W0 // 10**6, "end_epoch_millis": W1 // 10**6}
ROUNDS = 16
BOUNDS = [0.1, 1.0]


def store_url(db: str) -> str:
    """The test server's URL naming database ``db`` (its cluster and settings kept)."""
    return urlunsplit(urlsplit(CLICKHOUSE_URL)._replace(path="/" + db))


@pytest.fixture
def replicas(tmp_path, clickhouse_executor):
    db = new_db_name()
    url = store_url(db)
    servers: list[LiveServer] = []
    try:
        done = subprocess.run([sys.executable, "-m", "sonde", "migrate", "--store", url,
                               "--data-dir", str(tmp_path / "migrate")],
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        for name in ("a", "b"):
            (tmp_path / name).mkdir()
            if servers:  # the first replica wrote the keys; an operator hands them to the others
                shutil.copy(tmp_path / "a" / "credentials.json", tmp_path / name / "credentials.json")
            servers.append(LiveServer(tmp_path / name, args=("--store", url)).start())
        yield servers
    finally:
        for s in servers:
            s.stop()
        drop_database(clickhouse_executor, db)


def send(server: LiveServer, msg) -> None:
    body, headers = encode(msg)
    path = "/v1/otlp/v1/metrics" if hasattr(msg, "resource_metrics") else "/v1/otlp/v1/logs"
    r = httpx.post(server.url + path, content=body, headers={**headers, **server.headers("ingest_key")}, timeout=60)
    assert r.status_code == 200, r.text
    assert b"rejected" not in r.content, r.content


def telemetry():
    """Per round: the metrics request (cumulative process.cpu.time per mode, with a
    process restart half way on one mode, and a cumulative request-duration histogram
    per status code), the log lines, and the ground truth the API must give back."""
    rounds, lines = [], []
    cpu = {"user": 0.0, "system": 0.0}
    cpu_total = 0.0
    counts = {status: [0, 0, 0] for status in (200, 302, 404, 503)}
    restart = None
    for i in range(ROUNDS):
        t = W0 + MIN + i * 90 * SEC
        points = []
        for k, mode in enumerate(("user", "system")):
            inc = 1.25 * (i + 1) + k
            if mode == "system" and i == ROUNDS // 2:
                restart = t - SEC  # the process restarted: its counter starts again from 0
                cpu[mode] = 0.0
            cpu[mode] += inc
            cpu_total += inc
            start = restart if mode == "system" and restart else W0
            points.append(number(t, cpu[mode], start=start, attrs={"cpu.mode": mode}))
        hists = []
        for status, c in counts.items():
            for b in range(3):
                c[b] += (i + b + status // 100) % 4
            hists.append(hist_point(t, list(c), BOUNDS, start=W0, sum=float(sum(c)),
                                    attrs={"http.response.status_code": status}))
        metrics = metrics_request(RESOURCE, [sum_metric("process.cpu.time", points, unit="s"),
                                             histogram("http.server.request.duration", hists)])
        records = [(t + j, f"round {i} line {j}", 9 + 4 * (j % 3)) for j in range(3)]
        lines += records
        rounds.append((metrics, logs_request(RESOURCE, [log_record(ts, m, severity_number=s)
                                                        for ts, m, s in records])))
    truth = {"cpu": cpu_total, "requests": [sum(c) for c in counts.values()], "lines": lines}
    return rounds, truth


def summary(server: LiveServer, names: list[str]) -> dict:
    r = httpx.get(f"{server.url}/v1/models/m1/deployments/d1/metrics", headers=server.headers(),
                  params={"mode": "SUMMARY", "metrics": ",".join(names), **WINDOW}, timeout=60)
    assert r.status_code == 200, r.text
    body = r.json()
    got = {}
    for i, d in enumerate(body["metric_descriptors"]):
        got[d["name"]] = (d["label_sets"], body["metric_values"][0]["values"][i])
    return got


def test_telemetry_through_both_replicas_reads_back_exactly_from_either(replicas):
    rounds, truth = telemetry()
    for i, (metrics, logs) in enumerate(rounds):
        send(replicas[i % 2], metrics)
        send(replicas[(i + 1) % 2], logs)
        if i % 4 == 3:  # the client's retries land on both replicas: counted once
            send(replicas[(i + 1) % 2], metrics)
            send(replicas[i % 2], metrics)
    want_logs = sorted((t, m) for t, m, _ in truth["lines"])
    for server in replicas:
        got = summary(server, ["baseten_container_cpu_usage_seconds_total", "baseten_inference_requests_total"])
        labels, cpu = got["baseten_container_cpu_usage_seconds_total"]
        assert labels == [{"replica": "ra"}]
        assert cpu == [pytest.approx(truth["cpu"], rel=1e-12)]
        labels, requests = got["baseten_inference_requests_total"]
        assert labels == [{"status": "2xx"}, {"status": "3xx"}, {"status": "4xx"}, {"status": "5xx"}]
        assert requests == truth["requests"]
        r = httpx.get(f"{server.url}/v1/models/m1/deployments/d1/logs", headers=server.headers(),
                      params={**WINDOW, "direction": "asc", "limit": 1000}, timeout=60)
        assert r.status_code == 200, r.text
        got_logs = [(int(x["timestamp"]), x["message"]) for x in r.json()["logs"]]
        assert sorted(got_logs) == want_logs


def test_keys_and_inventory_are_shared_by_the_replicas(replicas):
    a, b = replicas
    admin = {"Authorization": f"Bearer {a.creds['admin_key']}"}
    r = httpx.post(f"{a.url}/v1/admin/workspaces", json={"name": "team-b"}, headers=admin)
    assert r.status_code == 201, r.text
    ws = r.json()["id"]
    r = httpx.post(f"{a.url}/v1/admin/workspaces/{ws}/api_keys", json={"name": "m", "scope": "management"},
                   headers=admin)
    assert r.status_code == 201, r.text
    made = r.json()
    key = {"Authorization": f"Bearer {made['key']}"}
    assert httpx.put(f"{b.url}/v1/models/m7", json={"name": "seven"}, headers=key).status_code == 200
    assert httpx.get(f"{a.url}/v1/models/m7", headers=key).json()["name"] == "seven"
    # the other workspace's replicas see nothing of it
    assert httpx.get(f"{b.url}/v1/models/m7", headers=a.headers()).status_code == 404
    assert httpx.delete(f"{b.url}/v1/admin/api_keys/{made['id']}", headers=admin).status_code == 204
    # b forgot it at once; a may trust its own lookup for key_cache_seconds (5 s by default)
    assert httpx.get(f"{b.url}/v1/models", headers=key).status_code == 401
    deadline = time.monotonic() + 5 + 10
    while httpx.get(f"{a.url}/v1/models", headers=key).status_code != 401:
        assert time.monotonic() < deadline, "a revoked key kept working past key_cache_seconds"
        time.sleep(0.25)
