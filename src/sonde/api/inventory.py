"""Models and deployments: inventory reads (the vendor's ``ModelV1``, ``DeploymentV1``)
and upserts.

A PUT body may be the whole read shape (``api/bodies.py``): a model's ``id``,
``created_at``, ``deployments_count``, ``production_deployment_id``,
``development_deployment_id`` and ``instance_type_name`` (all derived from its
deployments), and a deployment's ``id``, ``created_at``, ``model_id`` (the path's) and
``active_replica_count`` (``query/presence.py``) are accepted and ignored; every other
field is stored and read back as written.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import Field

from ..query.presence import active_replicas
from ..query.window import iso
from ..store.accounts import ApiKey
from . import auth
from .bodies import AutoscalingSettingsIn, DeploymentStatus, NamedIn, ReadOnly, ResourceIn, echoed
from .ids import valid_id

router = APIRouter(tags=["inventory"])


class ModelIn(NamedIn):
    deployments_count: ReadOnly = None
    production_deployment_id: ReadOnly = None
    development_deployment_id: ReadOnly = None
    instance_type_name: ReadOnly = None


class DeploymentIn(ResourceIn):
    model_id: ReadOnly = None
    active_replica_count: ReadOnly = None
    name: str | None = Field(default=None, min_length=1, max_length=256)
    is_production: bool = False
    is_development: bool = False
    status: DeploymentStatus = "ACTIVE"
    autoscaling_settings: AutoscalingSettingsIn | None = None
    instance_type_name: str | None = Field(default=None, max_length=256)
    environment: str | None = Field(default=None, max_length=256)
    labels: dict[str, Any] | None = None


def observed_type_name(doc: dict) -> str | None:
    return (doc.get("observed_instance_type") or {}).get("name")


def instance_type_name(doc: dict) -> str | None:
    """The PUT's ``instance_type_name``, else the one the agent observed (docs/agent.md)."""
    return doc.get("instance_type_name") or observed_type_name(doc)


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
    active = active_replicas(request.app.state.store, key.ws, "deployment", [r["id"] for r in rows])
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
    doc = body.model_dump(mode="json")
    old = (inv.find(key.ws, "deployment", deployment_id) or {}).get("doc", {})
    doc["instance_type_name"] = echoed(doc["instance_type_name"], old.get("instance_type_name"),
                                       observed_type_name(old))
    inv.put(key.ws, "deployment", deployment_id, model_id, doc)
    return _deployments(request, key, model_id, only=deployment_id)[0]
