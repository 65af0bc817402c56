"""Load benchmark: mixed ingest and queries at rising rates, until past saturation.

    .venv/bin/python bench/bench_load.py                          # rates 25..200 requests/s, 10 s each
    .venv/bin/python bench/bench_load.py --rates 50,100,200 --seconds 20

Not a test (CI never runs it). A real ``sonde serve`` (chDB, default settings) on
loopback; one asyncio + httpx client drives an open loop: requests start on schedule
whether or not earlier ones have been answered, as a fleet of agents would, so a server
slower than the offered rate shows as queueing, shedding or timeouts rather than as a
politely slower client. The mix, by request count: agent ticks (OTLP metrics of a node
with 8 GPUs, 62 points) 40%, SDK exports (OTLP traces, 8 spans) 20%, log batches (50
lines) 20%, deployment metrics queries 10%, log searches 6%, ``GET /metrics`` 4% (each
of four keys under its own ``metrics_rate_limit``); four live log streams stay open
throughout. Each stage reports what was offered and what came back: answered per second,
429 and 503 (load shed, with Retry-After), other errors, client timeouts (10 s), latency
of the served requests, and the server's peak RSS sampled every 100 ms. The client runs
on the same machine as the server, so at the top rates they share the cores.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import pathlib
import random
import sys
import tempfile
import threading
import time

import httpx
import psutil

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from live_server import LiveServer  # noqa: E402
from otlp_build import encode, gauge, log_record, logs_request, metrics_request, number, traces_request  # noqa: E402

DEPLOYMENTS = 20
TIMEOUT_S = 10.0
MIX = (("agent tick", 40), ("sdk traces", 20), ("log batch", 20), ("metrics query", 10), ("log search", 6),
       ("export", 4))


def _resource(i: int) -> dict:
    return {"sonde.model_id": f"m{i % 5}", "sonde.deployment_id": f"d{i}", "sonde.replica": f"r{i % 3}"}


def _bodies(now_ns: int) -> dict[str, list[tuple[bytes, dict]]]:
    """Request bodies built before the clock, a few per kind, placed over the deployments."""
    out: dict[str, list] = {"agent tick": [], "sdk traces": [], "log batch": []}
    for i in range(DEPLOYMENTS):
        res = _resource(i)
        t = now_ns - random.randrange(60) * 10**9
        gpu = [gauge(name, [number(t, random.random() * scale, attrs={"hw.gpu.index": g}) for g in range(8)])
               for name, scale in (("hw.gpu.utilization", 1.0), ("hw.gpu.memory.usage", 8e10),
                                   ("hw.gpu.memory.limit", 8e10), ("hw.gpu.power", 700.0),
                                   ("hw.gpu.temperature", 90.0), ("hw.gpu.memory.utilization", 1.0))]
        host = [gauge("system.cpu.utilization", [number(t, random.random())]),
                gauge("process.memory.usage", [number(t, 3e9)], unit="By")]
        out["agent tick"].append(encode(metrics_request(res, gpu + host)))
        trace = random.randbytes(16)
        spans = [(trace, (k + 1).to_bytes(8, "big"), k.to_bytes(8, "big") if k else b"",
                  "POST /predict" if k == 0 else f"step {k}", 2 if k == 0 else 1, t + k * 1000, 10**7, {})
                 for k in range(8)]
        out["sdk traces"].append(encode(traces_request(res, spans)))
        lines = [log_record(t + k, f"request {k} done in {random.randrange(900)} ms", severity_text="INFO")
                 for k in range(50)]
        out["log batch"].append(encode(logs_request(res, lines)))
    return out


class Stage:
    def __init__(self, rate: float):
        self.rate = rate
        self.sent = 0
        self.codes: collections.Counter = collections.Counter()
        self.latency: list[float] = []
        self.by_kind: dict[str, list[float]] = collections.defaultdict(list)
        self.shed_latency: list[float] = []
        self.timeouts = 0
        self.errors = 0
        self.rss_peak = 0
        self.server_cpu = 0.0  # seconds of CPU, children (none today) included
        self.client_cpu = 0.0
        self.wall = 0.0


class Load:
    def __init__(self, server: LiveServer, keys: list[str], ingest_key: str):
        self.server = server
        self.mkeys = [{"Authorization": f"Bearer {k}"} for k in keys]
        self.ih = {"Authorization": f"Bearer {ingest_key}"}
        self.bodies = _bodies(time.time_ns())
        self.kinds = [k for k, w in MIX for _ in range(w)]
        self.stream_lines = 0

    async def one(self, client: httpx.AsyncClient, kind: str, stage: Stage) -> None:
        now_ms = time.time_ns() // 10**6
        i = random.randrange(DEPLOYMENTS)
        res = _resource(i)
        base = f"/v1/models/{res['sonde.model_id']}/deployments/{res['sonde.deployment_id']}"
        mh = random.choice(self.mkeys)
        t = time.perf_counter()
        try:
            if kind in self.bodies:
                body, h = self.bodies[kind][i]
                path = {"agent tick": "/v1/otlp/v1/metrics", "sdk traces": "/v1/otlp/v1/traces",
                        "log batch": "/v1/otlp/v1/logs"}[kind]
                r = await client.post(path, content=body, headers={**self.ih, **h})
            elif kind == "metrics query":
                r = await client.get(f"{base}/metrics", headers=mh, params={"mode": "SERIES",
                    "start_epoch_millis": now_ms - 900_000, "end_epoch_millis": now_ms})
            elif kind == "log search":
                r = await client.post(f"{base}/logs", headers=mh, json={
                    "start_epoch_millis": now_ms - 900_000, "end_epoch_millis": now_ms, "search_pattern": "done in 1"})
            else:
                r = await client.get("/metrics", headers=mh)
        except httpx.TimeoutException:
            stage.timeouts += 1
            return
        except httpx.HTTPError:
            stage.errors += 1
            return
        took = time.perf_counter() - t
        stage.codes[r.status_code] += 1
        if r.status_code < 300:
            stage.latency.append(took)
            stage.by_kind[kind].append(took)
        elif r.status_code in (429, 503):
            stage.shed_latency.append(took)
            assert r.headers.get("retry-after"), (r.status_code, r.text)

    async def stream(self, client: httpx.AsyncClient, i: int, stop: asyncio.Event) -> None:
        res = _resource(i)
        path = f"/v1/models/{res['sonde.model_id']}/deployments/{res['sonde.deployment_id']}/logs/stream"
        while not stop.is_set():
            try:
                async with client.stream("GET", path, headers=self.mkeys[0], timeout=None) as r:
                    async for line in r.aiter_lines():
                        self.stream_lines += line.startswith("data: ")
                        if stop.is_set():
                            return
            except httpx.HTTPError:
                await asyncio.sleep(0.5)

    async def stage(self, client: httpx.AsyncClient, rate: float, seconds: float) -> Stage:
        st = Stage(rate)
        tasks = []
        start = time.perf_counter()
        n = int(rate * seconds)
        for k in range(n):
            due = start + k / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(self.one(client, random.choice(self.kinds), st)))
            st.sent += 1
        await asyncio.gather(*tasks)
        return st


def _rss(pid: int) -> int:
    try:
        p = psutil.Process(pid)
        return p.memory_info().rss + sum(c.memory_info().rss for c in p.children(recursive=True))
    except psutil.Error:
        return 0


def _cpu(pid: int) -> float:
    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


def _pct(xs: list[float], q: float) -> str:
    if not xs:
        return "-"
    xs = sorted(xs)
    return f"{xs[min(len(xs) - 1, int(q * len(xs)))] * 1000:.0f}"


async def main_async(args) -> list[Stage]:
    with tempfile.TemporaryDirectory(prefix="sonde-load-") as tmp:
        server = LiveServer(tmp, env={f"SONDE_{k.upper()}": v for k, v in args.set}).start()
        try:
            admin = httpx.Client(base_url=server.url, headers=server.headers("admin_key"), timeout=30)
            keys = [server.creds["management_key"]]
            for n in range(3):  # GET /metrics is limited per key: four keys, four budgets
                r = admin.post(f"/v1/admin/workspaces/{server.creds['workspace_id']}/api_keys",
                               json={"scope": "management", "name": f"load{n}"})
                assert r.status_code == 201, r.text
                keys.append(r.json()["key"])
            load = Load(server, keys, server.creds["ingest_key"])
            limits = httpx.Limits(max_connections=2000, max_keepalive_connections=200)
            stages: list[Stage] = []
            async with httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT_S, limits=limits) as client:
                for kind in ("agent tick", "log batch", "sdk traces"):  # every deployment exists before the clock
                    for body, h in load.bodies[kind]:
                        assert (await client.post({"agent tick": "/v1/otlp/v1/metrics", "log batch": "/v1/otlp/v1/logs",
                                                   "sdk traces": "/v1/otlp/v1/traces"}[kind], content=body,
                                                  headers={**load.ih, **h})).status_code == 200
                stop = asyncio.Event()
                streams = [asyncio.create_task(load.stream(client, i, stop)) for i in range(4)]
                for rate in args.rates:
                    peak = [0]
                    done = threading.Event()

                    def sample():
                        while not done.is_set():
                            peak[0] = max(peak[0], _rss(server.proc.pid))
                            time.sleep(0.1)

                    sampler = threading.Thread(target=sample, daemon=True)
                    sampler.start()
                    cpu0, me0, wall0 = _cpu(server.proc.pid), _cpu(os.getpid()), time.perf_counter()
                    st = await load.stage(client, rate, args.seconds)
                    st.wall = time.perf_counter() - wall0  # past the stage's seconds while answers are late
                    st.server_cpu, st.client_cpu = _cpu(server.proc.pid) - cpu0, _cpu(os.getpid()) - me0
                    done.set()
                    sampler.join()
                    st.rss_peak = peak[0]
                    stages.append(st)
                    _row(st, args.seconds)
                    await asyncio.sleep(2)  # let the writer drain between stages
                stop.set()
                for s in streams:
                    s.cancel()
                print(f"\nlive stream lines received over the run: {load.stream_lines}")
            return stages
        finally:
            server.stop()


def _row(st: Stage, seconds: float) -> None:
    ok = sum(v for c, v in st.codes.items() if c < 300)
    other = sum(v for c, v in st.codes.items() if c >= 300 and c not in (429, 503))
    print(f"| {st.rate:.0f} | {st.sent} | {ok / seconds:.0f} | {st.codes[429]} | {st.codes[503]} | "
          f"{other + st.errors} | {st.timeouts} | {_pct(st.latency, 0.5)} | {_pct(st.latency, 0.99)} | "
          f"{_pct(st.shed_latency, 0.5)} | {st.rss_peak / 2**20:.0f} | {st.server_cpu / st.wall:.2f} | "
          f"{st.client_cpu / st.wall:.2f} |", flush=True)
    if other:
        print(f"  (other answers: {dict((c, v) for c, v in st.codes.items() if c >= 300 and c not in (429, 503))})",
              file=sys.stderr)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rates", default="25,50,100,200",
                    type=lambda s: [float(x) for x in s.split(",")], help="offered requests/s per stage")
    ap.add_argument("--seconds", type=float, default=10.0, help="length of each stage")
    ap.add_argument("--set", action="append", default=[], type=lambda s: tuple(s.split("=", 1)),
                    metavar="NAME=VALUE", help="a server setting for the run (docs/settings.md), repeatable")
    args = ap.parse_args()
    print("| offered req/s | sent | served/s | 429 | 503 | other errors | timeouts | p50 ms | p99 ms "
          "| shed p50 ms | peak RSS MiB | server cores | client cores |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    stages = asyncio.run(main_async(args))
    print("\nserved latency by kind, p50 / p99 ms:\n")
    print("| offered req/s | " + " | ".join(k for k, _ in MIX) + " |")
    print("|---:|" + "---:|" * len(MIX))
    for st in stages:
        print(f"| {st.rate:.0f} | " + " | ".join(f"{_pct(st.by_kind[k], 0.5)} / {_pct(st.by_kind[k], 0.99)}"
                                             for k, _ in MIX) + " |")


if __name__ == "__main__":
    main()
