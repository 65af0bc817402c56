"""A real Prometheus (Debian's) scrapes a ``prometheus_client`` page this test serves and
remote-writes it to a real ``sonde serve`` with the ingest key in ``authorization``;
Sonde's deployment metrics API then shows the page's values.

Placement comes from the scrape config's target labels (``model_id``,
``deployment_id``, ``replica``), as docs/remote-write.md recommends. ``./run test``
installs the package when missing; without it this test fails, saying so, unless
``SONDE_SKIP_PROMETHEUS=1``.
"""

from __future__ import annotations

import time

import httpx
import prometheus_client as pc
import pytest

from live_server import LiveServer, free_port
from peers import Prometheus
from test_agent_e2e import wait_until

pytestmark = pytest.mark.e2e

MODEL, DEP, REPLICA = "m-prom", "d-prom", "r0001"
URL = f"/v1/models/{MODEL}/deployments/{DEP}/metrics"
NAMES = ("jobs_total", "queue_depth", "lat_seconds", "up")


@pytest.fixture
def page():
    """A prometheus_client page with a counter, a gauge and a histogram of known values."""
    reg = pc.CollectorRegistry()
    jobs = pc.Counter("jobs", "Jobs done", ["kind"], registry=reg)
    jobs.labels("embed").inc(7)
    jobs.labels("chat").inc(12)
    pc.Gauge("queue_depth", "Requests waiting", registry=reg).set(4)
    lat = pc.Histogram("lat_seconds", "Latency", buckets=(0.1, 1.0), registry=reg)
    for v in (0.05, 0.05, 0.5, 2.0):
        lat.observe(v)
    port = free_port()
    server, thread = pc.start_http_server(port, addr="127.0.0.1", registry=reg)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _summary(server: LiveServer, start_ms: int) -> dict[str, tuple[str, dict]]:
    """{metric: (kind, {label set as sorted tuple: value})} in SUMMARY mode since ``start_ms``."""
    r = httpx.get(server.url + URL, headers=server.headers(), timeout=30, params={
        "mode": "SUMMARY", "metrics": ",".join(NAMES), "start_epoch_millis": start_ms,
        "end_epoch_millis": time.time_ns() // 10**6 + 1000})
    if r.status_code in (400, 404):  # the deployment, or a name, not sent yet
        return {}
    assert r.status_code == 200, r.text
    body = r.json()
    return {d["name"]: (d["kind"], {tuple(sorted(ls.items())): v for ls, v in zip(d["label_sets"], vals)})
            for d, vals in zip(body["metric_descriptors"], body["metric_values"][0]["values"])}


def test_prometheus_remote_writes_a_scraped_page_to_sonde(tmp_path, page):
    (tmp_path / "sonde").mkdir()
    server = LiveServer(tmp_path / "sonde").start()
    start_ms = time.time_ns() // 10**6 - 60_000
    try:
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [{
                "job_name": "model", "scrape_interval": "1s",
                "static_configs": [{"targets": [page],
                                    "labels": {"model_id": MODEL, "deployment_id": DEP, "replica": REPLICA}}]}],
            "remote_write": [{
                "url": f"{server.url}/api/v1/write",
                "authorization": {"credentials": server.creds["ingest_key"]},
                # one shard, so the series of one histogram travel in one request (docs/remote-write.md)
                "queue_config": {"batch_send_deadline": "1s", "max_shards": 1, "min_backoff": "100ms",
                                 "max_backoff": "1s"},
                "metadata_config": {"send": True, "send_interval": "1s"}}],
        }
        with Prometheus(tmp_path, config) as prom:
            got: dict = {}

            def arrived() -> bool:
                got.update(_summary(server, start_ms))
                hist = got.get("lat_seconds", ("", {}))[1]
                return all(n in got for n in NAMES) and hist.get((("stat", "avg"),)) is not None

            wait_until(arrived, 90, "the page's series in Sonde, remote-written by Prometheus")
            kind, values = got["jobs_total"]
            # the page's totals: each counter's increase since it was created
            assert kind == "COUNTER"
            assert values == {(("kind", "embed"), ("replica", REPLICA)): 7,
                              (("kind", "chat"), ("replica", REPLICA)): 12}, values
            kind, values = got["queue_depth"]
            assert (kind, values) == ("GAUGE", {(("replica", REPLICA),): 4}), values
            kind, values = got["lat_seconds"]
            assert kind == "HISTOGRAM"
            assert values[(("stat", "avg"),)] == pytest.approx((0.05 + 0.05 + 0.5 + 2.0) / 4)
            # the p50 lies in the (0.1, 1] bucket, which holds the second and third observations
            assert 0.1 <= values[(("quantile", "0.5"),)] <= 1.0
            assert got["up"][1] == {(("replica", REPLICA),): 1}
            # Prometheus keeps OpenMetrics' _created as series of their own; Sonde reads them as
            # the counters' and the histogram's start times, never as metrics
            created = {s["metric"]["__name__"] for s in prom.query('{__name__=~".+_created"}')}
            assert created <= {"jobs_created", "lat_seconds_created"}, created  # newer versions may drop them
            for name in created:
                r = httpx.get(server.url + URL, headers=server.headers(), timeout=30,
                              params={"mode": "SUMMARY", "metrics": name, "start_epoch_millis": start_ms,
                                      "end_epoch_millis": time.time_ns() // 10**6 + 1000})
                assert r.status_code == 400 and r.json()["error"]["field"] == "metrics", (name, r.text)
            # and Prometheus saw every sample accepted
            failed = prom.query("prometheus_remote_storage_samples_failed_total")
            assert all(float(s["value"][1]) == 0 for s in failed), failed
            dropped = prom.query("prometheus_remote_storage_samples_dropped_total")
            assert all(float(s["value"][1]) == 0 for s in dropped), dropped
    finally:
        assert server.stop() == 0
