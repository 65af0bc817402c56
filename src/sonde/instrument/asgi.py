"""`SondeMiddleware`: HTTP server metrics, spans and request ids for ASGI apps.

A pure ASGI middleware (no ``BaseHTTPMiddleware``): it wraps ``send`` and never
buffers, so a streamed response reaches the client chunk by chunk and its time to
first byte is measured where the first chunk leaves the app.

It records through the OpenTelemetry metrics API, on the meter provider it is given or
the global one, using the semantic-convention names that Sonde maps to its deployment
metrics (docs/metrics.md, "Catalogue"):

=====================================  ======  ==============================================
``http.server.request.duration``       s       histogram; every request
``http.server.active_requests``        1       up-down counter (observed at collection)
``http.server.request.body.size``      By      histogram; requests that carry a body
``http.server.response.body.size``     By      histogram; bytes the app sent
``sonde.server.time_to_first_byte``    s       histogram; streamed responses: start -> first chunk
=====================================  ======  ==============================================

Attributes: ``http.request.method`` (unknown methods as ``_OTHER``), ``url.scheme``,
``http.response.status_code``, ``http.route`` when the router matched one, and
``error.type`` for failures. Quantiles within 1% need the exponential histogram view
from `sonde.instrument.sonde_views` (``configure()`` installs it); without it the
histograms fall back to advisory explicit buckets (``instruments.py``).

Each request is also a SERVER span on the tracer provider it is given or the global
one (``spans.py``), current while the app runs and while the histograms are recorded,
so that their exemplars name the request's trace.
"""

from __future__ import annotations

import logging
import os
import re
from time import perf_counter, time_ns
from typing import Any, Awaitable, Callable, MutableMapping

from opentelemetry import metrics, trace
from opentelemetry.metrics import MeterProvider

from .instruments import instruments_for
from .request_id import request_id_var
from .spans import finish_span, start_span, tracer_for

try:  # route templates come from Starlette's router; other frameworks just get no http.route
    from starlette.routing import Mount as _Mount
except ImportError:  # pragma: no cover - starlette is a dependency of sonde
    _Mount = ()

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# The semantic conventions' known methods; anything else is "_OTHER" so that a client
# sending random methods cannot create unbounded series.
_METHODS = frozenset({"CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "QUERY", "TRACE"})
# An incoming X-Request-ID is echoed into response headers and log lines, so only
# printable ASCII without spaces, of bounded length, is trusted; anything else is replaced.
_valid_request_id = re.compile(rb"[!-~]{1,128}").fullmatch
_REQUEST_ID = b"x-request-id"
log = logging.getLogger("sonde.instrument")


def _new_request_id() -> str:
    return os.urandom(16).hex()  # 128 random bits; a quarter of the cost of uuid4().hex


def _route(scope: Scope) -> str | None:
    """The matched route template (``/items/{item_id}``), including enclosing mounts."""
    # Each Mount appends the part of the path it matched to root_path and keeps the
    # root_path from before any mount in app_root_path: the difference is the prefix.
    prefix = ""
    app_root = scope.get("app_root_path")
    if app_root is not None:
        root = scope.get("root_path", "")
        if len(root) > len(app_root) and root.startswith(app_root):
            prefix = root[len(app_root):]
    route = scope.get("route")
    template = getattr(route, "path_format", None)
    if template is None or isinstance(route, _Mount):
        # A mounted plain ASGI app (FastAPI's router does not even set the route for
        # it), or nothing matched inside a mount: the mount is the route.
        return prefix + "/{path}" if prefix else None
    return prefix + template


_UNSET_PROVIDERS = ("_ProxyMeterProvider", "NoOpMeterProvider", "ProxyTracerProvider", "NoOpTracerProvider")
_FASTAPI_DOUBLES = {
    "metrics": "records http.server.request.duration and http.server.active_requests too, so every "
               "request would be counted twice",
    "tracing": "starts a SERVER span of its own that does not descend from SondeMiddleware's, so every "
               "request would be listed twice and the app's spans and logs would join FastAPI's span",
}


def _fastapi_doubles(app: Any) -> list[str]:
    """What FastAPI's own telemetry (``FastAPI(telemetry=...)``, on by default) would
    record for ``app`` beside the middleware: "metrics" and "tracing", each once a real
    provider is set, e.g. by configure(). Read from FastAPI's private config, so a
    FastAPI without it (or a future one that renames it) just answers []."""
    config = getattr(app, "_telemetry", None)
    if not isinstance(config, dict):
        return []
    providers = {"metrics": lambda: config.get("meter_provider") or metrics.get_meter_provider(),
                 "tracing": lambda: config.get("tracer_provider") or trace.get_tracer_provider()}
    return [what for what, provider in providers.items()
            if config.get(what) and type(provider()).__name__ not in _UNSET_PROVIDERS]


class SondeMiddleware:
    """ASGI middleware: request metrics and spans through OpenTelemetry, and ``X-Request-ID``.

    ``app.add_middleware(SondeMiddleware)`` (Starlette/FastAPI) or
    ``app = SondeMiddleware(app)`` (any ASGI app). The request id is taken from the
    request's ``X-Request-ID`` when it is sane, generated otherwise, returned on the
    response, and readable as `current_request_id()` (and, through `RequestIdFilter`,
    as ``record.request_id``) while the request is handled.

    Each request is a SERVER span (``spans.py``) carrying the request id as
    ``http.request.header.x-request-id``; an incoming ``traceparent`` makes it a child
    of the caller's span.

    An exception from the app records the request as a 500 with ``error.type`` set to
    the exception's class, and is re-raised; that includes a streamed response that
    fails after its headers went out, since its client got a truncated body. A request
    cancelled before any response (the client went away) is recorded as 499, the
    nginx convention, so it is not mistaken for a server error.
    """

    def __init__(self, app: ASGIApp, *, meter_provider: MeterProvider | None = None,
                 tracer_provider: trace.TracerProvider | None = None) -> None:
        self.app = app
        self._inst = instruments_for(meter_provider)
        self._tracer = tracer_for(tracer_provider)
        self._checked_fastapi = False

    def _check_fastapi(self, scope: Scope) -> None:
        # Inside FastAPI (add_middleware) the app is in the scope; wrapping it, it is self.app.
        self._checked_fastapi = True
        doubles = _fastapi_doubles(scope.get("app")) or _fastapi_doubles(self.app)
        if doubles:
            off = ", ".join(f"{what!r}: False" for what in doubles)
            log.warning(
                "FastAPI's built-in telemetry %s. Create the app with FastAPI(telemetry={%s}) to "
                "leave them to SondeMiddleware (FastAPI's logs stay on).",
                "; it also ".join(_FASTAPI_DOUBLES[what] for what in doubles), off)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # websockets and lifespan pass through untouched
            await self.app(scope, receive, send)
            return
        start, start_ns = perf_counter(), time_ns()
        inst = self._inst
        if not self._checked_fastapi:
            self._check_fastapi(scope)

        incoming_id = declared_size = None
        chunked = False
        for name, value in scope["headers"]:  # ASGI servers lowercase header names
            if name == _REQUEST_ID:
                incoming_id = value
            elif name == b"content-length":
                declared_size = value
            elif name == b"transfer-encoding":
                chunked = True
        if incoming_id is not None and _valid_request_id(incoming_id):
            rid, rid_bytes = incoming_id.decode("ascii"), incoming_id
        else:
            rid = _new_request_id()
            rid_bytes = rid.encode("ascii")

        request_size: int | None = None
        if declared_size is not None:
            try:
                request_size = int(declared_size)
            except ValueError:
                chunked = True  # a broken header: count what the app actually reads
        received = 0
        if request_size is None and chunked:
            # No length up front: count the bytes as the app reads them. Only then is
            # receive wrapped, so ordinary requests pay nothing for it.
            async def receive_counted() -> Message:
                nonlocal received
                message = await receive()
                if message["type"] == "http.request":
                    received += len(message.get("body", b""))
                return message

            app_receive: Receive = receive_counted
        else:
            app_receive = receive

        status = 0
        first_byte: float | None = None
        sent = 0
        declared_response: int | None = None

        async def send_wrapper(message: Message) -> None:
            nonlocal status, first_byte, sent, declared_response
            kind = message["type"]
            if kind == "http.response.body":
                body = message.get("body", b"")
                if body:
                    if not sent and message.get("more_body", False):
                        # The first bytes of a streamed body. A body sent in one message
                        # gets no TTFB: it would equal the duration and dilute the metric.
                        first_byte = perf_counter()
                    sent += len(body)
            elif kind == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", ()))
                has_id = False
                for name, value in headers:
                    lname = name.lower()
                    if lname == _REQUEST_ID:
                        has_id = True  # the app set its own id: keep it, do not send two
                    elif lname == b"content-length" and value.isdigit():
                        declared_response = int(value)
                if not has_id:
                    headers.append((_REQUEST_ID, rid_bytes))
                # A copy: the app's own header list (Starlette's Response.raw_headers) stays as it was.
                message = {**message, "headers": headers}
            elif kind in ("http.response.pathsend", "http.response.zerocopysend"):
                sent += declared_response or 0  # the server sends a file: its declared length
            await send(message)

        active_key = (scope["method"] if scope["method"] in _METHODS else "_OTHER", scope.get("scheme", "http"))
        span, span_token = start_span(self._tracer, scope, active_key[0], rid, start_ns)
        token = request_id_var.set(rid)
        inst.enter(active_key)
        error: BaseException | None = None
        try:
            await self.app(scope, app_receive, send_wrapper)
        except BaseException as exc:
            error = exc
            raise
        finally:
            duration = perf_counter() - start
            inst.leave(active_key)
            request_id_var.reset(token)

            responded = status != 0
            attrs: dict[str, Any] = {"http.request.method": active_key[0], "url.scheme": active_key[1]}
            if error is None:
                if status >= 500:
                    attrs["error.type"] = str(status)  # the semantic conventions' value for 5xx
            elif isinstance(error, Exception):
                status = 500
                attrs["error.type"] = type(error).__qualname__
            else:  # CancelledError and other BaseExceptions: not the app's fault
                status = status or 499
                attrs["error.type"] = type(error).__qualname__
            attrs["http.response.status_code"] = status
            route = _route(scope)
            if route is not None:
                attrs["http.route"] = route

            try:
                # The span is still current: the SDK's trace-based exemplar filter keeps
                # its trace id with the samples, linking a latency to its request.
                inst.duration.record(duration, attrs)
                if first_byte is not None:
                    inst.ttfb.record(first_byte - start, attrs)
                if responded:  # a failed stream's truncated body is what its client got
                    inst.response_size.record(sent, attrs)
                if request_size is not None:
                    inst.request_size.record(request_size, attrs)
                elif chunked:
                    inst.request_size.record(received, attrs)
            finally:
                # Ends exactly the recorded duration after its start, so span and sample agree.
                finish_span(span, span_token, attrs, error, start_ns + round(duration * 1e9))
