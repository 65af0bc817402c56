"""Chains: inventory (PUT, GET) for chains and chain deployments with their chainlets, and
the resolver of chainlet logs. Shapes are the vendor's (``ChainV1``, ``ChainDeploymentV1``,
``ChainletV1``).

A chain deployment's chainlets are the ones its inventory record lists (written by PUT,
or the first chainlet telemetry named, see ``ingest/pipeline.Registrar``) followed by any
other chainlet seen under the deployment, and ``active_replica_count`` counts its active
replicas; ``query/presence.py`` defines both. docs/chains-loops.md has the details.

A PUT body may be the whole read shape (``api/bodies.py``): a chain's ``id``,
``created_at`` and ``deployments_count``, a chain deployment's ``id``, ``created_at`` and
``chain_id`` (the path's), and a chainlet's ``active_replica_count`` are accepted and
ignored; the other fields are stored. Listing a seen chainlet in a PUT makes it a listed one.
"""

from __future__ import annotations

from collections.abc import Mapping

from fastapi import APIRouter, Depends, Request
from pydantic import Field

from .._exceptions import BadRequest, NotFound
from ..query.logs import Target
from ..query.presence import chainlet_seen, seen_chainlets
from ..query.window import iso
from ..store.accounts import ApiKey
from ..store.inventory import Inventory
from . import auth
from .bodies import AutoscalingSettingsIn, BodyIn, DeploymentStatus, NamedIn, ReadOnly, ResourceIn, echoed
from .ids import valid_id

router = APIRouter(tags=["chains"])


class ChainIn(NamedIn):
    deployments_count: ReadOnly = None


class ChainletIn(BodyIn):
    id: str = Field(min_length=1, max_length=64)
    name: str | None = Field(default=None, min_length=1, max_length=256)
    autoscaling_settings: AutoscalingSettingsIn | None = None
    instance_type_name: str | None = Field(default=None, max_length=256)
    active_replica_count: ReadOnly = None
    status: DeploymentStatus = "ACTIVE"


class ChainDeploymentIn(ResourceIn):
    chain_id: ReadOnly = None
    environment: str | None = Field(default=None, max_length=256)
    status: DeploymentStatus = "ACTIVE"
    chainlets: list[ChainletIn] = Field(default_factory=list, max_length=256)


def chain_view(row: dict, deployments_count: int) -> dict:
    doc = row["doc"]
    return {
        "id": row["id"],
        "created_at": iso(row["created_ms"]),
        "name": doc.get("name") or row["id"],
        "deployments_count": deployments_count,
        "team_name": doc.get("team_name") or "default",
    }


def observed_type_name(observed: dict | None, chainlet: str) -> str:
    """The instance type the agent observed for ``chainlet``; "" (the vendor's field is
    not nullable) before it reported."""
    return ((observed or {}).get(chainlet) or {}).get("name") or ""


def chainlet_view(c: dict, active: int, observed: dict | None = None) -> dict:
    return {
        "id": c["id"],
        "name": c.get("name") or c["id"],
        "autoscaling_settings": c.get("autoscaling_settings"),
        "instance_type_name": c.get("instance_type_name") or observed_type_name(observed, c["id"]),
        "active_replica_count": active,
        "status": c.get("status") or "ACTIVE",
    }


def deployment_view(row: dict, seen: dict[str, int]) -> dict:
    doc = row["doc"]
    listed = list(doc.get("chainlets") or [])
    ids = {c["id"] for c in listed}
    listed += [{"id": c} for c in sorted(seen) if c not in ids]
    return {
        "id": row["id"],
        "created_at": iso(row["created_ms"]),
        "chain_id": row["parent"],
        "environment": doc.get("environment") or None,
        "chainlets": [chainlet_view(c, seen.get(c["id"], 0), doc.get("observed_instance_types")) for c in listed],
        "status": doc.get("status") or "ACTIVE",
    }


def _chains(request: Request, key: ApiKey, only: str | None = None) -> list[dict]:
    inv = request.app.state.inventory
    chains = [inv.get(key.ws, "chain", only)] if only else inv.list(key.ws, "chain")
    counts: dict[str, int] = {}
    for d in inv.list(key.ws, "chain_deployment"):
        counts[d["parent"]] = counts.get(d["parent"], 0) + 1
    return [chain_view(c, counts.get(c["id"], 0)) for c in chains]


def _deployments(request: Request, key: ApiKey, chain_id: str, only: str | None = None) -> list[dict]:
    inv = request.app.state.inventory
    inv.get(key.ws, "chain", chain_id)
    if only:
        rows = [inv.get(key.ws, "chain_deployment", only, parent=chain_id)]
    else:
        # Newest first (ties: the later id first).
        rows = sorted(inv.list(key.ws, "chain_deployment", chain_id),
                      key=lambda r: (r["created_ms"], r["id"]), reverse=True)
    seen = seen_chainlets(request.app.state.store, key.ws, [r["id"] for r in rows])
    return [deployment_view(r, seen.get(r["id"], {})) for r in rows]


@router.get("/v1/chains")
def list_chains(request: Request, key: ApiKey = Depends(auth.management)) -> dict:
    return {"chains": _chains(request, key)}


@router.get("/v1/chains/{chain_id}")
def get_chain(chain_id: str, request: Request, key: ApiKey = Depends(auth.management)) -> dict:
    return _chains(request, key, only=valid_id(chain_id, "chain_id"))[0]


@router.put("/v1/chains/{chain_id}")
def put_chain(chain_id: str, body: ChainIn, request: Request, key: ApiKey = Depends(auth.management)) -> dict:
    valid_id(chain_id, "chain_id")
    request.app.state.inventory.put(key.ws, "chain", chain_id, "", body.model_dump(exclude_none=True))
    return _chains(request, key, only=chain_id)[0]


@router.get("/v1/chains/{chain_id}/deployments")
def list_chain_deployments(chain_id: str, request: Request, key: ApiKey = Depends(auth.management)) -> dict:
    return {"deployments": _deployments(request, key, valid_id(chain_id, "chain_id"))}


@router.get("/v1/chains/{chain_id}/deployments/{chain_deployment_id}")
def get_chain_deployment(
    chain_id: str, chain_deployment_id: str, request: Request, key: ApiKey = Depends(auth.management)
) -> dict:
    valid_id(chain_id, "chain_id")
    return _deployments(request, key, chain_id, only=valid_id(chain_deployment_id, "chain_deployment_id"))[0]


@router.put("/v1/chains/{chain_id}/deployments/{chain_deployment_id}")
def put_chain_deployment(
    chain_id: str, chain_deployment_id: str, body: ChainDeploymentIn, request: Request,
    key: ApiKey = Depends(auth.management),
) -> dict:
    valid_id(chain_id, "chain_id")
    valid_id(chain_deployment_id, "chain_deployment_id")
    seen: set[str] = set()
    for c in body.chainlets:
        valid_id(c.id, "chainlets")
        if c.id in seen:
            raise BadRequest(f"chainlet {c.id!r} is listed twice", field="chainlets")
        seen.add(c.id)
    inv = request.app.state.inventory
    inv.ensure(key.ws, "chain", chain_id, "", {})
    doc = body.model_dump(mode="json")
    old = (inv.find(key.ws, "chain_deployment", chain_deployment_id) or {}).get("doc", {})
    written = {c["id"]: c.get("instance_type_name") for c in old.get("chainlets") or []}
    for c in doc["chainlets"]:
        c["instance_type_name"] = echoed(c["instance_type_name"], written.get(c["id"]),
                                         observed_type_name(old.get("observed_instance_types"), c["id"]))
    inv.put(key.ws, "chain_deployment", chain_deployment_id, chain_id, doc)
    return _deployments(request, key, chain_id, only=chain_deployment_id)[0]


def chainlet_logs_target(inv: Inventory, ws: str, p: Mapping[str, str]) -> Target:
    """Chainlet logs (a row of ``logs.ROUTES``): a listed or seen chainlet, else 404."""
    chain = valid_id(p["chain_id"], "chain_id")
    deployment = valid_id(p["chain_deployment_id"], "chain_deployment_id")
    chainlet = valid_id(p["chainlet_id"], "chainlet_id")
    inv.get(ws, "chain", chain)
    row = inv.get(ws, "chain_deployment", deployment, parent=chain)
    listed = {c["id"] for c in row["doc"].get("chainlets") or []}
    if chainlet not in listed and not chainlet_seen(inv.store, ws, deployment, chainlet):
        raise NotFound(f"chainlet {chainlet!r} not found", field="chainlet_id")
    return Target("chainlet", entity=chainlet, parent=deployment)
