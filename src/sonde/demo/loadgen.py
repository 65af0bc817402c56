"""The demo's load generator: ``python -m sonde.demo.loadgen --target URL ... --rps R``.

Open loop, as real clients are: arrivals are a Poisson process (exponential gaps) and
each request is sent in its own task, so a slow answer never holds back the next
arrival. Every ``--burst-every`` seconds the rate is multiplied by ``--burst-factor``
for ``--burst-seconds`` (a client's batch job, a retry storm). Each arrival goes to a
random healthy replica; a replica is healthy once its ``/health`` answers 200, checked
every 2 s, as a load balancer would.

The mix (``MIX``): small prediction batches most of the time, a share of large
batches asking for the predictive std (the server's slow path), requests a client
gets wrong (wrong number of features, strings for numbers, an empty batch, no
``instances`` at all: 400/422), model info lookups, and now and then a batch with a
sensor glitch (a reading of 1.7e308), which overflows in the model and fails with 500.

With ``--chain-target URL`` (the demo chain's ``preprocess`` chainlet), a
``--chain-share`` of the arrivals (10%) goes there instead: ``POST /run`` with 1 to 16
rows, some readings missing (null) or glitched (clipped by the chainlet), and now and
then a short row (400). With ``--loops-target URL`` (repeatable: the trainer
deployment's nodes), a ``--loops-share`` (10%) goes to a random healthy node:
``POST /sample`` with 1 to 32 observations (``LOOPS_MIX``: now and then greedy, a short
row or strings (400/422), a glitched reading (500)), and a few ``GET /policy``. With
``--textgen-target URL`` (the demo's text-generation service, ``textgen.py``), a steady
trickle of completions of its own, ``--textgen-rps`` (1.5) apart from ``--rps`` and
tripled in bursts: ``POST /v1/completions``, half of them streamed (read to
``data: [DONE]``), each prompt one of a few shared system prompts (the prefix cache's
hits) and a question of its own, and now and then a ``max_tokens`` past the context
(400). All of these are counted in the same summary.

Every ``--report-every`` seconds one line goes to stdout: requests by status class,
client-side latency p50/p99, and whether a burst was on. SIGINT/SIGTERM stop the
arrivals; requests in flight get up to 5 s to finish.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import signal
import sys
import time
from collections import Counter

import httpx

N_FEATURES = 8
GLITCH = 1.7e308  # near float max: what a broken sensor or an uninitialised buffer sends

# (kind, weight); weights need not sum to 1.
MIX = [
    ("predict", 0.80),
    ("slow", 0.06),
    ("bad", 0.09),
    ("info", 0.02),
    ("glitch", 0.015),
]

# The trainer (loops) deployment's requests, the same way.
LOOPS_MIX = [
    ("sample", 0.82),
    ("greedy", 0.06),
    ("policy", 0.03),
    ("bad", 0.07),
    ("glitch", 0.02),
]


def _rows(rng: random.Random, n: int) -> list[list[float]]:
    return [[round(rng.gauss(0.0, 1.0), 4) for _ in range(N_FEATURES)] for _ in range(n)]


def make_request(kind: str, rng: random.Random) -> tuple[str, str, dict | None]:
    """(method, path, json body) for one request of ``kind``."""
    if kind == "predict":
        # Mostly single rows and small batches, with a long tail, as online traffic is.
        n = max(1, min(64, int(rng.lognormvariate(1.0, 1.0))))
        return "POST", "/predict", {"instances": _rows(rng, n)}
    if kind == "slow":
        return "POST", "/predict?return_std=true", {"instances": _rows(rng, rng.randint(256, 1024))}
    if kind == "info":
        return "GET", "/info", None
    if kind == "glitch":
        rows = _rows(rng, rng.randint(1, 8))
        rows[rng.randrange(len(rows))][rng.randrange(N_FEATURES)] = GLITCH
        return "POST", "/predict", {"instances": rows}
    if kind == "bad":
        mistake = rng.choice(["short_row", "strings", "empty", "no_instances"])
        if mistake == "short_row":
            rows = _rows(rng, rng.randint(1, 4))
            rows[0] = rows[0][: rng.randint(1, N_FEATURES - 1)]
            return "POST", "/predict", {"instances": rows}
        if mistake == "strings":
            rows = _rows(rng, 1)
            return "POST", "/predict", {"instances": [[str(v) + "kg" for v in rows[0]]]}
        if mistake == "empty":
            return "POST", "/predict", {"instances": []}
        return "POST", "/predict", {"inputs": _rows(rng, 1)}
    raise ValueError(kind)


# A few system prompts many requests share, as an application's do: over 48 words each,
# so three whole KV blocks of 16 tokens come from the prefix cache.
SYSTEM_PROMPTS = [
    "You are the help desk of a small mountain observatory. Answer in plain words for visitors who are curious "
    "but new to astronomy, name the instrument or the part of the sky you mean, say so when you do not know, "
    "and keep every answer under five short sentences. Never invent opening hours or prices; point to the "
    "front desk for those instead.",
    "You are a careful assistant for the maintenance crew of a regional rail line. Read the fault report below, "
    "name the likely cause first and the checks that would confirm it second, list the parts that may be "
    "needed, and flag anything that is a safety matter in a separate sentence at the end. Write for a "
    "technician on the platform at night.",
    "You summarise customer messages for a bakery that ships bread and pastries across the country. Give the "
    "customer's request in one sentence, the order number if there is one, whether the message is a "
    "complaint, a question or praise, and the one next step the shop should take. Stay polite and keep "
    "the original language's tone.",
]
QUESTION_WORDS = ("why when where how which does the a dome telescope train signal brake door winter order "
                  "bread delivery late broken cold star moon planet night tonight tomorrow open close cost "
                  "crack noise light red blue crust box").split()
TEXTGEN_CONTEXT = 512  # textgen.py's --max-model-len: a request past it is a client's mistake (400)


def make_textgen_request(rng: random.Random, model: str) -> dict:
    """The body of one ``POST /v1/completions`` to the text-generation service."""
    question = " ".join(rng.choice(QUESTION_WORDS) for _ in range(rng.randint(4, 24)))
    stream = rng.random() < 0.5
    body = {"model": model, "prompt": f"{rng.choice(SYSTEM_PROMPTS)}\n\nQuestion: {question}?\nAnswer:",
            "max_tokens": rng.choice([16, 32, 48, 64, 96]), "stream": stream}
    if stream:
        body["stream_options"] = {"include_usage": True}
    if rng.random() < 0.03:
        body["max_tokens"] = TEXTGEN_CONTEXT
    return body


def make_chain_request(rng: random.Random) -> dict:
    """The body of one ``POST /run`` to the chain's preprocess chainlet."""
    rows: list[list[float | None]] = _rows(rng, rng.randint(1, 16))
    roll = rng.random()
    if roll < 0.2:  # a missing reading
        rows[rng.randrange(len(rows))][rng.randrange(N_FEATURES)] = None
    elif roll < 0.25:  # a glitch, which the chainlet clips
        rows[rng.randrange(len(rows))][rng.randrange(N_FEATURES)] = GLITCH
    elif roll < 0.3:  # a client mistake: 400
        rows[0] = rows[0][: rng.randint(1, N_FEATURES - 1)]
    return {"rows": rows}


def make_loops_request(rng: random.Random) -> tuple[str, str, dict | None]:
    """(method, path, json body) for one request to a trainer (loops) node."""
    kind = rng.choices([k for k, _ in LOOPS_MIX], [w for _, w in LOOPS_MIX])[0]
    if kind == "policy":
        return "GET", "/policy", None
    rows = _rows(rng, max(1, min(32, int(rng.lognormvariate(1.0, 1.0)))))
    if kind == "glitch":
        rows[rng.randrange(len(rows))][rng.randrange(N_FEATURES)] = GLITCH
    elif kind == "bad":
        if rng.random() < 0.5:
            rows[0] = rows[0][: rng.randint(1, N_FEATURES - 1)]
        else:
            rows = [[f"{v}m" for v in rows[0]]]
    return "POST", "/sample", {"observations": rows, "greedy": kind == "greedy"}


class Stats:
    def __init__(self) -> None:
        self.window: Counter[str] = Counter()
        self.total: Counter[str] = Counter()
        self.latencies: list[float] = []

    def add(self, status: int | None, seconds: float) -> None:
        cls = f"{status // 100}xx" if status else "failed"  # failed: no answer at all
        self.window[cls] += 1
        self.total[cls] += 1
        self.latencies.append(seconds)

    def line(self, span: float, burst: bool) -> str:
        n = sum(self.window.values())
        lat = sorted(self.latencies)
        q = (lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] * 1000) if lat else (lambda p: 0.0)
        classes = ", ".join(f"{k} {v}" for k, v in sorted(self.window.items()))
        out = (f"loadgen: {n} requests in {span:.0f} s ({classes or 'none'}); "
               f"p50 {q(0.5):.0f} ms, p99 {q(0.99):.0f} ms{'; burst' if burst else ''}")
        self.window.clear()
        self.latencies.clear()
        return out


class LoadGen:
    def __init__(self, targets: list[str], rps: float, *, seed: int = 7, burst_every: float = 30.0,
                 burst_seconds: float = 5.0, burst_factor: float = 3.0, report_every: float = 10.0,
                 chain_target: str | None = None, chain_share: float = 0.1,
                 loops_targets: list[str] | None = None, loops_share: float = 0.1,
                 textgen_target: str | None = None, textgen_rps: float = 1.5, textgen_model: str = "demo-textgen"):
        self.targets = [t.rstrip("/") for t in targets]
        self.chain_target = chain_target.rstrip("/") if chain_target else None
        self.chain_share = chain_share if chain_target else 0.0
        self.loops_targets = [t.rstrip("/") for t in loops_targets or []]
        self.loops_share = loops_share if self.loops_targets else 0.0
        self.textgen_target = textgen_target.rstrip("/") if textgen_target else None
        self.textgen_rps, self.textgen_model = textgen_rps, textgen_model
        self.rps = rps
        self.rng = random.Random(seed)
        self.burst_every, self.burst_seconds, self.burst_factor = burst_every, burst_seconds, burst_factor
        self.report_every = report_every
        self.healthy: list[str] = []
        self.stats = Stats()
        self.stop = asyncio.Event()
        self.in_flight: set[asyncio.Task] = set()
        self.failures_seen: set[str] = set()
        self.t0 = time.monotonic()

    def in_burst(self) -> bool:
        # Bursts close each period, so a run starts calm.
        if self.burst_every <= 0:
            return False
        return (time.monotonic() - self.t0) % self.burst_every >= self.burst_every - self.burst_seconds

    async def _health(self, client: httpx.AsyncClient) -> None:
        while not self.stop.is_set():
            healthy = []
            for t in self.targets + [x for x in (self.chain_target, self.textgen_target) if x] + self.loops_targets:
                try:
                    if (await client.get(f"{t}/health", timeout=2.0)).status_code == 200:
                        healthy.append(t)
                except httpx.HTTPError:
                    pass  # not listening yet, or gone
            self.healthy = healthy
            await self._pause(2.0)

    async def _pause(self, seconds: float) -> bool:
        """Sleep, or less when stopped; True when stopped."""
        try:
            await asyncio.wait_for(self.stop.wait(), seconds)
            return True
        except asyncio.TimeoutError:
            return False

    async def _send(self, client: httpx.AsyncClient, target: str) -> None:
        if target == self.chain_target:
            method, path, body = "POST", "/run", make_chain_request(self.rng)
        elif target in self.loops_targets:
            method, path, body = make_loops_request(self.rng)
        elif target == self.textgen_target:
            method, path, body = "POST", "/v1/completions", make_textgen_request(self.rng, self.textgen_model)
        else:
            kind = self.rng.choices([k for k, _ in MIX], [w for _, w in MIX])[0]
            method, path, body = make_request(kind, self.rng)
        t0 = time.monotonic()
        try:
            async with client.stream(method, target + path, json=body, timeout=30.0) as r:
                await r.aread()  # a streamed completion counts once its last event is in, as its client sees it
            self.stats.add(r.status_code, time.monotonic() - t0)
        except httpx.HTTPError as exc:
            self.stats.add(None, time.monotonic() - t0)
            what = type(exc).__name__
            if what not in self.failures_seen:  # once per kind: a dead replica would flood stderr
                self.failures_seen.add(what)
                print(f"loadgen: {method} {target}{path} failed: {what}: {exc}", file=sys.stderr, flush=True)

    async def _report(self) -> None:
        last = time.monotonic()
        while not self.stop.is_set():
            await self._pause(self.report_every)
            now = time.monotonic()
            if self.stats.window:
                print(self.stats.line(now - last, self.in_burst()), flush=True)
            last = now

    def _launch(self, client: httpx.AsyncClient, target: str) -> None:
        task = asyncio.create_task(self._send(client, target))
        self.in_flight.add(task)
        task.add_done_callback(self.in_flight.discard)

    async def _trickle(self, client: httpx.AsyncClient) -> None:
        """The text-generation service's arrivals, a Poisson process of their own: its engine
        runs a handful of sequences at a time, so its rate must not follow ``--rps``."""
        while not await self._pause(self.rng.expovariate(
                self.textgen_rps * (self.burst_factor if self.in_burst() else 1.0))):
            if self.textgen_target in self.healthy:
                self._launch(client, self.textgen_target)

    async def run(self, duration: float = 0.0) -> Counter[str]:
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=50)
        async with httpx.AsyncClient(limits=limits) as client:
            helpers = [asyncio.create_task(self._health(client)), asyncio.create_task(self._report())]
            if self.textgen_target:
                helpers.append(asyncio.create_task(self._trickle(client)))
            end = time.monotonic() + duration if duration > 0 else None
            while not self.stop.is_set() and (end is None or time.monotonic() < end):
                rate = self.rps * (self.burst_factor if self.in_burst() else 1.0)
                if await self._pause(self.rng.expovariate(rate)):
                    break
                loops = [t for t in self.healthy if t in self.loops_targets]
                replicas = [t for t in self.healthy if t not in (self.chain_target, self.textgen_target)
                            and t not in loops]
                roll = self.rng.random()  # the two shares at opposite ends of one roll never overlap
                if self.chain_target in self.healthy and roll < self.chain_share:
                    replicas = [self.chain_target]
                elif loops and roll >= 1.0 - self.loops_share:
                    replicas = loops
                if replicas:
                    self._launch(client, self.rng.choice(replicas))
            self.stop.set()
            if self.in_flight:
                await asyncio.wait(self.in_flight, timeout=5.0)
            for t in helpers:
                t.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
        return self.stats.total


async def _main(args: argparse.Namespace) -> None:
    gen = LoadGen(args.target, args.rps, seed=args.seed, burst_every=args.burst_every,
                  burst_seconds=args.burst_seconds, burst_factor=args.burst_factor,
                  report_every=args.report_every, chain_target=args.chain_target, chain_share=args.chain_share,
                  loops_targets=args.loops_target, loops_share=args.loops_share,
                  textgen_target=args.textgen_target, textgen_rps=args.textgen_rps, textgen_model=args.textgen_model)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, gen.stop.set)
    total = await gen.run(args.duration)
    classes = ", ".join(f"{k} {v}" for k, v in sorted(total.items()))
    print(f"loadgen: stopped after {sum(total.values())} requests ({classes or 'none'})", flush=True)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m sonde.demo.loadgen", description=__doc__.split("\n\n")[0])
    p.add_argument("--target", action="append", required=True, help="model server base URL (repeatable)")
    p.add_argument("--chain-target", default=None, help="the chain's entry point (preprocess chainlet) base URL")
    p.add_argument("--chain-share", type=float, default=0.1, help="share of arrivals sent to --chain-target")
    p.add_argument("--loops-target", action="append", default=[],
                   help="a trainer (loops) deployment node's base URL (repeatable)")
    p.add_argument("--loops-share", type=float, default=0.1, help="share of arrivals sent to the --loops-target nodes")
    p.add_argument("--textgen-target", default=None, help="the text-generation service's base URL (textgen.py)")
    p.add_argument("--textgen-rps", type=float, default=1.5, help="mean completions per second outside bursts")
    p.add_argument("--textgen-model", default="demo-textgen", help="the model name completions ask for")
    p.add_argument("--rps", type=float, default=20.0, help="mean arrivals per second outside bursts")
    p.add_argument("--duration", type=float, default=0.0, help="seconds; 0 runs until SIGINT/SIGTERM")
    p.add_argument("--burst-every", type=float, default=30.0, help="seconds between burst starts; 0: none")
    p.add_argument("--burst-seconds", type=float, default=5.0)
    p.add_argument("--burst-factor", type=float, default=3.0)
    p.add_argument("--report-every", type=float, default=10.0)
    p.add_argument("--seed", type=int, default=7)
    args = p.parse_args(argv)
    if args.rps <= 0 or args.textgen_rps <= 0:
        p.error("--rps and --textgen-rps must be positive")
    asyncio.run(_main(args))
    sys.exit(0)


if __name__ == "__main__":
    main()
