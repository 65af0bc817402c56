"""``sonde requests`` and ``sonde request``: a deployment's requests, and one request's
trace and log lines (docs/api.md#requests)."""

from __future__ import annotations

import sys
from urllib.parse import quote

import click

from .follow import utc_text
from .options import Duration, Since, client_options
from .waterfall import duration_text, render

def _base(model_id: str, deployment_id: str) -> str:
    return f"/v1/models/{model_id}/deployments/{deployment_id}/requests"


def _cells(r: dict) -> dict:
    return {"start": utc_text(int(r["timestamp"]), 3), "duration": duration_text(r["duration_seconds"]),
            "status": r.get("status_code") or "-", "route": r["route"], "replica": r.get("replica") or "-",
            "request id": r["request_id"], "logs": r["log_count"]}


@click.command()
@click.argument("model_id")
@click.argument("deployment_id")
@click.option("--since", "start_epoch_millis", type=Since(),
              help="Window start: a time ago (30m, 1h, 7d) or an ISO time (UTC unless it has an offset); "
                   "the window ends now.  [default: 1h]")
@click.option("--status", type=click.Choice(["2xx", "3xx", "4xx", "5xx"]), help="Only this status class.")
@click.option("--min-duration", "min_duration", type=Duration(), help="Only requests at least this long: 500ms, 2s.")
@click.option("--replica", help="Only this replica's requests.")
@click.option("--order", type=click.Choice(["slowest", "newest"]), default="slowest", show_default=True)
@click.option("-n", "--limit", type=click.IntRange(1, 100), default=20, show_default=True,
              help="How many requests.")
@client_options()
def requests(api, model_id, deployment_id, start_epoch_millis, status, min_duration, replica, order, limit):
    """A deployment's requests (its server spans), slowest or newest first.

    \b
    Example:
      sonde requests MODEL DEPLOYMENT --since 1h --order slowest -n 10
    """
    params = {"start_epoch_millis": start_epoch_millis, "status": status, "replica": replica, "order": order,
              "limit": limit, "min_duration_ms": None if min_duration is None else min_duration * 1000}
    data = api.call("GET", _base(model_id, deployment_id), params={k: v for k, v in params.items() if v is not None})
    api.emit(data, data["requests"], ["start", "duration", "status", "route", "replica", "request id", "logs"],
             display=_cells)


@click.command()
@click.argument("model_id")
@click.argument("deployment_id")
@click.argument("request_id")
@client_options()
def request(api, model_id, deployment_id, request_id):
    """One request: its trace's spans as a waterfall (nested by parent, bars on the
    request's time axis), then its log lines.

    \b
    Example:
      sonde request MODEL DEPLOYMENT REQUEST_ID
    """
    data = api.call("GET", f"{_base(model_id, deployment_id)}/{quote(request_id, safe='')}")
    if api.fmt != "table":
        api.emit(data, [data])
        return
    from rich.console import Console

    console = Console(file=sys.stdout, width=200, highlight=False, soft_wrap=True)
    for line in render(data, deployment_id):
        console.print(line)


ALL = [requests, request]
