"""Per-key request rates: a token bucket per key, counted in this process.

One class serves both limits: every authenticated request (``rate_limit_per_key`` a
minute with bursts of ``rate_limit_burst``) and ``GET /metrics`` (``metrics_rate_limit``).
A bucket is two numbers per key, so a generous limit costs no memory per request, unlike
a log of timestamps. Each API replica counts its own: behind a load balancer a key may
make the limit once per replica.
"""

from __future__ import annotations

import math
import threading
import time

from .._exceptions import RateLimited

WINDOW_S = 60.0


class RateLimiter:
    """``burst`` calls per key at once, refilled at ``per_minute`` a minute.

    ``what`` and ``setting`` word the 429, so a client learns which limit it met and
    an operator which setting raises it."""

    def __init__(self, per_minute: int, burst: int | None = None, *, what: str = "requests",
                 setting: str = "rate_limit_per_key", clock=time.monotonic):
        self.per_minute = per_minute
        self.burst = burst if burst is not None else per_minute
        self.what = what
        self.setting = setting
        self.clock = clock
        self._interval = WINDOW_S / per_minute  # seconds one token takes to come back
        self._buckets: dict[str, tuple[float, float]] = {}  # key id -> (tokens, when counted)
        self._lock = threading.Lock()

    def check(self, key_id: str) -> None:
        """Take one token of ``key_id``'s bucket, or raise RateLimited with the wait."""
        now = self.clock()
        with self._lock:
            tokens, then = self._buckets.get(key_id, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - then) / self._interval)
            if tokens < 1.0:
                self._buckets[key_id] = (tokens, now)
                wait = max(1, math.ceil((1.0 - tokens) * self._interval))
                raise RateLimited(f"more than {self.per_minute} {self.what} a minute (bursts of {self.burst})"
                                  f" with this key; retry in {wait} s (setting {self.setting})", retry_after=wait)
            self._buckets[key_id] = (tokens - 1.0, now)
