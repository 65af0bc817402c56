"""The vendor's deployment-metric catalogue, mapped onto the OTel names we store.

Rows of ``metric_points`` keep the OTel name and unit as sent (docs/architecture.md);
this table says which stored names feed each vendor name, how their values convert to
the vendor's unit, and how the vendor name breaks into label sets (docs/metrics.md,
"Catalogue", which explains each choice).

A vendor name may have several sources (the stable and the older HTTP semantic
conventions, ``process.*`` and ``container.*``): they are alternatives, never added
together, because instrumentation in ``http/dup`` mode sends both for the same
requests. Per replica the first source in the list that sent anything in the queried
window wins (see :mod:`sonde.query.sources`).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from .._exceptions import BadRequest
from ..store.views import STATUS_ATTRS

GAUGE, COUNTER, HISTOGRAM = "GAUGE", "COUNTER", "HISTOGRAM"

# Conversions from a UCUM unit as sent to the vendor's unit, per dimension. A unit not
# listed (or none sent) falls back to the source's documented unit.
TIME_S = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "\u00b5s": 1e-6, "ns": 1e-9, "min": 60.0, "h": 3600.0}
BYTES = {"By": 1.0, "KiBy": 2.0**10, "MiBy": 2.0**20, "GiBy": 2.0**30, "kBy": 1e3, "KBy": 1e3, "MBy": 1e6, "GBy": 1e9}
MEBIBYTES = {u: f / 2.0**20 for u, f in BYTES.items()}
RATIO = {"1": 1.0, "%": 0.01}
DIMENSIONS = {"time": TIME_S, "bytes": BYTES, "mebibytes": MEBIBYTES, "ratio": RATIO, "count": {}}


class LabelKind(enum.Enum):
    """How a metric breaks into label sets.

    Per-series rows carry two label columns: ``l_host``, the replica (or the node rank,
    decimal, -1 when the resource sent none, for the ``NODE*`` kinds), and
    ``l_device``, the GPU index or the filesystem's mount name (``sonde.mount``).
    """

    PLAIN = "plain"  # one series [{}]; gauges add up their series (deployment totals)
    STATUS = "status"  # {status: 2xx..5xx} from the sources' status attribute (request totals)
    REPLICA = "replica"  # {replica} per replica
    GPU = "gpu"  # {replica, gpu} per replica and GPU
    MOUNT = "mount"  # {replica, mount} per replica and filesystem
    REPLICAS_ACTIVE = "replicas_active"  # replicas seen in the step, by state
    REPLICAS_STARTING = "replicas_starting"
    HISTOGRAM = "histogram"  # quantiles and average
    NODE = "node"  # per node rank (training jobs and loops: query/nodes.py)
    NODE_GPU = "node_gpu"  # per node rank and GPU
    NODE_MOUNT = "node_mount"  # per node rank and filesystem
    COUNTER_RATIO = "counter_ratio"  # [{}]: increase of the first source / of the second, per step
    ATTRIBUTES = "attributes"  # custom metrics: one label set per replica and attribute set

    @property
    def per_node(self) -> bool:
        return self in (LabelKind.NODE, LabelKind.NODE_GPU, LabelKind.NODE_MOUNT)

    @property
    def device(self) -> str:
        """What ``l_device`` holds: 'gpu', 'mount' or '' (nothing)."""
        if self in (LabelKind.GPU, LabelKind.NODE_GPU):
            return "gpu"
        if self in (LabelKind.MOUNT, LabelKind.NODE_MOUNT):
            return "mount"
        return ""

    @property
    def replica_count(self) -> bool:
        return self in (LabelKind.REPLICAS_ACTIVE, LabelKind.REPLICAS_STARTING)


def gpu_key(gpu: str) -> tuple:
    """GPU labels in numeric order ('2' before '10'), other names after them."""
    return (int(gpu), gpu) if gpu.isdigit() else (math.inf, gpu)


@dataclass(frozen=True)
class Source:
    metric: str  # OTel name as stored
    unit: str = ""  # the documented unit, used when a row's unit is missing or unknown
    status_attr: str = ""  # request counters: the attribute holding the HTTP status code
    #: only points whose attributes hold these values (the GenAI conventions put input and
    #: output token counts in one histogram, told apart by ``gen_ai.token.type``)
    match: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class VendorMetric:
    name: str
    kind: str  # GAUGE | COUNTER | HISTOGRAM (DeploymentMetricKindV1)
    unit_hint: str  # DeploymentMetricUnitHintV1
    dimension: str  # key of DIMENSIONS: how a row's unit converts
    sources: tuple[Source, ...]
    labels: LabelKind

    @property
    def source_names(self) -> tuple[str, ...]:
        return tuple(s.metric for s in self.sources)

    @property
    def chooses_in_statement(self) -> bool:
        """Several sources, none narrowed by attributes, read by a statement that keeps
        ``replica``: that statement picks each replica's source itself
        (``Scan.first_source``), as the discovery would (query/sources.py)."""
        return (len(self.sources) > 1 and not any(s.match for s in self.sources)
                and not self.labels.replica_count and self.labels is not LabelKind.COUNTER_RATIO)

    def factor_of(self, unit: str, source: Source) -> float:
        table = DIMENSIONS[self.dimension]
        if not table:
            return 1.0
        return table.get(unit, table.get(source.unit, 1.0))


# status attributes: the ones the store computes each point's status code from
_HTTP_NEW = Source("http.server.request.duration", "s", STATUS_ATTRS[0])
_HTTP_OLD = Source("http.server.duration", "ms", STATUS_ATTRS[1])

def _srcs(*metrics: str, unit: str = "") -> tuple[Source, ...]:
    return tuple(Source(m, unit) for m in metrics)


def _GENAI_TOKENS(kind: str) -> Source:
    return Source("gen_ai.client.token.usage", "", match=(("gen_ai.token.type", kind),))


_V = VendorMetric
_L = LabelKind
CATALOGUE: dict[str, VendorMetric] = {m.name: m for m in (
    _V("baseten_replicas_active", GAUGE, "COUNT", "count", (Source("sonde.replica.state"),), _L.REPLICAS_ACTIVE),
    _V("baseten_replicas_starting", GAUGE, "COUNT", "count", (Source("sonde.replica.state"),), _L.REPLICAS_STARTING),
    _V("baseten_inference_requests_total", COUNTER, "COUNT", "count", (_HTTP_NEW, _HTTP_OLD), _L.STATUS),
    _V("baseten_end_to_end_response_time_seconds", HISTOGRAM, "SECONDS", "time", (_HTTP_NEW, _HTTP_OLD),
       _L.HISTOGRAM),
    _V("baseten_time_to_first_byte_seconds", HISTOGRAM, "SECONDS", "time",
       (Source("sonde.server.time_to_first_byte", "s"),), _L.HISTOGRAM),
    _V("baseten_request_size_bytes", HISTOGRAM, "BYTES", "bytes",
       (Source("http.server.request.body.size", "By"), Source("http.server.request.size", "By")), _L.HISTOGRAM),
    _V("baseten_response_size_bytes", HISTOGRAM, "BYTES", "bytes",
       (Source("http.server.response.body.size", "By"), Source("http.server.response.size", "By")), _L.HISTOGRAM),
    _V("baseten_concurrent_requests", GAUGE, "COUNT", "count", (Source("http.server.active_requests"),), _L.PLAIN),
    # GPUs: the agent's NVML sampler, else NVIDIA's DCGM exporter, else Triton's page
    _V("baseten_gpu_utilization", GAUGE, "RATIO", "ratio", (Source("hw.gpu.utilization", "1"),
       Source("DCGM_FI_DEV_GPU_UTIL", "%"), Source("nv_gpu_utilization", "1")), _L.GPU),
    _V("baseten_gpu_memory_used", GAUGE, "MEBIBYTES", "mebibytes", (Source("hw.gpu.memory.usage", "By"),
       Source("DCGM_FI_DEV_FB_USED", "MiBy"), Source("nv_gpu_memory_used_bytes", "By")), _L.GPU),
    _V("baseten_container_cpu_usage_seconds_total", COUNTER, "SECONDS", "time",
       (Source("process.cpu.time", "s"), Source("container.cpu.time", "s")), _L.REPLICA),
    _V("baseten_container_cpu_memory_working_set_bytes", GAUGE, "BYTES", "bytes",
       (Source("process.memory.usage", "By"), Source("container.memory.working_set", "By")), _L.REPLICA),
    _V("baseten_container_restarts_total", COUNTER, "COUNT", "count", (Source("sonde.process.restarts"),),
       _L.REPLICA),
    # Sonde's own: the vendor's deployment catalogue has no disk metric, and the agent
    # reports the ephemeral and cache filesystems of every replica (docs/metrics.md).
    _V("sonde_filesystem_usage_bytes", GAUGE, "BYTES", "bytes", (Source("system.filesystem.usage", "By"),), _L.MOUNT),
    _V("sonde_filesystem_limit_bytes", GAUGE, "BYTES", "bytes", (Source("system.filesystem.limit", "By"),), _L.MOUNT),

    # Model servers' engine metrics (docs/model-servers.md): scraped Prometheus pages keep
    # their names (counters with ``_total``; an OpenTelemetry Collector may trim it), and
    # the GenAI semantic conventions name the same figures over OTLP.
    _V("baseten_llm_input_tokens_total", COUNTER, "COUNT", "count",
       _srcs("vllm:prompt_tokens_total", "sglang:prompt_tokens_total", "vllm:prompt_tokens", "sglang:prompt_tokens"),
       _L.REPLICA),
    _V("baseten_llm_output_tokens_total", COUNTER, "COUNT", "count",
       _srcs("vllm:generation_tokens_total", "sglang:generation_tokens_total", "vllm:generation_tokens",
             "sglang:generation_tokens"), _L.REPLICA),
    _V("baseten_llm_input_tokens_per_request", HISTOGRAM, "COUNT", "count",
       (Source("vllm:request_prompt_tokens"), _GENAI_TOKENS("input")), _L.HISTOGRAM),
    _V("baseten_llm_output_tokens_per_request", HISTOGRAM, "COUNT", "count",
       (Source("vllm:request_generation_tokens"), Source("tgi_request_generated_tokens"), _GENAI_TOKENS("output")),
       _L.HISTOGRAM),
    _V("baseten_llm_num_requests", GAUGE, "COUNT", "count", _srcs("vllm:num_requests_running"), _L.PLAIN),
    _V("baseten_llm_kv_cache_hit_rate", GAUGE, "RATIO", "count",
       _srcs("vllm:prefix_cache_hits_total", "vllm:prefix_cache_queries_total"), _L.COUNTER_RATIO),
    _V("sonde_llm_time_to_first_token_seconds", HISTOGRAM, "SECONDS", "time",
       _srcs("vllm:time_to_first_token_seconds", "sglang:time_to_first_token_seconds",
             "gen_ai.server.time_to_first_token", unit="s"), _L.HISTOGRAM),
    _V("sonde_llm_time_per_output_token_seconds", HISTOGRAM, "SECONDS", "time",
       _srcs("vllm:inter_token_latency_seconds", "vllm:time_per_output_token_seconds",
             "gen_ai.server.time_per_output_token", unit="s"), _L.HISTOGRAM),
    _V("sonde_llm_requests_waiting", GAUGE, "COUNT", "count", _srcs("vllm:num_requests_waiting", "tgi_queue_size"),
       _L.PLAIN),
    _V("sonde_llm_kv_cache_usage_ratio", GAUGE, "RATIO", "ratio",
       _srcs("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc", "sglang:token_usage", unit="1"), _L.REPLICA),
    # The vendor's enum has no unit for these two; the name says it (COUNT: as sent).
    _V("sonde_gpu_temperature_celsius", GAUGE, "COUNT", "count", _srcs("hw.temperature", "DCGM_FI_DEV_GPU_TEMP"),
       _L.GPU),
    _V("sonde_gpu_power_watts", GAUGE, "COUNT", "count", _srcs("hw.power", "DCGM_FI_DEV_POWER_USAGE"), _L.GPU),
)}

DEFAULT_METRICS = (
    "baseten_replicas_active", "baseten_inference_requests_total", "baseten_end_to_end_response_time_seconds",
)

QUANTILES = (0.5, 0.9, 0.95, 0.99)
HISTOGRAM_LABEL_SETS = [{"quantile": str(q)} for q in QUANTILES] + [{"stat": "avg"}]
STATUS_CLASSES = ("2xx", "3xx", "4xx", "5xx")


def parse_names(values: list[str] | None,
                sent: Callable[[list[str]], Mapping[str, VendorMetric]] | None = None) -> list[VendorMetric]:
    """``metrics=a&metrics=b`` and ``metrics=a,b`` alike; order kept, repeats dropped.
    Names outside the catalogue are looked up with ``sent`` (custom metrics,
    query/custom.py); one neither known nor sent is a 400."""
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
    custom = sent(unknown) if unknown and sent else {}
    unknown = [n for n in unknown if n not in custom]
    if unknown:
        raise BadRequest(
            f"unknown metric {', '.join(unknown)}: neither in the catalogue ({', '.join(CATALOGUE)})"
            " nor sent by this deployment", field="metrics"
        )
    return [CATALOGUE.get(n) or custom[n] for n in names]
