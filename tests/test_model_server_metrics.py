"""Model servers' metrics through the API: the LLM and GPU names of the catalogue, and
custom metrics under the names as sent.

Pages are written by ``prometheus_client`` with vLLM's names, types, labels and bucket
layouts (and NVIDIA's DCGM exporter's page as the exporter prints it, a fixture), read
by the agent's own scrape converter at known times, encoded by the agent's OTLP encoder
and sent to the real receiver; the GenAI names come from the OpenTelemetry SDK's
histograms, encoded by the OTLP exporter's encoder. Expected values are what the pages
counted.
"""

from __future__ import annotations

import pathlib
import time

import prometheus_client
import pytest
from opentelemetry.exporter.otlp.proto.common._internal.metrics_encoder import encode_metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.resources import Resource
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from sonde.agent import otlp
from sonde.agent.scrape import Converter, families

from otlp_build import SEC, T0
from spec_schema import validate

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "scrape"
TEXT = "text/plain; version=0.0.4; charset=utf-8"
MODEL, DEP = "llm", "vllm-d1"
URL = f"/v1/models/{MODEL}/deployments/{DEP}/metrics"
W0, W1 = T0 - 10 * 60 * SEC, T0
WINDOW = {"start_epoch_millis": W0 // 10**6, "end_epoch_millis": W1 // 10**6}
LABELS = ["model_name", "engine"]
LLAMA = {"model_name": "meta-llama/Llama-3.1-8B-Instruct", "engine": "0"}
TTFT_BUCKETS = [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
                40.0, 80.0, 160.0, 640.0, 2560.0]
TOKEN_BUCKETS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000]


def resource(replica: str, deployment: str = DEP) -> dict:
    return {"sonde.model_id": MODEL, "sonde.deployment_id": deployment, "sonde.replica": replica}


def send_page(client, creds, text: str, conv: Converter, res: dict, ts: int) -> None:
    """One scrape as the agent makes it: page -> points -> OTLP request."""
    points = conv.convert(families(text, TEXT), ts)
    body = otlp.metrics_request(otlp.resource(res), points, ts)
    r = client.post("/v1/otlp/v1/metrics", content=body, headers={"Content-Type": "application/x-protobuf"},
                    key=creds["ingest_key"])
    assert r.status_code == 200 and b"rejected" not in r.content, r.content


def query(client, names, mode="SUMMARY", url=URL, window=WINDOW, status=200) -> dict:
    r = client.get(url, params={"mode": mode, "metrics": ",".join(names), **window})
    assert r.status_code == status, r.text
    if status == 200:
        validate(r.json(), "GetDeploymentMetricsResponseV1")
    return r.json()


def metric(body, name) -> tuple[dict, list[dict], list]:
    """(descriptor, label sets, the first step's values)."""
    names = [d["name"] for d in body["metric_descriptors"]]
    assert name in names, (name, names)
    i = names.index(name)
    d = body["metric_descriptors"][i]
    return d, d["label_sets"], body["metric_values"][0]["values"][i]


class Engine:
    """One replica's vLLM-named metrics, as vLLM registers them."""

    def __init__(self, running: int, waiting: int, kv: float):
        self.registry = r = CollectorRegistry()
        self.prompt = Counter("vllm:prompt_tokens", "prefill tokens", LABELS, registry=r).labels(**LLAMA)
        self.generation = Counter("vllm:generation_tokens", "generation tokens", LABELS, registry=r).labels(**LLAMA)
        self.queries = Counter("vllm:prefix_cache_queries", "queried tokens", LABELS, registry=r).labels(**LLAMA)
        self.hits = Counter("vllm:prefix_cache_hits", "hit tokens", LABELS, registry=r).labels(**LLAMA)
        self.success = Counter("vllm:request_success", "finished", LABELS + ["finished_reason"], registry=r)
        for reason in ("length", "stop"):  # as vLLM does: every series on the page from the start
            self.success.labels(**LLAMA, finished_reason=reason)
        Gauge("vllm:num_requests_running", "running", LABELS, registry=r).labels(**LLAMA).set(running)
        Gauge("vllm:num_requests_waiting", "waiting", LABELS, registry=r).labels(**LLAMA).set(waiting)
        Gauge("vllm:kv_cache_usage_perc", "KV-cache usage", LABELS, registry=r).labels(**LLAMA).set(kv)
        self.ttft = Histogram("vllm:time_to_first_token_seconds", "TTFT", LABELS, buckets=TTFT_BUCKETS,
                              registry=r).labels(**LLAMA)
        self.prompt_len = Histogram("vllm:request_prompt_tokens", "prompt tokens", LABELS, buckets=TOKEN_BUCKETS,
                                    registry=r).labels(**LLAMA)

    def request(self, prompt: int, output: int, hit: int, ttft: float, reason: str = "stop") -> None:
        self.prompt.inc(prompt)
        self.generation.inc(output)
        self.queries.inc(prompt)
        self.hits.inc(hit)
        self.success.labels(**LLAMA, finished_reason=reason).inc()
        self.ttft.observe(ttft)
        self.prompt_len.observe(prompt)

    def page(self) -> str:
        return generate_latest(self.registry).decode()


@pytest.fixture
def served(app, client, creds):
    """Two replicas scraped every 15 s for 5 minutes; returns what they counted.

    The pages are scraped at times in the past, before the counters' real creation
    time, so their ``_created`` samples are left out (the agent's tests cover them):
    each counter counts from its first sight, a scrape before the first request."""
    prometheus_client.disable_created_metrics()
    try:
        with app.held():  # 42 pages to one server; each query still meets a fresh one in restart mode
            return _serve(client, creds)
    finally:
        prometheus_client.enable_created_metrics()


def _serve(client, creds) -> dict:
    engines = {"ra": Engine(3, 1, 0.25), "rb": Engine(2, 0, 0.5)}
    convs = {r: Converter() for r in engines}
    sent = {"prompt": 0, "output": 0, "queries": 0, "hits": 0, "ttft": [], "prompt_len": []}
    # The engines' first scrape, before any request: without _created, the agent takes a
    # counter's first sight as its baseline, so what is counted from here on is sent.
    for replica, e in engines.items():
        send_page(client, creds, e.page(), convs[replica], resource(replica), W0 + 45 * SEC)
    for i in range(20):
        ts = W0 + 60 * SEC + i * 15 * SEC
        for n, (replica, e) in enumerate(engines.items()):
            prompt, output, hit, ttft = 100 + 7 * i + n, 20 + i, (30 + i) * (i % 3 != 0), 0.03 + 0.01 * ((i + n) % 9)
            e.request(prompt, output, hit, ttft, "length" if i % 5 == 0 else "stop")
            for k, v in (("prompt", prompt), ("output", output), ("queries", prompt), ("hits", hit)):
                sent[k] += v
            sent["ttft"].append(ttft)
            sent["prompt_len"].append(prompt)
            send_page(client, creds, e.page(), convs[replica], resource(replica), ts)
    return sent


def test_llm_names_from_scraped_vllm_pages(client, creds, served):
    body = query(client, ["baseten_llm_input_tokens_total", "baseten_llm_output_tokens_total",
                          "baseten_llm_kv_cache_hit_rate", "baseten_llm_num_requests", "sonde_llm_requests_waiting",
                          "sonde_llm_kv_cache_usage_ratio", "sonde_llm_time_to_first_token_seconds",
                          "baseten_llm_input_tokens_per_request"])
    d, labels, values = metric(body, "baseten_llm_input_tokens_total")
    assert (d["kind"], d["unit_hint"], labels) == ("COUNTER", "COUNT", [{"replica": "ra"}, {"replica": "rb"}])
    assert sum(values) == served["prompt"]  # every token counted since the first scrape
    d, labels, values = metric(body, "baseten_llm_output_tokens_total")
    assert sum(values) == served["output"]
    d, labels, values = metric(body, "baseten_llm_kv_cache_hit_rate")
    assert (d["kind"], d["unit_hint"], labels) == ("GAUGE", "RATIO", [{}])
    assert values[0] == pytest.approx(served["hits"] / served["queries"], rel=1e-12)
    # gauges held constant: deployment totals add the replicas up, the KV-cache ratio is per replica
    assert metric(body, "baseten_llm_num_requests")[2] == [pytest.approx(5.0)]
    assert metric(body, "sonde_llm_requests_waiting")[2] == [pytest.approx(1.0)]
    d, labels, values = metric(body, "sonde_llm_kv_cache_usage_ratio")
    assert (d["unit_hint"], labels, values) == ("RATIO", [{"replica": "ra"}, {"replica": "rb"}],
                                                 [pytest.approx(0.25), pytest.approx(0.5)])
    # explicit-bucket histograms from both replicas merge; the average is exact
    d, labels, values = metric(body, "sonde_llm_time_to_first_token_seconds")
    assert (d["kind"], d["unit_hint"]) == ("HISTOGRAM", "SECONDS")
    ttft = sorted(served["ttft"])
    assert values[4] == pytest.approx(sum(ttft) / len(ttft), rel=1e-9)
    median = ttft[len(ttft) // 2]
    lo = max([b for b in TTFT_BUCKETS if b < median], default=0.0)
    hi = min(b for b in TTFT_BUCKETS if b >= median)
    assert lo <= values[0] <= hi  # p50 interpolated inside the median's bucket
    d, labels, values = metric(body, "baseten_llm_input_tokens_per_request")
    assert values[4] == pytest.approx(sum(served["prompt_len"]) / len(served["prompt_len"]), rel=1e-9)


def test_series_per_step_and_counter_ratio_steps(client, creds, served):
    body = query(client, ["baseten_llm_input_tokens_total", "baseten_llm_kv_cache_hit_rate"], mode="SERIES")
    names = [d["name"] for d in body["metric_descriptors"]]
    steps = [v["values"] for v in body["metric_values"]]
    tokens = [sum(x or 0 for x in s[names.index("baseten_llm_input_tokens_total")]) for s in steps]
    assert sum(tokens) == served["prompt"]
    rates = [s[names.index("baseten_llm_kv_cache_hit_rate")][0] for s in steps]
    assert all(r is None or 0 <= r <= 1 for r in rates) and any(r for r in rates)


def test_dcgm_exporter_page_feeds_the_gpu_metrics(client, creds):
    page = (FIXTURES / "dcgm-exporter.txt").read_text()
    conv = Converter()
    for i in range(5):
        send_page(client, creds, page, conv, resource("ra", "dcgm"), W0 + 60 * SEC + i * 30 * SEC)
    body = query(client, ["baseten_gpu_utilization", "baseten_gpu_memory_used", "sonde_gpu_temperature_celsius",
                          "sonde_gpu_power_watts"], url=f"/v1/models/{MODEL}/deployments/dcgm/metrics")
    gpus = [{"replica": "ra", "gpu": "0"}, {"replica": "ra", "gpu": "1"}]
    want = {p.name: {} for p in conv.convert(families(page, TEXT), T0)}
    for p in conv.convert(families(page, TEXT), T0):
        want[p.name][p.attrs["gpu"]] = p.value
    for name, source, factor in (("baseten_gpu_utilization", "DCGM_FI_DEV_GPU_UTIL", 0.01),
                                 ("baseten_gpu_memory_used", "DCGM_FI_DEV_FB_USED", 1.0),
                                 ("sonde_gpu_temperature_celsius", "DCGM_FI_DEV_GPU_TEMP", 1.0),
                                 ("sonde_gpu_power_watts", "DCGM_FI_DEV_POWER_USAGE", 1.0)):
        _, labels, values = metric(body, name)
        assert labels == gpus, name
        assert values == [pytest.approx(want[source][g] * factor) for g in ("0", "1")], name


def test_genai_names_from_the_opentelemetry_sdk(client, creds):
    reader = InMemoryMetricReader()
    res = Resource.create({"sonde.model_id": MODEL, "sonde.deployment_id": "genai", "sonde.replica": "g0"})
    meter = MeterProvider(resource=res, metric_readers=[reader]).get_meter("genai-app")
    tokens = meter.create_histogram("gen_ai.client.token.usage", unit="{token}")
    ttft = meter.create_histogram("gen_ai.server.time_to_first_token", unit="s")
    tpot = meter.create_histogram("gen_ai.server.time_per_output_token", unit="s")
    inputs, outputs, firsts, per_token = [12, 40, 7, 300], [5, 64, 128, 9], [0.05, 0.2, 0.12, 0.9], [0.01, 0.02]
    common = {"gen_ai.operation.name": "chat", "gen_ai.request.model": "toy"}
    for v in inputs:
        tokens.record(v, {**common, "gen_ai.token.type": "input"})
    for v in outputs:
        tokens.record(v, {**common, "gen_ai.token.type": "output"})
    for v in firsts:
        ttft.record(v, common)
    for v in per_token:
        tpot.record(v, common)
    body = encode_metrics(reader.get_metrics_data()).SerializeToString()
    r = client.post("/v1/otlp/v1/metrics", content=body, headers={"Content-Type": "application/x-protobuf"},
                    key=creds["ingest_key"])
    assert r.status_code == 200, r.text
    now_ms = time.time_ns() // 10**6
    got = query(client, ["baseten_llm_input_tokens_per_request", "baseten_llm_output_tokens_per_request",
                         "sonde_llm_time_to_first_token_seconds", "sonde_llm_time_per_output_token_seconds"],
                url=f"/v1/models/{MODEL}/deployments/genai/metrics",
                window={"start_epoch_millis": now_ms - 600_000, "end_epoch_millis": now_ms + 1})
    # one histogram, told apart by gen_ai.token.type: each name sees only its own tokens
    for name, values in (("baseten_llm_input_tokens_per_request", inputs),
                         ("baseten_llm_output_tokens_per_request", outputs),
                         ("sonde_llm_time_to_first_token_seconds", firsts),
                         ("sonde_llm_time_per_output_token_seconds", per_token)):
        assert metric(got, name)[2][4] == pytest.approx(sum(values) / len(values), rel=1e-9), name


def test_custom_metrics_under_the_names_as_sent(app, client, creds, served):
    body = query(client, ["vllm:request_success_total", "vllm:kv_cache_usage_perc",
                          "vllm:time_to_first_token_seconds", "baseten_llm_input_tokens_total"])
    d, labels, values = metric(body, "vllm:request_success_total")
    assert (d["kind"], d["unit_hint"]) == ("COUNTER", "COUNT")
    assert labels == [{"replica": r, **LLAMA, "finished_reason": f} for r in ("ra", "rb") for f in ("length", "stop")]
    assert values == [4, 16, 4, 16]  # every fifth request of 20 per replica ended on length
    d, labels, values = metric(body, "vllm:kv_cache_usage_perc")
    assert (d["kind"], labels) == ("GAUGE", [{"replica": "ra", **LLAMA}, {"replica": "rb", **LLAMA}])
    assert values == [pytest.approx(0.25), pytest.approx(0.5)]
    d, labels, values = metric(body, "vllm:time_to_first_token_seconds")
    assert d["kind"] == "HISTOGRAM" and d["unit_hint"] == "SECONDS" and len(labels) == 5
    assert values[4] == pytest.approx(sum(served["ttft"]) / len(served["ttft"]), rel=1e-9)
    # a name never sent, or sent only by another deployment: 400 naming the field
    assert client.put(f"/v1/models/{MODEL}/deployments/dcgm", json={}).status_code == 200  # one that sent none
    for names, url in ((["vllm:never_sent"], URL),
                       (["vllm:request_success_total"], f"/v1/models/{MODEL}/deployments/dcgm/metrics")):
        err = query(client, names, url=url, status=400)
        assert err["error"]["field"] == "metrics" and names[0] in err["message"]


def test_custom_metric_names_are_per_workspace(client, creds, served):
    # Another workspace with the same model and deployment ids, which never sent anything:
    # the names this one's deployment sent are unknown there, and its data is not visible.
    admin = client.with_key(creds["admin_key"])
    ws = admin.post("/v1/admin/workspaces", json={"name": "other"}).json()["id"]
    key = admin.post(f"/v1/admin/workspaces/{ws}/api_keys", json={"name": "m", "scope": "management"}).json()["key"]
    other = client.with_key(key)
    assert other.put(f"/v1/models/{MODEL}/deployments/{DEP}", json={}).status_code == 200
    err = query(other, ["vllm:request_success_total"], status=400)
    assert err["error"]["field"] == "metrics"
    body = query(other, ["baseten_llm_input_tokens_total"])
    assert body["metric_descriptors"] == []
