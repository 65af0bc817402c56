"""The SERVER span `SondeMiddleware` records for each request.

One span per request, named ``METHOD route`` (``GET /items/{item_id}``), with the
HTTP semantic conventions' attributes and the request id as
``http.request.header.x-request-id``: Sonde lists these spans as the deployment's
requests (docs/api.md#requests). The caller's trace context is taken from the
request headers by the global propagator (W3C ``traceparent`` unless
``OTEL_PROPAGATORS`` says otherwise), so the span joins the caller's trace, and the
span is current while the app runs, so the app's own spans and the log records it
writes carry the span's trace id.
"""

from __future__ import annotations

from typing import Any, Sequence

from opentelemetry import context, propagate, trace
from opentelemetry.propagators.textmap import Getter
from opentelemetry.trace import SpanKind, Status, StatusCode

REQUEST_ID_ATTRIBUTE = "http.request.header.x-request-id"
Headers = Sequence[tuple[bytes, bytes]]


class _AsgiHeaders(Getter[Headers]):
    """Reads the propagators' headers straight from an ASGI scope's header list."""

    def get(self, carrier: Headers, key: str) -> list[str] | None:
        name = key.lower().encode("latin-1")
        values = [v.decode("latin-1") for n, v in carrier if n == name]
        if len(values) > 1 and name == b"baggage":
            # Several baggage headers are one list; the propagator reads only the first value.
            return [",".join(values)]
        return values or None

    def keys(self, carrier: Headers) -> list[str]:
        return [n.decode("latin-1") for n, _ in carrier]


_GETTER = _AsgiHeaders()


def tracer_for(provider: trace.TracerProvider | None) -> trace.Tracer:
    from .. import __version__

    # With no provider given this is the API's proxy until someone (configure()) sets
    # the global provider, and records from then on.
    return trace.get_tracer("sonde.instrument", __version__, tracer_provider=provider)


def start_span(tracer: trace.Tracer, scope: dict, method: str, request_id: str,
               start_ns: int) -> tuple[trace.Span, object]:
    """Start the request's span and make it current; returns it and the token that
    `finish_span` detaches."""
    parent = propagate.extract(scope["headers"], getter=_GETTER)
    attrs: dict[str, Any] = {
        "http.request.method": method,
        "url.path": scope.get("path", ""),
        "url.scheme": scope.get("scheme", "http"),
        REQUEST_ID_ATTRIBUTE: (request_id,),
    }
    if method != scope["method"]:
        attrs["http.request.method_original"] = scope["method"]
    # The semantic conventions name a span "{method} {route}", "HTTP" standing in for
    # an unknown method; the route is only known once the router has run (`finish_span`).
    span = tracer.start_span("HTTP" if method == "_OTHER" else method, context=parent, kind=SpanKind.SERVER,
                             attributes=attrs, start_time=start_ns)
    return span, context.attach(trace.set_span_in_context(span, parent))


def finish_span(span: trace.Span, token: object, attrs: dict[str, Any], error: BaseException | None,
                end_ns: int) -> None:
    """Give the span the request's outcome (the metric attributes), end it, and make
    the context from before `start_span` current again."""
    try:
        if span.is_recording():
            span.set_attributes(attrs)
            route = attrs.get("http.route")
            if route is not None:
                method = attrs["http.request.method"]
                span.update_name(f"{'HTTP' if method == '_OTHER' else method} {route}")
            if isinstance(error, Exception):
                span.record_exception(error)
                span.set_status(Status(StatusCode.ERROR, f"{type(error).__qualname__}: {error}"))
            elif error is None and attrs["http.response.status_code"] >= 500:
                # A 4xx is the client's error: a server span leaves its status unset then.
                span.set_status(Status(StatusCode.ERROR))
        span.end(end_time=end_ns)
    finally:
        context.detach(token)
