"""``.../logs/stream``: the live tail as Server-Sent Events (docs/logs.md#live-tail).

:class:`~sonde.query.tail.Tail` decides which lines; this module is the HTTP side: the
event framing, when to read (woken by the store's commits, with a poll as a floor for
lines other API replicas commit), heartbeats, the key re-checked while the stream is
open, and the per-key limit on open streams.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable

import pyarrow as pa
from fastapi import Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from .._exceptions import RateLimited
from ..query.logs import LogQuery, Target
from ..query.tail import Cursor, Tail
from ..settings import Config
from ..store import Store
from ..store.accounts import ApiKey
from . import auth

#: lines per read; a full page is followed by another read at once
PAGE = 1000
#: the longest a stream waits without a commit of its target before it reads anyway:
#: on a cluster other replicas' lines arrive without a local commit to announce them
POLL_SHARED_S = 0.5
POLL_ALONE_S = 5.0


class Bell:
    """Rings the streams whose target the store just committed log lines for.

    The store calls :meth:`committed` on its writer thread; each stream waits on an
    asyncio event of its own event loop."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: dict[int, tuple[str, str | None, asyncio.AbstractEventLoop, asyncio.Event]] = {}

    def committed(self, tables: dict[str, pa.Table]) -> None:
        logs = tables.get("logs")
        if logs is None or not logs.num_rows:
            return
        touched = logs.select(["ws", "entity"]).group_by(["ws", "entity"]).aggregate([])
        pairs = set(zip(touched.column("ws").to_pylist(), touched.column("entity").to_pylist()))
        workspaces = {ws for ws, _ in pairs}
        with self._lock:
            waiters = list(self._waiters.values())
        for ws, entity, loop, event in waiters:
            # an environment's stream (no entity) spans the model's deployments: any line of its workspace
            if (ws, entity) in pairs or (entity is None and ws in workspaces):
                loop.call_soon_threadsafe(event.set)

    def subscribe(self, ws: str, entity: str | None) -> tuple[int, asyncio.Event]:
        event = asyncio.Event()
        with self._lock:
            token = id(event)
            self._waiters[token] = (ws, entity, asyncio.get_running_loop(), event)
        return token, event

    def unsubscribe(self, token: int) -> None:
        with self._lock:
            self._waiters.pop(token, None)


class StreamLimiter:
    """Open streams per key, counted in this process."""

    def __init__(self, limit: int):
        self.limit = limit
        self._open: dict[str, int] = {}
        self._lock = threading.Lock()

    def acquire(self, key_id: str) -> None:
        with self._lock:
            n = self._open.get(key_id, 0)
            if n >= self.limit:
                raise RateLimited(f"this key already has {n} live log streams open on this server, the most"
                                  f" allowed (setting stream_limit_per_key); close one first", retry_after=5)
            self._open[key_id] = n + 1

    def release(self, key_id: str) -> None:
        with self._lock:
            self._open[key_id] -= 1
            if not self._open[key_id]:
                del self._open[key_id]

    def releaser(self, key_id: str) -> Callable[[], None]:
        """A function that releases the slot once, however many times it is called."""
        done = threading.Event()

        def release() -> None:
            if not done.is_set():
                done.set()
                self.release(key_id)

        return release


class Streams:
    """What every stream of one app shares: its store, bell, limiter and settings."""

    def __init__(self, store: Store, config: Config):
        self.store = store
        self.bell = Bell()
        store.on_commit(self.bell.committed)
        self.limiter = StreamLimiter(config.stream_limit_per_key)
        self.heartbeat_s = config.stream_heartbeat_seconds
        self.key_check_s = config.stream_key_check_seconds
        shared = store.shared(config.state_sync)
        self.settle_ns = config.stream_settle_ms * 1_000_000 if shared else None
        self.poll_s = POLL_SHARED_S if shared else POLL_ALONE_S

    def open(self, request: Request, key: ApiKey, target: Target, q: LogQuery,
             last_event_id: str | None) -> StreamingResponse:
        cursor = Cursor.decode(last_event_id) if last_event_id else None
        tail = Tail(self.store, key.ws, target, q, cursor=cursor, settle_ns=self.settle_ns)
        self.limiter.acquire(key.id)  # last: a refused stream must not hold a slot
        release = self.limiter.releaser(key.id)
        # the key as sent, to check again while the stream is open
        recheck = lambda: request.app.state.accounts.lookup(auth.raw_key(request))  # noqa: E731
        events = self._events(request, key, tail, recheck, release)
        # A client gone before the first byte: the generator never starts, so its finally
        # never runs; the slot goes back when the generator is collected.
        weakref.finalize(events, release)
        return StreamingResponse(
            events,
            media_type="text/event-stream",
            # no proxy buffering (nginx honours X-Accel-Buffering), no cached replies
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    async def _events(self, request: Request, key: ApiKey, tail: Tail,
                      recheck: Callable[[], ApiKey | None], release: Callable[[], None]) -> AsyncIterator[str]:
        token, rung = self.bell.subscribe(key.ws, tail.target.entity)
        self.store.writer.watch(+1)
        try:
            # An opening comment: the client sees the stream is live before any line.
            yield ": sonde live tail\n\n"
            quiet_since = checked_at = time.monotonic()
            while True:
                rung.clear()
                lines = await run_in_threadpool(tail.read)
                if lines:
                    yield "".join(f"id: {cid}\ndata: {json.dumps(line, separators=(',', ':'))}\n\n"
                                  for cid, line in lines)
                    quiet_since = time.monotonic()
                    if len(lines) >= tail.q.limit:
                        continue
                now = time.monotonic()
                if now - checked_at >= self.key_check_s:
                    checked_at = now
                    if await run_in_threadpool(recheck) is None:
                        yield "event: error\ndata: {\"message\": \"the API key was revoked\"}\n\n"
                        return
                if now - quiet_since >= self.heartbeat_s:
                    yield ": heartbeat\n\n"
                    quiet_since = now
                if await request.is_disconnected():
                    return
                wait = min(self.poll_s, self.heartbeat_s, self.key_check_s)
                try:
                    await asyncio.wait_for(rung.wait(), wait)
                except asyncio.TimeoutError:
                    pass
        finally:
            self.store.writer.watch(-1)
            self.bell.unsubscribe(token)
            release()
