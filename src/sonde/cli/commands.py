"""Client commands: each one HTTP call to a running server, printed the shared way."""

from __future__ import annotations

import click

from .options import Since, client_options

SINCE_HELP = "Window start: a time ago (30m, 1h, 7d), an ISO time (UTC unless it has an offset) or epoch ms."
UNTIL_HELP = "Window end, in the same forms as --since.  [default: now]"


@click.group()
def workspaces() -> None:
    """Workspaces (admin key)."""


@workspaces.command("create")
@click.argument("name")
@client_options("admin_key")
def workspace_create(api, name):
    """Create a workspace."""
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
    """Create a key; it is shown once."""
    k = api.call("POST", f"/v1/admin/workspaces/{workspace_id}/api_keys", json={"name": name, "scope": scope})
    api.emit(k, [k])


@keys.command("revoke")
@click.argument("key_id")
@client_options("admin_key")
def key_revoke(api, key_id):
    """Revoke a key by id."""
    api.call("DELETE", f"/v1/admin/api_keys/{key_id}")
    api.emit({"revoked": key_id}, [{"revoked": key_id}])


@click.command()
@client_options()
def models(api):
    """List models."""
    data = api.call("GET", "/v1/models")
    api.emit(data, data["models"], ["id", "name", "deployments_count", "production_deployment_id", "created_at"])


@click.command()
@click.argument("model_id")
@client_options()
def deployments(api, model_id):
    """List a model's deployments."""
    data = api.call("GET", f"/v1/models/{model_id}/deployments")
    api.emit(data, data["deployments"], ["id", "name", "status", "active_replica_count", "environment", "created_at"])


@click.command()
@click.argument("model_id")
@click.argument("deployment_id")
@click.option("--mode", type=click.Choice(["CURRENT", "SUMMARY", "SERIES"]), default="CURRENT", show_default=True)
@click.option("--metric", "names", multiple=True, help="Metric name; repeat for several.")
@click.option("--since", "--start", "start_ms", type=Since(), help=SINCE_HELP)
@click.option("--until", "--end", "end_ms", type=Since(), help=UNTIL_HELP)
@client_options()
def metrics(api, model_id, deployment_id, mode, names, start_ms, end_ms):
    """Deployment metrics, one row per value set and series.

    Example: sonde metrics MODEL DEPLOYMENT --mode SUMMARY --since 6h --metric baseten_inference_requests_total"""
    if mode == "CURRENT" and (start_ms is not None or end_ms is not None):
        mode = "SUMMARY"  # a window was asked for: CURRENT is always the last minute
    params = {"mode": mode, "metrics": list(names), "start_epoch_millis": start_ms, "end_epoch_millis": end_ms}
    data = api.call("GET", f"/v1/models/{model_id}/deployments/{deployment_id}/metrics",
                    params={k: v for k, v in params.items() if v not in (None, [])})
    rows = []
    for vs in data["metric_values"]:
        for desc, values in zip(data["metric_descriptors"], vs["values"]):
            for labels, value in zip(desc["label_sets"], values):
                label = ",".join(f"{k}={v}" for k, v in labels.items())
                rows.append({"start_epoch_millis": vs["start_epoch_millis"], "metric": desc["name"],
                             "labels": label, "value": value})
    api.emit(data, rows, ["start_epoch_millis", "metric", "labels", "value"])


@click.command()
@click.argument("model_id")
@click.argument("deployment_id")
@click.option("--since", "--start", "start_epoch_millis", type=Since(), help=SINCE_HELP)
@click.option("--until", "--end", "end_epoch_millis", type=Since(), help=UNTIL_HELP)
@click.option("--direction", type=click.Choice(["asc", "desc"]))
@click.option("-n", "--limit", type=click.IntRange(1, 1000), help="How many lines (at most 1000).")
@click.option("--level", "--min-level", "min_level", type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"]),
              help="This level and above.")
@click.option("--replica")
@click.option("--request-id")
@click.option("--component")
@click.option("--grep", "--search", "search_pattern", help="RE2 pattern the line must match.")
@click.option("--include", "includes", multiple=True, help="Substring that must appear; repeatable.")
@click.option("--exclude", "excludes", multiple=True, help="Substring that must not appear; repeatable.")
@click.option("--follow", "-f", is_flag=True,
              help="Print the newest --limit lines (default 20), then new lines as they arrive, until interrupted.")
@click.option("--interval", type=float, default=2.0, show_default=True, help="Seconds between polls with --follow.")
@click.option("--polls", type=int, hidden=True, help="Stop --follow after this many polls (tests).")
@client_options()
def logs(api, model_id, deployment_id, follow, interval, polls, **filters):
    """Deployment logs.

    Example: sonde logs MODEL DEPLOYMENT --since 10m --level WARNING --grep 'CUDA|NCCL' -n 50"""
    if follow and filters.get("end_epoch_millis") is not None:
        raise click.UsageError("--follow reads new lines as they come: it takes no --until")
    params = {k: (list(v) if isinstance(v, tuple) else v) for k, v in filters.items() if v not in (None, ())}
    path = f"/v1/models/{model_id}/deployments/{deployment_id}/logs"
    if follow:
        from .follow import follow as tail

        tail(api, path, params, backlog=params.get("limit") or 20, interval=interval, polls=polls)
        return
    data = api.call("GET", path, params=params)
    api.emit(data, data["logs"], ["timestamp", "level", "replica", "request_id", "message"])


ALL = [workspaces, keys, models, deployments, metrics, logs]
