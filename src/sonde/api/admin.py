"""Admin API (admin scope): workspaces and API keys."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, Request, Response
from pydantic import Field

from . import auth
from .bodies import BodyIn

router = APIRouter(prefix="/v1/admin", tags=["admin"], dependencies=[Depends(auth.admin)])


class WorkspaceIn(BodyIn):
    name: str = Field(min_length=1, max_length=128)


class ApiKeyIn(BodyIn):
    name: str = Field(min_length=1, max_length=128)
    scope: Literal["management", "ingest"]


@router.post("/workspaces", status_code=201)
def create_workspace(body: WorkspaceIn, request: Request) -> dict:
    return request.app.state.accounts.create_workspace(body.name)


@router.post("/workspaces/{workspace_id}/api_keys", status_code=201)
def create_api_key(workspace_id: str, body: ApiKeyIn, request: Request) -> dict:
    accounts = request.app.state.accounts
    accounts.workspace(workspace_id)
    return accounts.create_key(workspace_id, body.name, body.scope)


@router.delete("/api_keys/{key_id}", status_code=204)
def revoke_api_key(key_id: str, request: Request) -> Response:
    request.app.state.accounts.revoke_key(key_id)
    return Response(status_code=204)
