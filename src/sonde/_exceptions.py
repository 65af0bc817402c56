"""Sonde's exceptions, one tree, each mapped to one HTTP status in ``api/errors.py``.

    SondeError                   500 internal
    +-- BadRequest               400 a parameter or body breaks a rule (``field`` names it)
    |   +-- PayloadTooLarge      413 body over ``max_body_bytes``
    |   +-- UnsupportedMediaType 415 a Content-Type or Content-Encoding the route cannot read
    +-- Unauthorized             401 missing or unknown API key
    +-- Forbidden                403 known key without the scope the route needs
    +-- NotFound                 404 absent, or owned by another workspace (never 403)
    +-- Conflict                 409 the request contradicts stored state
    +-- RetryLater               (abstract) answered with ``Retry-After: retry_after``
    |   +-- RateLimited          429 over the key's request rate
    |   +-- Overloaded           503 ingest queue full, or requests in flight at their bound
    |       +-- StorageFull      503 no room on the store's disk (store/disk.py)
    +-- StoreError               500 the store refused a statement
"""

from __future__ import annotations


class SondeError(Exception):
    status = 500
    code = "internal"

    def __init__(self, message: str, *, field: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.field = field
        if code is not None:
            self.code = code

    def __reduce__(self):
        # keyword arguments and class attributes set per instance survive pickling: an
        # error raised in a decoding process reaches the client as it was (ingest/offload.py)
        return _rebuild, (type(self), self.args), self.__dict__


def _rebuild(cls: type[SondeError], args: tuple) -> SondeError:
    err = cls.__new__(cls)
    err.args = args
    return err


class BadRequest(SondeError):
    status = 400
    code = "invalid"


class PayloadTooLarge(BadRequest):
    status = 413
    code = "too_large"


class UnsupportedMediaType(BadRequest):
    status = 415
    code = "unsupported_media_type"


class Unauthorized(SondeError):
    status = 401
    code = "unauthorized"


class Forbidden(SondeError):
    status = 403
    code = "forbidden"


class NotFound(SondeError):
    status = 404
    code = "not_found"


class Conflict(SondeError):
    status = 409
    code = "conflict"


class RetryLater(SondeError):
    """Not the client's fault nor the server's: the answer carries ``Retry-After``."""

    def __init__(self, message: str, *, retry_after: int = 1):
        super().__init__(message)
        self.retry_after = retry_after


class RateLimited(RetryLater):
    status = 429
    code = "rate_limited"


class Overloaded(RetryLater):
    status = 503
    code = "overloaded"


class StorageFull(Overloaded):
    code = "storage_full"


class StoreError(SondeError):
    status = 500
    code = "store"
