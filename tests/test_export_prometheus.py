"""A real Prometheus (Debian's) scrapes a real ``sonde serve``'s ``/metrics`` with the
management key in its scrape config's ``authorization``; Prometheus's own query API
then answers the totals that were sent over OTLP.

``./run test`` installs the package when missing; without it this test fails, saying
so, unless ``SONDE_SKIP_PROMETHEUS=1``.
"""

from __future__ import annotations

import time

import httpx
import pytest
from otlp_build import SEC, encode, gauge, hist_point, histogram, metrics_request, number, sum_metric

from live_server import LiveServer
from peers import Prometheus
from test_agent_e2e import wait_until

pytestmark = pytest.mark.e2e


def test_prometheus_scrapes_sonde_and_answers_the_same_totals(tmp_path):
    (tmp_path / "sonde").mkdir()
    server = LiveServer(tmp_path / "sonde").start()
    try:
        now = time.time_ns()
        start = now - 60 * SEC
        resource = {"sonde.model_id": "m1", "sonde.deployment_id": "d1", "sonde.replica": "r0001",
                    "sonde.environment": "production"}
        req = metrics_request(resource, [
            sum_metric("vllm:generation_tokens_total", [number(now - 2 * SEC, 40, start=start),
                                                        number(now - SEC, 75, start=start)]),
            gauge("hw.gpu.utilization", [number(now - SEC, 0.5, attrs={"hw.gpu.index": "3"})], unit="1"),
            histogram("http.server.request.duration", [hist_point(
                now - SEC, [4, 5, 1], [0.25, 1.0], start=start, sum=3.5,
                attrs={"http.response.status_code": 503})]),
        ])
        body, headers = encode(req)
        r = httpx.post(f"{server.url}/v1/otlp/v1/metrics", content=body,
                       headers={**headers, **server.headers("ingest_key")})
        assert r.status_code == 200, r.text
        host = server.url.removeprefix("http://")
        config = {"global": {"scrape_interval": "2s", "evaluation_interval": "2s"},
                  "scrape_configs": [{
                      "job_name": "sonde", "scrape_interval": "2s", "metrics_path": "/metrics",
                      "authorization": {"type": "Bearer", "credentials": server.creds["management_key"]},
                      "static_configs": [{"targets": [host]}]}]}
        with Prometheus(tmp_path, config) as prom:
            def up() -> bool:
                targets = prom.targets()
                return bool(targets) and targets[0]["health"] == "up"
            wait_until(up, 60, "Prometheus's scrape of Sonde to be up")

            def value(q: str) -> float | None:
                res = prom.query(q)
                return float(res[0]["value"][1]) if res else None

            wait_until(lambda: value('baseten_llm_output_tokens_total{deployment_id="d1"}') is not None, 30,
                       "the scraped totals in Prometheus")
            assert value('baseten_llm_output_tokens_total{deployment_id="d1",model_id="m1",replica="r0001"}') == 75
            assert value('baseten_gpu_utilization{gpu="3",environment="production"}') == 0.5
            assert value('baseten_inference_requests_total{status_code="503"}') == 10
            assert value('baseten_end_to_end_response_time_seconds_bucket{le="0.25"}') == 4
            assert value('baseten_end_to_end_response_time_seconds_bucket{le="1.0"}') == 9
            assert value('baseten_end_to_end_response_time_seconds_sum') == 3.5
            # Prometheus's own quantile over Sonde's buckets: the 0.5 quantile lies in (0.25, 1]
            p50 = value('histogram_quantile(0.5, baseten_end_to_end_response_time_seconds_bucket)')
            assert 0.25 < p50 <= 1.0
    finally:
        assert server.stop() == 0
