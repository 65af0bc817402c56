"""Inventory reads (the vendor's shapes) and upserts (SONDE.md) for models and deployments."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from ..store.accounts import ApiKey
from . import auth
from .ids import valid_id

router = APIRouter(tags=["inventory"])

DeploymentStatus = Literal[
    "BUILDING", "DEPLOYING", "DEPLOY_FAILED", "LOADING_MODEL", "ACTIVE", "UNHEALTHY", "BUILD_FAILED",
    "BUILD_STOPPED", "DEACTIVATING", "INACTIVE", "FAILED", "UPDATING", "SCALED_TO_ZERO", "WAKING_UP",
]


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).isoformat().replace("+00:00", "Z")


class NamedIn(BaseModel):
    """The written fields of a model, a chain or a training project."""

    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(default=None, min_length=1, max_length=256)
    team_name: str | None = Field(default=None, max_length=256)


class ModelIn(NamedIn):
    pass


class AutoscalingSettingsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    min_replica: int = Field(ge=0)
    max_replica: int = Field(ge=0)
    autoscaling_window: int | None = None
    scale_down_delay: int | None = None
    concurrency_target: int = Field(ge=1)
    target_utilization_percentage: int | None = Field(default=None, ge=1, le=100)
    target_in_flight_tokens: int | None = None
    max_scale_down_rate: int | None = Field(default=None, ge=1, le=50)


class DeploymentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(default=None, min_length=1, max_length=256)
    is_production: bool = False
    is_development: bool = False
    status: DeploymentStatus = "ACTIVE"
    autoscaling_settings: AutoscalingSettingsIn | None = None
    instance_type_name: str | None = Field(default=None, max_length=256)
    environment: str | None = Field(default=None, max_length=256)
    labels: dict[str, Any] | None = None


def instance_type_name(doc: dict) -> str | None:
    """The PUT's ``instance_type_name``, else the one the agent observed (docs/agent.md)."""
    return doc.get("instance_type_name") or (doc.get("observed_instance_type") or {}).get("name")


def deployment_view(row: dict, active: int) -> dict:
    doc = row["doc"]
    return {
        "id": row["id"],
        "created_at": iso(row["created_ms"]),
        "name": doc.get("name") or row["id"],
        "model_id": row["parent"],
        "is_production": bool(doc.get("is_production", False)),
        "is_development": bool(doc.get("is_development", False)),
        "status": doc.get("status", "ACTIVE"),
        "active_replica_count": active,
        "autoscaling_settings": doc.get("autoscaling_settings"),
        "instance_type_name": instance_type_name(doc),
        "environment": doc.get("environment"),
        "labels": doc.get("labels"),
    }


def model_view(row: dict, deployments: list[dict]) -> dict:
    doc = row["doc"]

    def flagged(flag: str) -> dict | None:
        hits = [d for d in deployments if d["doc"].get(flag)]
        return max(hits, key=lambda d: d["updated_ms"]) if hits else None

    prod, dev = flagged("is_production"), flagged("is_development")
    return {
        "id": row["id"],
        "created_at": iso(row["created_ms"]),
        "name": doc.get("name") or row["id"],
        "deployments_count": len(deployments),
        "production_deployment_id": prod["id"] if prod else None,
        "development_deployment_id": dev["id"] if dev else None,
        "instance_type_name": (instance_type_name(prod["doc"]) if prod else None) or "",
        "team_name": doc.get("team_name") or "default",
    }


def _models(request: Request, key: ApiKey, only: str | None = None) -> list[dict]:
    inv = request.app.state.inventory
    models = [inv.get(key.ws, "model", only)] if only else inv.list(key.ws, "model")
    deployments = inv.list(key.ws, "deployment")
    return [model_view(m, [d for d in deployments if d["parent"] == m["id"]]) for m in models]


def _deployments(request: Request, key: ApiKey, model_id: str, only: str | None = None) -> list[dict]:
    inv = request.app.state.inventory
    inv.get(key.ws, "model", model_id)
    rows = [inv.get(key.ws, "deployment", only, parent=model_id)] if only else inv.list(key.ws, "deployment", model_id)
    active = inv.active_replicas(key.ws, "deployment", [r["id"] for r in rows])
    return [deployment_view(r, active.get(r["id"], 0)) for r in rows]


@router.get("/v1/models")
def list_models(request: Request, key: ApiKey = Depends(auth.management)) -> dict:
    return {"models": _models(request, key)}


@router.get("/v1/models/{model_id}")
def get_model(model_id: str, request: Request, key: ApiKey = Depends(auth.management)) -> dict:
    return _models(request, key, only=valid_id(model_id, "model_id"))[0]


@router.put("/v1/models/{model_id}")
def put_model(model_id: str, body: ModelIn, request: Request, key: ApiKey = Depends(auth.management)) -> dict:
    valid_id(model_id, "model_id")
    request.app.state.inventory.put(key.ws, "model", model_id, "", body.model_dump(exclude_none=True))
    return _models(request, key, only=model_id)[0]


@router.get("/v1/models/{model_id}/deployments")
def list_deployments(model_id: str, request: Request, key: ApiKey = Depends(auth.management)) -> dict:
    return {"deployments": _deployments(request, key, valid_id(model_id, "model_id"))}


@router.get("/v1/models/{model_id}/deployments/{deployment_id}")
def get_deployment(model_id: str, deployment_id: str, request: Request, key: ApiKey = Depends(auth.management)) -> dict:
    valid_id(model_id, "model_id")
    return _deployments(request, key, model_id, only=valid_id(deployment_id, "deployment_id"))[0]


@router.put("/v1/models/{model_id}/deployments/{deployment_id}")
def put_deployment(
    model_id: str, deployment_id: str, body: DeploymentIn, request: Request, key: ApiKey = Depends(auth.management)
) -> dict:
    valid_id(model_id, "model_id")
    valid_id(deployment_id, "deployment_id")
    inv = request.app.state.inventory
    inv.ensure(key.ws, "model", model_id, "", {})
    inv.put(key.ws, "deployment", deployment_id, model_id, body.model_dump(mode="json"))
    return _deployments(request, key, model_id, only=deployment_id)[0]
