"""The agent's loop: sample every ``interval``, stamp one tick, hand it to the exporter.

Also holds what the supervisor and the watcher report into: the replica state
(``sonde.replica.state``), the restart counter (``sonde.process.restarts``), and the
resource attributes that place all of it (:func:`resource_attrs`).
"""

from __future__ import annotations

import logging
import os
import secrets
import string
import threading
from collections.abc import Callable
from typing import Any

from .export import Exporter
from .model import CANONICAL, SEVERITY, SYSTEM_CLOCK, Clock, Counter, LogRecord, Point

log = logging.getLogger("sonde.agent")

STARTING, READY = "starting", "ready"
_REPLICA_ALPHABET = string.ascii_lowercase + string.digits


def new_replica_id() -> str:
    """Five characters, as the vendor's replica ids (pod name suffixes) are."""
    return "".join(secrets.choice(_REPLICA_ALPHABET) for _ in range(5))


def replica_id(given: str | None, state_dir: str) -> str:
    """``given``, else the id an earlier agent with this spool used (an agent restart is
    the same replica), else a new one, remembered there."""
    if given:
        return given
    path = os.path.join(state_dir, "replica")
    try:
        with open(path) as f:
            saved = f.read().strip()
        if saved:
            return saved
    except FileNotFoundError:
        pass
    rid = new_replica_id()
    os.makedirs(state_dir, exist_ok=True)
    with open(path + ".tmp", "w") as f:
        f.write(rid)
        f.flush()
        os.fsync(f.fileno())
    os.replace(path + ".tmp", path)
    return rid


def resource_attrs(
    *,
    placement: dict[str, str],
    replica: str,
    environment: str | None = None,
    hardware: dict[str, Any] | None = None,
    host_name: str | None = None,
) -> dict[str, Any]:
    """Resource attributes (docs/api.md#placement): ``placement`` names what the telemetry belongs to
    (a deployment, training job, chainlet or loops deployment, and the node: the
    ``sonde.*`` keys of ``cli._placement``), then replica, environment, hardware."""
    attrs: dict[str, Any] = {k: v for k, v in placement.items() if v}
    attrs["sonde.replica"] = replica
    attrs["service.instance.id"] = replica
    if environment:
        attrs["sonde.environment"] = environment
    if host_name:
        attrs["host.name"] = host_name
    attrs.update(hardware or {})
    return attrs


class ReplicaState:
    """``starting`` until the model answers (or at once without a ready URL); back to
    ``starting`` while the supervised process restarts."""

    def __init__(self, on_change: Callable[[str], None] | None = None):
        self._lock = threading.Lock()
        self.value = STARTING
        self._on_change = on_change

    def set(self, value: str) -> None:
        with self._lock:
            changed, self.value = self.value != value, value
        if changed and self._on_change:
            self._on_change(value)

    def points(self) -> list[Point]:
        # Both states every tick, 1 for the current one: the other series drops to 0 at
        # once instead of holding its old value until it goes stale.
        v = self.value
        return [Point("sonde.replica.state", "1", "gauge", int(v == s), {"state": s}) for s in (STARTING, READY)]


class Agent:
    def __init__(
        self,
        exporter: Exporter,
        samplers: list[Any],
        *,
        interval: float = 10.0,
        clock: Clock = SYSTEM_CLOCK,
        restarts: Counter | None = None,
        start_ns: int | None = None,
        scraper: Any = None,
        logger: logging.Logger = log,
    ):
        """``scraper``: the ``--scrape`` targets (:class:`sonde.agent.scrape.Scraper`); they
        send on their own schedules, the loop adds only their counters to each tick."""
        self.exporter = exporter
        self.scraper = scraper
        self.samplers = samplers
        self.interval = interval
        self.clock = clock
        self.start_ns = start_ns if start_ns is not None else clock.time_ns()
        self.restarts = restarts
        self.state = ReplicaState(on_change=lambda _: self.wake())
        self._log = logger
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._failing: set[str] = set()
        self._thread = threading.Thread(target=self._run, name="sonde-agent-sample", daemon=True)
        self.ticks = 0

    def emit_log(self, record: LogRecord) -> None:
        self.exporter.add_log(record)

    def emit_event(self, message: str, severity: str = "INFO") -> None:
        """A line of the agent's own (a crash, a restart), sent with the child's lines."""
        self._log.log(logging.WARNING if SEVERITY[severity] >= 13 else logging.INFO, "sonde agent: %s", message)
        self.exporter.add_log(LogRecord(self.clock.time_ns(), message, SEVERITY[severity], CANONICAL[severity],
                                        {"component": "sonde.agent"}))

    def emit_job_exit(self, code: int, error: str) -> None:
        """The training process ended for good: one log record the server turns into the
        job's status (docs/agent.md): ``sonde.job.status`` COMPLETED (exit 0) or FAILED,
        with ``sonde.job.exit_code`` and ``sonde.job.error`` (the last error line)."""
        status = "COMPLETED" if code == 0 else "FAILED"
        message = f"training process exited with code {code}" + (f": {error}" if error else "")
        sev = "INFO" if code == 0 else "ERROR"
        self._log.log(logging.INFO if code == 0 else logging.WARNING, "sonde agent: %s; job %s", message, status)
        attrs = {"component": "sonde.agent", "sonde.job.status": status, "sonde.job.exit_code": str(code)}
        if error:
            attrs["sonde.job.error"] = error
        self.exporter.add_log(LogRecord(self.clock.time_ns(), message, SEVERITY[sev], CANONICAL[sev], attrs))

    def tick(self) -> list[Point]:
        """One sample of everything, handed to the exporter; returns the points."""
        ts = self.clock.time_ns()
        points: list[Point] = []
        for sampler in self.samplers:
            name = type(sampler).__name__
            try:
                points += sampler.sample()
                self._failing.discard(name)
            except Exception:  # one broken sampler must not stop the others
                if name not in self._failing:
                    self._failing.add(name)
                    self._log.exception("sonde agent: %s failed", name)
        points += self.state.points()
        if self.scraper is not None:
            points += self.scraper.points()
        if self.restarts is not None:
            points.append(Point("sonde.process.restarts", "{restart}", "counter", self.restarts.value, {}, self.start_ns))
        spool = self.exporter.spool
        points.append(Point("sonde.agent.spool.usage", "By", "gauge", spool.bytes))
        points.append(Point("sonde.agent.spool.dropped", "{batch}", "counter", spool.dropped_batches, {}, self.start_ns))
        self.exporter.add_metrics(points, ts)
        self.ticks += 1
        return points

    def wake(self) -> None:
        """Sample now (a state change should not wait for the next interval)."""
        self._wake.set()

    def start(self) -> "Agent":
        self.exporter.start()
        self._thread.start()
        if self.scraper is not None:
            self.scraper.start()
        return self

    def _run(self) -> None:
        next_at = self.clock.monotonic()
        while not self._stop.is_set():
            self._wake.clear()
            self.tick()
            now = self.clock.monotonic()
            if now >= next_at:  # a scheduled tick; an early one (wake) keeps the schedule
                next_at += self.interval
                if next_at <= now:  # a slow tick (or a suspended machine): skip, do not burst
                    next_at = now + self.interval
            self._wake.wait(next_at - now)

    def stop(self, flush_timeout: float = 5.0, keep_trying: bool = False) -> None:
        """Last sample, then flush (to the server, or the spool for what it cannot take);
        with ``keep_trying``, retry the server until ``flush_timeout`` (Exporter.close)."""
        if self.scraper is not None:  # before the exporter closes: nothing may arrive after
            self.scraper.stop()
        if self._thread.is_alive():
            self._stop.set()
            self._wake.set()
            self._thread.join()
            self.tick()
        self.exporter.close(flush_timeout, keep_trying)
        for sampler in self.samplers:
            close = getattr(sampler, "close", None)
            if close:
                close()
        st, spool = self.exporter.stats, self.exporter.spool
        self._log.info(
            "sonde agent: stopped after %d samples; %d batches sent, %d replayed, %d spooled, %d refused; "
            "%d log lines lost to a full buffer; spool holds %d batches (%d dropped for room)",
            self.ticks, st.sent_batches, st.replayed_batches, st.spooled_batches, st.dropped_batches,
            st.dropped_records, len(spool), spool.dropped_batches,
        )
        spool.close()
