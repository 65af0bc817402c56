"""``sonde requests`` and ``sonde request``: a deployment's requests, and one request's
trace and log lines (docs/api.md#requests)."""

from __future__ import annotations

import re
import sys
import time
from datetime import datetime, timezone
from urllib.parse import quote

import click

from .follow import utc_text
from .options import client_options
from .waterfall import duration_text, render

_UNIT_S = {"ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|s|m|h|d)")


def parse_duration(text: str) -> float | None:
    """Seconds of ``500ms``, ``2s``, ``1.5s``, ``30m``, ``1h``, ``7d``; None if not one."""
    m = _DURATION.fullmatch(text.strip().lower())
    return float(m[1]) * _UNIT_S[m[2]] if m else None


class Duration(click.ParamType):
    name = "DURATION"

    def convert(self, value, param, ctx):
        seconds = value if isinstance(value, float) else parse_duration(value)
        return seconds if seconds is not None else self.fail(
            f"{value!r} is not a duration such as 500ms, 2s or 1.5s", param, ctx)


class Since(click.ParamType):
    """A time ago (``30m``, ``1h``, ``7d``) or an ISO 8601 time, as epoch milliseconds."""

    name = "SINCE"

    def convert(self, value, param, ctx):
        if isinstance(value, int):
            return value
        seconds = parse_duration(value)
        if seconds is not None:
            return time.time_ns() // 1_000_000 - round(seconds * 1000)
        try:
            when = datetime.fromisoformat(value.strip())
        except ValueError:
            self.fail(f"{value!r} is neither a time ago (30m, 1h, 7d) nor an ISO time", param, ctx)
        if when.tzinfo is None:  # times are shown in UTC, so a bare one is read as UTC too
            when = when.replace(tzinfo=timezone.utc)
        return round(when.timestamp() * 1000)


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
    """A deployment's requests (its server spans), slowest or newest first."""
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
    request's time axis), then its log lines."""
    data = api.call("GET", f"{_base(model_id, deployment_id)}/{quote(request_id, safe='')}")
    if api.fmt != "table":
        api.emit(data, [data])
        return
    from rich.console import Console

    console = Console(file=sys.stdout, width=200, highlight=False, soft_wrap=True)
    for line in render(data, deployment_id):
        console.print(line)


ALL = [requests, request]
