"""``GET /metrics``: the workspace's current values for Prometheus to scrape (docs/export.md)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["export"])
