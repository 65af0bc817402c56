"""``sonde alerts``: alert rules, active alerts and receivers of a running server
(docs/alerts.md). Rules are written as files (YAML or JSON) so they can live in a
repository beside the code they watch and be reviewed like it."""

from __future__ import annotations

import json
import pathlib
from urllib.parse import quote

import click

from ..alerts.state import PLACEMENT

from .options import client_options


@click.group()
def alerts() -> None:
    """Alert rules, active alerts and receivers."""


def read_rules(path: str) -> list[dict]:
    """The rules a file holds: one rule (an object), a list of rules, or ``{"rules": [...]}``.
    JSON is YAML, so one loader reads both; the error names the file and what is wrong."""
    import yaml

    try:
        text = pathlib.Path(path).read_text()
    except OSError as exc:
        raise click.BadParameter(f"cannot read {path}: {exc.strerror}", param_hint="FILE") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise click.BadParameter(f"{path} is neither YAML nor JSON: {exc}", param_hint="FILE") from None
    if isinstance(data, dict) and isinstance(data.get("rules"), list):
        data = data["rules"]
    rules = data if isinstance(data, list) else [data]
    for i, rule in enumerate(rules):
        if not isinstance(rule, dict):
            raise click.BadParameter(f"{path}: rule {i + 1} is not an object", param_hint="FILE")
    return rules


def _condition_text(c: dict) -> str:
    kind = c.get("type")
    if kind == "metric":
        labels = ",".join(f"{k}={v}" for k, v in (c.get("labels") or {}).items())
        return f"{c['metric']}{{{labels}}} over {c['window_seconds']}s {c['op']} {c['threshold']:g}"
    if kind == "logs":
        return f"log lines {json.dumps(c.get('filters') or {})} in {c['window_seconds']}s {c['op']} {c['threshold']:g}"
    if kind == "absent":
        return f"no {c.get('metric') or 'metric point'} for {c['window_seconds']}s"
    return json.dumps(c)


def _rule_cells(r: dict) -> dict:
    where = (f"{r['model_id']}/{r['deployment_id']}" if r.get("deployment_id")
             else f"job {r.get('training_project_id')}/{r.get('training_job_id')}")
    return {"id": r["id"], "name": r["name"], "target": where,
            "severity": r["severity"], "for": f"{r['for_seconds']:g}s", "condition": _condition_text(r["condition"])}


def _when(value: str | None) -> str:
    """An alert time as the API gives it (ISO 8601, UTC), to the second."""
    return "-" if value is None else value.replace("T", " ")[:19] + "Z"


def _alert_cells(a: dict) -> dict:
    labels = ",".join(f"{k}={v}" for k, v in sorted(a["labels"].items()) if k not in PLACEMENT)
    value = a.get("value")
    return {"name": a["name"], "state": a["state"], "labels": labels or "-",
            "value": "-" if value is None else f"{value:g}", "active since": _when(a.get("active_at")),
            "firing since": _when(a.get("fired_at"))}


@alerts.command("rules")
@client_options()
def list_rules(api) -> None:
    """The workspace's alert rules.

    \b
    Example:
      sonde alerts rules -o json
    """
    data = api.call("GET", "/v1/alert_rules")
    api.emit(data, data["rules"], ["id", "name", "target", "severity", "for", "condition"], display=_rule_cells)


@alerts.command("active")
@client_options()
def active(api) -> None:
    """The workspace's pending and firing alerts.

    \b
    Example:
      sonde alerts active -o json
    """
    data = api.call("GET", "/v1/alerts")
    api.emit(data, data["alerts"], ["name", "state", "labels", "value", "active since", "firing since"],
             display=_alert_cells)


@alerts.command("create")
@click.argument("file", type=click.Path(dir_okay=False))
@client_options()
def create(api, file) -> None:
    """Create the rules FILE holds (YAML or JSON: one rule, a list, or {rules: [...]}).

    Every rule is sent as it is; the server checks each one (docs/alerts.md). A rule
    it refuses stops the command, naming the rule and the field, after the rules
    before it were created.

    \b
    Example:
      sonde alerts create rules.yaml
    """
    made = []
    for i, rule in enumerate(read_rules(file)):
        try:
            made.append(api.call("POST", "/v1/alert_rules", json=rule))
        except click.ClickException as exc:
            name = rule.get("name") or f"rule {i + 1}"
            raise click.ClickException(f"{name!r}: {exc.message}"
                                       + (f" ({len(made)} created before it)" if made else "")) from None
    api.emit({"rules": made}, made, ["id", "name", "target", "severity", "for", "condition"], display=_rule_cells)


@alerts.command("delete")
@click.argument("rule_id")
@client_options()
def delete(api, rule_id) -> None:
    """Delete one alert rule; its active alerts resolve.

    \b
    Example:
      sonde alerts delete RULE_ID
    """
    api.call("DELETE", f"/v1/alert_rules/{quote(rule_id, safe='')}")
    click.echo(f"deleted {rule_id}")


@alerts.command("receivers")
@client_options()
def receivers(api) -> None:
    """The workspace's receivers: every one gets every alert.

    \b
    Example:
      sonde alerts receivers
    """
    data = api.call("GET", "/v1/alert_receivers")
    api.emit(data, data["receivers"], ["name", "type", "url"])


@alerts.command("receiver")
@click.argument("name")
@click.option("--type", "kind", type=click.Choice(["alertmanager", "webhook"]), required=True,
              help="alertmanager: Sonde posts to its /api/v2/alerts; webhook: Alertmanager's webhook payload.")
@click.option("--url", required=True, help="Where Sonde posts (an Alertmanager's base URL, or the webhook's).")
@client_options()
def receiver(api, name, kind, url) -> None:
    """Create or replace the receiver NAME.

    \b
    Example:
      sonde alerts receiver am --type alertmanager --url http://127.0.0.1:9093
    """
    data = api.call("PUT", f"/v1/alert_receivers/{quote(name, safe='')}", json={"type": kind, "url": url})
    api.emit(data, [data], ["name", "type", "url"])
