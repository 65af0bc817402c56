"""The demo's text-generation service: ``python -m sonde.demo.textgen --port P``.

This is not vLLM. It is a toy that imitates vLLM's ``/metrics`` page: the metric names,
types, label names (``model_name``, ``engine``) and bucket layouts of vLLM's V1 engine
(v0.8 and later), so that Sonde shows it as it would show a real vLLM replica scraped
by ``sonde agent run --scrape``. The tokens are real, from a tiny random Markov (bigram)
model in numpy; the accelerator's time is not: each engine step sleeps ``--step-ms``,
and a prefill sleeps a little per prompt token not found in the prefix cache.

Routes: ``GET /health`` and ``GET /metrics`` (outside SondeMiddleware), and
``POST /v1/completions`` as OpenAI and vLLM answer it: with ``stream``, Server-Sent
Events (``data: {...}`` chunks, then ``data: [DONE]``), otherwise ``choices[0].text`` and
``usage``; 400 for an empty prompt or ``max_tokens`` out of range, 404 for another model.

The engine is vLLM's scheduler in miniature: at most ``--max-num-seqs`` sequences run,
the rest wait first come first served; a sequence is admitted once the KV cache
(``--num-gpu-blocks-override`` blocks of ``--block-size`` tokens) can hold its prompt
and all its ``max_tokens``; prompt blocks are remembered by a hash of their whole
prefix, so prompts sharing a prefix hit the prefix cache (counted in tokens, as vLLM
counts). A prompt is one token per whitespace-separated word.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import time
import uuid
import zlib
from collections import OrderedDict, deque
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import numpy as np
from fastapi import FastAPI
from fastapi.responses import JSONResponse, StreamingResponse
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_asgi_app
from pydantic import BaseModel

from ..instrument import SondeMiddleware, SondeTelemetry
from .serving import FASTAPI_TELEMETRY, demo_telemetry, log_rejections, serve, setup_logging, with_health

log = logging.getLogger("sonde.demo.textgen")

# vLLM's layouts (vllm/v1/metrics/loggers.py).
TTFT_BUCKETS = [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
                40.0, 80.0, 160.0, 640.0, 2560.0]
ITL_BUCKETS = [0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0,
               80.0]
E2E_BUCKETS = [0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0,
               480.0, 960.0, 1920.0, 7680.0]
FINISH_REASONS = ("stop", "length", "abort")
EOS = 0
SLOW_TTFT_S = 0.5


def buckets_1_2_5(limit: int) -> list[int]:
    """1, 2, 5, 10, 20, 50, ... up to ``limit``: vLLM's token-count buckets."""
    return [m * 10**e for e in range(len(str(limit))) for m in (1, 2, 5) if m * 10**e <= limit]


class EngineMetrics:
    """vLLM's engine metrics on a registry of their own (not prometheus_client's global)."""

    def __init__(self, model_name: str, max_model_len: int):
        self.registry = r = CollectorRegistry()
        names, values = ["model_name", "engine"], (model_name, "0")

        def one(kind, name, doc, **kw):
            return kind(name, doc, names, registry=r, **kw).labels(*values)

        self.running = one(Gauge, "vllm:num_requests_running", "Number of requests in model execution batches.")
        self.waiting = one(Gauge, "vllm:num_requests_waiting", "Number of requests waiting to be processed.")
        self.kv_usage = one(Gauge, "vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.")
        self.prompt_tokens = one(Counter, "vllm:prompt_tokens", "Number of prefill tokens processed.")
        self.generation_tokens = one(Counter, "vllm:generation_tokens", "Number of generation tokens processed.")
        self.prefix_queries = one(Counter, "vllm:prefix_cache_queries",
                                  "Prefix cache queries, in terms of number of queried tokens.")
        self.prefix_hits = one(Counter, "vllm:prefix_cache_hits",
                               "Prefix cache hits, in terms of number of cached tokens.")
        success = Counter("vllm:request_success", "Count of successfully processed requests.",
                          names + ["finished_reason"], registry=r)
        self.success = {reason: success.labels(*values, reason) for reason in FINISH_REASONS}
        self.ttft = one(Histogram, "vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.",
                        buckets=TTFT_BUCKETS)
        self.itl = one(Histogram, "vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.",
                       buckets=ITL_BUCKETS)
        self.tpot = one(Histogram, "vllm:request_time_per_output_token_seconds",
                        "Histogram of time_per_output_token_seconds per request.", buckets=ITL_BUCKETS)
        self.e2e = one(Histogram, "vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.",
                       buckets=E2E_BUCKETS)
        self.request_prompt = one(Histogram, "vllm:request_prompt_tokens", "Number of prefill tokens processed.",
                                  buckets=buckets_1_2_5(max_model_len))
        self.request_generation = one(Histogram, "vllm:request_generation_tokens",
                                      "Number of generation tokens processed.", buckets=buckets_1_2_5(max_model_len))


class TinyLM:
    """A random bigram model: the next token's distribution depends on the last token only,
    through an embedding, a tanh layer and an output projection, all drawn from ``seed``."""

    def __init__(self, vocab_size: int = 512, dim: int = 32, seed: int = 0, eos_p: float = 0.025):
        rng = np.random.default_rng(seed)
        syllables = ["ka", "lo", "mi", "ne", "ru", "ta", "shi", "vo", "de", "pa", "zu", "fen", "gra", "mor", "ix"]
        words: dict[str, None] = {}
        while len(words) < vocab_size - 1:
            words["".join(rng.choice(syllables, size=int(rng.integers(1, 4))))] = None
        self.vocab = ["</s>", *words]
        self.index = {w: i for i, w in enumerate(self.vocab)}
        self.emb = rng.standard_normal((vocab_size, dim))
        self.w = rng.standard_normal((dim, dim)) / np.sqrt(dim)
        self.out = rng.standard_normal((dim, vocab_size)) * 1.5
        self.eos_p = eos_p

    def tokenize(self, text: str) -> list[int]:
        # An unknown word still gets a stable id: a prompt's tokens depend on its text only.
        return [self.index.get(w, 1 + zlib.crc32(w.encode()) % (len(self.vocab) - 1)) for w in text.split()]

    def text(self, token: int) -> str:
        return "" if token == EOS else " " + self.vocab[token]

    def step(self, last: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One decode step for a batch: the next token of each sequence, sampled."""
        logits = np.tanh(self.emb[last] @ self.w) @ self.out
        logits[:, EOS] = -np.inf
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        p *= (1.0 - self.eos_p) / p.sum(axis=1, keepdims=True)
        p[:, EOS] = self.eos_p  # a fixed end-of-sequence chance: some finish "stop", the rest "length"
        cdf = np.cumsum(p, axis=1)
        return np.minimum((cdf < rng.random((len(last), 1))).sum(axis=1), len(self.vocab) - 1)


@dataclass(eq=False)
class Sequence:
    prompt: list[int]
    max_tokens: int
    arrived: float
    out: list[int] = field(default_factory=list)
    # (token, finish reason): the reason rides on the last token, so a stream can end it at once
    tokens: asyncio.Queue = field(default_factory=asyncio.Queue)
    cached: int = 0
    waited_behind: int = 0
    first_at: float = 0.0
    last_at: float = 0.0
    finish: str | None = None


class Engine:
    def __init__(self, lm: TinyLM, metrics: EngineMetrics, *, max_num_seqs: int = 4, num_blocks: int = 40,
                 block_size: int = 16, step_s: float = 0.012, prefill_s_per_token: float = 0.0002, seed: int = 0):
        self.lm, self.m = lm, metrics
        self.max_num_seqs, self.num_blocks, self.block_size = max_num_seqs, num_blocks, block_size
        self.step_s, self.prefill_s = step_s, prefill_s_per_token
        self.rng = np.random.default_rng(seed)
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.prefix: OrderedDict[int, None] = OrderedDict()  # block hashes, least recently used first
        self._wake = asyncio.Event()
        self.task: asyncio.Task | None = None

    def _blocks(self, tokens: int) -> int:
        return -(-tokens // self.block_size)

    def submit(self, prompt: list[int], max_tokens: int) -> Sequence:
        seq = Sequence(prompt, max_tokens, time.monotonic(), waited_behind=len(self.waiting) + len(self.running))
        self.waiting.append(seq)
        if self.task is None or self.task.done():
            # Started by the first request, on its loop: also under an ASGI transport, which runs no lifespan.
            self.task = asyncio.get_running_loop().create_task(self._loop(), name="textgen-engine")
        self._publish()
        self._wake.set()
        return seq

    def abort(self, seq: Sequence) -> None:
        """A client that went away: its sequence leaves the batch or the queue."""
        if seq.finish is not None:
            return
        (self.waiting if seq in self.waiting else self.running).remove(seq)
        self._finish(seq, "abort", time.monotonic())
        self._publish()

    def _publish(self) -> None:
        self.m.running.set(len(self.running))
        self.m.waiting.set(len(self.waiting))
        used = sum(self._blocks(len(s.prompt) + len(s.out)) for s in self.running)
        self.m.kv_usage.set(used / self.num_blocks)

    def _lookup(self, prompt: list[int]) -> int:
        """Tokens of ``prompt`` already in the prefix cache (whole blocks from the start);
        its full blocks are cached from now on."""
        bs, h, hits = self.block_size, 0, 0
        for i in range(len(prompt) // bs):
            h = hash((h, tuple(prompt[i * bs:(i + 1) * bs])))  # the block's whole prefix, as vLLM hashes
            if h in self.prefix and hits == i * bs:
                hits += bs
            self.prefix[h] = None
            self.prefix.move_to_end(h)
        while len(self.prefix) > self.num_blocks:  # cached blocks live in the free ones
            self.prefix.popitem(last=False)
        return min(hits, len(prompt) - 1)  # the last prompt token is always computed: it yields the first token

    def _admit(self) -> list[Sequence]:
        admitted = []
        reserved = sum(self._blocks(len(s.prompt) + s.max_tokens) for s in self.running)
        while self.waiting and len(self.running) < self.max_num_seqs:
            seq = self.waiting[0]
            need = self._blocks(len(seq.prompt) + seq.max_tokens)
            if reserved + need > self.num_blocks:
                break  # first come first served: the head waits for room, nobody overtakes it
            self.waiting.popleft()
            reserved += need
            seq.cached = self._lookup(seq.prompt)
            self.m.prompt_tokens.inc(len(seq.prompt))
            self.m.prefix_queries.inc(len(seq.prompt))
            self.m.prefix_hits.inc(seq.cached)
            self.running.append(seq)
            admitted.append(seq)
        return admitted

    async def _loop(self) -> None:
        while True:
            if not self.running and not self.waiting:
                self._publish()
                self._wake.clear()
                await self._wake.wait()
            admitted = self._admit()
            batch = list(self.running)
            self._publish()
            last = np.array([s.out[-1] if s.out else s.prompt[-1] for s in batch], dtype=np.int64)
            nxt = self.lm.step(last, self.rng).tolist()
            # The accelerator's share: a decode step that grows a little with the batch,
            # plus the prefill of whatever the prefix cache did not already hold.
            uncached = sum(len(s.prompt) - s.cached for s in admitted)
            await asyncio.sleep(self.step_s * (1 + 0.15 * (len(batch) - 1)) + uncached * self.prefill_s)
            now = time.monotonic()
            for seq, token in zip(batch, nxt):
                if seq.finish is None:  # not aborted while the step ran
                    self._emit(seq, token, now)

    def _emit(self, seq: Sequence, token: int, now: float) -> None:
        seq.out.append(token)
        self.m.generation_tokens.inc()
        if len(seq.out) == 1:
            seq.first_at = now
            self.m.ttft.observe(now - seq.arrived)
        else:
            self.m.itl.observe(now - seq.last_at)
        seq.last_at = now
        reason = "stop" if token == EOS else "length" if len(seq.out) >= seq.max_tokens else None
        seq.tokens.put_nowait((token, reason))
        if reason:
            self.running.remove(seq)
            self._finish(seq, reason, now)

    def _finish(self, seq: Sequence, reason: str, now: float) -> None:
        seq.finish = reason
        self.m.success[reason].inc()
        self.m.e2e.observe(now - seq.arrived)
        self.m.request_prompt.observe(len(seq.prompt))
        self.m.request_generation.observe(len(seq.out))
        if len(seq.out) > 1:
            self.m.tpot.observe((seq.last_at - seq.first_at) / (len(seq.out) - 1))
        if reason == "abort":
            seq.tokens.put_nowait((None, reason))


class CompletionIn(BaseModel):
    model: str | None = None
    prompt: str
    max_tokens: int = 16  # OpenAI's default
    stream: bool = False
    stream_options: dict | None = None


def _error(status: int, message: str, kind: str) -> JSONResponse:  # vLLM's ErrorResponse
    return JSONResponse({"object": "error", "message": message, "type": kind, "code": status}, status_code=status)


def build_app(engine: Engine, model_name: str, max_model_len: int, telemetry: SondeTelemetry | None = None):
    """The ASGI app: /health and /metrics outside SondeMiddleware (probes and scrapes are
    not inference traffic), the OpenAI routes inside it."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        if engine.task is not None:
            engine.task.cancel()
        if telemetry is not None:
            telemetry.shutdown()  # exports the last interval before the process ends

    app = FastAPI(title="Sonde demo text generation (not vLLM)", lifespan=lifespan, telemetry=FASTAPI_TELEMETRY)
    log_rejections(app, log, "completion rejected")

    @app.post("/v1/completions")
    async def completions(body: CompletionIn):
        if body.model not in (None, model_name):
            log.warning("completion rejected (404): model %r is not served here", body.model)
            return _error(404, f"The model `{body.model}` does not exist.", "NotFoundError")
        prompt = engine.lm.tokenize(body.prompt)
        n, m = len(prompt), body.max_tokens
        problem = ("the prompt is empty" if not n else "max_tokens must be at least 1" if m < 1 else
                   f"This model's maximum context length is {max_model_len} tokens. However, you requested {n + m} "
                   f"tokens ({n} in the prompt, {m} in the completion)." if n + m > max_model_len else None)
        if problem:
            log.warning("completion rejected (400): %s", problem)
            return _error(400, problem, "BadRequestError")
        log.debug("completion: %d prompt tokens, max_tokens %d, stream=%s", len(prompt), body.max_tokens, body.stream)
        seq = engine.submit(prompt, body.max_tokens)
        head = {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
                "model": model_name}
        if body.stream:
            usage = bool((body.stream_options or {}).get("include_usage"))
            return StreamingResponse(_stream(engine, seq, head, usage), media_type="text/event-stream")
        text = []
        try:
            async for token, _reason in _tokens(seq):
                text.append(engine.lm.text(token))
        finally:
            engine.abort(seq)  # a no-op once finished; otherwise the client went away
        return {**head, "choices": [_choice("".join(text), seq.finish)], "usage": _usage(seq)}

    inner = with_health(SondeMiddleware(app), lambda: True)
    metrics = make_asgi_app(engine.m.registry)  # as vLLM serves it; picks the format from Accept

    async def asgi(scope, receive, send):
        if scope["type"] == "http" and scope["path"] == "/metrics":
            await metrics(scope, receive, send)
        else:
            await inner(scope, receive, send)

    return asgi


async def _tokens(seq: Sequence):
    """The sequence's tokens with their finish reason, as the engine makes them; its log line at the end."""
    while True:
        token, reason = await seq.tokens.get()
        if token is None:
            return
        yield token, reason
        if reason:
            break
    ttft = seq.first_at - seq.arrived
    rate = (len(seq.out) - 1) / (seq.last_at - seq.first_at) if len(seq.out) > 1 else 0.0
    if ttft > SLOW_TTFT_S:
        log.warning("slow first token: %.0f ms (%d requests ahead on arrival)", ttft * 1000, seq.waited_behind)
    log.info("completion: %d prompt tokens (%d cached), %d generated (%s), first token %.0f ms, %.0f tokens/s",
             len(seq.prompt), seq.cached, len(seq.out), seq.finish, ttft * 1000, rate)


def _choice(text: str, reason: str | None) -> dict:
    return {"index": 0, "text": text, "logprobs": None, "finish_reason": reason, "stop_reason": None}


def _usage(seq: Sequence) -> dict:
    return {"prompt_tokens": len(seq.prompt), "completion_tokens": len(seq.out),
            "total_tokens": len(seq.prompt) + len(seq.out)}


async def _stream(engine: Engine, seq: Sequence, head: dict, usage: bool):
    try:
        async for token, reason in _tokens(seq):
            yield f"data: {json.dumps({**head, 'choices': [_choice(engine.lm.text(token), reason)]})}\n\n"
        if usage:
            yield f"data: {json.dumps({**head, 'choices': [], 'usage': _usage(seq)})}\n\n"
        yield "data: [DONE]\n\n"
    finally:
        engine.abort(seq)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m sonde.demo.textgen", description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    # vLLM's flag names where vLLM has one
    p.add_argument("--served-model-name", default="demo-textgen", help="the model_name label and the API's model")
    p.add_argument("--max-num-seqs", type=int, default=4, help="sequences decoded together; the rest wait")
    p.add_argument("--num-gpu-blocks-override", type=int, default=40, help="KV-cache blocks")
    p.add_argument("--block-size", type=int, default=16, help="tokens per KV-cache block")
    p.add_argument("--max-model-len", type=int, default=512, help="prompt plus max_tokens, at most")
    p.add_argument("--step-ms", type=float, default=12.0, help="one decode step (the accelerator's time)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--export-interval", type=float, default=10.0, help="seconds between HTTP metric exports")
    args = p.parse_args(argv)
    if args.max_model_len > args.num_gpu_blocks_override * args.block_size:
        p.error("--max-model-len must fit in the KV cache (--num-gpu-blocks-override x --block-size)")
    setup_logging()
    telemetry = demo_telemetry(args.export_interval, "sonde-demo-textgen", log)
    engine = Engine(TinyLM(seed=args.seed), EngineMetrics(args.served_model_name, args.max_model_len),
                    max_num_seqs=args.max_num_seqs, num_blocks=args.num_gpu_blocks_override,
                    block_size=args.block_size, step_s=args.step_ms / 1000, seed=args.seed)
    log.info("serving %s (a toy with vLLM's metric names, not vLLM): %d sequences, %d KV blocks of %d tokens",
             args.served_model_name, args.max_num_seqs, args.num_gpu_blocks_override, args.block_size)
    serve(build_app(engine, args.served_model_name, args.max_model_len, telemetry), args.host, args.port)


if __name__ == "__main__":
    main()
