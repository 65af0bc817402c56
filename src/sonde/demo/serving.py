"""What the demo's servers share: logging, telemetry, the health probe, uvicorn.

The model server, the chain's chainlets and the trainer (loops) nodes are each a
FastAPI app run by uvicorn under ``sonde agent run``; they log, report and answer
``/health`` the same way, defined here once.
"""

from __future__ import annotations

import logging
import sys

from fastapi import FastAPI, Request
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError

from ..instrument import RequestIdFilter, SondeTelemetry, configure


def with_health(app, is_ready):
    """Answer ``/health`` before the middleware: probes (the agent's, the load
    generator's) are not inference traffic, and their 503s while loading would read
    as server errors in the deployment's request counts."""

    async def asgi(scope, receive, send):
        if scope["type"] == "http" and scope["path"] == "/health":
            ready = is_ready()
            await send({"type": "http.response.start", "status": 200 if ready else 503,
                        "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body",
                        "body": b'{"status":"ready"}' if ready else b'{"status":"loading"}'})
            return
        await app(scope, receive, send)

    return asgi


class _Formatter(logging.Formatter):
    """``request_id=ID`` only where there is one: a placeholder such as ``-`` would be
    read by the agent as a request id of its own."""

    def format(self, record: logging.LogRecord) -> str:
        rid = getattr(record, "request_id", None)
        record.ids = f" request_id={rid}" if rid else ""
        return super().format(record)


def setup_logging() -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(_Formatter("%(asctime)s %(levelname)s %(name)s:%(ids)s %(message)s"))
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    logging.getLogger("sonde.demo").setLevel(logging.DEBUG)


def _not_health(record: logging.LogRecord) -> bool:
    # uvicorn's access record args: (client, method, path, http version, status)
    args = record.args if isinstance(record.args, tuple) else ()
    return not (len(args) >= 3 and str(args[2]).startswith("/health"))


def demo_telemetry(export_interval: float, service_name: str, log: logging.Logger,
                   resource: dict[str, str] | None = None) -> SondeTelemetry | None:
    """The request instruments of a demo server, or None when it runs on its own."""
    try:
        # Log lines travel once: printed to stdout, where `sonde agent run` ships them.
        # Exporting them over OTLP as well would store every line twice.
        return configure(logs=False, export_interval_s=export_interval, service_name=service_name,
                         resource_attributes=resource)
    except ValueError as exc:  # run on its own, without SONDE_SERVER and a key
        log.warning("not reporting to Sonde: %s", exc)
        return None


def serve(app, host: str, port: int) -> None:
    import uvicorn

    config = uvicorn.Config(app, host=host, port=port, log_level="info", timeout_graceful_shutdown=5)
    # After Config, which installs uvicorn's logging: health probes every second or two
    # would otherwise be most of the access log.
    logging.getLogger("uvicorn.access").addFilter(_not_health)
    uvicorn.Server(config).run()


#: FastAPI's own metrics and tracing off: SondeMiddleware records and traces each request,
#: and FastAPI would count it twice and start a second, unrelated server span
FASTAPI_TELEMETRY = {"metrics": False, "tracing": False}


def validation_summary(exc: RequestValidationError) -> str:
    """A 422's cause in one log line: the first error and how many more."""
    first = exc.errors()[0] if exc.errors() else {}
    where = ".".join(str(p) for p in first.get("loc", ()))
    more = len(exc.errors()) - 1
    return f"{where}: {first.get('msg', 'invalid')}" + (f" (and {more} more)" if more > 0 else "")


def log_rejections(app: FastAPI, logger: logging.Logger, what: str) -> None:
    """Log each 422 in one line (a bad request is a log line worth searching for), then
    answer it as FastAPI does."""

    @app.exception_handler(RequestValidationError)
    async def invalid_body(request: Request, exc: RequestValidationError):
        logger.warning("%s (422): %s", what, validation_summary(exc))
        return await request_validation_exception_handler(request, exc)
