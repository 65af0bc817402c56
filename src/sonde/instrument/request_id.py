"""The request id of the request being handled, for log records.

`SondeMiddleware` sets a context variable for the duration of each request.
Context variables follow the request into everything Starlette runs for it: the
endpoint, dependencies, sync endpoints in the thread pool (anyio copies the context)
and the body iterator of a streamed response (a task started from the request's
context). `RequestIdFilter` copies the value onto each `logging.LogRecord`, where
formatters (``%(request_id)s``) and the OpenTelemetry logging handler (which turns
record attributes into log attributes) pick it up.
"""

from __future__ import annotations

import logging
from contextvars import ContextVar

request_id_var: ContextVar[str | None] = ContextVar("sonde_request_id", default=None)


def current_request_id() -> str | None:
    """The id of the request being handled in this context, or None outside one."""
    return request_id_var.get()


class RequestIdFilter(logging.Filter):
    """Sets ``record.request_id`` from the request being handled; never drops a record.

    Install it on *handlers*, not loggers: a logger's filters only see records logged
    on that very logger, while a handler's see every record that reaches it, including
    those propagated from library loggers (``uvicorn``, ``httpx``, your modules).

    ``default`` is what records outside a request get. Keep it None for handlers that
    export attributes (the record then has no ``request_id`` and the exported log has
    none), and give text handlers a placeholder such as ``"-"`` so that a format
    string using ``%(request_id)s`` works for every record.

    A ``request_id`` passed explicitly (``extra={"request_id": ...}``) is kept.
    """

    def __init__(self, default: str | None = None, name: str = "") -> None:
        super().__init__(name)
        self.default = default

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            rid = request_id_var.get()
            if rid is None:
                rid = self.default
            if rid is not None:
                record.request_id = rid
        return True


def install_log_filter(*handlers: logging.Handler, default: str | None = "-") -> RequestIdFilter:
    """Add one `RequestIdFilter` to ``handlers`` (default: every handler of the root logger).

    Handlers added to the root logger later need their own ``addFilter`` call.
    """
    flt = RequestIdFilter(default=default)
    for handler in handlers or tuple(logging.getLogger().handlers):
        if not any(isinstance(f, RequestIdFilter) for f in handler.filters):
            handler.addFilter(flt)
    return flt
