"""Alert rules, active alerts and receivers (docs/alerts.md)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["alerts"])
