"""Trainer (loops) deployments: inventory (PUT, GET), metrics (POST) and the resolver of
their logs.

Shapes are the vendor's (``LoopsDeploymentV1``, ``GetLoopsDeploymentMetricsResponseV1``);
``sonde.query.loops`` computes the metrics and docs/chains-loops.md explains the choices.

A PUT body is a ``LoopsDeploymentV1`` (the GET's ``deployment``, not its envelope) and
may be the whole read shape (``api/bodies.py``): the deployment's ``id`` and its
sampler's ``created_at`` (when that sampler id was first written) are accepted and
ignored; every other field is stored.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Request
from pydantic import Field

from .._exceptions import BadRequest
from ..query.logs import Target
from ..query.loops import loops_metrics, resolve_window
from ..query.window import iso
from ..store.accounts import ApiKey
from ..store.inventory import Inventory
from . import auth
from .bodies import BodyIn, DeploymentStatus, LoopsMetricsIn, ReadOnly, UserIn, json_body
from .ids import valid_id

router = APIRouter(tags=["loops"])

LoopsStatus = Literal["CREATED", "DEPLOYING", "RUNNING", "SCALED_TO_ZERO", "FAILED", "STOPPED"]


class StatusIn(BodyIn):
    name: LoopsStatus


class SamplerStatusIn(BodyIn):
    name: DeploymentStatus


class SamplerIn(BodyIn):
    id: str = Field(min_length=1, max_length=256)
    base_url: str = Field(default="", max_length=2048)
    base_model: str = Field(default="", max_length=256)
    created_at: ReadOnly = None
    model_id: str = Field(min_length=1, max_length=64)
    deployment_id: str = Field(min_length=1, max_length=64)
    status: SamplerStatusIn = SamplerStatusIn(name="ACTIVE")


class LoopsDeploymentIn(BodyIn):
    id: ReadOnly = None
    base_model: str = Field(default="", max_length=256)
    base_url: str = Field(default="", max_length=2048)
    status: StatusIn = StatusIn(name="RUNNING")
    user: UserIn = UserIn()
    sampler: SamplerIn | None = None


def loops_view(row: dict) -> dict:
    doc = row["doc"]
    status = doc.get("status") or {}
    sampler = doc.get("sampler")
    if sampler is not None:
        sampler = {**sampler, "created_at": iso(doc.get("sampler_created_ms", row["created_ms"]))}
    return {
        "id": row["id"],
        "base_model": doc.get("base_model") or "",
        "base_url": doc.get("base_url") or "",
        "status": {"name": status.get("name", "RUNNING")},
        "user": {"email": (doc.get("user") or {}).get("email")},
        "sampler": sampler,
    }


def _get(request: Request, key: ApiKey, deployment_id: str) -> dict:
    return request.app.state.inventory.get(key.ws, "loops_deployment", valid_id(deployment_id, "deployment_id"))


@router.get("/v1/loops/deployments")
def list_loops_deployments(request: Request, scope: str | None = None, key: ApiKey = Depends(auth.management)) -> dict:
    # ?scope=org lists the organization's deployments; a workspace is Sonde's organization
    # and every key sees all of it, so both scopes list the same.
    rows = request.app.state.inventory.list(key.ws, "loops_deployment")
    return {"deployments": [loops_view(r) for r in rows]}


@router.get("/v1/loops/deployments/{deployment_id}")
def get_loops_deployment(deployment_id: str, request: Request, key: ApiKey = Depends(auth.management)) -> dict:
    return {"deployment": loops_view(_get(request, key, deployment_id))}


@router.put("/v1/loops/deployments/{deployment_id}")
def put_loops_deployment(
    deployment_id: str, body: LoopsDeploymentIn, request: Request, key: ApiKey = Depends(auth.management)
) -> dict:
    valid_id(deployment_id, "deployment_id")
    inv = request.app.state.inventory
    doc = body.model_dump(mode="json")
    if body.sampler is not None:
        old = inv.find(key.ws, "loops_deployment", deployment_id)
        prev = (old or {}).get("doc", {})
        # The sampler's created_at is derived: when this sampler id was first written.
        if prev.get("sampler") and prev["sampler"].get("id") == body.sampler.id and "sampler_created_ms" in prev:
            doc["sampler_created_ms"] = prev["sampler_created_ms"]
        else:
            doc["sampler_created_ms"] = time.time_ns() // 1_000_000
    row = inv.put(key.ws, "loops_deployment", deployment_id, "", doc)
    return {"deployment": loops_view(row)}


@router.post("/v1/loops/deployments/{deployment_id}/metrics")
def post_loops_metrics(
    deployment_id: str, request: Request, key: ApiKey = Depends(auth.management),
    body: Annotated[Any, Body()] = None,
) -> dict:
    valid_id(deployment_id, "deployment_id")
    # Parameters first: a malformed request is a 400 whether or not the deployment exists.
    req = json_body(LoopsMetricsIn, None if body == b"" else body, absent={})
    window = resolve_window(req.start_epoch_millis, req.end_epoch_millis, req.step_seconds)
    divisor = 1 if req.time_divisor_seconds is None else req.time_divisor_seconds
    if divisor <= 0:
        raise BadRequest("time_divisor_seconds must be a positive number of seconds", field="time_divisor_seconds")
    request.app.state.inventory.get(key.ws, "loops_deployment", deployment_id)
    return loops_metrics(request.app.state.store, key.ws, deployment_id, window, divisor)


def logs_target(inv: Inventory, ws: str, p: Mapping[str, str]) -> Target:
    """Loops deployment logs (a row of ``logs.ROUTES``)."""
    deployment = valid_id(p["deployment_id"], "deployment_id")
    inv.get(ws, "loops_deployment", deployment)
    return Target("loops", entity=deployment)
