"""One seeded fleet, generated once per replica and encoded for every system.

The shapes are what make a store's job realistic, not the volume alone:

- diurnal load (a sine over the day, its phase per deployment) with bursts (a few
  episodes a day of 2-4x traffic, each for minutes), split unevenly over replicas;
- replica restarts: a gap of ``GAP_STEPS`` samples, then cumulative counters start
  again from 0 with a new start time (the reset every store must detect);
- GPU utilisation follows the replica's traffic (with per-GPU noise), memory follows
  utilisation (fixed weights + KV cache, activations in 2 MiB blocks);
- requests by status (200, 429, 500; 429s and 500s rise in bursts) with a 12-bucket
  latency histogram whose latencies stretch with load.

Values depend only on ``(seed, deployment, replica)``, never on the order in which
they are asked for or the system they are sent to, so all three stores receive the
same samples. Timestamps are at ``10 k + 5`` seconds from an hour boundary: no sample
falls on a step boundary, where "half-open [a, b)" (Sonde) and "(a, b]" (PromQL range
selectors) would put it in different steps.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

INTERVAL_S = 10
OFFSET_S = 5
GAP_STEPS = 6  # a restart loses a minute of samples
BOUNDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)  # + the +Inf bucket: 12
CODES = (200, 429, 500)
GIB = 2**30


@dataclasses.dataclass(frozen=True)
class Scale:
    name: str
    deployments: int
    replicas: int
    gpus: int
    hours: float
    runs: int  # query repetitions

    @property
    def steps(self) -> int:
        return int(self.hours * 3600) // INTERVAL_S

    @property
    def series_per_replica(self) -> int:
        return 2 * self.gpus + len(CODES) * (len(BOUNDS) + 3)


SCALES = {
    # CI smoke: every number produced within 60 s on 2 cores, not a measurement
    "tiny": Scale("tiny", 2, 2, 2, 1, 3),
    # what fits ~15 minutes of this 2-core machine for all four servers together
    # (Sonde's ingest, ~20-40k samples/s here, is what limits it)
    "small": Scale("small", 4, 4, 8, 24, 30),
    "week": Scale("week", 1, 4, 8, 168, 30),
    # the sizes (~200M and ~1.4G samples); 7d holds ~11 GB of generated history
    # in memory and takes ~1.7 h on this 2-core machine (docs/benchmarks.md)
    "24h": Scale("24h", 100, 4, 8, 24, 30),
    "7d": Scale("7d", 100, 4, 8, 168, 30),
}


def names(dep: int, rep: int) -> tuple[str, str, str]:
    return f"m{dep:03d}", f"d{dep:03d}", f"r{rep:02d}"


@dataclasses.dataclass
class ReplicaData:
    """One replica's whole history. ``present[i]``: whether step i was sampled;
    ``start_ns[i]``: its counters' start (the last restart); ``util``/``mem``: (gpus,
    steps); ``buckets``: (codes, steps, 12) counts per bucket, cumulative in time; ``sums``: (codes, steps)."""

    dep: int
    rep: int
    present: np.ndarray
    start_ns: np.ndarray
    util: np.ndarray
    mem: np.ndarray
    buckets: np.ndarray
    sums: np.ndarray


class Fleet:
    def __init__(self, scale: Scale, seed: int, end_ns: int):
        self.scale, self.seed = scale, seed
        self.t0_ns = end_ns - scale.steps * INTERVAL_S * 10**9
        self.times_ns = self.t0_ns + (np.arange(scale.steps, dtype=np.int64) * INTERVAL_S + OFFSET_S) * 10**9
        self.end_ns = end_ns

    def replicas(self) -> list[tuple[int, int]]:
        return [(d, r) for d in range(self.scale.deployments) for r in range(self.scale.replicas)]

    @functools.lru_cache(maxsize=None)
    def traffic(self, dep: int) -> np.ndarray:
        """Requests/s of the deployment at every step: diurnal x bursts."""
        rng = np.random.default_rng([self.seed, dep])
        day_s = (self.times_ns // 10**9) % 86400
        base = rng.uniform(20, 80)
        diurnal = 1 + 0.6 * np.sin(2 * np.pi * (day_s / 86400 + rng.uniform()))
        burst = np.ones(self.scale.steps)
        for _ in range(rng.poisson(3 * self.scale.hours / 24) + 1):
            at = rng.integers(self.scale.steps)
            burst[at:at + rng.integers(30, 180)] *= rng.uniform(2, 4)
        return base * diurnal * burst

    @functools.lru_cache(maxsize=None)
    def replica(self, dep: int, rep: int) -> ReplicaData:
        s = self.scale
        n = s.steps
        rng = np.random.default_rng([self.seed, dep, rep])
        load = self.traffic(dep) / s.replicas * rng.uniform(0.8, 1.2) * rng.lognormal(0, 0.05, n)
        # restarts: about one a replica every 12 h, plus one for sure in ``tiny`` so
        # that the reset path is always exercised
        present = np.ones(n, bool)
        start_ns = np.full(n, self.t0_ns - 3600 * 10**9, np.int64)
        restarts = sorted(rng.integers(GAP_STEPS, n - GAP_STEPS, rng.poisson(s.hours / 12) + (rep == 0)))
        for at in restarts:
            present[at:at + GAP_STEPS] = False
            start_ns[at + GAP_STEPS:] = self.times_ns[at + GAP_STEPS] - OFFSET_S * 10**9
        capacity = 30.0  # requests/s a replica serves at full utilisation
        busy = np.clip(load / capacity, 0, 1)
        util = np.clip(busy[None, :] * rng.uniform(0.85, 1.0, (s.gpus, 1))
                       + rng.normal(0, 0.04, (s.gpus, n)), 0, 1).round(4)
        # memory: weights and the preallocated KV cache (fixed per GPU) plus activations
        # that follow load, in the allocator's 2 MiB blocks (real readings move in steps,
        # they are not byte-level noise, which no store could compress)
        fixed = rng.uniform(60, 70, (s.gpus, 1)) * GIB
        mem = fixed + np.round(util * 4 * GIB / (2 * 2**20)) * 2 * 2**20
        # requests per step by status; errors rise with load past capacity
        total = rng.poisson(load * INTERVAL_S)
        over = np.clip(load / capacity - 0.9, 0, None)
        p429 = np.clip(0.01 + 0.3 * over, 0, 0.5)
        p500 = np.clip(0.003 + 0.05 * over, 0, 0.2)
        c429 = rng.binomial(total, p429)
        c500 = rng.binomial(total - c429, p500 / (1 - p429))
        counts = np.stack([total - c429 - c500, c429, c500])  # (codes, n)
        # latency: lognormal, median 80 ms stretching with load; 429s are fast
        median = np.stack([0.08 * (1 + 2 * busy ** 3), np.full(n, 0.004), 0.5 * (1 + busy)])
        edges = np.log(np.array(BOUNDS))
        cdf = _norm_cdf((edges[None, None, :] - np.log(median)[:, :, None]) / 0.7)
        p = np.diff(np.concatenate([np.zeros((3, n, 1)), cdf, np.ones((3, n, 1))], axis=2), axis=2)
        per_step = rng.multinomial(counts, np.clip(p, 0, None) / p.sum(axis=2, keepdims=True))
        lat_sum = (per_step * _midpoints()).sum(axis=2) * rng.uniform(0.9, 1.1, (3, n))
        per_step[:, ~present] = 0
        lat_sum[:, ~present] = 0
        # cumulative since the replica's last (re)start
        segment = np.cumsum(np.r_[0, np.diff(start_ns) != 0])
        buckets = _cumsum_by_segment(per_step, segment)  # per bucket (OTLP's shape), cumulative in time
        sums = _cumsum_by_segment(lat_sum[:, :, None], segment)[:, :, 0].round(6)
        return ReplicaData(dep, rep, present, start_ns, util, mem, buckets.astype(np.float64), sums)

    def samples(self, data: ReplicaData, lo: int, hi: int) -> int:
        """Prometheus-counted samples of steps [lo, hi) of one replica."""
        return int(data.present[lo:hi].sum()) * self.scale.series_per_replica


def _norm_cdf(x: np.ndarray) -> np.ndarray:
    from math import erf, sqrt
    return 0.5 * (1 + np.vectorize(erf)(x / sqrt(2)))


def _midpoints() -> np.ndarray:
    b = np.array((0.0,) + BOUNDS + (BOUNDS[-1] * 2,))
    return (b[:-1] + b[1:]) / 2


def _cumsum_by_segment(x: np.ndarray, segment: np.ndarray) -> np.ndarray:
    """Cumulative sum over axis 1 (time) restarting where ``segment`` changes."""
    c = np.cumsum(x, axis=1)
    first = np.r_[0, np.flatnonzero(np.diff(segment)) + 1]
    offset = np.zeros_like(c)
    for f in first[1:]:
        offset[:, f:] = c[:, f - 1:f]
    return c - offset
