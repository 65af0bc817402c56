"""Client commands: each one HTTP call to a running server, printed the shared way."""

from __future__ import annotations

import click

from .logs import logs
from .metrics import metrics
from .options import client_options


@click.group()
def workspaces() -> None:
    """Workspaces (admin key)."""


@workspaces.command("create")
@click.argument("name")
@client_options("admin_key")
def workspace_create(api, name):
    """Create a workspace.

    \b
    Example:
      sonde workspaces create team-b
    """
    ws = api.call("POST", "/v1/admin/workspaces", json={"name": name})
    api.emit(ws, [ws])


@click.group()
def keys() -> None:
    """API keys (admin key)."""


@keys.command("create")
@click.option("--workspace", "workspace_id", required=True, help="Workspace id.")
@click.option("--name", required=True)
@click.option("--scope", type=click.Choice(["management", "ingest"]), required=True)
@client_options("admin_key")
def key_create(api, workspace_id, name, scope):
    """Create a key; it is shown once.

    \b
    Example:
      sonde keys create --workspace WS --name ci --scope management
    """
    k = api.call("POST", f"/v1/admin/workspaces/{workspace_id}/api_keys", json={"name": name, "scope": scope})
    api.emit(k, [k])


@keys.command("revoke")
@click.argument("key_id")
@client_options("admin_key")
def key_revoke(api, key_id):
    """Revoke a key by id.

    \b
    Example:
      sonde keys revoke KEY_ID
    """
    api.call("DELETE", f"/v1/admin/api_keys/{key_id}")
    api.emit({"revoked": key_id}, [{"revoked": key_id}])


@click.command()
@client_options()
def models(api):
    """List models.

    \b
    Example:
      sonde models --profile prod
    """
    data = api.call("GET", "/v1/models")
    api.emit(data, data["models"], ["id", "name", "deployments_count", "production_deployment_id", "created_at"])


@click.command()
@click.argument("model_id")
@client_options()
def deployments(api, model_id):
    """List a model's deployments.

    \b
    Example:
      sonde deployments MODEL -o json
    """
    data = api.call("GET", f"/v1/models/{model_id}/deployments")
    api.emit(data, data["deployments"], ["id", "name", "status", "active_replica_count", "environment", "created_at"])


ALL = [workspaces, keys, models, deployments, metrics, logs]
