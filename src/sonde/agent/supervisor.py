"""``sonde agent run``: start the model process, capture its output, restart it on crash.

Every stdout/stderr line becomes a log record (:func:`logs.make_record`), stamped when
read, in order within each stream, with ``log.iostream``; the line is also written
through to the agent's own stdout/stderr (``echo``) so ``docker logs``/``kubectl logs``
still show it. ``PYTHONUNBUFFERED=1`` is set for the child unless the environment sets
it: a Python child writing to a pipe would otherwise hold its stdout back in 8 KiB
blocks, and lines would arrive late and out of step with stderr.

The child runs in its own session (process group), so a stop reaches its workers too:
SIGTERM to the group, SIGKILL after ``stop_timeout``. On exit, a non-zero status (or a
signal) is a crash: the child is started again after a backoff that starts at
``backoff_initial`` and doubles to ``backoff_max``, reset once a child has run for
``backoff_reset`` seconds. Each restart adds one to ``restarts``. ``restart``:
``on-failure`` (default: a clean exit 0 ends the agent with 0), ``always``, ``never``.

Replica state: ``starting`` at each start and while waiting to restart; ``ready`` when
``ready_url`` answers 200 (polled every ``ready_poll`` s while starting), or at once
without one. A stop or a final exit leaves the state as it was.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from typing import IO

import httpx

from .core import READY, STARTING, ReplicaState
from .logs import make_record
from .model import SYSTEM_CLOCK, Clock, Counter, LogRecord

log = logging.getLogger("sonde.agent")

MAX_LINE = 64 * 1024  # longer lines are cut into records of this size


class Readiness:
    """Poll ``url`` until it answers 200, then mark the replica ready."""

    def __init__(self, url: str | None, state: ReplicaState, *, poll: float = 0.5, alive: Callable[[], bool] = lambda: True):
        self.url, self.state, self.poll, self.alive = url, state, poll, alive
        self._cancel = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if not self.url:
            self.state.set(READY)
            return
        self._thread = threading.Thread(target=self._run, name="sonde-agent-ready", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with httpx.Client(timeout=2.0) as client:
            while not self._cancel.is_set() and self.alive():
                try:
                    if client.get(self.url).status_code == 200:
                        if not self._cancel.is_set():
                            self.state.set(READY)
                        return
                except httpx.HTTPError:
                    pass  # not listening yet
                self._cancel.wait(self.poll)

    def cancel(self) -> None:
        self._cancel.set()


def _echo_target(stream: str) -> IO[bytes]:
    return (sys.stdout if stream == "stdout" else sys.stderr).buffer


class LastError:
    """The last error line of a training process, for the job's ``error_message``: the
    last non-empty stderr line (a Python traceback's last line names the exception),
    else the last stdout line at ERROR level or above."""

    def __init__(self):
        self.stderr = ""
        self.error = ""

    def see(self, record: LogRecord) -> None:
        body = record.body.strip()
        if not body:
            return
        if record.attrs.get("log.iostream") == "stderr":
            self.stderr = body
        elif record.severity_number >= 17:  # OTLP SEVERITY_NUMBER_ERROR
            self.error = body

    def line(self, code: int, failure: str | None = None) -> str:
        if code == 0:
            return ""
        return (failure or self.stderr or self.error or f"process exited with code {code}")[:4096]


class Supervisor:
    def __init__(
        self,
        cmd: Sequence[str],
        *,
        on_log: Callable[[LogRecord], None],
        state: ReplicaState,
        restarts: Counter,
        on_event: Callable[[str, str], None] | None = None,
        ready_url: str | None = None,
        ready_poll: float = 0.5,
        restart: str = "on-failure",
        backoff_initial: float = 1.0,
        backoff_max: float = 60.0,
        backoff_reset: float = 60.0,
        stop_timeout: float = 10.0,
        echo: bool = True,
        env: dict[str, str] | None = None,
        cwd: str | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ):
        if restart not in ("on-failure", "always", "never"):
            raise ValueError(f"restart: {restart!r}")
        self.cmd = list(cmd)
        self.on_log = on_log
        self.on_event = on_event or (lambda msg, sev: log.info("sonde agent: %s", msg))
        self.state = state
        self.restarts = restarts
        self.ready_url, self.ready_poll = ready_url, ready_poll
        self.restart = restart
        self.backoff_initial, self.backoff_max, self.backoff_reset = backoff_initial, backoff_max, backoff_reset
        self.stop_timeout = stop_timeout
        self.echo = echo
        self.env = dict(os.environ if env is None else env)
        self.env.setdefault("PYTHONUNBUFFERED", "1")
        self.cwd = cwd
        self.clock = clock
        self.proc: subprocess.Popen | None = None
        self.exit_codes: list[int] = []
        #: why the process could not be started, when it could not
        self.failure: str | None = None
        self._stopping = threading.Event()
        self._exited = threading.Event()
        self._echo_locks = {"stdout": threading.Lock(), "stderr": threading.Lock()}

    @property
    def stopping(self) -> bool:
        """True once :meth:`stop` was called (the agent was told to stop)."""
        return self._stopping.is_set()

    @property
    def pid(self) -> int | None:
        p = self.proc
        return p.pid if p is not None and p.returncode is None else None

    # -- output capture --------------------------------------------------------------------
    def _read(self, pipe: IO[bytes], stream: str) -> None:
        with pipe:
            while True:
                raw = pipe.readline(MAX_LINE)
                if not raw:
                    return
                self.on_log(make_record(raw.decode("utf-8", "replace"), self.clock.time_ns(), stream))
                if self.echo:
                    with self._echo_locks[stream]:
                        out = _echo_target(stream)
                        out.write(raw if raw.endswith(b"\n") else raw + b"\n")
                        out.flush()

    def _spawn(self) -> tuple[subprocess.Popen, list[threading.Thread]]:
        proc = subprocess.Popen(
            self.cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=self.env, cwd=self.cwd, start_new_session=True,
        )
        readers = [
            threading.Thread(target=self._read, args=(proc.stdout, "stdout"), name="sonde-agent-stdout", daemon=True),
            threading.Thread(target=self._read, args=(proc.stderr, "stderr"), name="sonde-agent-stderr", daemon=True),
        ]
        for t in readers:
            t.start()
        return proc, readers

    # -- lifecycle -------------------------------------------------------------------------
    def run(self) -> int:
        """Supervise until stopped (returns 0) or the child ends for good (its status)."""
        delay = self.backoff_initial
        while True:
            self.state.set(STARTING)
            started = self.clock.monotonic()
            try:
                proc, readers = self._spawn()
            except OSError as exc:  # no such command: restarting will not help
                self.failure = f"cannot start {self.cmd[0]!r}: {exc}"
                self.on_event(self.failure, "ERROR")
                return 127
            self._exited.clear()
            self.proc = proc
            ready = Readiness(self.ready_url, self.state, poll=self.ready_poll, alive=lambda: proc.poll() is None)
            ready.start()
            waiter = threading.Thread(target=self._wait, args=(proc,), name="sonde-agent-wait", daemon=True)
            waiter.start()
            if self._stopping.is_set():  # stop() raced with the spawn
                self._signal_group(proc, signal.SIGTERM)
            self._exited.wait()
            ready.cancel()
            code = proc.returncode
            self.exit_codes.append(code)
            # Output written just before the exit is still in the pipes: read it all
            # before deciding anything. A grandchild that kept the pipe open keeps its
            # reader (a daemon thread) going; it is not waited for.
            for t in readers:
                t.join(timeout=2.0)
            ran = self.clock.monotonic() - started
            # A replica that is stopping, or ending for good, keeps its last state for
            # the final sample (there is no "stopping" state); only a restart is "starting".
            if self._stopping.is_set():
                return 0
            crashed = code != 0
            how = f"signal {-code}" if code < 0 else f"code {code}"
            if (not crashed and self.restart != "always") or self.restart == "never":
                self.on_event(f"process exited with {how} after {ran:.1f} s; not restarting", "ERROR" if crashed else "INFO")
                return code if code >= 0 else 128 - code
            self.state.set(STARTING)
            if ran >= self.backoff_reset:
                delay = self.backoff_initial
            self.on_event(f"process exited with {how} after {ran:.1f} s; restart #{self.restarts.value + 1} in {delay:.1f} s",
                          "ERROR" if crashed else "WARNING")
            if self._stopping.wait(delay):
                return 0
            delay = min(self.backoff_max, delay * 2)
            self.restarts.add(1)

    def _wait(self, proc: subprocess.Popen) -> None:
        proc.wait()  # a blocking waitpid: no polling while the model runs
        self._exited.set()

    def _signal_group(self, proc: subprocess.Popen, sig: int) -> None:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass

    def stop(self) -> None:
        """Ask the child (its whole process group) to stop; SIGKILL after ``stop_timeout``.

        Safe to call from a signal handler: it only signals and starts a timer."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        self._signal_group(proc, signal.SIGTERM)

        def kill_later() -> None:
            if not self._exited.wait(self.stop_timeout) and proc.returncode is None:
                self._signal_group(proc, signal.SIGKILL)

        threading.Thread(target=kill_later, name="sonde-agent-kill", daemon=True).start()
