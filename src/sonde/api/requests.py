"""Requests and their traces: ``GET .../requests`` and ``GET .../requests/{request_id}``
for a deployment and for a chainlet (docs/api.md#requests).

The entity is resolved as for its logs (404 for one the workspace does not own); the
query layer (``sonde.query.requests``) finds the requests, spans and log lines.
"""

# No ``from __future__ import annotations``: the endpoints are built in a loop and
# FastAPI must see the real request-model class in their signatures.

import time
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from .._exceptions import BadRequest
from ..query.logs import MAX_TEXT, EpochMs
from ..query.requests import RequestQuery, get_request, list_requests
from ..store.accounts import ApiKey
from . import auth, chains
from .logs import Resolver, deployment_target

router = APIRouter(tags=["requests"])

class RequestFilters(BaseModel):
    model_config = ConfigDict(extra="ignore")
    start_epoch_millis: EpochMs | None = None
    end_epoch_millis: EpochMs | None = None
    order: Literal["slowest", "newest"] = "slowest"
    limit: Annotated[int, Field(ge=1, le=100)] = 20
    status: Literal["2xx", "3xx", "4xx", "5xx"] | None = None
    min_duration_ms: Annotated[float, Field(ge=0, le=7 * 86400_000)] | None = None
    replica: Annotated[str, Field(max_length=MAX_TEXT)] | None = None


ENTITIES: tuple[tuple[str, Resolver], ...] = (
    ("/v1/models/{model_id}/deployments/{deployment_id}", deployment_target),
    ("/v1/chains/{chain_id}/deployments/{chain_deployment_id}/chainlets/{chainlet_id}", chains.chainlet_logs_target),
)


def _serve(base: str, resolve: Resolver) -> None:
    name = base.strip("/").replace("/", "_").replace("{", "").replace("}", "")

    def requests(request: Request, filters: Annotated[RequestFilters, Query()],
                 key: ApiKey = Depends(auth.management)) -> dict:
        q = RequestQuery.resolve(
            filters.start_epoch_millis, filters.end_epoch_millis, time.time_ns() // 1_000_000,
            order=filters.order, limit=filters.limit,
            status_class=int(filters.status[0]) if filters.status else None,
            min_duration_ns=int((filters.min_duration_ms or 0) * 1_000_000), replica=filters.replica)
        target = resolve(request.app.state.inventory, key.ws, request.path_params)
        return {"requests": list_requests(request.app.state.store, key.ws, target.scope, target.entity, q)}

    def one_request(request_id: str, request: Request, key: ApiKey = Depends(auth.management)) -> dict:
        if len(request_id) > MAX_TEXT:
            raise BadRequest(f"request_id is at most {MAX_TEXT} characters", field="request_id")
        target = resolve(request.app.state.inventory, key.ws, request.path_params)
        return get_request(request.app.state.store, key.ws, target.scope, target.entity, request_id)

    router.add_api_route(f"{base}/requests", requests, methods=["GET"], name=f"get_{name}_requests")
    router.add_api_route(f"{base}/requests/{{request_id}}", one_request, methods=["GET"], name=f"get_{name}_request")


for _base, _resolve in ENTITIES:
    _serve(_base, _resolve)
