"""``POST /api/v1/write``: Prometheus remote write 1.0 in (docs/remote-write.md)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["remote-write"])
