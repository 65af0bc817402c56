"""The one error envelope, mapped in one place.

Every error body is ``{"message": str, "error": {"code": str, "field": str | None}}``;
``message`` is what existing clients print. ``tests/test_error_shape.py`` locks it.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from .._exceptions import Overloaded, SondeError

log = logging.getLogger("sonde.api")


def envelope(message: str, code: str, field: str | None = None) -> dict:
    return {"message": message, "error": {"code": code, "field": field}}


def error_response(status: int, message: str, code: str, field: str | None = None, headers=None) -> JSONResponse:
    return JSONResponse(envelope(message, code, field), status_code=status, headers=headers)


def _field_of(loc: tuple) -> str | None:
    # FastAPI's loc is ("query", "limit") or ("body", "includes", 3); the client named
    # the first part after the source, so that is the field.
    parts = [str(p) for p in loc if p not in ("query", "path", "body", "header")]
    return parts[0] if parts else None


def _rule_of(err: dict) -> str:
    msg = err.get("msg", "invalid value")
    ctx = err.get("ctx") or {}
    if err.get("type") == "missing":
        return "is required"
    if "expected" in ctx:
        return f"must be one of {ctx['expected']}"
    return msg[0].lower() + msg[1:] if msg else "is invalid"


def install(app: FastAPI) -> None:
    @app.exception_handler(SondeError)
    async def _sonde(_: Request, exc: SondeError):
        if exc.status >= 500 and not isinstance(exc, Overloaded):
            log.exception("internal error", exc_info=exc)
        headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, Overloaded) else None
        return error_response(exc.status, exc.message, exc.code, exc.field, headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError):
        errs = exc.errors()
        first = errs[0] if errs else {"loc": (), "msg": "invalid request"}
        field = _field_of(tuple(first.get("loc", ())))
        if first.get("type") == "json_invalid":
            return error_response(400, "request body is not valid JSON", "invalid_json", "body")
        message = f"{field}: {_rule_of(first)}" if field else _rule_of(first)
        return error_response(400, message, "invalid", field)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        message = exc.detail if isinstance(exc.detail, str) else "request failed"
        if exc.status_code == 404 and message == "Not Found":
            message = "no such route"
        return error_response(exc.status_code, message, code, None, getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unhandled(_: Request, exc: Exception):
        log.exception("unhandled error", exc_info=exc)
        return error_response(500, "internal server error", "internal")
