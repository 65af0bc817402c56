"""Alert rules and receivers: their shapes, their checks, and their stored documents.

The body shapes are pydantic models, so a bad type, operator or field is a 400 naming
it (``api/errors.py`` maps the validation error). :func:`check_rule` adds what needs
the store: the deployment is the workspace's (404 otherwise, never 403) and the metric
is one the deployment's metrics endpoint accepts (the catalogue's, or one it has sent).
"""

from __future__ import annotations

import math
import secrets
import time
from typing import Annotated, Any, Literal, Union
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .._exceptions import BadRequest
from ..query.catalogue import parse_names
from ..query.custom import sent_metrics
from ..query.logs import LineFilters, Text, check_pattern
from ..query.window import iso
from ..store import Store
from ..store.alerts import AlertDocs
from ..store.inventory import Inventory

OPS = {">": float.__gt__, ">=": float.__ge__, "<": float.__lt__, "<=": float.__le__}
Op = Literal[">", ">=", "<", "<="]
MAX_WINDOW_S = 7 * 86400
WindowS = Annotated[int, Field(ge=1, le=MAX_WINDOW_S)]
Id = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.\-]{1,64}$")]
Name = Annotated[str, Field(min_length=1, max_length=256)]
#: a field of the read shape (GET -> edit -> PUT round-trips): accepted, never stored
ReadOnly = Annotated[Any, Field(default=None, exclude=True)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MetricCondition(_Strict):
    type: Literal["metric"]
    metric: Name
    labels: Annotated[dict[str, Text], Field(max_length=16)] = {}
    window_seconds: WindowS = 300
    op: Op
    threshold: float

    @field_validator("threshold")
    @classmethod
    def _finite(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError("threshold must be a finite number")
        return v


class LogsFilters(LineFilters):
    """The line filters of the deployment logs endpoint (its window and paging aside)."""

    model_config = ConfigDict(extra="forbid")
    min_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] | None = None


class LogsCondition(_Strict):
    type: Literal["logs"]
    filters: LogsFilters = LogsFilters()
    window_seconds: WindowS = 300
    op: Op
    threshold: float


class AbsentCondition(_Strict):
    type: Literal["absent"]
    #: None: no point of any metric (the only form a training job's rule takes)
    metric: Name | None = None
    window_seconds: WindowS = 300


Condition = Annotated[Union[MetricCondition, LogsCondition, AbsentCondition], Field(discriminator="type")]


class RuleIn(_Strict):
    id: ReadOnly
    created_at: ReadOnly
    updated_at: ReadOnly
    name: Name
    # the target: a deployment (model_id, deployment_id) or a training job
    # (training_project_id, training_job_id); check_rule requires exactly one
    model_id: Id | None = None
    deployment_id: Id | None = None
    training_project_id: Id | None = None
    training_job_id: Id | None = None
    for_seconds: Annotated[float, Field(ge=0, le=MAX_WINDOW_S)] = 0
    severity: Annotated[str, Field(min_length=1, max_length=64)] = "warning"
    annotations: Annotated[dict[str, Annotated[str, Field(max_length=4096)]], Field(max_length=32)] = {}
    condition: Condition


class ReceiverIn(_Strict):
    name: ReadOnly
    type: Literal["alertmanager", "webhook"]
    url: Annotated[str, Field(min_length=1, max_length=2048)]

    @field_validator("url")
    @classmethod
    def _http(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("url must be an http:// or https:// URL with a host")
        return v


#: a rule's target kinds: (scope, parent id field, id field)
TARGETS = (("deployment", "model_id", "deployment_id"), ("training_job", "training_project_id", "training_job_id"))
#: the id fields of every target kind: a stored rule keeps only its own
TARGET_FIELDS = frozenset(f for t in TARGETS for f in t[1:])


def target(rule: dict) -> tuple[str, str]:
    """(scope, entity) a stored rule watches."""
    for scope, _, id_field in TARGETS:
        if rule.get(id_field):
            return scope, rule[id_field]
    raise ValueError(f"rule {rule.get('id')!r} names no target")


def check_rule(store: Store, inventory: Inventory, ws: str, rule: RuleIn) -> None:
    """400 unless the rule names exactly one target, whole; 404 when that deployment
    or training job is not the workspace's; 400 naming ``condition.metric`` when the
    metric is neither the catalogue's nor one the deployment sent (a training job's
    rules watch logs or the absence of any metric); 400 naming
    ``condition.filters.search_pattern`` when RE2 refuses the pattern."""
    named = [(scope, parent, id_field) for scope, parent, id_field in TARGETS
             if getattr(rule, parent) is not None or getattr(rule, id_field) is not None]
    if len(named) != 1:
        raise BadRequest("a rule names either model_id and deployment_id, or training_project_id and"
                         " training_job_id", field="deployment_id")
    scope, parent, id_field = named[0]
    for f in (parent, id_field):
        if getattr(rule, f) is None:
            raise BadRequest(f"{f} is required with {parent if f == id_field else id_field}", field=f)
    inventory.get(ws, scope, getattr(rule, id_field), parent=getattr(rule, parent))
    c = rule.condition
    if isinstance(c, LogsCondition):
        if c.filters.search_pattern is not None:
            try:
                check_pattern(c.filters.search_pattern)
            except BadRequest as exc:
                raise BadRequest(exc.message, field="condition.filters.search_pattern") from None
        return
    if c.metric is None:  # absent: no point of any metric
        return
    if scope != "deployment":
        raise BadRequest("a training job's rule watches logs, or the absence of any metric (omit metric)",
                         field="condition.metric")
    try:
        parse_names([c.metric], lambda names: sent_metrics(store, ws, rule.deployment_id, names))
    except BadRequest as exc:
        raise BadRequest(exc.message, field="condition.metric") from None


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def save_rule(docs: AlertDocs, ws: str, rule: RuleIn, rule_id: str | None = None) -> dict:
    """Store a new rule (``rule_id`` None) or replace one; returns its read shape."""
    now = iso(_now_ms())
    old = docs.get(ws, "rule", rule_id) if rule_id else None
    fields = {k: v for k, v in rule.model_dump().items() if v is not None or k not in TARGET_FIELDS}
    doc = {**fields, "id": rule_id or "rule_" + secrets.token_hex(8),
           "created_at": old["created_at"] if old else now, "updated_at": now}
    docs.put(ws, "rule", doc["id"], doc)
    return doc


def save_receiver(docs: AlertDocs, ws: str, name: str, receiver: ReceiverIn) -> dict:
    doc = {"name": name, **receiver.model_dump()}
    docs.put(ws, "receiver", name, doc)
    return doc
