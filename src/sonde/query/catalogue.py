"""The vendor's deployment-metric catalogue, mapped onto the OTel names we store.

Rows of ``metric_points`` keep the OTel name and unit as sent (docs/architecture.md);
this table says which stored names feed each vendor name, how their values convert to
the vendor's unit, and how the vendor name breaks into label sets (SONDE.md, "Metric
names understood"). docs/metrics.md explains each choice.

A vendor name may have several sources (the stable and the older HTTP semantic
conventions, ``process.*`` and ``container.*``): they are alternatives, never added
together, because instrumentation in ``http/dup`` mode sends both for the same
requests. Per replica the first source in the list that sent anything in the queried
window wins (see :func:`sonde.query.metrics.choose_sources`).
"""

from __future__ import annotations

from dataclasses import dataclass

from .._exceptions import BadRequest

GAUGE, COUNTER, HISTOGRAM = "GAUGE", "COUNTER", "HISTOGRAM"

# Conversions from a UCUM unit as sent to the vendor's unit, per dimension. A unit not
# listed (or none sent) falls back to the source's documented unit.
TIME_S = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "\u00b5s": 1e-6, "ns": 1e-9, "min": 60.0, "h": 3600.0}
BYTES = {"By": 1.0, "KiBy": 2.0**10, "MiBy": 2.0**20, "GiBy": 2.0**30, "kBy": 1e3, "KBy": 1e3, "MBy": 1e6, "GBy": 1e9}
MEBIBYTES = {u: f / 2.0**20 for u, f in BYTES.items()}
RATIO = {"1": 1.0, "%": 0.01}
DIMENSIONS = {"time": TIME_S, "bytes": BYTES, "mebibytes": MEBIBYTES, "ratio": RATIO, "count": {}}


@dataclass(frozen=True)
class Source:
    metric: str  # OTel name as stored
    unit: str = ""  # the documented unit, used when a row's unit is missing or unknown
    status_attr: str = ""  # request counters: the attribute holding the HTTP status code


@dataclass(frozen=True)
class VendorMetric:
    name: str
    kind: str  # GAUGE | COUNTER | HISTOGRAM (DeploymentMetricKindV1)
    unit_hint: str  # DeploymentMetricUnitHintV1
    dimension: str  # key of DIMENSIONS: how a row's unit converts
    sources: tuple[Source, ...]
    # How the metric breaks into label sets:
    #   "plain"   one series [{}]; gauges add up their series (deployment totals)
    #   "status"  {status: 2xx..5xx} from the sources' status attribute (request totals)
    #   "replica" {replica} per replica;  "gpu" {replica, gpu} per replica and GPU
    #   "mount"   {replica, mount} per replica and filesystem (``sonde.mount``)
    #   "replicas_active" / "replicas_starting": replicas seen in the step
    #   "histogram" quantiles and average
    #   "node" / "node_gpu" / "node_mount": per node rank (and GPU, or ``sonde.mount``);
    #   used by loops metrics (query/loops.py), not by the deployment catalogue
    labels: str

    @property
    def source_names(self) -> tuple[str, ...]:
        return tuple(s.metric for s in self.sources)

    def factor_of(self, unit: str, source: Source) -> float:
        table = DIMENSIONS[self.dimension]
        if not table:
            return 1.0
        return table.get(unit, table.get(source.unit, 1.0))


_HTTP_NEW = Source("http.server.request.duration", "s", "http.response.status_code")
_HTTP_OLD = Source("http.server.duration", "ms", "http.status_code")

_V = VendorMetric
CATALOGUE: dict[str, VendorMetric] = {m.name: m for m in (
    _V("baseten_replicas_active", GAUGE, "COUNT", "count", (Source("sonde.replica.state"),), "replicas_active"),
    _V("baseten_replicas_starting", GAUGE, "COUNT", "count", (Source("sonde.replica.state"),), "replicas_starting"),
    _V("baseten_inference_requests_total", COUNTER, "COUNT", "count", (_HTTP_NEW, _HTTP_OLD), "status"),
    _V("baseten_end_to_end_response_time_seconds", HISTOGRAM, "SECONDS", "time", (_HTTP_NEW, _HTTP_OLD),
       "histogram"),
    _V("baseten_time_to_first_byte_seconds", HISTOGRAM, "SECONDS", "time",
       (Source("sonde.server.time_to_first_byte", "s"),), "histogram"),
    _V("baseten_request_size_bytes", HISTOGRAM, "BYTES", "bytes",
       (Source("http.server.request.body.size", "By"), Source("http.server.request.size", "By")), "histogram"),
    _V("baseten_response_size_bytes", HISTOGRAM, "BYTES", "bytes",
       (Source("http.server.response.body.size", "By"), Source("http.server.response.size", "By")), "histogram"),
    _V("baseten_concurrent_requests", GAUGE, "COUNT", "count", (Source("http.server.active_requests"),), "plain"),
    _V("baseten_gpu_utilization", GAUGE, "RATIO", "ratio", (Source("hw.gpu.utilization", "1"),), "gpu"),
    _V("baseten_gpu_memory_used", GAUGE, "MEBIBYTES", "mebibytes", (Source("hw.gpu.memory.usage", "By"),), "gpu"),
    _V("baseten_container_cpu_usage_seconds_total", COUNTER, "SECONDS", "time",
       (Source("process.cpu.time", "s"), Source("container.cpu.time", "s")), "replica"),
    _V("baseten_container_cpu_memory_working_set_bytes", GAUGE, "BYTES", "bytes",
       (Source("process.memory.usage", "By"), Source("container.memory.working_set", "By")), "replica"),
    _V("baseten_container_restarts_total", COUNTER, "COUNT", "count", (Source("sonde.process.restarts"),),
       "replica"),
    # Sonde's own: the vendor's deployment catalogue has no disk metric, and the agent
    # reports the ephemeral and cache filesystems of every replica (docs/metrics.md).
    _V("sonde_filesystem_usage_bytes", GAUGE, "BYTES", "bytes", (Source("system.filesystem.usage", "By"),), "mount"),
    _V("sonde_filesystem_limit_bytes", GAUGE, "BYTES", "bytes", (Source("system.filesystem.limit", "By"),), "mount"),
)}

DEFAULT_METRICS = (
    "baseten_replicas_active", "baseten_inference_requests_total", "baseten_end_to_end_response_time_seconds",
)

QUANTILES = (0.5, 0.9, 0.95, 0.99)
HISTOGRAM_LABEL_SETS = [{"quantile": str(q)} for q in QUANTILES] + [{"stat": "avg"}]
STATUS_CLASSES = ("2xx", "3xx", "4xx", "5xx")


def parse_names(values: list[str] | None) -> list[VendorMetric]:
    """``metrics=a&metrics=b`` and ``metrics=a,b`` alike; order kept, repeats dropped."""
    if values is None:
        return [CATALOGUE[n] for n in DEFAULT_METRICS]
    names: list[str] = []
    for v in values:
        for part in v.split(","):
            part = part.strip()
            if part and part not in names:
                names.append(part)
    if not names:
        raise BadRequest("metrics names no metric; omit it for the default set", field="metrics")
    unknown = [n for n in names if n not in CATALOGUE]
    if unknown:
        raise BadRequest(
            f"unknown metric {', '.join(unknown)}; valid names: {', '.join(CATALOGUE)}", field="metrics"
        )
    return [CATALOGUE[n] for n in names]
