"""Alert rules, active alerts and receivers (docs/alerts.md); management key.

A rule names a deployment of the key's workspace; another workspace's rule, receiver or
deployment is 404, never 403. Evaluation and delivery are ``sonde.alerts``'s; these
routes only read and write the documents it works from.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from .._exceptions import NotFound
from ..alerts.rules import ReceiverIn, RuleIn, check_rule, save_receiver, save_rule
from ..query.window import iso
from ..store.accounts import ApiKey
from . import auth
from .ids import valid_id

router = APIRouter(tags=["alerts"])


def _rule(request: Request, ws: str, rule_id: str) -> dict:
    valid_id(rule_id, "rule_id")
    doc = request.app.state.alert_docs.get(ws, "rule", rule_id)
    if doc is None:
        raise NotFound(f"alert rule {rule_id!r} not found", field="rule_id")
    return doc


@router.post("/v1/alert_rules", status_code=201)
def create_rule(body: RuleIn, request: Request, key: ApiKey = Depends(auth.management)) -> dict:
    check_rule(request.app.state.store, request.app.state.inventory, key.ws, body)
    return save_rule(request.app.state.alert_docs, key.ws, body)


@router.get("/v1/alert_rules")
def list_rules(request: Request, key: ApiKey = Depends(auth.management)) -> dict:
    rules = request.app.state.alert_docs.list(key.ws, "rule")
    return {"rules": sorted(rules, key=lambda r: (r["created_at"], r["id"]))}


@router.get("/v1/alert_rules/{rule_id}")
def get_rule(rule_id: str, request: Request, key: ApiKey = Depends(auth.management)) -> dict:
    return _rule(request, key.ws, rule_id)


@router.put("/v1/alert_rules/{rule_id}")
def put_rule(rule_id: str, body: RuleIn, request: Request, key: ApiKey = Depends(auth.management)) -> dict:
    _rule(request, key.ws, rule_id)
    check_rule(request.app.state.store, request.app.state.inventory, key.ws, body)
    return save_rule(request.app.state.alert_docs, key.ws, body, rule_id)


@router.delete("/v1/alert_rules/{rule_id}")
def delete_rule(rule_id: str, request: Request, key: ApiKey = Depends(auth.management)) -> dict:
    _rule(request, key.ws, rule_id)
    request.app.state.alert_docs.delete(key.ws, "rule", rule_id)
    return {"id": rule_id, "deleted": True}


def alert_view(inst: dict) -> dict:
    return {"rule_id": inst["rule_id"], "name": inst["labels"]["alertname"], "state": inst["state"],
            "labels": inst["labels"], "annotations": inst["annotations"], "value": inst["value"],
            "fingerprint": inst["fingerprint"], "active_at": iso(inst["active_at_ms"]),
            "fired_at": iso(inst["fired_at_ms"]) if inst["fired_at_ms"] is not None else None}


@router.get("/v1/alerts")
def list_alerts(request: Request, key: ApiKey = Depends(auth.management)) -> dict:
    return {"alerts": [alert_view(i) for i in request.app.state.evaluator.active(key.ws)]}


@router.put("/v1/alert_receivers/{name}")
def put_receiver(name: str, body: ReceiverIn, request: Request, key: ApiKey = Depends(auth.management)) -> dict:
    valid_id(name, "name")
    return save_receiver(request.app.state.alert_docs, key.ws, name, body)


@router.get("/v1/alert_receivers")
def list_receivers(request: Request, key: ApiKey = Depends(auth.management)) -> dict:
    return {"receivers": request.app.state.alert_docs.list(key.ws, "receiver")}


@router.delete("/v1/alert_receivers/{name}")
def delete_receiver(name: str, request: Request, key: ApiKey = Depends(auth.management)) -> dict:
    valid_id(name, "name")
    if not request.app.state.alert_docs.delete(key.ws, "receiver", name):
        raise NotFound(f"alert receiver {name!r} not found", field="name")
    return {"name": name, "deleted": True}
