"""Bounded on-disk spool of serialized OTLP requests, replayed in order.

Shared by the two producers that must not lose telemetry while the server is away:
the agent (`agent/export.py`) and the OpenTelemetry SDK exporters of
`instrument/durable.py`. One file per batch, ``<seq>-<kind>.otlp.gz``, holding the
gzipped request body exactly as it would have been POSTed. A batch is written to ``<name>.tmp``, fsync'd, renamed
and the directory fsync'd, so after a crash of the process (or the machine) a batch is
either whole in the spool or absent; leftover ``.tmp`` files are removed on open.
Reopening the directory resumes where the previous process stopped.

Order: sequence numbers increase across restarts; :meth:`peek` hands out the oldest
batches of one kind (metrics and logs go to different endpoints, and only the order
within a kind matters to the server). A batch leaves the spool only through
:meth:`ack`, called after the server acknowledged it (2xx = durable): a batch is
deleted once, after its acknowledgement, and never sent again. The window left is a
crash between the server's answer and the unlink reaching the disk: that batch is sent
twice. Nothing is ever dropped silently.

Bound: ``max_bytes`` (default 1 GiB). An append that would exceed it drops the oldest
batches first, counted in ``dropped_batches``/``dropped_bytes`` and logged (at most
every 10 s, with the running totals).

Reading the server's answer is shared too: `outcome_of` classifies it (sent, retry
later, never), `retry_after` reads a ``Retry-After`` header, and `rejected` the items a
2xx's ``partial_success`` says were not stored.
"""

from __future__ import annotations

import email.utils
import fcntl
import logging
import os
import re
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("sonde.spool")

DEFAULT_MAX_BYTES = 1 << 30
_NAME = re.compile(r"^(\d{16})-([a-z]+)\.otlp\.gz$")
_WARN_EVERY_S = 10.0

BACKOFF_MIN_S, BACKOFF_MAX_S = 0.5, 30.0
AUTH_RETRY_S = 30.0
MAX_RETRY_AFTER_S = 300.0


def retry_after(value: str | None, now_epoch: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return min(MAX_RETRY_AFTER_S, max(0.0, float(value)))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None
    return min(MAX_RETRY_AFTER_S, max(0.0, when - now_epoch))


@dataclass
class Outcome:
    status: str                 # ok | retry | drop | too_large
    delay: float | None = None  # for retry: the server's Retry-After (or the wait for a key fix), if any
    detail: str = ""


def outcome_of(code: int, retry_after_header: str | None, text: str, now_epoch: float) -> Outcome:
    """What a sender does with the server's answer to a batch.

    2xx: durable, done. 408, 429 and 5xx (503 for a full disk or overload): the server
    may take it later, after ``Retry-After`` if it said. 401/403 (a wrong or revoked
    key): keep it and retry slowly, so fixing the key loses nothing. 413: too large (a
    replay run splits). Any other 4xx: the server will never take it."""
    if 200 <= code < 300:
        return Outcome("ok")
    detail = f"{code}: {text[:200]}"
    if code in (408, 429) or code >= 500:
        return Outcome("retry", retry_after(retry_after_header, now_epoch), detail)
    if code in (401, 403):
        return Outcome("retry", AUTH_RETRY_S, detail)
    if code == 413:
        return Outcome("too_large", None, detail)
    return Outcome("drop", None, detail)


def rejected(kind: str, response_body: bytes) -> tuple[int, str]:
    """(points, records or spans rejected, message) from the ``partial_success`` of an
    OTLP response to a ``kind`` (metrics, logs, traces) request."""
    if not response_body:
        return 0, ""
    # Imported here: the agent's CLI imports this module for every `sonde` command.
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceResponse
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

    message, field = {"metrics": (ExportMetricsServiceResponse, "rejected_data_points"),
                      "logs": (ExportLogsServiceResponse, "rejected_log_records"),
                      "traces": (ExportTraceServiceResponse, "rejected_spans")}[kind]
    try:
        ps = message.FromString(response_body).partial_success
    except Exception:  # a JSON answer or a proxy's page on a 2xx: nothing to report
        return 0, ""
    return getattr(ps, field), ps.error_message


class SpoolBusy(RuntimeError):
    """Another process (an agent, an SDK exporter) holds this spool directory."""


@dataclass(frozen=True, slots=True)
class Entry:
    seq: int
    kind: str
    size: int
    path: str


class Spool:
    def __init__(
        self,
        directory: str,
        max_bytes: int = DEFAULT_MAX_BYTES,
        *,
        fsync: bool = True,
        monotonic: Callable[[], float] | None = None,
        logger: logging.Logger = log,
    ):
        import time

        self.dir = os.path.abspath(directory)
        self.max_bytes = int(max_bytes)
        self._fsync = fsync
        self._monotonic = monotonic or time.monotonic
        self._log = logger
        self._lock = threading.Lock()
        self._queues: dict[str, deque[Entry]] = {}
        self._bytes = 0
        self.dropped_batches = 0
        self.dropped_bytes = 0
        self._last_warn = float("-inf")
        os.makedirs(self.dir, exist_ok=True)
        # Two processes appending to and deleting from one directory would send each
        # other's batches twice or lose them: the first one holds an exclusive lock.
        self._lock_fd = os.open(os.path.join(self.dir, ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise SpoolBusy(f"spool {self.dir} is in use by another process")
        self._dir_fd = os.open(self.dir, os.O_RDONLY)
        found: list[Entry] = []
        for name in os.listdir(self.dir):
            path = os.path.join(self.dir, name)
            if name.endswith(".tmp"):
                os.unlink(path)  # an append the previous process did not finish: never acknowledged to anyone
                continue
            m = _NAME.match(name)
            if m:
                found.append(Entry(int(m.group(1)), m.group(2), os.path.getsize(path), path))
        found.sort(key=lambda e: e.seq)
        for e in found:
            self._queues.setdefault(e.kind, deque()).append(e)
            self._bytes += e.size
        self._next_seq = found[-1].seq + 1 if found else 1

    # -- state --------------------------------------------------------------------------
    def __len__(self) -> int:
        return sum(len(q) for q in self._queues.values())

    @property
    def bytes(self) -> int:
        return self._bytes

    def pending(self, kind: str) -> int:
        return len(self._queues.get(kind, ()))

    def kinds(self) -> list[str]:
        """Kinds with batches waiting, the one holding the oldest batch first."""
        with self._lock:
            heads = [(q[0].seq, k) for k, q in self._queues.items() if q]
        return [k for _, k in sorted(heads)]

    # -- writing ------------------------------------------------------------------------
    def _sync_dir(self) -> None:
        if self._fsync:
            os.fsync(self._dir_fd)

    def append(self, kind: str, body: bytes) -> Entry | None:
        """Store one gzipped request body durably; None if it alone exceeds the bound."""
        with self._lock:
            size = len(body)
            if size > self.max_bytes:
                self._count_drop(1, size, "a batch larger than the whole spool")
                return None
            self._make_room(size)
            seq = self._next_seq
            self._next_seq += 1
            path = os.path.join(self.dir, f"{seq:016d}-{kind}.otlp.gz")
            tmp = path + ".tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                view = memoryview(body)
                while view:
                    view = view[os.write(fd, view):]
                if self._fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(tmp, path)
            self._sync_dir()
            entry = Entry(seq, kind, size, path)
            self._queues.setdefault(kind, deque()).append(entry)
            self._bytes += size
            return entry

    def _make_room(self, size: int) -> None:
        dropped, dropped_bytes = 0, 0
        while self._bytes + size > self.max_bytes:
            heads = [q for q in self._queues.values() if q]
            oldest = min(heads, key=lambda q: q[0].seq).popleft()
            os.unlink(oldest.path)
            self._bytes -= oldest.size
            dropped += 1
            dropped_bytes += oldest.size
        if dropped:
            self._sync_dir()
            self._count_drop(dropped, dropped_bytes, "the oldest batches")

    def _count_drop(self, n: int, size: int, what: str) -> None:
        self.dropped_batches += n
        self.dropped_bytes += size
        now = self._monotonic()
        if now - self._last_warn >= _WARN_EVERY_S:
            self._last_warn = now
            self._log.warning(
                "sonde: spool full (%d bytes max, %s): dropped %s; %d batches (%d bytes) dropped so far",
                self.max_bytes, self.dir, what, self.dropped_batches, self.dropped_bytes,
            )

    # -- replay -------------------------------------------------------------------------
    def peek(self, kind: str, max_entries: int = 1, max_bytes: int | None = None) -> list[Entry]:
        """The oldest waiting batches of ``kind``: at most ``max_entries``, and at most
        ``max_bytes`` in all unless the first alone is larger."""
        with self._lock:
            q = self._queues.get(kind)
            out: list[Entry] = []
            total = 0
            for e in q or ():
                if len(out) >= max_entries or (out and max_bytes is not None and total + e.size > max_bytes):
                    break
                out.append(e)
                total += e.size
            return out

    def read(self, entry: Entry) -> bytes:
        with open(entry.path, "rb") as f:
            return f.read()

    def ack(self, entries: list[Entry]) -> None:
        """Delete batches the server acknowledged (or that can never be delivered).

        They must be the oldest of their kind, in order: replay never skips a batch."""
        if not entries:
            return
        with self._lock:
            for e in entries:
                q = self._queues[e.kind]
                if not q or e.seq < q[0].seq:
                    continue  # dropped for room while in flight: already gone from disk and counted
                if e.seq > q[0].seq:
                    raise ValueError(f"ack out of order: {e.seq} before {q[0].seq}")
                q.popleft()
                os.unlink(e.path)
                self._bytes -= e.size
            self._sync_dir()

    def close(self) -> None:
        with self._lock:
            if self._dir_fd >= 0:
                os.close(self._dir_fd)
                os.close(self._lock_fd)  # releases the lock
                self._dir_fd = -1
