"""Spans and log records that outlive the server's absence: the SDK's batches through a spool.

The OpenTelemetry SDK's OTLP exporters retry a failed batch in memory for a few
seconds and then drop it, so a server restart or a minute's outage loses that
minute's request spans and log records. With ``configure(spool_dir=...)`` (or
``SONDE_SPOOL_DIR``, which ``sonde agent run`` sets for the process it supervises)
these exporters take their place. Each batch the SDK's batch processor hands over is
encoded as the SDK's own exporter encodes it (``encode_spans``, ``encode_logs``), and

- while the spool is empty and no retry is due, it is POSTed at once (no disk I/O on
  the healthy path);
- when the server cannot take it (refused, timed out, 408, 429, 5xx, 401/403), it goes
  to the spool (`sonde.spool`: fsync'd, bounded), and every later batch queues behind
  it, so the server receives them in the order they were made;
- a thread replays the spool oldest first once the retry time has passed
  (``Retry-After``, else backoff from 0.5 s doubling to 30 s); a batch leaves the spool
  only after a 2xx. An answer that can never succeed (another 4xx) drops the batch,
  logged; the answers are classified once, by `sonde.spool.outcome_of`, as the agent's.

Metrics need none of this: they are cumulative, so the export after an outage
carries the totals.

Several processes of one app (uvicorn or gunicorn workers) may share ``spool_dir``:
each takes the first free slot ``<spool_dir>/<n>`` (a spool is locked by one process),
and a restarted worker replays what its predecessor left in its slot. A process forked
after `configure()` (gunicorn's ``--preload``) inherits the parent's spool, lock
included, but not its replay thread: there the shipper leaves the spool alone, posts
directly (a failed batch is lost, as with the SDK's exporter) and says so once; call
`configure()` in each worker after the fork instead (gunicorn's ``post_fork``), as
OpenTelemetry advises for its own exporters.
"""

from __future__ import annotations

import gzip
import logging
import os
import random
import threading
import time
from collections.abc import Sequence

import httpx
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from ..spool import (BACKOFF_MAX_S, BACKOFF_MIN_S, DEFAULT_MAX_BYTES, Outcome, Spool, SpoolBusy, outcome_of,
                     rejected)

log = logging.getLogger("sonde.instrument.durable")

MAX_SLOTS = 64
CLOSE_TIMEOUT_S = 3.0  # a process that exits while the server is away leaves the rest to its successor


def open_slot(directory: str, max_bytes: int = DEFAULT_MAX_BYTES) -> Spool:
    """The first spool under ``directory`` that no other process holds."""
    for n in range(MAX_SLOTS):
        try:
            return Spool(os.path.join(directory, str(n)), max_bytes, logger=log)
        except SpoolBusy:
            continue
    raise SpoolBusy(f"all {MAX_SLOTS} spool slots under {directory} are in use")


class _NotOurRequests(logging.Filter):
    """httpx logs each request at INFO: an app that shows INFO would print a line per
    batch sent (and its agent ship those lines back as telemetry)."""

    def __init__(self, url: str):
        super().__init__()
        self.url = url

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        return not (isinstance(args, tuple) and len(args) > 1 and str(args[1]).startswith(self.url))


class Shipper:
    """One process's sender of OTLP request bodies (``traces``, ``logs``) to a Sonde
    server, through a spool while the server cannot take them."""

    def __init__(self, otlp_url: str, headers: dict[str, str], spool: Spool, *, timeout_s: float = 10.0):
        self.url = otlp_url.rstrip("/")
        self.spool = spool
        self._http = httpx.Client(timeout=timeout_s, headers={
            **headers, "Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"})
        self._lock = threading.Lock()  # one sender at a time: the order of batches holds
        self._wake = threading.Event()
        self._retry_at = 0.0
        self._backoff = BACKOFF_MIN_S
        self._failures = 0
        self._users = 0
        self._closed = False
        self._owner = os.getpid()  # the process that holds the spool
        self._forked_http: httpx.Client | None = None
        self._quiet = _NotOurRequests(self.url)
        logging.getLogger("httpx").addFilter(self._quiet)
        self._thread = threading.Thread(target=self._replay_loop, name="sonde-spool-replay", daemon=True)
        self._thread.start()
        if len(spool):
            log.info("sonde: %d batches left in %s by an earlier process; replaying", len(spool), spool.dir)
            self._wake.set()

    # -- sending --------------------------------------------------------------------------
    def send(self, kind: str, body: bytes) -> bool:
        """Hand over one serialized request; True once the server or the spool holds it."""
        gz = gzip.compress(body, compresslevel=1)
        if os.getpid() != self._owner:
            return self._send_forked(kind, gz)
        with self._lock:
            if self._closed:
                return False
            if not len(self.spool) and time.monotonic() >= self._retry_at:
                outcome = self._post(kind, gz)
                if outcome.status == "ok":
                    return True
                if outcome.status != "retry":
                    self._drop(kind, outcome)
                    return False
                self._schedule(outcome)
            if self.spool.append(kind, gz) is None:
                return False  # larger than the whole spool: counted and logged there
        self._wake.set()
        return True

    def _send_forked(self, kind: str, gz: bytes) -> bool:
        """In a child forked after configure(): the spool is the parent's, so no spool,
        and a client of its own (the parent's pooled connections are the parent's)."""
        if self._forked_http is None:
            self._forked_http = httpx.Client(timeout=self._http.timeout, headers=self._http.headers)
            log.warning("sonde: this process was forked after configure(); its spans and log records are sent"
                        " without the spool %s (call configure() after the fork)", self.spool.dir)
        outcome = self._post(kind, gz, http=self._forked_http)
        if outcome.status != "ok":
            self._drop(kind, outcome)
        return outcome.status == "ok"

    def drain(self, timeout: float | None = None) -> bool:
        """Replay the spool oldest first, now, retry time or not; True once it is empty."""
        if os.getpid() != self._owner:
            return False  # the parent's spool: its own process replays it
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                kinds = self.spool.kinds()
                if not kinds:
                    return True
                if self._closed or (deadline is not None and time.monotonic() >= deadline):
                    return False
                entry = self.spool.peek(kinds[0])[0]
                outcome = self._post(entry.kind, self.spool.read(entry), deadline)
                if outcome.status == "retry":
                    self._schedule(outcome)
                    return False
                if outcome.status != "ok":
                    self._drop(entry.kind, outcome)
                self.spool.ack([entry])

    def _replay_loop(self) -> None:
        while True:
            wait = None if not len(self.spool) else max(0.05, self._retry_at - time.monotonic())
            self._wake.wait(wait)
            self._wake.clear()
            if self._closed:
                return
            if len(self.spool) and time.monotonic() >= self._retry_at:
                self.drain()

    def _post(self, kind: str, gz: bytes, deadline: float | None = None, http: httpx.Client | None = None) -> Outcome:
        kw = {}
        if deadline is not None:
            left = max(0.2, deadline - time.monotonic())
            kw["timeout"] = httpx.Timeout(left, connect=min(left, 3.0))
        try:
            r = (http or self._http).post(f"{self.url}/v1/{kind}", content=gz, **kw)
        except httpx.TransportError as exc:  # refused, reset, timed out: the server may come back
            return Outcome("retry", None, f"{type(exc).__name__}: {exc}")
        outcome = outcome_of(r.status_code, r.headers.get("Retry-After"), r.text, time.time())
        if outcome.status == "ok":
            if self._failures:
                log.info("sonde: server back after %d failed attempts; %d batches to replay",
                         self._failures, len(self.spool))
            self._failures, self._backoff = 0, BACKOFF_MIN_S
            n, message = rejected(kind, r.content)
            if n:
                log.warning("sonde: server rejected %d of a %s batch: %s", n, kind, message)
        return outcome

    def _schedule(self, outcome: Outcome) -> None:
        if outcome.delay is not None:
            delay = outcome.delay
        else:
            delay = self._backoff * random.uniform(0.5, 1.0)  # a fleet does not return at once
            self._backoff = min(BACKOFF_MAX_S, self._backoff * 2)
        self._retry_at = time.monotonic() + delay
        self._failures += 1
        log.log(logging.WARNING if self._failures == 1 else logging.DEBUG,
                "sonde: server unavailable (%s); spooling to %s, retry in %.1f s", outcome.detail, self.spool.dir, delay)

    def _drop(self, kind: str, outcome: Outcome) -> None:
        log.error("sonde: server refused a %s batch, dropped (%s)", kind, outcome.detail)

    # -- life -----------------------------------------------------------------------------
    def acquire(self) -> Shipper:
        self._users += 1
        return self

    def release(self, timeout: float = CLOSE_TIMEOUT_S) -> None:
        """One exporter is done; the last one drains what it can in ``timeout`` and
        closes (what is left stays on disk for the next process)."""
        self._users -= 1
        if self._users > 0 or self._closed:
            return
        if os.getpid() != self._owner:  # a forked child: the spool, its lock and the pool are the parent's
            self._closed = True
            if self._forked_http is not None:
                self._forked_http.close()
            return
        self.drain(timeout)
        logging.getLogger("httpx").removeFilter(self._quiet)
        with self._lock:
            self._closed = True
        self._wake.set()
        self._thread.join(timeout)
        self._http.close()
        self.spool.close()


class _Spooling:
    """What the span and the log exporter share: their `Shipper` and its life."""

    kind = ""

    def __init__(self, shipper: Shipper):
        self.shipper = shipper.acquire()

    def _send(self, request) -> bool:
        return self.shipper.send(self.kind, request.SerializeToString())

    def shutdown(self) -> None:
        self.shipper.release()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.shipper.drain(timeout_millis / 1000)


class SpoolingSpanExporter(_Spooling, SpanExporter):
    """A `SpanExporter` for a `BatchSpanProcessor`: OTLP spans through a `Shipper`."""

    kind = "traces"

    def export(self, spans: Sequence) -> SpanExportResult:
        return SpanExportResult.SUCCESS if self._send(encode_spans(spans)) else SpanExportResult.FAILURE


class SpoolingLogExporter(_Spooling, LogRecordExporter):
    """A `LogRecordExporter` for a `BatchLogRecordProcessor`: OTLP log records through a `Shipper`."""

    kind = "logs"

    def export(self, batch: Sequence) -> LogRecordExportResult:
        return LogRecordExportResult.SUCCESS if self._send(encode_logs(batch)) else LogRecordExportResult.FAILURE
