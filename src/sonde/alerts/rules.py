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
    metric: Name
    window_seconds: WindowS = 300


Condition = Annotated[Union[MetricCondition, LogsCondition, AbsentCondition], Field(discriminator="type")]


class RuleIn(_Strict):
    id: ReadOnly
    created_at: ReadOnly
    updated_at: ReadOnly
    name: Name
    model_id: Id
    deployment_id: Id
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


def check_rule(store: Store, inventory: Inventory, ws: str, rule: RuleIn) -> None:
    """404 when the deployment is not the workspace's; 400 naming ``condition.metric``
    when the metric is neither the catalogue's nor one the deployment sent; 400 naming
    ``condition.filters.search_pattern`` when RE2 refuses the pattern."""
    inventory.get(ws, "deployment", rule.deployment_id, parent=rule.model_id)
    c = rule.condition
    if isinstance(c, LogsCondition):
        if c.filters.search_pattern is not None:
            try:
                check_pattern(c.filters.search_pattern)
            except BadRequest as exc:
                raise BadRequest(exc.message, field="condition.filters.search_pattern") from None
        return
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
    doc = {**rule.model_dump(), "id": rule_id or "rule_" + secrets.token_hex(8),
           "created_at": old["created_at"] if old else now, "updated_at": now}
    docs.put(ws, "rule", doc["id"], doc)
    return doc


def save_receiver(docs: AlertDocs, ws: str, name: str, receiver: ReceiverIn) -> dict:
    doc = {"name": name, **receiver.model_dump()}
    docs.put(ws, "receiver", name, doc)
    return doc
