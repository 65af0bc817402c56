"""LLM metrics from the demo's text-generation service (``sonde.demo.textgen``, a toy with
vLLM's metric names, not vLLM): first the service in process, its engine and its page;
then end to end, under a real ``sonde agent run --scrape``, a real ``sonde serve``, and a
known set of completions.

End to end, what Sonde answers over the run's window must be what the service counted: the token
counters equal to its own ``/metrics`` page (read with prometheus_client's parser) and to
the ``usage`` its answers carried, the time to first token's quantiles inside the right
buckets of its histogram and its average equal to the page's sum over count, and the
engine's gauges present as gauges.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import random
import signal
import subprocess
import sys
import time

import httpx
import pytest
from live_server import LiveServer, free_port
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families

from sonde.demo import loadgen, textgen

MODEL, DEPLOYMENT, SERVED = "m-llm", "d-llm", "llm-e2e"
SYSTEM = ("You answer questions about the weather station on the hill for its volunteers in short plain "
          "sentences and say so when a reading looks wrong or a sensor seems to be missing from the list")
QUESTIONS = ["is the rain gauge blocked", "why did the wind speed drop to zero at noon",
             "what does the red light on the mast mean", "how often is the barometer read"]
MAX_TOKENS = [8, 24, 40]
N = 12
LLM_METRICS = ("baseten_llm_input_tokens_total", "baseten_llm_output_tokens_total",
               "sonde_llm_time_to_first_token_seconds", "sonde_llm_kv_cache_usage_ratio",
               "sonde_llm_requests_waiting", "baseten_llm_num_requests", "baseten_llm_kv_cache_hit_rate",
               "baseten_inference_requests_total")


def _requests() -> list[dict]:
    return [{"model": SERVED, "prompt": f"{SYSTEM} question {QUESTIONS[i % len(QUESTIONS)]}",
             "max_tokens": MAX_TOKENS[i % len(MAX_TOKENS)], "stream": i % 2 == 1,
             "stream_options": {"include_usage": True}} for i in range(N)]


async def _complete(client: httpx.AsyncClient, body: dict) -> dict:
    """One completion's ``usage``, from the JSON answer or the stream's usage chunk."""
    if not body["stream"]:
        r = await client.post("/v1/completions", json=body)
        assert r.status_code == 200, r.text
        return r.json()["usage"]
    events = []
    async with client.stream("POST", "/v1/completions", json=body) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        async for line in r.aiter_lines():
            if line:
                assert line.startswith("data: "), line
                events.append(line[6:])
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[-2]["choices"][0]["finish_reason"] in ("stop", "length")
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["completion_tokens"] == len(chunks) - 1  # a chunk per token
    return chunks[-1]["usage"]


async def _send_all(url: str) -> list[dict]:
    # All at once: four run, the rest wait, so the queue and the KV cache have something to show.
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        return await asyncio.gather(*(_complete(client, b) for b in _requests()))


def _page(url: str) -> dict[str, dict]:
    """The service's own counts: {sample name: {sorted labels: value}}."""
    out: dict[str, dict] = {}
    for fam in text_string_to_metric_families(httpx.get(url, timeout=10).text):
        for s in fam.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def _one(page: dict, name: str) -> float:
    (value,) = page[name].values()
    return value


def _summary(server: LiveServer, start_ms: int) -> dict[str, tuple[str, list]]:
    """{metric: (kind, [(labels, value)])} over the run's window, in SUMMARY mode."""
    r = httpx.get(f"{server.url}/v1/models/{MODEL}/deployments/{DEPLOYMENT}/metrics", headers=server.headers(),
                  timeout=30, params={"mode": "SUMMARY", "start_epoch_millis": start_ms,
                                      "end_epoch_millis": int(time.time() * 1000) + 1000,
                                      "metrics": ",".join(LLM_METRICS)})
    assert r.status_code == 200, r.text
    body = r.json()
    return {d["name"]: (d["kind"], list(zip(d["label_sets"], vals)))
            for d, vals in zip(body["metric_descriptors"], body["metric_values"][0]["values"])}


def _total(summary: dict, name: str) -> float:
    return sum(v or 0 for _, v in summary.get(name, ("", []))[1])


def test_textgen_engine_and_its_vllm_page():
    """The text-generation service in process, under the load generator's requests: a
    queue behind four running sequences, prefix-cache hits from the shared system prompts,
    usage that matches its counters, rejections, an aborted sequence, and a page with
    vLLM's names, types, labels and buckets, read back by prometheus_client's parser."""
    metrics = textgen.EngineMetrics("demo-textgen", 512)
    engine = textgen.Engine(textgen.TinyLM(), metrics, step_s=0.002)
    app = textgen.build_app(engine, "demo-textgen", 512)
    rng = random.Random(4)
    bodies = [b for b in (loadgen.make_textgen_request(rng, "demo-textgen") for _ in range(40))
              if b["max_tokens"] < loadgen.TEXTGEN_CONTEXT][:12]

    async def go():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://tg") as c:
            answers = asyncio.gather(*(c.post("/v1/completions", json=b) for b in bodies))
            queued = set()
            while not answers.done():  # what the engine holds, as it goes
                queued.add((len(engine.running), len(engine.waiting)))
                await asyncio.sleep(0.001)
            answers = await answers
            rejected = [await c.post("/v1/completions", json=body) for body in (
                {"prompt": "a b", "max_tokens": 512}, {"prompt": "  ", "max_tokens": 4},
                {"model": "other", "prompt": "a"}, {"prompt": ["a"]})]
            seq = engine.submit([5, 6, 7], 50)
            await asyncio.sleep(0.01)
            engine.abort(seq)
            page = await c.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0; "
                                                              "escaping=allow-utf-8"})
            return queued, answers, rejected, page

    queued, answers, rejected, page = asyncio.run(go())
    assert max(r for r, _ in queued) == 4 and max(w for _, w in queued) > 0, queued  # four decode, the rest wait
    usage = {"prompt_tokens": 0, "completion_tokens": 0}
    for body, r in zip(bodies, answers):
        assert r.status_code == 200, r.text
        if body["stream"]:
            events = [ln[6:] for ln in r.text.split("\n\n") if ln]
            assert events[-1] == "[DONE]" and r.headers["content-type"].startswith("text/event-stream")
            chunks = [json.loads(e) for e in events[:-1]]
            assert chunks[-1]["choices"] == [] and len(chunks) - 1 == chunks[-1]["usage"]["completion_tokens"]
            assert chunks[-2]["choices"][0]["finish_reason"] in ("stop", "length")
            got = chunks[-1]["usage"]
        else:
            got = r.json()["usage"]
            assert r.json()["choices"][0]["finish_reason"] in ("stop", "length")
        assert got["prompt_tokens"] == len(body["prompt"].split())
        assert 1 <= got["completion_tokens"] <= body["max_tokens"]
        for k in usage:
            usage[k] += got[k]
    assert [r.status_code for r in rejected] == [400, 400, 404, 422]
    assert rejected[0].json()["object"] == "error" and "maximum context length is 512" in rejected[0].json()["message"]

    assert page.headers["content-type"].startswith("application/openmetrics-text")
    fams = {f.name: f for f in parse_openmetrics(page.text)}
    labels = {"model_name": "demo-textgen", "engine": "0"}
    assert all(s.labels.items() >= labels.items() for f in fams.values() for s in f.samples)
    kinds = {n: f.type for n, f in fams.items()}
    assert kinds == {
        "vllm:num_requests_running": "gauge", "vllm:num_requests_waiting": "gauge", "vllm:kv_cache_usage_perc": "gauge",
        "vllm:prompt_tokens": "counter", "vllm:generation_tokens": "counter", "vllm:prefix_cache_queries": "counter",
        "vllm:prefix_cache_hits": "counter", "vllm:request_success": "counter",
        "vllm:time_to_first_token_seconds": "histogram", "vllm:inter_token_latency_seconds": "histogram",
        "vllm:request_time_per_output_token_seconds": "histogram", "vllm:e2e_request_latency_seconds": "histogram",
        "vllm:request_prompt_tokens": "histogram", "vllm:request_generation_tokens": "histogram"}

    def value(name, **extra):
        return next(s.value for f in fams.values() for s in f.samples
                    if s.name == name and extra.items() <= s.labels.items())

    def bounds(name):
        return [float(s.labels["le"]) for s in fams[name].samples if s.name == name + "_bucket"][:-1]

    # the aborted sequence: 3 prompt tokens, and a token or two before it left
    assert value("vllm:prompt_tokens_total") == usage["prompt_tokens"] + 3
    assert usage["completion_tokens"] < value("vllm:generation_tokens_total") <= usage["completion_tokens"] + 50
    assert value("vllm:prefix_cache_queries_total") == value("vllm:prompt_tokens_total")
    assert value("vllm:prefix_cache_hits_total") >= 48 * (len(bodies) - len(loadgen.SYSTEM_PROMPTS))
    assert value("vllm:request_success_total", finished_reason="abort") == 1
    assert value("vllm:request_success_total", finished_reason="stop") + \
        value("vllm:request_success_total", finished_reason="length") == len(bodies)
    assert value("vllm:num_requests_running") == value("vllm:num_requests_waiting") == 0
    assert value("vllm:time_to_first_token_seconds_count") == len(bodies) + 1
    assert bounds("vllm:time_to_first_token_seconds") == textgen.TTFT_BUCKETS
    assert bounds("vllm:inter_token_latency_seconds") == textgen.ITL_BUCKETS
    assert bounds("vllm:request_prompt_tokens") == [1, 2, 5, 10, 20, 50, 100, 200, 500]


@pytest.mark.e2e
def test_llm_metrics_from_a_scraped_text_generation_service(tmp_path):
    (tmp_path / "data").mkdir()
    server = LiveServer(tmp_path / "data").start()
    key = tmp_path / "ingest.key"
    key.write_text(server.creds["ingest_key"])
    port = free_port()
    url, metrics_url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port}/metrics"
    # The service's own HTTP metrics (SondeMiddleware) are placed from the environment.
    env = {**os.environ, "SONDE_SERVER": server.url, "SONDE_API_KEY": server.creds["ingest_key"],
           "SONDE_MODEL_ID": MODEL, "SONDE_DEPLOYMENT_ID": DEPLOYMENT, "SONDE_REPLICA": "t0001"}
    cmd = [sys.executable, "-m", "sonde", "agent", "run", "--server", server.url, "--key-file", str(key),
           "--model-id", MODEL, "--deployment-id", DEPLOYMENT, "--replica", "t0001", "--interval", "1",
           "--ready-url", f"{url}/health", "--scrape", metrics_url, "--spool-dir", str(tmp_path / "spool"),
           "--no-echo", "--", sys.executable, "-m", "sonde.demo.textgen", "--port", str(port),
           "--served-model-name", SERVED, "--export-interval", "1"]
    start_ms = int(time.time() * 1000) - 1000
    err_path = tmp_path / "agent.stderr"
    with open(err_path, "wb") as err:
        agent = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=env)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert agent.poll() is None, err_path.read_text()[-3000:]
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the service never answered /health"
            time.sleep(0.1)
        usages = asyncio.run(_send_all(url))

        page = _page(metrics_url)
        prompt, generated = _one(page, "vllm:prompt_tokens_total"), _one(page, "vllm:generation_tokens_total")
        # The service counted what it answered, and a prompt is one token per word.
        assert prompt == sum(u["prompt_tokens"] for u in usages) == sum(len(b["prompt"].split()) for b in _requests())
        assert generated == sum(u["completion_tokens"] for u in usages)
        assert sum(page["vllm:request_success_total"].values()) == N
        assert 0 < _one(page, "vllm:prefix_cache_hits_total") < _one(page, "vllm:prefix_cache_queries_total") == prompt
        ttft_count, ttft_sum = (_one(page, f"vllm:time_to_first_token_seconds_{s}") for s in ("count", "sum"))
        assert ttft_count == N
        ttft_buckets = sorted((float(dict(k)["le"]), v) for k, v in page["vllm:time_to_first_token_seconds_bucket"]
                              .items())

        # Scrapes every second: wait until Sonde has the last counts (and the middleware's exports).
        deadline = time.monotonic() + 45
        while True:
            s = _summary(server, start_ms)
            if (_total(s, "baseten_llm_output_tokens_total") == generated
                    and _total(s, "baseten_inference_requests_total") >= N):
                break
            assert time.monotonic() < deadline, f"Sonde never showed the final counts: {s}"
            time.sleep(1.0)
    finally:
        agent.send_signal(signal.SIGTERM)  # a no-op once it has exited
        try:
            code = agent.wait(30)
        finally:
            if agent.poll() is None:
                agent.kill()
            server.stop()
    assert code == 0, err_path.read_text()[-3000:]  # the agent and the service stopped cleanly

    assert s["baseten_llm_input_tokens_total"][0] == s["baseten_llm_output_tokens_total"][0] == "COUNTER"
    assert _total(s, "baseten_llm_input_tokens_total") == prompt
    assert _total(s, "baseten_llm_output_tokens_total") == generated
    # Only the completions are inference requests: /health and the scrapes of /metrics are not.
    requests = {json.dumps(ls, sort_keys=True): v for ls, v in s["baseten_inference_requests_total"][1]}
    assert requests.get('{"status": "2xx"}') == N, requests

    kind, ttft = s["sonde_llm_time_to_first_token_seconds"]
    assert kind == "HISTOGRAM"
    quantiles = {float(ls["quantile"]): v for ls, v in ttft if "quantile" in ls}
    (avg,) = [v for ls, v in ttft if ls.get("stat") == "avg"]
    assert avg == pytest.approx(ttft_sum / ttft_count, rel=1e-6)
    assert quantiles and list(quantiles.values()) == sorted(quantiles.values()), quantiles
    for q, value in quantiles.items():
        # Inside the bucket where the q-th observation falls (from 0 below the first bound).
        rank = q * ttft_count
        i = next(i for i, (_, cum) in enumerate(ttft_buckets) if cum >= rank * (1 - 1e-9))
        lower = ttft_buckets[i - 1][0] if i else 0.0
        upper = ttft_buckets[i][0] if math.isfinite(ttft_buckets[i][0]) else ttft_buckets[i - 1][0]
        assert lower - 1e-9 <= value <= upper + 1e-9, (q, value, lower, upper, ttft_buckets)

    for name, low, high in (("sonde_llm_kv_cache_usage_ratio", 0.0, 1.0), ("sonde_llm_requests_waiting", 0.0, N),
                            ("baseten_llm_num_requests", 0.0, 4.0), ("baseten_llm_kv_cache_hit_rate", 0.0, 1.0)):
        kind, values = s[name]
        present = [v for _, v in values if v is not None]
        assert kind == "GAUGE" and present, (name, s[name])
        assert all(low <= v <= high for v in present), (name, present)
