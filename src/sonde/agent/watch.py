"""``sonde agent watch``: attach to a model server that is already running.

:class:`FileTailer` follows a log file the way ``tail -F`` does: it polls, reads what was
appended, and notices rotation (the path now names another file: the old one is read
to its end first, then the new one from its start) and truncation (the file is shorter
than what was read: read again from the start, as after ``copytruncate``). A file that
does not exist yet is waited for. By default it starts at the current end, as lines
already in the file were written before the agent was there (``from_start`` reads them).

:class:`Watch` ends when the watched pid exits (after a last sample and flush), or runs
until stopped when only files are watched.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import Any

import psutil

from .logs import make_record
from .model import SYSTEM_CLOCK, Clock, LogRecord

log = logging.getLogger("sonde.agent")

MAX_LINE = 64 * 1024
READ_CHUNK = 256 * 1024


class FileTailer:
    def __init__(
        self,
        path: str,
        on_log: Callable[[LogRecord], None],
        *,
        from_start: bool = False,
        poll: float = 0.25,
        clock: Clock = SYSTEM_CLOCK,
    ):
        self.path = path
        self.on_log = on_log
        self.poll = poll
        self.clock = clock
        self._fd: int | None = None
        self._ident: tuple[int, int] | None = None  # (st_dev, st_ino) of the open file
        self._pos = 0
        self._buf = b""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sonde-agent-tail", daemon=True)
        self.rotations = 0
        self.truncations = 0
        self._open(at_end=not from_start)

    def _open(self, at_end: bool) -> bool:
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return False
        st = os.fstat(fd)
        self._fd, self._ident = fd, (st.st_dev, st.st_ino)
        self._pos = os.lseek(fd, 0, os.SEEK_END) if at_end else 0
        return True

    def _emit(self, raw: bytes) -> None:
        self.on_log(make_record(raw.decode("utf-8", "replace"), self.clock.time_ns()))

    def _drain(self) -> None:
        """Read the open file to its current end, emitting complete lines."""
        while self._fd is not None:
            chunk = os.pread(self._fd, READ_CHUNK, self._pos)
            if not chunk:
                return
            self._pos += len(chunk)
            self._buf += chunk
            *lines, self._buf = self._buf.split(b"\n")
            for line in lines:
                for i in range(0, max(len(line), 1), MAX_LINE):
                    self._emit(line[i:i + MAX_LINE])
            while len(self._buf) >= MAX_LINE:  # a line without end: cut it as the supervisor does
                self._emit(self._buf[:MAX_LINE])
                self._buf = self._buf[MAX_LINE:]

    def _flush_partial(self) -> None:
        if self._buf:
            self._emit(self._buf)
            self._buf = b""

    def poll_once(self) -> None:
        """One round: read appended data, then handle rotation or truncation."""
        if self._fd is None:
            self._open(at_end=False)  # appeared (or reappeared) since: all of it is new
        self._drain()
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return  # rotated away, the new file not created yet: keep the old one open
        if self._fd is None:
            return
        if (st.st_dev, st.st_ino) != self._ident:
            self._drain()  # whatever the writer put in the old file before it moved
            self._flush_partial()
            os.close(self._fd)
            self._fd = None
            self.rotations += 1
            if self._open(at_end=False):
                self._drain()
        elif st.st_size < self._pos:
            self.truncations += 1
            self._flush_partial()
            self._pos = 0
            self._drain()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll_once()
            except OSError as exc:
                log.warning("sonde agent: tail %s: %s", self.path, exc)
            self._stop.wait(self.poll)

    def start(self) -> "FileTailer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self.poll_once()
        self._flush_partial()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class Watch:
    """Run until the watched process exits (or :meth:`stop`)."""

    def __init__(self, pid: int | None, tailers: list[FileTailer], *, poll: float = 1.0,
                 process_factory: Callable[[int], Any] = psutil.Process):
        self.tailers = tailers
        self.poll = poll
        self._proc = process_factory(pid) if pid is not None else None
        self._stop = threading.Event()

    def run(self) -> int:
        for t in self.tailers:
            t.start()
        try:
            while not self._stop.wait(self.poll):
                # is_running compares the start time too: a reused pid is not our process
                if self._proc is not None and not self._alive():
                    log.info("sonde agent: process %d exited", self._proc.pid)
                    break
        finally:
            for t in self.tailers:
                t.stop()
        return 0

    def _alive(self) -> bool:
        try:
            return self._proc.is_running() and self._proc.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False

    def stop(self) -> None:
        self._stop.set()
