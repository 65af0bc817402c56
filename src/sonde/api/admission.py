"""Admission: past capacity, shed load at the door with 503 and Retry-After.

Without a bound, a burst over capacity queues in the thread pool and in the writer: latencies
grow until clients time out, and every queued ingest body sits in memory. So each replica
admits at most ``max_inflight_ingest`` ingest requests (OTLP, remote write) and
``max_inflight_reads`` other API requests at once; one more is answered at once with 503,
``Retry-After: 1`` and the usual error (the JSON envelope, or OTLP's ``google.rpc.Status`` to
a protobuf OTLP request), before its body is read. The two classes are counted apart so a
flood of queries never starves ingest, nor the other way round. Request bodies held at once
are thus bounded by ``max_inflight_ingest x max_body_bytes``, and rows waiting for their commit
by ``max_pending_rows`` (docs/reliability.md#load measures the peak).

Not counted: live log streams (long-lived by design; ``stream_limit_per_key`` bounds them),
the dashboard's static files, and ``/openapi.json``.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from .._exceptions import Overloaded
from ..ingest.decode import Encoding
from . import errors, otlp_http

INGEST, READ = "ingest", "read"
_SETTING = {INGEST: "max_inflight_ingest", READ: "max_inflight_reads"}


def request_class(path: str) -> str | None:
    """Which bound a path counts against; None: not counted."""
    if path.startswith("/v1/otlp/") or path == "/api/v1/write":
        return INGEST
    if path.endswith("/stream") or path.startswith("/ui") or path == "/openapi.json":
        return None
    return READ


class Admission:
    """The ASGI middleware: one counter per class, checked and taken on the event loop
    (single-threaded there, so no lock is needed)."""

    def __init__(self, app: ASGIApp, *, max_inflight_ingest: int, max_inflight_reads: int):
        self.app = app
        self.limits = {INGEST: max_inflight_ingest, READ: max_inflight_reads}
        self.inflight = {INGEST: 0, READ: 0}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = request_class(scope["path"]) if scope["type"] == "http" else None
        if kind is None:
            return await self.app(scope, receive, send)
        if self.inflight[kind] >= self.limits[kind]:
            return await self._refuse(kind, scope, receive, send)
        self.inflight[kind] += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.inflight[kind] -= 1

    async def _refuse(self, kind: str, scope: Scope, receive: Receive, send: Send) -> None:
        f = errors.classify(Overloaded(
            f"server at capacity: {self.limits[kind]} {kind} requests in flight on this replica"
            f" (setting {_SETTING[kind]}); retry after the Retry-After seconds"))
        protobuf = kind == INGEST and scope["path"].startswith("/v1/otlp/") and \
            otlp_http.encoding(Headers(scope=scope).get("content-type")) is Encoding.PROTOBUF
        response = otlp_http.status_response(f) if protobuf else errors.json_response(f)
        # the connection cannot be reused with an unread body in it
        response.headers["Connection"] = "close"
        await response(scope, receive, send)
