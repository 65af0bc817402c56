"""``sonde demo``: the README's first command.

Starts ``sonde serve`` on the embedded store as a child process, registers a model and
deployment, and runs a workload that reports through the real OpenTelemetry SDK and
OTLP exporters, exactly as an instrumented model server would: request durations as
exponential histograms, in-flight requests, and logs with request ids and levels.
Then it prints where everything is and three ``curl`` commands that return data.
"""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import subprocess
import sys
import threading
import time

import click
import httpx

MODEL, DEPLOYMENT = "demo-model", "demo-v1"


def _wait_ready(url: str, creds_path: str, proc: subprocess.Popen, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise click.ClickException(f"sonde serve exited with {proc.returncode}")
        if os.path.exists(creds_path):
            creds = json.load(open(creds_path))
            try:
                r = httpx.get(f"{url}/v1/models", headers={"Authorization": f"Bearer {creds['management_key']}"})
                if r.status_code == 200:
                    return creds
            except httpx.HTTPError:
                pass
        time.sleep(0.2)
    raise click.ClickException("sonde serve did not become ready in time")


class Replica:
    """One simulated replica: its own OTel resource, meter and logger providers."""

    def __init__(self, url: str, ingest_key: str, replica: str, interval_ms: int):
        from opentelemetry._logs import SeverityNumber  # noqa: F401  (import check)
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
        from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
        from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation, View
        from opentelemetry.sdk.resources import Resource

        headers = {"Authorization": f"Bearer {ingest_key}"}
        resource = Resource.create({
            "service.name": "demo-model-server", "sonde.model_id": MODEL,
            "sonde.deployment_id": DEPLOYMENT, "sonde.replica": replica, "sonde.environment": "production",
        })
        reader = PeriodicExportingMetricReader(
            OTLPMetricExporter(endpoint=f"{url}/v1/otlp/v1/metrics", headers=headers),
            export_interval_millis=interval_ms,
        )
        # max_scale 20 / max_size 320 keeps scale >= 6 over 4 decades of latency: <= 1% quantile error.
        view = View(instrument_name="http.server.request.duration",
                    aggregation=ExponentialBucketHistogramAggregation(max_size=320, max_scale=20))
        self.meters = MeterProvider(resource=resource, metric_readers=[reader], views=[view])
        meter = self.meters.get_meter("sonde.demo")
        self.duration = meter.create_histogram("http.server.request.duration", unit="s")
        self.active = meter.create_up_down_counter("http.server.active_requests", unit="{request}")
        self.logs = LoggerProvider(resource=resource)
        self.logs.add_log_record_processor(BatchLogRecordProcessor(
            OTLPLogExporter(endpoint=f"{url}/v1/otlp/v1/logs", headers=headers), schedule_delay_millis=1000))
        self.log = logging.getLogger(f"demo.{replica}")
        self.log.propagate = False
        self.log.setLevel(logging.DEBUG)
        self.log.addHandler(LoggingHandler(level=logging.DEBUG, logger_provider=self.logs))
        self.replica = replica

    def serve_one(self, rng: random.Random) -> None:
        rid = f"req-{rng.getrandbits(48):012x}"
        slow = rng.random() < 0.05
        seconds = rng.lognormvariate(-3.0 if not slow else -0.5, 0.5)
        status = rng.choices([200, 400, 404, 500, 503], [0.93, 0.03, 0.02, 0.015, 0.005])[0]
        self.active.add(1)
        extra = {"request_id": rid, "component": "predict"}
        self.log.debug("predict start batch=%d", rng.randint(1, 8), extra=extra)
        self.duration.record(seconds, {"http.response.status_code": status, "http.request.method": "POST"})
        if status >= 500:
            self.log.error("predict failed: CUDA error: out of memory (%.3fs)", seconds, extra=extra)
        elif status >= 400:
            self.log.warning("bad request: input shape mismatch (%.3fs)", seconds, extra=extra)
        else:
            self.log.info("POST /predict %d in %.1f ms", status, seconds * 1000, extra=extra)
        self.active.add(-1)

    def shutdown(self) -> None:
        self.meters.shutdown()
        self.logs.shutdown()


def _workload(replicas: list[Replica], stop: threading.Event, rps: float) -> None:
    rng = random.Random(7)
    while not stop.is_set():
        burst = 4.0 if int(time.time()) % 60 < 10 else 1.0  # ten busy seconds a minute
        rng.choice(replicas).serve_one(rng)
        stop.wait(rng.expovariate(rps * burst))


@click.command()
@click.option("--data-dir", default="./sonde-data", show_default=True)
@click.option("--port", default=8080, show_default=True, type=int)
@click.option("--duration", default=0, type=float, help="Seconds to run; 0 runs until Ctrl-C.")
@click.option("--rps", default=20.0, show_default=True, help="Mean requests per second of the workload.")
def demo(data_dir: str, port: int, duration: float, rps: float) -> None:
    """Server on the embedded store plus a workload reporting over OTLP."""
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "sonde", "serve", "--data-dir", data_dir,
                               "--port", str(port), "--log-level", "warning"])
    stop = threading.Event()
    replicas: list[Replica] = []
    try:
        creds_path = os.path.join(os.path.abspath(data_dir), "credentials.json")
        creds = _wait_ready(url, creds_path, server)
        mgmt = {"Authorization": f"Bearer {creds['management_key']}"}
        httpx.put(f"{url}/v1/models/{MODEL}", headers=mgmt, json={"name": "Demo model"}).raise_for_status()
        httpx.put(f"{url}/v1/models/{MODEL}/deployments/{DEPLOYMENT}", headers=mgmt,
                  json={"name": "v1", "is_production": True, "environment": "production",
                        "instance_type_name": "cpu-demo"}).raise_for_status()
        replicas = [Replica(url, creds["ingest_key"], r, 5000) for r in ("r0a1b", "r1c2d")]
        threading.Thread(target=_workload, args=(replicas, stop, rps), daemon=True).start()
        base = f"{url}/v1/models/{MODEL}/deployments/{DEPLOYMENT}"
        key = f"$(python3 -c \"import json;print(json.load(open('{creds_path}'))['management_key'])\")"
        click.echo(f"""
Sonde is up: {url}  (API docs: {url}/docs)
Keys: {creds_path}  (admin, management and ingest keys; mode 0600)
A workload is reporting over OTLP as deployment {DEPLOYMENT} of model {MODEL}.
Within a minute these return data:

  curl -s -H "Authorization: Bearer {key}" "{base}/metrics"
  curl -s -H "Authorization: Bearer {key}" "{base}/metrics?mode=SERIES&metrics=baseten_end_to_end_response_time_seconds&metrics=baseten_inference_requests_total"
  curl -s -H "Authorization: Bearer {key}" "{base}/logs?min_level=WARNING&limit=20"

Ctrl-C stops everything.""", err=False)
        deadline = time.monotonic() + duration if duration > 0 else None
        while server.poll() is None and (deadline is None or time.monotonic() < deadline):
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        for r in replicas:
            r.shutdown()
        if server.poll() is None:
            server.send_signal(signal.SIGINT)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
        click.echo("sonde demo stopped", err=True)
