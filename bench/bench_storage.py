"""Storage cost: compressed bytes on disk per metric sample (by kind) and per log line.

Not a test (CI never runs it). It builds a fresh embedded store (``bench_metrics.bench_app``,
the setup every store benchmark shares) and feeds it through the real ingest path (the
app's OTLP receivers, in process) what a fleet sends:

* ``--nodes`` nodes (default 8; the first half one multi-node training job, the rest
  serving replicas of two deployments), each under ``sonde agent run`` with ``--gpus``
  GPUs (default 8): the agent's own samplers (GpuSampler with a simulated NVML, NodeSampler
  with an ephemeral and a cache mount, ProcessTreeSampler), ticked by the agent's own
  loop body (``Agent.tick``) every ``--interval`` seconds (default 10) and encoded by the
  agent's own OTLP code: GPU utilisation, memory, power, temperature; node CPU, memory and
  filesystems; process CPU time (a cumulative counter) and memory; replica state,
  restarts, spool usage and drops.
* on each serving replica, SondeMiddleware's instruments recording simulated requests on
  an OpenTelemetry SDK meter provider, exported every interval (cumulative, the SDK's
  default): half the replicas with ``sonde.instrument.sonde_views()`` (exponential
  histograms, what ``configure()`` sets up), half with the SDK's default aggregation
  (explicit buckets), so both histogram kinds are stored as the SDK really sends them.
* ``--log-lines`` log lines (default 1,000,000) turned into records by the agent's own
  line parser (levels, request ids, access-log fields): model-server access lines,
  structured JSON, vLLM-style stats, warnings, tracebacks on serving nodes; step lines,
  NCCL, dataloader, checkpoint and glog lines on training nodes; ids, numbers and
  timestamps vary line to line.

Then every table is merged (OPTIMIZE FINAL), as a long-running server's background merges
would have done, the metric rows are copied per kind into tables of the same definition
(``CREATE TABLE ... AS``) and merged too, and the active parts are measured from
``system.parts`` (``data_compressed_bytes``: column data; ``bytes_on_disk``: everything,
marks, primary index and skip indexes included) and ``system.parts_columns``.

    .venv/bin/python bench/bench_storage.py [--nodes 8] [--gpus 8] [--hours 6] [--interval 10]
        [--log-lines 1000000] [--rps 5] [--data-dir DIR] [--keep]

docs/benchmarks.md and docs/scale-out.md have the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
import uuid
from collections import namedtuple
from types import SimpleNamespace

import httpx
import numpy as np

from bench_metrics import bench_app
from sonde.agent import otlp
from sonde.agent.core import Agent, resource_attrs
from sonde.agent.gpu import GpuSampler
from sonde.agent.hardware import detect
from sonde.agent.logs import make_record
from sonde.agent.model import Counter
from sonde.agent.node import NodeSampler
from sonde.agent.process import ProcessTreeSampler

GIB = 2**30
POST_BYTES = 8 << 20  # bodies are cut at this size (the server takes 16 MiB by default)
PROJECT, JOB = "llm-pretrain", "job-7b-0412"
DEPLOYMENTS = (("llama-8b", "dep-llama-8b-v3"), ("whisper-l", "dep-whisper-l-v1"))

# -- a node under `sonde agent run` ----------------------------------------------------------

_Util = namedtuple("Utilization", "gpu memory")
_Mem = namedtuple("Memory", "total used free")


class SimNvml:
    """The part of pynvml the GPU sampler calls, answering a simulated 8-GPU H100 node:
    utilisation and power follow a random walk per GPU, memory moves slowly."""

    NVML_TEMPERATURE_GPU = 0

    def __init__(self, rng: np.random.Generator, gpus: int, busy: float):
        self.rng, self.n, self.busy = rng, gpus, busy
        self.util = np.clip(rng.normal(busy, 0.05, gpus), 0, 1)
        self.mem = rng.uniform(0.55, 0.9, gpus) * 80 * GIB
        self.temp = rng.uniform(45, 70, gpus)

    def step(self) -> None:
        self.util = np.clip(self.util + self.rng.normal(0, 0.04, self.n) + 0.1 * (self.busy - self.util), 0, 1)
        self.mem = np.clip(self.mem + self.rng.normal(0, 0.2 * GIB, self.n), 10 * GIB, 79 * GIB)
        self.temp = np.clip(self.temp + self.rng.normal(0, 0.5, self.n), 30, 88)

    def nvmlInit(self):
        pass

    def nvmlShutdown(self):
        pass

    def nvmlDeviceGetCount(self):
        return self.n

    def nvmlDeviceGetHandleByIndex(self, i):
        return i

    def nvmlDeviceGetName(self, h):
        return "NVIDIA H100 80GB HBM3"

    def nvmlDeviceGetUtilizationRates(self, h):
        return _Util(int(round(self.util[h] * 100)), int(self.util[h] * 60))

    def nvmlDeviceGetMemoryInfo(self, h):
        used = int(self.mem[h]) // 2**20 * 2**20
        return _Mem(80 * GIB, used, 80 * GIB - used)

    def nvmlDeviceGetPowerUsage(self, h):
        return int(90_000 + 600_000 * self.util[h] + self.rng.normal(0, 8_000))

    def nvmlDeviceGetTemperature(self, h, sensor):
        return int(self.temp[h])


class SimProcess:
    """A psutil-like model server process tree: a root and 4 workers burning CPU."""

    _Times = namedtuple("Times", "user system")
    _MemInfo = namedtuple("MemInfo", "rss")

    def __init__(self, pid: int, rng: np.random.Generator, workers: int = 4):
        self.pid, self.rng, self.cpu, self.rss = pid, rng, 0.0, float(rng.uniform(4, 40) * GIB)
        self.kids = [SimProcess(pid + 1 + i, rng, 0) for i in range(workers)]

    def step(self, seconds: float) -> None:
        for p in [self, *self.kids]:
            p.cpu += seconds * self.rng.uniform(0.5, 1.5)
            p.rss = max(GIB / 2, p.rss + self.rng.normal(0, 20 * 2**20))

    def children(self, recursive: bool = False):
        return list(self.kids)

    def oneshot(self):
        return contextlib.nullcontext()

    def create_time(self):
        return 1.7e9 + self.pid

    def cpu_times(self):
        return self._Times(self.cpu * 0.9, self.cpu * 0.1)

    def memory_info(self):
        return self._MemInfo(int(self.rss) // 4096 * 4096)


class SimClock:
    def __init__(self, ns: int):
        self.ns = ns

    def time_ns(self) -> int:
        return self.ns

    def monotonic(self) -> float:
        return self.ns / 1e9

    def sleep(self, seconds: float) -> None:
        pass


class Capture:
    """Stands in for the agent's Exporter: keeps the tick (a healthy agent's spool is empty)."""

    def __init__(self):
        self.spool = SimpleNamespace(bytes=0, dropped_batches=0)
        self.last: tuple[list, int] | None = None

    def add_metrics(self, points, ts_ns: int) -> None:
        self.last = (points, ts_ns)


class SimNode:
    """One node: the agent's samplers over simulated hardware, its resource, its log mix."""

    def __init__(self, rank: int, args, start_ns: int, rng: np.random.Generator):
        self.rank, self.rng = rank, rng
        self.training = rank < args.nodes // 2
        self.nvml = SimNvml(rng, args.gpus, 0.9 if self.training else 0.45)
        self.proc = SimProcess(1000 + 10 * rank, rng)
        self.used = {"ephemeral": rng.uniform(20, 200) * GIB, "cache": rng.uniform(200, 1500) * GIB}
        self.mem_used = rng.uniform(200, 900) * GIB
        self.clock = SimClock(start_ns)
        if self.training:
            placement = {"sonde.training_project_id": PROJECT, "sonde.training_job_id": JOB,
                         "sonde.node_id": f"node-{rank}", "sonde.node_rank": str(rank)}
            self.replica = f"tr{rank:03d}"
        else:
            model, dep = DEPLOYMENTS[rank % 2]
            placement = {"sonde.model_id": model, "sonde.deployment_id": dep}
            self.replica = f"{'abcdefgh'[rank % 8]}{uuid.UUID(int=int(rng.integers(2**63))).hex[:4]}"
        self.placement = placement
        gpu = GpuSampler(self.nvml)
        hw = detect(gpu.describe(), read=lambda path: None, cpu_count=lambda: 192, memory_total=lambda: 2048 * GIB)
        self.resource_attrs = resource_attrs(placement=placement, replica=self.replica, environment="production",
                                             hardware=hw, host_name=f"gpu-node-{rank:04d}.cluster.local")
        self.resource = otlp.resource(self.resource_attrs)
        node = NodeSampler({"ephemeral": "/mnt/ephemeral", "cache": "/mnt/cache"},
                           disk_usage=self._disk, cpu_percent=lambda: float(rng.uniform(20, 70)),
                           virtual_memory=self._vm)
        tree = ProcessTreeSampler(self.proc.pid, start_ns=start_ns, process_factory=lambda pid: self.proc)
        self.exporter = Capture()
        restarts = Counter()
        self.agent = Agent(self.exporter, [gpu, node, tree], interval=args.interval, clock=self.clock,
                           restarts=restarts, start_ns=start_ns)

    def _disk(self, path: str):
        role = "cache" if path.endswith("cache") else "ephemeral"
        total = (2000 if role == "cache" else 500) * GIB
        used = int(self.used[role])
        return SimpleNamespace(total=total, used=used, free=total - used)

    def _vm(self):
        return SimpleNamespace(total=2048 * GIB, available=int(2048 * GIB - self.mem_used))

    def tick(self, ts_ns: int, interval: float) -> tuple[bytes, int]:
        """One agent tick at ``ts_ns``: (the OTLP request body the agent posts, points)."""
        self.clock.ns = ts_ns
        self.nvml.step()
        self.proc.step(interval)
        for role in self.used:
            self.used[role] += self.rng.normal(0.02, 0.05) * GIB
        self.mem_used += self.rng.normal(0, 2) * GIB
        points = self.agent.tick()
        return otlp.metrics_request(self.resource, points, ts_ns), len(points)


# -- log lines ---------------------------------------------------------------------------------

ROUTES = ("/v1/models/llama-8b/predict", "/v1/chat/completions", "/v1/completions", "/predict")


def _when(ts_ns: int) -> tuple[str, str, str]:
    t = time.gmtime(ts_ns // 10**9)
    frac = ts_ns % 10**9
    return (time.strftime("%Y-%m-%d %H:%M:%S", t) + f",{frac // 10**6:03d}",
            time.strftime("%m-%d %H:%M:%S", t), time.strftime("%m%d %H:%M:%S", t) + f".{frac // 1000:06d}")


def serving_lines(rng: np.random.Generator, ts_ns: int) -> list[str]:
    iso, short, _ = _when(ts_ns)
    rid = uuid.UUID(int=int(rng.integers(2**63)) << 64 | int(rng.integers(2**63))).hex
    r = rng.random()
    prompt, gen = int(rng.lognormal(6.5, 0.8)), int(rng.lognormal(4.5, 0.9))
    lat = float(rng.lognormal(6.8, 0.6))
    if r < 0.38:
        ip = f"10.{rng.integers(0, 255)}.{rng.integers(0, 255)}.{rng.integers(1, 255)}:{rng.integers(30000, 65000)}"
        status = "200 OK" if rng.random() > 0.01 else "500 Internal Server Error"
        return [f'INFO:     {ip} - "POST {ROUTES[int(rng.integers(len(ROUTES)))]} HTTP/1.1" {status}']
    if r < 0.58:
        return [f"{iso} INFO [model.server] request_id={rid} prompt_tokens={prompt} completion_tokens={gen} "
                f"ttft_ms={lat * 0.08:.1f} latency_ms={lat:.1f} tok_per_s={gen / lat * 1000:.1f}"]
    if r < 0.73:
        return ['{"time": "%sZ", "level": "info", "logger": "inference.engine", "message": "request finished", '
                '"request_id": "%s", "batch_size": %d, "queue_ms": %.2f, "prompt_tokens": %d, "output_tokens": %d, '
                '"finish_reason": "%s"}' % (iso.replace(" ", "T").replace(",", "."), rid, rng.integers(1, 64),
                                            rng.exponential(4), prompt, gen,
                                            "stop" if rng.random() < 0.8 else "length")]
    if r < 0.83:
        return [f"INFO {short} [metrics.py:{rng.choice([341, 455])}] Avg prompt throughput: "
                f"{rng.uniform(500, 4000):.1f} tokens/s, Avg generation throughput: {rng.uniform(200, 1500):.1f} "
                f"tokens/s, Running: {rng.integers(0, 64)} reqs, Swapped: 0 reqs, Pending: {rng.integers(0, 8)} reqs, "
                f"GPU KV cache usage: {rng.uniform(5, 95):.1f}%, CPU KV cache usage: 0.0%."]
    if r < 0.89:
        return [f"{iso} DEBUG [model.batcher] batch formed size={rng.integers(1, 33)} wait_ms={rng.exponential(3):.2f} "
                f"queue_depth={rng.integers(0, 20)}"]
    if r < 0.94:
        return [f'INFO:     10.0.0.{rng.integers(2, 9)}:{rng.integers(30000, 65000)} - "GET /health HTTP/1.1" 200 OK']
    if r < 0.985:
        return [rng.choice([
            f"{iso} WARNING [model.server] request_id={rid} slow request: {lat * 4:.0f} ms over the 2000 ms SLO",
            f"WARNING {short} [scheduler.py:1557] Sequence group {rid[:8]} is preempted by PreemptionMode.RECOMPUTE "
            f"mode because there is not enough KV cache space. This can affect the end-to-end performance.",
            f"{iso} WARNING [tokenizer] input truncated from {prompt * 8} to 8192 tokens request_id={rid}",
        ])]
    frames = [f'  File "/app/.venv/lib/python3.11/site-packages/{m}", line {rng.integers(20, 2000)}, in {f}'
              for m, f in (("vllm/engine/llm_engine.py", "step"), ("vllm/worker/model_runner.py", "execute_model"),
                           ("torch/nn/modules/module.py", "_call_impl"), ("model/server.py", "predict"))]
    return [f"{iso} ERROR [model.server] request_id={rid} request failed", "Traceback (most recent call last):",
            *[x for fr in frames for x in (fr, "    return forward_call(*args, **kwargs)")],
            f"torch.OutOfMemoryError: CUDA out of memory. Tried to allocate {rng.uniform(0.5, 8):.2f} GiB. "
            f"GPU {rng.integers(0, 8)} has a total capacity of 79.10 GiB of which {rng.uniform(0, 1):.2f} GiB is free."]


def training_lines(rng: np.random.Generator, ts_ns: int, rank: int, step: int) -> list[str]:
    iso, _, glog = _when(ts_ns)
    r = rng.random()
    if r < 0.5:
        return [f"[rank{rank * 8 + int(rng.integers(8))}] {iso} INFO train.py:412] step {step}/250000 | "
                f"loss {rng.normal(2.1, 0.05):.4f} | lr {3e-4 * (1 - step / 250000):.3e} | grad_norm "
                f"{rng.lognormal(0, 0.2):.3f} | tokens/s {int(rng.normal(182000, 3000)):,} | mfu "
                f"{rng.normal(41, 1):.1f}% | mem {rng.normal(71, 1):.1f} GiB"]
    if r < 0.7:
        a = int(rng.integers(8))
        return [f"gpu-node-{rank:04d}:{4000 + a}:{4100 + a} [{a}] NCCL INFO Channel {rng.integers(0, 32):02d}/0 : "
                f"{rank * 8 + a}[{a}] -> {(rank * 8 + a + 1) % 64}[{(a + 1) % 8}] via P2P/CUMEM/read"]
    if r < 0.8:
        return [f"{iso} INFO data.loader: shard {rng.integers(0, 4096):05d}-of-04096 opened "
                f"({rng.uniform(100, 400):.1f} MiB), workers=8 prefetch=4 epoch={step // 40000}"]
    if r < 0.88:
        return [rng.choice([
            f"{iso} INFO checkpoint: saved step {step} to s3://ckpt-bucket/{JOB}/step_{step:07d} in "
            f"{rng.uniform(20, 90):.1f} s ({rng.uniform(200, 900):.1f} GiB)",
            f"{iso} INFO eval: step {step} val_loss {rng.normal(2.2, 0.05):.4f} "
            f"ppl {np.exp(rng.normal(2.2, 0.05)):.2f} ({rng.integers(200, 400)} batches)",
        ])]
    if r < 0.95:
        return [f"I{glog} {rng.integers(3000, 9000)} nccl_utils.cc:{rng.integers(50, 400)}] all_reduce "
                f"{rng.integers(1, 512)} MiB in {rng.uniform(1, 40):.2f} ms, busbw {rng.uniform(150, 380):.1f} GB/s"]
    return [rng.choice([
        "/usr/lib/python3/dist-packages/torch/utils/checkpoint.py:90: UserWarning: None of the inputs have "
        "requires_grad=True. Gradients will be None",
        f"{iso} WARNING train.py:498] loss spike at step {step}: {rng.uniform(3, 6):.3f} (ema 2.104), "
        f"skipping batch {rng.integers(0, 10**6)}",
    ])]


def log_bodies(nodes: list[SimNode], lines: int, start_ns: int, end_ns: int, rng: np.random.Generator):
    """Yield (body, records, raw line bytes) of agent log batches (<= 1000 records), per
    node in time order; serving nodes log 3x more lines than training nodes."""
    weights = np.array([1.0 if n.training else 3.0 for n in nodes])
    per_node = rng.multinomial(lines, weights / weights.sum())
    for node, n in zip(nodes, per_node):
        stamps = np.sort(rng.integers(start_ns, end_ns, n))
        batch, raw, i = [], 0, 0
        while i < n:
            ts = int(stamps[i])
            step = int((ts - start_ns) // (3 * 10**9)) + 12000
            group = training_lines(rng, ts, node.rank, step) if node.training else serving_lines(rng, ts)
            group = group[: n - i]
            for j, line in enumerate(group):
                batch.append(make_record(line, ts + j * 1000, "stderr" if "Traceback" in group[0] else "stdout"))
                raw += len(line) + 1
            i += len(group)
            if len(batch) >= 1000 or i >= n:
                yield otlp.logs_request(node.resource, batch), len(batch), raw
                batch, raw = [], 0


# -- SondeMiddleware on an SDK meter provider ----------------------------------------------


class SimReplicaHttp:
    """SondeMiddleware's instruments on one serving replica's meter provider; ``tick``
    records ``rps * interval`` (Poisson) simulated requests and exports as the SDK's
    periodic reader does (cumulative), re-stamped to simulated time."""

    def __init__(self, node: SimNode, exponential: bool, start_ns: int, rng: np.random.Generator):
        from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.resources import Resource

        from sonde.instrument.instruments import instruments_for
        from sonde.instrument.otel import sonde_views

        model, dep = node.placement["sonde.model_id"], node.placement["sonde.deployment_id"]
        self.resource = Resource.create({"sonde.model_id": model, "sonde.deployment_id": dep,
                                         "sonde.replica": node.replica, "service.name": model})
        self.reader = InMemoryMetricReader()
        self.provider = MeterProvider(resource=self.resource, metric_readers=[self.reader],
                                      views=sonde_views() if exponential else (),
                                      exemplar_filter=AlwaysOffExemplarFilter())
        self.inst = instruments_for(self.provider)
        self.rng, self.start_ns = rng, start_ns

    def tick(self, ts_ns: int, rps: float, interval: float) -> tuple[bytes, int]:
        from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics

        rng, inst = self.rng, self.inst
        n = int(rng.poisson(rps * interval))
        dur = rng.lognormal(np.log(0.9), 0.7, n)
        fail = rng.random(n) < 0.005
        size_in, size_out = rng.lognormal(7.5, 1.0, n).astype(int), rng.lognormal(8.5, 0.8, n).astype(int)
        for i in range(n):
            attrs = {"http.request.method": "POST", "url.scheme": "http", "http.route": "/predict",
                     "http.response.status_code": 500 if fail[i] else 200}
            if fail[i]:
                attrs["error.type"] = "500"
            inst.duration.record(float(dur[i]), attrs)
            inst.ttfb.record(float(dur[i]) * 0.1, attrs)
            inst.request_size.record(int(size_in[i]), attrs)
            inst.response_size.record(int(size_out[i]), attrs)
        health = {"http.request.method": "GET", "url.scheme": "http", "http.route": "/health",
                  "http.response.status_code": 200}
        for _ in range(int(interval)):  # the platform's health check, once a second
            d = float(rng.lognormal(np.log(0.0008), 0.3))
            inst.duration.record(d, health)
            inst.ttfb.record(d, health)
            inst.response_size.record(2, health)
        busy = int(rng.poisson(rps * 0.9))
        for _ in range(busy):
            inst.enter(("POST", "http"))
        inst.enter(("GET", "http"))
        data = self.reader.get_metrics_data()
        for _ in range(busy):
            inst.leave(("POST", "http"))
        inst.leave(("GET", "http"))
        req = encode_metrics(data)
        points = 0
        for rm in req.resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    for dp in getattr(m, m.WhichOneof("data")).data_points:
                        dp.time_unix_nano, dp.start_time_unix_nano = ts_ns, self.start_ns
                        points += 1
        return req.SerializeToString(), points


# -- the run -------------------------------------------------------------------------------------


class Poster:
    """Concatenates request bodies of one signal (OTLP requests concatenate) and posts
    them through the app once ``POST_BYTES`` are waiting."""

    def __init__(self, client: httpx.AsyncClient, key: str, signal: str):
        self.c, self.signal = client, signal
        self.headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/x-protobuf"}
        self.parts: list[bytes] = []
        self.size = 0
        self.rejected = 0

    async def add(self, body: bytes) -> None:
        self.parts.append(body)
        self.size += len(body)
        if self.size >= POST_BYTES:
            await self.flush()

    async def flush(self) -> None:
        if not self.parts:
            return
        r = await self.c.post(f"/v1/otlp/v1/{self.signal}", content=b"".join(self.parts), headers=self.headers)
        assert r.status_code == 200, r.text[:500]
        if r.content:
            from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
            from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceResponse
            cls = ExportMetricsServiceResponse if self.signal == "metrics" else ExportLogsServiceResponse
            ps = cls.FromString(r.content).partial_success
            bad = ps.rejected_data_points if self.signal == "metrics" else ps.rejected_log_records
            assert not bad, ps.error_message
        self.parts, self.size = [], 0


async def feed(app, creds: dict, args, start_ns: int, end_ns: int) -> dict:
    rng = np.random.default_rng(args.seed)
    nodes = [SimNode(rank, args, start_ns, rng) for rank in range(args.nodes)]
    serving = [n for n in nodes if not n.training]
    http = [SimReplicaHttp(n, i % 2 == 0, start_ns, rng) for i, n in enumerate(serving)]
    ticks = int((end_ns - start_ns) // (args.interval * 10**9))
    wire = {"agent points": [0, 0], "agent bodies": [0, 0], "http points": [0, 0], "log lines": [0, 0, 0]}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://bench", timeout=600) as c:
        key = creds["ingest_key"]
        metrics, logs = Poster(c, key, "metrics"), Poster(c, key, "logs")
        t0 = time.perf_counter()
        for k in range(ticks):
            ts = start_ns + (k + 1) * args.interval * 10**9
            for node in nodes:
                ts_node = ts + node.rank * 37_000_000  # agents are not in phase
                body, n = node.tick(ts_node, args.interval)
                if k % 50 == 0:  # the agent posts each tick gzipped (level 1): bytes on the wire
                    wire["agent bodies"][0] += len(otlp.compress(body))
                    wire["agent bodies"][1] += n
                wire["agent points"][0] += n
                await metrics.add(body)
            for h in http:
                body, n = h.tick(ts + 5 * 10**9, args.rps, args.interval)
                wire["http points"][0] += n
                await metrics.add(body)
            if k % 100 == 0:
                print(f"\r  metrics: tick {k + 1}/{ticks}", end="", flush=True)
        await metrics.flush()
        print(f"\r  metrics: {ticks} ticks x {len(nodes)} agents + {len(http)} middlewares in "
              f"{time.perf_counter() - t0:.0f} s", flush=True)
        t0 = time.perf_counter()
        for body, records, raw in log_bodies(nodes, args.log_lines, start_ns, end_ns, rng):
            wire["log lines"][0] += records
            wire["log lines"][1] += raw
            if wire["log lines"][2] < 200:  # sample of gzipped batch sizes
                wire["log lines"][2] += 1
                wire.setdefault("log gz", [0, 0])
                wire["log gz"][0] += len(otlp.compress(body))
                wire["log gz"][1] += records
            await logs.add(body)
            if wire["log lines"][0] % 100_000 < records:
                print(f"\r  logs: {wire['log lines'][0]:,} lines", end="", flush=True)
        await logs.flush()
        print(f"\r  logs: {wire['log lines'][0]:,} lines in {time.perf_counter() - t0:.0f} s", flush=True)
    per_tick = nodes[0].agent.exporter.last[0]
    return {"wire": wire, "ticks": ticks, "tick_points": len(per_tick),
            "tick_names": sorted({p.name for p in per_tick})}


def measure(store, db: str, table: str) -> dict:
    row = store.ex.query(
        "SELECT sum(rows) AS rows, sum(data_compressed_bytes) AS comp, sum(data_uncompressed_bytes) AS raw,"
        " sum(bytes_on_disk) AS disk, count() AS parts FROM system.parts"
        " WHERE database = {d:String} AND table = {t:String} AND active", {"d": db, "t": table})[0]
    return {k: int(v or 0) for k, v in row.items()}


def columns(store, db: str, table: str, top: int = 8) -> list[dict]:
    return store.ex.query(
        "SELECT column AS name, sum(column_data_compressed_bytes) AS comp,"
        " sum(column_data_uncompressed_bytes) AS raw FROM system.parts_columns"
        " WHERE database = {d:String} AND table = {t:String} AND active"
        " GROUP BY column ORDER BY comp DESC LIMIT {n:UInt32}",
        {"d": db, "t": table, "n": top})


SPLITS = (  # label, condition on metric_points
    ("gauge", "kind = 'gauge'"),
    ("sum, monotonic (counter deltas + cum_state)", "kind = 'sum' AND monotonic"),
    ("sum, up-down (levels)", "kind = 'sum' AND NOT monotonic"),
    ("histogram (explicit, SDK default)", "kind = 'histogram'"),
    ("exp_histogram (sonde_views)", "kind = 'exp_histogram'"),
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nodes", type=int, default=8, help="agents; the first half a training job's nodes")
    ap.add_argument("--gpus", type=int, default=8)
    ap.add_argument("--hours", type=float, default=6)
    ap.add_argument("--interval", type=int, default=10, help="sampling and export interval, s")
    ap.add_argument("--log-lines", type=int, default=1_000_000)
    ap.add_argument("--rps", type=float, default=5, help="requests/s per serving replica")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--data-dir", default=None, help="default: a temporary directory, removed afterwards")
    ap.add_argument("--keep", action="store_true", help="keep the data directory")
    args = ap.parse_args()
    args.reuse = False

    end_ns = time.time_ns() // 10**9 * 10**9 - 60 * 10**9
    start_ns = end_ns - int(args.hours * 3600) * 10**9
    with bench_app(args, "sonde-bench-storage-") as (store, app, creds, data_dir):
        print(f"data: {data_dir}; {args.nodes} nodes x {args.gpus} GPUs every {args.interval} s for "
              f"{args.hours:g} h, {args.nodes - args.nodes // 2} serving replicas at {args.rps:g} req/s, "
              f"{args.log_lines:,} log lines")
        fed = asyncio.run(feed(app, creds, args, start_ns, end_ns))
        db = store.db
        t = time.perf_counter()
        for row in store.ex.query("SELECT name FROM system.tables WHERE database = {d:String}"
                                  " AND engine LIKE '%MergeTree'", {"d": db}):
            store.ex.command(f"OPTIMIZE TABLE {db}.{row['name']} FINAL")
        split_db = f"{db}_by_kind"
        store.ex.command(f"CREATE DATABASE IF NOT EXISTS {split_db}")
        for i, (_, cond) in enumerate(SPLITS):
            store.ex.command(f"CREATE TABLE IF NOT EXISTS {split_db}.k{i} AS {db}.metric_points")
            store.ex.command(f"INSERT INTO {split_db}.k{i} SELECT * FROM {db}.metric_points WHERE {cond}")
            store.ex.command(f"OPTIMIZE TABLE {split_db}.k{i} FINAL")
        print(f"  merged in {time.perf_counter() - t:.0f} s")

        wire = fed["wire"]
        print(f"\nagent tick: {fed['tick_points']} points per node ({args.gpus} GPUs): {', '.join(fed['tick_names'])}")
        print(f"on the wire (protobuf, gzip level 1 as the agent sends): "
              f"{wire['agent bodies'][0] / wire['agent bodies'][1]:.1f} B per agent point (one tick per request), "
              f"{wire['log gz'][0] / wire['log gz'][1]:.1f} B per log line (batches of <= 1000); "
              f"log lines average {wire['log lines'][1] / wire['log lines'][0]:.0f} B of text")

        print(f"\n{'rows':<46} {'rows':>10} {'parts':>5} {'compressed':>12} {'on disk':>12} "
              f"{'B/row comp':>10} {'B/row disk':>10} {'B/row raw':>10}")

        def line(label: str, m: dict) -> None:
            n = max(m["rows"], 1)
            print(f"{label:<46} {m['rows']:>10,} {m['parts']:>5} {m['comp']:>12,} {m['disk']:>12,} "
                  f"{m['comp'] / n:>10.1f} {m['disk'] / n:>10.1f} {m['raw'] / n:>10.1f}")

        for i, (label, _) in enumerate(SPLITS):
            line(label, measure(store, split_db, f"k{i}"))
        line("metric_points, all of the above", measure(store, db, "metric_points"))
        agent = store.ex.query(f"SELECT count() AS n FROM {db}.metric_points WHERE kind IN ('gauge', 'sum')"
                               " AND metric NOT LIKE 'http.%'")[0]["n"]
        print(f"  ({agent:,} of them from the agents, {fed['ticks']} ticks)")
        line("series_state (one row per stateful series)", measure(store, db, "series_state"))
        line("logs (per line)", measure(store, db, "logs"))
        others = store.ex.query("SELECT DISTINCT table FROM system.parts WHERE database = {d:String} AND active"
                                " AND table NOT IN ('metric_points', 'series_state', 'logs') ORDER BY table",
                                {"d": db})
        for row in others:  # accounts, inventory, and any table the schema has grown since
            line(f"{row['table']} (per row)", measure(store, db, row["table"]))

        for table, dbn in (("metric_points", db), ("logs", db)):
            m = measure(store, dbn, table)
            cols = columns(store, dbn, table)
            if not any(col["comp"] for col in cols):
                print(f"\n{table}: a compact part (under min_bytes_for_wide_part), no per-column sizes")
                continue
            print(f"\nlargest columns of {table} (compressed B/row, ratio):")
            for col in cols:
                print(f"  {col['name']:<14} {col['comp'] / max(m['rows'], 1):>8.2f}  "
                      f"{col['raw'] / max(col['comp'], 1):>5.1f}x")


if __name__ == "__main__":
    main()
