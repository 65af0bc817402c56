"""Errors: classified in one place, rendered per format.

:func:`classify` turns any exception into a :class:`Failure`: what the client hears
(status, code, message, field, headers such as Retry-After) and whether it is a
server fault to log. Renderers only write it out: :func:`json_response` is the one
JSON envelope, ``{"message": str, "error": {"code": str, "field": str | None}}``
(``message`` is what existing clients print; ``tests/test_error_shape.py`` locks
it), and the OTLP receivers answer a protobuf request with a ``google.rpc.Status``
(``otlp_http.status_response``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from .._exceptions import RetryLater, SondeError

log = logging.getLogger("sonde.api")


@dataclass(frozen=True)
class Failure:
    """An exception as the client hears it, whatever the body's format."""

    status: int
    code: str
    message: str
    field: str | None = None
    headers: dict[str, str] | None = None
    #: a server fault (not the client's): logged with its traceback
    log: bool = False


INTERNAL = Failure(500, "internal", "internal server error", log=True)


def _named(loc: tuple) -> list[str]:
    """What the client named of an error's location: FastAPI's loc is ("query", "limit")
    or ("body", "includes", 3); the source and list indexes go. The first part is the
    field; all of them the path the message names (``condition.metric.op``: the
    condition of type metric, its op)."""
    return [p for p in loc if isinstance(p, str) and p not in ("query", "path", "body", "header")]


def _rule_of(err: dict) -> str:
    msg = err.get("msg", "invalid value")
    ctx = err.get("ctx") or {}
    if err.get("type") == "missing":
        return "is required"
    if "expected" in ctx:
        return f"must be one of {ctx['expected']}"
    return msg[0].lower() + msg[1:] if msg else "is invalid"


def classify(exc: BaseException) -> Failure:
    if isinstance(exc, SondeError):
        if isinstance(exc, RetryLater):  # the client's cue to back off, not a fault here
            return Failure(exc.status, exc.code, exc.message, exc.field, {"Retry-After": str(exc.retry_after)})
        return Failure(exc.status, exc.code, exc.message, exc.field, log=exc.status >= 500)
    if isinstance(exc, RequestValidationError):
        errs = exc.errors()
        first = errs[0] if errs else {"loc": (), "msg": "invalid request"}
        if first.get("type") == "json_invalid":
            return Failure(400, "invalid_json", "request body is not valid JSON", "body")
        named = _named(tuple(first.get("loc", ())))
        rule = _rule_of(first)
        return Failure(400, "invalid", f"{'.'.join(named)}: {rule}" if named else rule, named[0] if named else None)
    if isinstance(exc, StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        message = exc.detail if isinstance(exc.detail, str) else "request failed"
        if exc.status_code == 404 and message == "Not Found":
            message = "no such route"
        return Failure(exc.status_code, code, message, None, getattr(exc, "headers", None))
    return INTERNAL


def failure(exc: BaseException) -> Failure:
    """:func:`classify`, logging a server fault once, whichever renderer answers."""
    f = classify(exc)
    if f.log:
        log.exception("internal error" if isinstance(exc, SondeError) else "unhandled error", exc_info=exc)
    return f


def envelope(message: str, code: str, field: str | None = None) -> dict:
    return {"message": message, "error": {"code": code, "field": field}}


def json_response(f: Failure) -> JSONResponse:
    return JSONResponse(envelope(f.message, f.code, f.field), status_code=f.status, headers=f.headers)


def install(app: FastAPI) -> None:
    async def render(_: Request, exc: Exception) -> JSONResponse:
        return json_response(failure(exc))

    for kind in (SondeError, RequestValidationError, StarletteHTTPException, Exception):
        app.add_exception_handler(kind, render)
