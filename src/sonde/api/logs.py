"""Log endpoints: every logs route is one row of ``ROUTES``.

A row names the path, how its path parameters become a :class:`~sonde.query.logs.Target`
(checking that the entity is in the caller's workspace: 404 otherwise), which request
shape it takes (``LogFilters`` or the training/loops ``LogWindow``), and whether it also
answers the older POST with a JSON body. Every row also serves ``PATH/stream``, the live
tail (:mod:`sonde.api.stream`) with the matching stream shape. The resolver of an
entity's logs lives with the router that owns the entity; this table is the only place a
logs route is registered.
"""

# No ``from __future__ import annotations``: the endpoints are built in a loop and
# FastAPI must see the real request-model class in their signatures, not a string.

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Header, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse

from .._exceptions import BadRequest
from ..query.logs import MAX_TEXT, STREAM_SHAPES, LogFilters, LogQuery, LogWindow, Target, query_logs
from ..store.accounts import ApiKey
from ..store.inventory import Inventory
from . import auth, chains, loops, stream, training
from .bodies import json_body
from .ids import valid_id

router = APIRouter(tags=["logs"])

Resolver = Callable[[Inventory, str, Mapping[str, str]], Target]


@dataclass(frozen=True)
class LogRoute:
    path: str
    resolve: Resolver
    filters: type[LogWindow] = LogFilters
    post: bool = False  # also serve the older POST form with a JSON body


def deployment_target(inv: Inventory, ws: str, p: Mapping[str, str]) -> Target:
    model = valid_id(p["model_id"], "model_id")
    deployment = valid_id(p["deployment_id"], "deployment_id")
    inv.get(ws, "model", model)
    inv.get(ws, "deployment", deployment, parent=model)
    return Target("deployment", entity=deployment)


def _environment(inv: Inventory, ws: str, p: Mapping[str, str]) -> Target:
    model = valid_id(p["model_id"], "model_id")
    env = p["env_name"]
    if len(env) > MAX_TEXT:
        raise BadRequest(f"env_name is at most {MAX_TEXT} characters", field="env_name")
    inv.get(ws, "model", model)
    # Environments are not inventory records: an environment is whatever name the
    # model's deployments sent as sonde.environment, so an unknown one has no logs.
    return Target("deployment", parent=model, environment=env)


ROUTES: tuple[LogRoute, ...] = (
    LogRoute("/v1/models/{model_id}/deployments/{deployment_id}/logs", deployment_target, post=True),
    LogRoute("/v1/models/{model_id}/environments/{env_name}/logs", _environment),
    LogRoute("/v1/chains/{chain_id}/deployments/{chain_deployment_id}/chainlets/{chainlet_id}/logs",
             chains.chainlet_logs_target),
    LogRoute("/v1/loops/deployments/{deployment_id}/logs", loops.logs_target, filters=LogWindow),
    LogRoute("/v1/training_projects/{training_project_id}/jobs/{training_job_id}/logs",
             training.job_logs_target, post=True),
)


def _answer(request: Request, key: ApiKey, route: LogRoute, filters: LogWindow) -> JSONResponse:
    q = LogQuery.resolve(filters)
    target = route.resolve(request.app.state.inventory, key.ws, request.path_params)
    return JSONResponse({"logs": query_logs(request.app.state.store, key.ws, target, q)})


def _stream(request: Request, key: ApiKey, route: LogRoute, filters, last_event_id: str | None) -> StreamingResponse:
    q = LogQuery.for_stream(filters, limit=stream.PAGE)
    target = route.resolve(request.app.state.inventory, key.ws, request.path_params)
    return request.app.state.streams.open(request, key, target, q, last_event_id)


_STREAM_DOC = {
    "summary": "Live tail of these logs (Server-Sent Events)",
    "description": "One event per line in arrival order: `id:` a cursor, `data:` the LogV1 JSON. Send the last id"
                   " as `Last-Event-ID` to resume with no gap and no duplicate. `start_epoch_millis`: backlog from"
                   " then; absent, only new lines. Heartbeat comments when quiet (docs/logs.md#live-tail).",
    "responses": {200: {"description": "text/event-stream of LogV1 lines",
                        "content": {"text/event-stream": {"schema": {"type": "string"}}}},
                  429: {"description": "the key has stream_limit_per_key streams open"}},
}


def _serve(route: LogRoute) -> None:
    model = route.filters
    name = route.path.strip("/").replace("/", "_").replace("{", "").replace("}", "")
    shape = STREAM_SHAPES[model]

    def stream_logs(
        request: Request, filters: Annotated[shape, Query()], key: ApiKey = Depends(auth.management),
        last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
    ) -> StreamingResponse:
        return _stream(request, key, route, filters, last_event_id)

    router.add_api_route(route.path + "/stream", stream_logs, methods=["GET"], name=f"stream_{name}",
                         response_class=StreamingResponse, **_STREAM_DOC)

    def get_logs(
        request: Request, filters: Annotated[model, Query()], key: ApiKey = Depends(auth.management)
    ) -> JSONResponse:
        return _answer(request, key, route, filters)

    router.add_api_route(route.path, get_logs, methods=["GET"], name=f"get_{name}")
    if route.post:

        def post_logs(
            request: Request, key: ApiKey = Depends(auth.management), body: Annotated[Any, Body()] = None
        ) -> JSONResponse:
            return _answer(request, key, route, json_body(model, body))

        router.add_api_route(route.path, post_logs, methods=["POST"], name=f"post_{name}")


for _route in ROUTES:
    _serve(_route)
