"""Span decoding in child processes: the ``ingest_processes`` setting.

Decoding an OTLP span request into rows is Python holding the GIL, about 10 us a span;
inside the server it shares that one lock with the HTTP loop and the group commit, and
span ingest stops at what one core decodes. With ``ingest_processes`` > 0, the server
hands each traces body to a pool of that many processes (started with ``spawn``, at the
first traces request): a child decodes and walks it (:class:`.traces.TracesWalk`) and
sends back :class:`.traces.SpanRows`, Arrow columns; the server places them and queues
them on its group commit as before. The child never touches the store: acknowledged
still means committed by the server. A child that dies fails the requests it held with
503 (their clients retry) and the next request starts a new pool.
"""

from __future__ import annotations

import multiprocessing
import threading
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import NamedTuple

from .._exceptions import Overloaded
from .decode import Encoding, decode
from .traces import SpanRows, TracesWalk


def walk_spans(ws: str, body: bytes, encoding: str) -> SpanRows:
    """In a child: a traces body to rows. A bad body raises BadRequest, pickled back whole."""
    return TracesWalk(ws).walk(decode(body, Encoding(encoding), "traces")).result()


class Decoding(NamedTuple):
    pool: ProcessPoolExecutor
    future: Future  # of SpanRows


class SpanDecoders:
    """A pool of ``processes`` span decoders, started at the first :meth:`submit`."""

    def __init__(self, processes: int):
        self.processes = processes
        self._lock = threading.Lock()
        self._pool: ProcessPoolExecutor | None = None
        self._closed = False

    def submit(self, ws: str, body: bytes, encoding: Encoding) -> Decoding:
        """A body on its way to :class:`SpanRows`; raises Overloaded when the pool broke or is closing."""
        with self._lock:
            if self._closed:
                raise Overloaded("server is shutting down", retry_after=5)
            if self._pool is None:
                self._pool = ProcessPoolExecutor(self.processes, mp_context=multiprocessing.get_context("spawn"))
            pool = self._pool
        try:
            return Decoding(pool, pool.submit(walk_spans, ws, body, encoding.value))
        except BrokenProcessPool:
            self._discard(pool)
            raise Overloaded("a span decoding process ended; retry", retry_after=1) from None

    def rows(self, decoding: Decoding) -> SpanRows:
        """The rows once decoded; a child that died holding them is a 503, and its pool is
        dropped (only that one: another request may already have started the next)."""
        try:
            return decoding.future.result()
        except BrokenProcessPool:
            self._discard(decoding.pool)
            raise Overloaded("a span decoding process ended; retry", retry_after=1) from None

    def _discard(self, pool: ProcessPoolExecutor) -> None:
        with self._lock:
            if self._pool is pool:
                self._pool = None
        pool.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        """Stop the children (requests they hold fail); later submits are refused."""
        with self._lock:
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
