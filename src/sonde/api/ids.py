"""Path identifiers: 1 to 64 of ``A-Z a-z 0-9 _ . -`` (docs/api.md#ids)."""

from __future__ import annotations

import re

from .._exceptions import BadRequest

_ID = re.compile(r"[A-Za-z0-9_.\-]{1,64}")


def valid_id(value: str, field: str) -> str:
    if not _ID.fullmatch(value):
        raise BadRequest(f"{field} must be 1 to 64 of A-Z a-z 0-9 _ . -", field=field)
    return value
