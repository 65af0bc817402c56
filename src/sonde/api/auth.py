"""Who is calling: ``Authorization: Bearer <key>`` or ``Authorization: Api-Key <key>``.

Missing or unknown key: 401. Known key without the route's scope: 403. A key over its
request rate (``rate_limit_per_key``, ``api/ratelimit.py``): 429 with Retry-After. Everything
a key reads or writes is confined to its workspace; resources elsewhere are 404.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from .._exceptions import Forbidden, Unauthorized
from ..store.accounts import ApiKey

_SCHEMES = ("bearer", "api-key")


def raw_key(request: Request) -> str:
    """The key of the Authorization header; 401 naming it when it is missing or malformed."""
    header = request.headers.get("authorization")
    if not header:
        raise Unauthorized("missing Authorization header; send 'Bearer <key>' or 'Api-Key <key>'", field="Authorization")
    scheme, _, raw = header.strip().partition(" ")
    if scheme.lower() not in _SCHEMES or not raw.strip():
        raise Unauthorized("Authorization must be 'Bearer <key>' or 'Api-Key <key>'", field="Authorization")
    return raw.strip()


def require(*scopes: str) -> Callable[[Request], Awaitable[ApiKey]]:
    """A FastAPI dependency that returns the caller's key if its scope is in ``scopes``."""

    async def dependency(request: Request) -> ApiKey:
        accounts, raw = request.app.state.accounts, raw_key(request)
        # A key seen lately is answered from memory on the event loop: a sync dependency
        # would cost every request a hop to a worker thread and back (docs/benchmarks.md).
        found, key = accounts.cached(raw)
        if not found:  # the store: off the loop
            key = await run_in_threadpool(accounts.lookup, raw)
        if key is None:
            raise Unauthorized("unknown or revoked API key", field="Authorization")
        if key.scope not in scopes:
            raise Forbidden(f"a {key.scope} key cannot do this; it needs scope {' or '.join(scopes)}", field="Authorization")
        # after the scope check, so refused calls of a wrong key do not spend its budget
        request.app.state.key_limiter.check(key.id)
        return key

    dependency.__name__ = f"require_{'_'.join(scopes)}"
    return dependency


management = require("management")
ingest = require("ingest")
admin = require("admin")
