"""What the agent's parts hand each other: metric points, log records, the clock.

Samplers return :class:`Point` lists without timestamps; the agent's loop stamps every
point of one tick with the same time, so a tick is one consistent snapshot. Log
records are stamped when their line is read.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol


class Clock(Protocol):
    def time_ns(self) -> int: ...          # wall clock, for OTLP timestamps
    def monotonic(self) -> float: ...      # for intervals, backoff and deadlines
    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def time_ns(self) -> int:
        return time.time_ns()

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(max(0.0, seconds))


SYSTEM_CLOCK = SystemClock()

Kind = Literal["gauge", "counter", "updown", "histogram"]


@dataclass(slots=True)
class Point:
    """One data point. ``counter`` is a cumulative monotonic sum starting at ``start_ns``.

    ``histogram`` is a cumulative explicit-bucket histogram since ``start_ns``:
    ``buckets[i]`` counts the observations in (``bounds[i-1]``, ``bounds[i]``], the last
    one those above every bound (``len(buckets) == len(bounds) + 1``); ``value`` is the
    sum of the observations, NaN when the source has none. Its count is ``sum(buckets)``.
    """

    name: str
    unit: str
    kind: Kind
    value: float | int
    attrs: dict[str, Any] = field(default_factory=dict)
    start_ns: int = 0
    bounds: tuple[float, ...] = ()
    buckets: tuple[int, ...] = ()


@dataclass(slots=True)
class LogRecord:
    ts_ns: int
    body: str
    severity_number: int = 0     # 0: no level detected (docs/api.md#logs: none -> no level)
    severity_text: str = ""
    attrs: dict[str, Any] = field(default_factory=dict)


# OTel severity numbers: the first of each range (TRACE 1, DEBUG 5, INFO 9, WARN 13,
# ERROR 17, FATAL 21); the server maps 1-8/9-12/13-16/17-24 to its four levels.
SEVERITY = {
    "TRACE": 1, "DEBUG": 5, "INFO": 9, "NOTICE": 10, "WARN": 13, "WARNING": 13,
    "ERROR": 17, "EXCEPTION": 17, "CRITICAL": 21, "FATAL": 21, "ALERT": 22, "EMERGENCY": 23,
}
# severity_text as sent: the server's level names where one applies.
CANONICAL = {
    "TRACE": "TRACE", "DEBUG": "DEBUG", "INFO": "INFO", "NOTICE": "INFO", "WARN": "WARNING",
    "WARNING": "WARNING", "ERROR": "ERROR", "EXCEPTION": "ERROR", "CRITICAL": "CRITICAL",
    "FATAL": "FATAL", "ALERT": "CRITICAL", "EMERGENCY": "CRITICAL",
}


class Counter:
    """A thread-safe cumulative count (restarts, dropped batches)."""

    def __init__(self, value: int = 0):
        self._lock = threading.Lock()
        self.value = value

    def add(self, n: int = 1) -> int:
        with self._lock:
            self.value += n
            return self.value
