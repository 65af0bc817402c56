"""Export: batches to the server over OTLP/HTTP, through the spool when it cannot take them.

One thread owns the HTTP client and the spool. Producers hand it metric ticks
(:meth:`Exporter.add_metrics`) and log records (:meth:`Exporter.add_log`); log
records are cut into batches every ``flush_interval`` or at ``max_batch_records``.

Healthy path: each batch is POSTed as it is made (no disk I/O). On a connection error,
a timeout, 429, 503 or another 5xx, the batch and every later one go to the spool
(order is kept: while the spool holds anything, new batches queue behind it), and the
spool is replayed once the retry time has passed: ``Retry-After`` when the server sent
one, else exponential backoff (0.5 s doubling to 30 s, jittered so a fleet of agents
does not return at once). Replay sends runs of up to ``replay_max_entries`` spooled
batches of one kind as one request (serialized OTLP requests concatenate), and a run
leaves the spool only when the server acknowledged it.

4xx answers other than 401/403/408/413/429 mean the server will never take the batch:
it is dropped and counted (``dropped_batches``), not retried forever. 401/403 (a wrong
or revoked key) keep data in the spool and retry slowly, so fixing the key loses
nothing. 413 splits a replay run; a single batch over the server's limit is dropped.
"""

from __future__ import annotations

import logging
import random
import threading
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx

from . import otlp
from .model import SYSTEM_CLOCK, Clock, LogRecord, Point
from ..spool import BACKOFF_MAX_S, BACKOFF_MIN_S, Outcome, Spool, outcome_of, rejected

log = logging.getLogger("sonde.agent")


@dataclass
class Stats:
    sent_batches: int = 0
    sent_items: int = 0         # points and log records in batches sent directly
    spooled_batches: int = 0
    replayed_batches: int = 0
    replay_requests: int = 0
    dropped_batches: int = 0    # refused by the server with a 4xx
    dropped_records: int = 0    # log records lost to a full in-memory buffer
    rejected_items: int = 0     # partial_success rejections
    last_error: str = ""
    by_status: dict[int, int] = field(default_factory=dict)


class Exporter:
    def __init__(
        self,
        server: str,
        key: str | None,
        spool: Spool,
        resource_attrs: dict[str, Any],
        *,
        clock: Clock = SYSTEM_CLOCK,
        transport: httpx.BaseTransport | None = None,
        flush_interval: float = 1.0,
        max_batch_records: int = 1000,
        max_batch_bytes: int = 1 << 20,
        max_buffered_records: int = 200_000,
        replay_max_entries: int = 256,
        replay_max_bytes: int = 4 << 20,
        timeout: float = 30.0,
        logger: logging.Logger = log,
    ):
        self.server = server.rstrip("/")
        self.spool = spool
        self.resource = otlp.resource(resource_attrs)
        self.clock = clock
        self.flush_interval = flush_interval
        self.max_batch_records = max_batch_records
        self.max_batch_bytes = max_batch_bytes
        self.max_buffered_records = max_buffered_records
        self.replay_max_entries = replay_max_entries
        self.replay_max_bytes = replay_max_bytes
        self.stats = Stats()
        self._log = logger
        headers = {"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        # keepalive_expiry under uvicorn's 5 s keep-alive: never reuse a connection the
        # server is about to close (that request would fail and take the spool detour).
        self._http = httpx.Client(
            headers=headers, transport=transport,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 3.0)),
            limits=httpx.Limits(max_connections=2, keepalive_expiry=4.0),
        )
        self._cond = threading.Condition()
        self._queue: deque[tuple[str, bytes, int]] = deque()  # (kind, gzipped body, items)
        self._logs: list[LogRecord] = []
        self._logs_bytes = 0
        self._stopping = False
        self._retry_at = float("-inf")
        self._retry_told = False  # the retry time came from the server's Retry-After
        self._backoff = BACKOFF_MIN_S
        self._failures = 0  # failed attempts in the current outage
        self._next_flush = clock.monotonic() + flush_interval
        self._close_deadline = float("inf")
        self._keep_trying = False
        self._thread = threading.Thread(target=self._run, name="sonde-agent-export", daemon=True)
        self._warned_overflow = False

    # -- producers ------------------------------------------------------------------------
    def start(self) -> "Exporter":
        self._thread.start()
        return self

    def add_log(self, record: LogRecord) -> None:
        with self._cond:
            if len(self._logs) >= self.max_buffered_records:
                self.stats.dropped_records += 1
                if not self._warned_overflow:
                    self._warned_overflow = True
                    self._log.warning("sonde agent: log buffer full (%d records): dropping lines", len(self._logs))
                return
            if not self._logs:
                # the first line of a batch starts the clock: no line waits longer than
                # flush_interval, and a quiet child costs no wake-ups at all
                self._next_flush = self.clock.monotonic() + self.flush_interval
                self._cond.notify()
            self._logs.append(record)
            self._logs_bytes += len(record.body)
            if len(self._logs) >= self.max_batch_records or self._logs_bytes >= self.max_batch_bytes:
                self._cond.notify()

    def add_metrics(self, points: Iterable[Point], ts_ns: int) -> None:
        points = list(points)
        body = otlp.compress(otlp.metrics_request(self.resource, points, ts_ns))
        with self._cond:
            self._queue.append((otlp.METRICS, body, len(points)))
            self._cond.notify()

    def close(self, timeout: float = 5.0, keep_trying: bool = False) -> None:
        """Flush: send what is buffered, spool what cannot be sent within ``timeout``.

        With ``keep_trying``, replay the spool again at each retry time until it is empty
        or ``timeout`` has passed (nobody will replay it later); else one last try."""
        with self._cond:
            self._stopping = True
            self._keep_trying = keep_trying
            self._close_deadline = self.clock.monotonic() + timeout
            if not self._retry_told:
                # Our own backoff may have put the next try far out: the server may well be
                # back by now, and this is the last chance to empty the spool before exit.
                self._retry_at = min(self._retry_at, self.clock.monotonic())
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join()
        self._http.close()

    # -- the export thread ------------------------------------------------------------------
    def _encode_logs(self, records: list[LogRecord]) -> list[tuple[str, bytes, int]]:
        """Log records -> request bodies of at most ``max_batch_records``/``max_batch_bytes``."""
        out, i = [], 0
        while i < len(records):
            j, size = i, 0
            while j < len(records) and j - i < self.max_batch_records and (j == i or size < self.max_batch_bytes):
                size += len(records[j].body)
                j += 1
            out.append((otlp.LOGS, otlp.compress(otlp.logs_request(self.resource, records[i:j])), j - i))
            i = j
        return out

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopping and not self._queue and not self._logs_due() and not self._replay_due():
                    waits = [self._next_flush - self.clock.monotonic()] if self._logs else []
                    if len(self.spool):
                        waits.append(self._retry_at - self.clock.monotonic())
                    self._cond.wait(max(0.01, min(waits)) if waits else None)
                stopping = self._stopping
                # Metric ticks queued before these log records go first: order within a
                # kind is what matters, and each kind keeps its own.
                items = list(self._queue)
                self._queue.clear()
                records: list[LogRecord] = []
                if self._logs and (stopping or self._logs_due()):
                    records, self._logs, self._logs_bytes = self._logs, [], 0
                    self._warned_overflow = False
            if records:  # encoded outside the lock: readers of the child's output never wait on gzip
                items += self._encode_logs(records)
            self._deliver(items, final=stopping)
            if len(self.spool) and self._replay_due():
                self._replay(deadline=self._close_deadline if stopping else self.clock.monotonic() + 1.0)
            if stopping:
                with self._cond:
                    if self._queue or self._logs:
                        continue
                    left = self._close_deadline - self.clock.monotonic()
                    if not (self._keep_trying and len(self.spool) and left > 0):
                        return
                    self._cond.wait(max(0.01, min(left, self._retry_at - self.clock.monotonic())))

    def _logs_due(self) -> bool:
        return bool(self._logs) and (
            self.clock.monotonic() >= self._next_flush
            or len(self._logs) >= self.max_batch_records or self._logs_bytes >= self.max_batch_bytes
        )

    def _replay_due(self) -> bool:
        return bool(len(self.spool)) and self.clock.monotonic() >= self._retry_at and (
            not self._stopping or self.clock.monotonic() < self._close_deadline
        )

    def _deliver(self, items: list[tuple[str, bytes, int]], final: bool) -> None:
        # More than 64 waiting means the server is slower than the producers: the spool
        # takes them and replay sends them in coalesced runs.
        direct = not len(self.spool) and self.clock.monotonic() >= self._retry_at and len(items) <= 64
        for kind, body, n in items:
            if direct and final and self.clock.monotonic() >= self._close_deadline:
                direct = False
            if direct:
                outcome = self._post(kind, body)
                if outcome.status == "ok":
                    self.stats.sent_batches += 1
                    self.stats.sent_items += n
                    continue
                if outcome.status in ("drop", "too_large"):
                    self._drop(kind, 1, outcome.detail)
                    continue
                self._schedule_retry(outcome)
                direct = False
            self.spool.append(kind, body)
            self.stats.spooled_batches += 1

    def _replay(self, deadline: float) -> None:
        cap: dict[str, int] = {}      # after a 413: runs this long at most, for this replay round
        singles: dict[str, int] = {}  # after a refused run: send its batches one by one
        while len(self.spool) and self.clock.monotonic() < deadline and self.clock.monotonic() >= self._retry_at:
            kind = self.spool.kinds()[0]
            limit = 1 if singles.get(kind) else cap.get(kind, self.replay_max_entries)
            entries = self.spool.peek(kind, limit, self.replay_max_bytes)
            bodies = [self.spool.read(e) for e in entries]
            try:
                body = otlp.concat(bodies) if len(bodies) > 1 else bodies[0]
            except (OSError, EOFError, ValueError):  # a damaged file: send it alone, the server decides
                entries, body = entries[:1], bodies[0]
            outcome = self._post(kind, body, deadline)
            if singles.get(kind):
                singles[kind] -= 1
            if outcome.status == "ok":
                self.spool.ack(entries)
                self.stats.replayed_batches += len(entries)
                self.stats.replay_requests += 1
            elif outcome.status == "too_large" and len(entries) > 1:
                cap[kind] = max(1, len(entries) // 2)
            elif outcome.status in ("drop", "too_large"):
                if len(entries) > 1:  # one of them is refused: find it by sending them singly
                    singles[kind] = len(entries)
                    continue
                self.spool.ack(entries)
                self._drop(kind, 1, outcome.detail)
            else:
                self._schedule_retry(outcome)
                return

    def _post(self, kind: str, body: bytes, deadline: float | None = None) -> Outcome:
        kw = {}
        if self._stopping:  # the agent is exiting: a hung server must not hold it past the deadline
            left = max(0.5, (deadline if deadline is not None else self._close_deadline) - self.clock.monotonic())
            kw["timeout"] = httpx.Timeout(left, connect=min(left, 3.0))
        try:
            r = self._http.post(self.server + otlp.PATHS[kind], content=body, **kw)
        except httpx.TransportError as exc:  # refused, reset, timed out: the server may come back
            self.stats.last_error = f"{type(exc).__name__}: {exc}"
            return Outcome("retry", None, self.stats.last_error)
        code = r.status_code
        self.stats.by_status[code] = self.stats.by_status.get(code, 0) + 1
        outcome = outcome_of(code, r.headers.get("Retry-After"), r.text, self.clock.time_ns() / 1e9)
        if outcome.status == "ok":
            n, message = rejected(kind, r.content)
            if n:
                self.stats.rejected_items += n
                self._log.warning("sonde agent: server rejected %d %s: %s", n, kind, message)
            if self._failures:
                self._log.info("sonde agent: server back after %d failed attempts; %d batches to replay",
                               self._failures, len(self.spool))
                self._failures = 0
            self._backoff = BACKOFF_MIN_S
            return outcome
        self.stats.last_error = outcome.detail
        if code in (401, 403):
            self._log.error("sonde agent: the server refuses the ingest key (%s); keeping data in the spool",
                            outcome.detail)
        return outcome

    def _schedule_retry(self, outcome: Outcome) -> None:
        self._retry_told = outcome.delay is not None
        if outcome.delay is not None:
            delay = outcome.delay
        else:
            delay = self._backoff * random.uniform(0.5, 1.0)
            self._backoff = min(BACKOFF_MAX_S, self._backoff * 2)
        self._retry_at = self.clock.monotonic() + delay
        self._failures += 1
        # the first failure of an outage at INFO, the retries that follow at DEBUG
        self._log.log(logging.INFO if self._failures == 1 else logging.DEBUG,
                      "sonde agent: server unavailable (%s); spooling, retry in %.1f s", outcome.detail, delay)

    def _drop(self, kind: str, n: int, detail: str) -> None:
        self.stats.dropped_batches += n
        self._log.error("sonde agent: server refused a %s batch, dropped (%s)", kind, detail)
