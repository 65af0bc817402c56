"""Chains: inventory (PUT, GET) for chains and chain deployments with their chainlets, and
chainlet logs. Shapes are the vendor's (``ChainV1``, ``ChainDeploymentV1``, ``ChainletV1``).

A chain deployment's chainlets are the ones its inventory record lists (written by PUT,
or the first chainlet telemetry named, see ``ingest/pipeline.Registrar``) followed by any
other chainlet that sent telemetry under the deployment within the last 7 days (the
longest window the query endpoints take). ``active_replica_count`` counts the replicas
that sent a metric point within the last 60 s. docs/chains-loops.md has the details.
"""

from __future__ import annotations

from collections.abc import Mapping

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from .._exceptions import BadRequest, NotFound
from ..query.logs import LogFilters, Target
from ..store.accounts import ApiKey
from ..store.inventory import Inventory
from . import auth, logs
from .ids import valid_id
from .inventory import AutoscalingSettingsIn, DeploymentStatus, NamedIn, iso

router = APIRouter(tags=["chains"])

#: chainlets that sent telemetry this recently appear in their deployment's list
SEEN_WINDOW_S = 7 * 86400
ACTIVE_WINDOW_S = 60


class ChainIn(NamedIn):
    pass


class ChainletIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(min_length=1, max_length=64)
    name: str | None = Field(default=None, min_length=1, max_length=256)
    autoscaling_settings: AutoscalingSettingsIn | None = None
    instance_type_name: str | None = Field(default=None, max_length=256)
    status: DeploymentStatus = "ACTIVE"


class ChainDeploymentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
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


def chainlet_view(c: dict, active: int, observed: dict | None = None) -> dict:
    return {
        "id": c["id"],
        "name": c.get("name") or c["id"],
        "autoscaling_settings": c.get("autoscaling_settings"),
        "instance_type_name": c.get("instance_type_name") or ((observed or {}).get(c["id"]) or {}).get("name") or "",
        "active_replica_count": active,
        "status": c.get("status") or "ACTIVE",
    }


def _telemetry(request: Request, ws: str, deployments: list[str]) -> dict[str, dict[str, int]]:
    """Per chain deployment: chainlet -> replicas active now, for every chainlet that sent
    telemetry under it within SEEN_WINDOW_S (metric points or logs)."""
    if not deployments:
        return {}
    store = request.app.state.store
    rows = store.ex.query(
        "SELECT parent, entity, uniqExactIf(replica, replica != '' AND ts >= now64(9) - toIntervalSecond({a:UInt32})"
        " AND src = 'm') AS active FROM ("
        f" SELECT parent, entity, replica, ts, 'm' AS src FROM {store.t('metric_points')}"
        "  WHERE ws = {ws:String} AND scope = 'chainlet' AND parent IN {cds:Array(String)}"
        "  AND ts >= now64(9) - toIntervalSecond({w:UInt32})"
        " UNION ALL"
        f" SELECT parent, entity, replica, ts, 'l' AS src FROM {store.t('logs')}"
        "  WHERE ws = {ws:String} AND scope = 'chainlet' AND parent IN {cds:Array(String)}"
        "  AND ts >= now64(9) - toIntervalSecond({w:UInt32})"
        ") GROUP BY parent, entity ORDER BY parent, entity",
        {"ws": ws, "cds": deployments, "w": SEEN_WINDOW_S, "a": ACTIVE_WINDOW_S},
    )
    out: dict[str, dict[str, int]] = {}
    for r in rows:
        out.setdefault(r["parent"], {})[r["entity"]] = int(r["active"])
    return out


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
    seen = _telemetry(request, key.ws, [r["id"] for r in rows])
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
    inv.put(key.ws, "chain_deployment", chain_deployment_id, chain_id, body.model_dump(mode="json"))
    return _deployments(request, key, chain_id, only=chain_deployment_id)[0]


def _chainlet(inv: Inventory, ws: str, p: Mapping[str, str]) -> Target:
    chain = valid_id(p["chain_id"], "chain_id")
    deployment = valid_id(p["chain_deployment_id"], "chain_deployment_id")
    chainlet = valid_id(p["chainlet_id"], "chainlet_id")
    inv.get(ws, "chain", chain)
    row = inv.get(ws, "chain_deployment", deployment, parent=chain)
    listed = {c["id"] for c in row["doc"].get("chainlets") or []}
    if chainlet not in listed and not _seen(inv, ws, deployment, chainlet):
        raise NotFound(f"chainlet {chainlet!r} not found", field="chainlet_id")
    return Target("chainlet", entity=chainlet, parent=deployment)


def _seen(inv: Inventory, ws: str, deployment: str, chainlet: str) -> bool:
    """Whether ``chainlet`` sent any telemetry under ``deployment`` within SEEN_WINDOW_S."""
    store = inv.store
    rows = store.ex.query(
        "SELECT (SELECT count() FROM (SELECT 1"
        f" FROM {store.t('metric_points')} WHERE ws = {{ws:String}} AND scope = 'chainlet'"
        " AND entity = {cl:String} AND parent = {cd:String} AND ts >= now64(9) - toIntervalSecond({w:UInt32})"
        " LIMIT 1)) + (SELECT count() FROM (SELECT 1"
        f" FROM {store.t('logs')} WHERE ws = {{ws:String}} AND scope = 'chainlet'"
        " AND entity = {cl:String} AND parent = {cd:String} AND ts >= now64(9) - toIntervalSecond({w:UInt32})"
        " LIMIT 1)) AS n",
        {"ws": ws, "cl": chainlet, "cd": deployment, "w": SEEN_WINDOW_S},
    )
    return bool(rows and rows[0]["n"])


logs.install(logs.LogRoute(
    "/v1/chains/{chain_id}/deployments/{chain_deployment_id}/chainlets/{chainlet_id}/logs", _chainlet,
    filters=LogFilters,
))
