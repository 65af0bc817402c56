"""`configure()`: OpenTelemetry metrics, traces and logs pointed at a Sonde server.

Builds a `MeterProvider`, a `TracerProvider` and a `LoggerProvider` with OTLP/HTTP
exporters (protobuf, gzip) to ``{server}/v1/otlp``, the resource attributes that place the telemetry in
Sonde (``sonde.model_id``, ``sonde.deployment_id``, ``sonde.replica``,
``sonde.environment``), and the exponential-histogram views of `sonde_views()`.
Nothing here is Sonde-specific on the wire: an app can build the same providers by
hand, and `SondeMiddleware` records on any provider.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass, field
from typing import Mapping

from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation, View

from .request_id import RequestIdFilter

# Quantiles from a base-2 exponential histogram of scale s are within (2**(2**-s) - 1) / 2
# relative error (the bucket's midpoint): 0.54% at scale 6, 1.08% at scale 5. The SDK
# starts at max_scale and halves the resolution whenever the recorded values span more
# than max_size buckets, so scale >= 6 holds while max/min <= 2 ** (max_size / 64).
# 2048 buckets: 2**32, i.e. 1 us to 71 minutes, every latency a model server sees
# (OTel's default of 160 drops to scale 4 at a 100x spread, 320 to scale 5 at 40x).
# Buckets are allocated as the spread grows, so a narrow distribution costs little.
TIME_MAX_SIZE = 2048
# Sizes need no 1% guarantee; 320 buckets keep 2.2% (scale 4) over a 1 B..1 MB spread.
SIZE_MAX_SIZE = 320
MAX_SCALE = 20

# Names from SondeMiddleware and from the older/newer OpenTelemetry HTTP semantic
# conventions, so that opentelemetry-instrumentation-asgi/-fastapi on a provider
# from configure() gets the same resolution.
TIME_HISTOGRAMS = ("http.server.request.duration", "sonde.server.time_to_first_byte", "http.server.duration")
SIZE_HISTOGRAMS = ("http.server.request.body.size", "http.server.response.body.size",
                   "http.server.request.size", "http.server.response.size")

_PLACEMENT = ("sonde.deployment_id", "sonde.chainlet_id", "sonde.training_job_id", "sonde.loops_deployment_id")
_ENV = {  # resource attribute <- environment variable
    "sonde.model_id": "SONDE_MODEL_ID",
    "sonde.deployment_id": "SONDE_DEPLOYMENT_ID",
    "sonde.replica": "SONDE_REPLICA",
    "sonde.environment": "SONDE_ENVIRONMENT",
}


def sonde_views() -> list[View]:
    """Exponential-histogram views for the HTTP server histograms (quantiles within 1%)."""
    views = [View(instrument_name=name,
                  aggregation=ExponentialBucketHistogramAggregation(max_size=TIME_MAX_SIZE, max_scale=MAX_SCALE))
             for name in TIME_HISTOGRAMS]
    views += [View(instrument_name=name,
                   aggregation=ExponentialBucketHistogramAggregation(max_size=SIZE_MAX_SIZE, max_scale=MAX_SCALE))
              for name in SIZE_HISTOGRAMS]
    return views


@dataclass
class SondeTelemetry:
    """What `configure()` built; ``shutdown()`` flushes and detaches it."""

    meter_provider: object
    logger_provider: object | None = None
    log_handler: logging.Handler | None = None
    resource: object | None = None
    tracer_provider: object | None = None
    shipper: object | None = None  # with a spool directory: the spans' and log records' sender
    _root_handler: bool = field(default=False, repr=False)

    def _providers(self) -> list:
        # Spans first: a span ends before the metric sample and log lines that point at it are read.
        return [p for p in (self.tracer_provider, self.meter_provider, self.logger_provider) if p is not None]

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        results = [p.force_flush(timeout_millis) for p in self._providers()]
        if self.shipper is not None:  # and what waits in the spool, if the server takes it now
            results.append(self.shipper.drain(timeout_millis / 1000))
        return all(results)

    def shutdown(self) -> None:
        if self.log_handler is not None and self._root_handler:
            logging.getLogger().removeHandler(self.log_handler)
        for provider in self._providers():
            provider.shutdown()


def _placement_attributes(explicit: Mapping[str, str | None]) -> dict[str, str]:
    attrs = {}
    for key, env in _ENV.items():
        value = explicit.get(key) or os.environ.get(env)
        if value:
            attrs[key] = value
    return attrs


def configure(
    *,
    server: str | None = None,
    api_key: str | None = None,
    model_id: str | None = None,
    deployment_id: str | None = None,
    replica: str | None = None,
    environment: str | None = None,
    service_name: str | None = None,
    resource_attributes: Mapping[str, str] | None = None,
    export_interval_s: float = 10.0,
    traces: bool = True,
    logs: bool = True,
    log_level: int = logging.INFO,
    attach_to_root_logger: bool = True,
    set_global: bool = True,
    timeout_s: float = 10.0,
    spool_dir: str | None = None,
) -> SondeTelemetry:
    """Set up OpenTelemetry to report to Sonde, and return the providers.

    Each argument falls back to an environment variable: ``SONDE_SERVER``,
    ``SONDE_API_KEY`` (an ingest key), ``SONDE_MODEL_ID``, ``SONDE_DEPLOYMENT_ID``,
    ``SONDE_REPLICA``, ``SONDE_ENVIRONMENT``; ``OTEL_RESOURCE_ATTRIBUTES`` and
    ``OTEL_SERVICE_NAME`` are honoured as usual. Without a replica id, Sonde falls back
    to ``service.instance.id``, which the SDK sets to a random UUID per process (new
    after a fork): several uvicorn workers never overwrite each other's cumulative sums.

    Temporality is the exporter's (cumulative unless
    ``OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE`` says otherwise): Sonde turns
    cumulative series into deltas, and a cumulative series loses nothing when one
    export fails, because the next one carries the total.

    With ``traces``, a `TracerProvider` batches spans (`SondeMiddleware`'s request
    spans among them) to ``/v1/otlp/v1/traces``; the metrics' exemplar filter is the
    SDK's (``OTEL_METRICS_EXEMPLAR_FILTER``, default ``trace_based``), so latency
    samples taken inside a sampled span carry its trace id.

    With ``logs``, a `LoggingHandler` with a `RequestIdFilter` goes on the root logger
    (``attach_to_root_logger``), whose level is lowered to ``log_level`` if it is
    stricter, so exported records carry ``request_id``. With ``set_global``, the
    providers become OpenTelemetry's globals, which is what `SondeMiddleware` and
    ``opentelemetry-instrumentation-*`` use when given no provider; FastAPI 0.165's own
    telemetry starts recording HTTP metrics and server spans then too, hence
    ``FastAPI(telemetry={"metrics": False, "tracing": False})`` next to SondeMiddleware
    (docs/instrument.md).

    With ``spool_dir`` (or ``SONDE_SPOOL_DIR``, which ``sonde agent run`` sets for its
    process), spans and log records the server cannot take wait in an on-disk spool
    there and are replayed in order when it is back (`sonde.instrument.durable`);
    without, the SDK's exporters retry in memory for a few seconds and then drop them.
    """
    # Imported here: the exporters pull in requests and protobuf, which an app that only
    # uses the middleware on its own provider does not need to load.
    from opentelemetry import metrics
    from opentelemetry.exporter.otlp.proto.http import Compression
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource

    server = server or os.environ.get("SONDE_SERVER")
    api_key = api_key or os.environ.get("SONDE_API_KEY")
    if not server:
        raise ValueError("no Sonde server: pass server= or set SONDE_SERVER (e.g. http://sonde:8080)")
    if not api_key:
        raise ValueError("no ingest key: pass api_key= or set SONDE_API_KEY")
    otlp = server.rstrip("/") + "/v1/otlp"
    headers = {"Authorization": f"Bearer {api_key}"}

    attrs = dict(resource_attributes or {})
    attrs.update(_placement_attributes({
        "sonde.model_id": model_id, "sonde.deployment_id": deployment_id,
        "sonde.replica": replica, "sonde.environment": environment,
    }))
    if service_name:
        attrs[SERVICE_NAME] = service_name
    # Merges OTEL_RESOURCE_ATTRIBUTES / OTEL_SERVICE_NAME and the per-process service.instance.id.
    resource = Resource.create(attrs)
    if not any(k in resource.attributes for k in _PLACEMENT):
        raise ValueError("telemetry needs a place in Sonde: pass deployment_id= or set SONDE_DEPLOYMENT_ID "
                         f"(or one of {', '.join(_PLACEMENT[1:])} in resource_attributes)")

    reader = PeriodicExportingMetricReader(
        OTLPMetricExporter(endpoint=f"{otlp}/v1/metrics", headers=headers, timeout=timeout_s,
                           compression=Compression.Gzip),
        export_interval_millis=export_interval_s * 1000,
    )
    meter_provider = MeterProvider(resource=resource, metric_readers=[reader], views=sonde_views())
    if set_global:
        metrics.set_meter_provider(meter_provider)
    telemetry = SondeTelemetry(meter_provider=meter_provider, resource=resource)
    spool_dir = (spool_dir or os.environ.get("SONDE_SPOOL_DIR")) if traces or logs else None
    span_exporter, log_exporter = _exporters(telemetry, otlp, headers, timeout_s, spool_dir)
    if traces:
        _configure_traces(telemetry, span_exporter(), set_global)
    if logs:
        _configure_logs(telemetry, log_exporter(), log_level, attach_to_root_logger, set_global)
    return telemetry


def _exporters(telemetry: SondeTelemetry, otlp: str, headers: dict, timeout_s: float,
               spool_dir: str | None) -> tuple:
    """The span and log exporters' makers: the SDK's OTLP/HTTP ones, or with a spool
    directory the spooling ones, which share one spool and one sender."""
    if spool_dir:
        from .durable import Shipper, SpoolingLogExporter, SpoolingSpanExporter, open_slot

        shipper = telemetry.shipper = Shipper(otlp, headers, open_slot(spool_dir), timeout_s=timeout_s)
        return lambda: SpoolingSpanExporter(shipper), lambda: SpoolingLogExporter(shipper)

    from opentelemetry.exporter.otlp.proto.http import Compression
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return (lambda: OTLPSpanExporter(endpoint=f"{otlp}/v1/traces", headers=headers, timeout=timeout_s,
                                     compression=Compression.Gzip),
            lambda: OTLPLogExporter(endpoint=f"{otlp}/v1/logs", headers=headers, timeout=timeout_s,
                                    compression=Compression.Gzip))


def _configure_traces(telemetry: SondeTelemetry, exporter, set_global: bool) -> None:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=telemetry.resource)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    if set_global:
        trace.set_tracer_provider(provider)
    telemetry.tracer_provider = provider


def _configure_logs(telemetry: SondeTelemetry, exporter, level: int, attach: bool, set_global: bool) -> None:
    from opentelemetry._logs import set_logger_provider
    from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor

    provider = LoggerProvider(resource=telemetry.resource)
    provider.add_log_record_processor(BatchLogRecordProcessor(exporter))
    if set_global:
        set_logger_provider(provider)
    with warnings.catch_warnings():
        # The SDK's handler is deprecated in favour of opentelemetry-instrumentation-logging,
        # a package Sonde does not depend on; the SDK's is the same code and still shipped.
        warnings.simplefilter("ignore", DeprecationWarning)
        handler = LoggingHandler(level=level, logger_provider=provider)
    handler.addFilter(RequestIdFilter())
    # The exporters' own complaints (server down) cannot be exported and would only
    # feed back into the queue that is failing; other handlers still show them.
    handler.addFilter(lambda record: not record.name.startswith(("opentelemetry", "sonde.instrument.durable",
                                                                 "sonde.spool")))
    telemetry.logger_provider, telemetry.log_handler = provider, handler
    if attach:
        root = logging.getLogger()
        root.addHandler(handler)
        if root.level > level:  # NOTSET (0) on the root already lets everything through
            root.setLevel(level)
        telemetry._root_handler = True
