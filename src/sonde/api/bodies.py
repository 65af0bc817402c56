"""Request bodies and models that several routers share, and the one JSON-body parser.

Inventory bodies follow one rule (docs/api.md, "Inventory"): a PUT accepts the whole
read shape of its resource, so GET -> edit -> PUT round-trips. Fields the server derives
(ids, timestamps, counts, replica numbers, a model's production/development deployment)
are declared :data:`ReadOnly`: accepted with any value and never stored. Every other
field of the vendor's read schema is stored and read back. A field no schema knows is a
400 naming it (``extra="forbid"``, mapped by ``api/errors.py``).
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal, TypeVar

from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .._exceptions import BadRequest
from ..query.window import MAX_EPOCH_MS

#: a derived field of the read shape: accepted in a body, excluded from what is stored
ReadOnly = Annotated[Any, Field(exclude=True, description="Read only: accepted and ignored.")]

DeploymentStatus = Literal[
    "BUILDING", "DEPLOYING", "DEPLOY_FAILED", "LOADING_MODEL", "ACTIVE", "UNHEALTHY", "BUILD_FAILED",
    "BUILD_STOPPED", "DEACTIVATING", "INACTIVE", "FAILED", "UPDATING", "SCALED_TO_ZERO", "WAKING_UP",
]


class BodyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ResourceIn(BodyIn):
    """A resource of the inventory: its id is the path's, its creation time the server's."""

    id: ReadOnly = None
    created_at: ReadOnly = None


class NamedIn(ResourceIn):
    """The written fields of a model, a chain or a training project."""

    name: str | None = Field(default=None, min_length=1, max_length=256)
    team_name: str | None = Field(default=None, max_length=256)


class AutoscalingSettingsIn(BodyIn):
    """AutoscalingSettingsV1 of a deployment or a chainlet; stored whole."""

    min_replica: int = Field(ge=0)
    max_replica: int = Field(ge=0)
    autoscaling_window: int | None = None
    scale_down_delay: int | None = None
    concurrency_target: int = Field(ge=1)
    target_utilization_percentage: int | None = Field(default=None, ge=1, le=100)
    target_in_flight_tokens: int | None = None
    max_scale_down_rate: int | None = Field(default=None, ge=1, le=50)


class UserIn(BodyIn):
    """UserV1: who owns a training job or a loops deployment."""

    email: str | None = Field(default=None, max_length=256)


def echoed(value: Any, written: Any, derived: Any) -> Any:
    """``value``, or None when it only echoes what a read showed in place of an unwritten
    field (``written`` empty, ``value == derived``): a GET -> PUT must not pin an instance
    type the agent observed, or the placeholder shown before it reported."""
    return None if not written and value == derived else value


# --- metrics request bodies ------------------------------------------------------------

EpochMs = Annotated[int, Field(ge=0, le=MAX_EPOCH_MS)]


class TrainingMetricsIn(BaseModel):
    """GetTrainingJobMetricsRequestV1 (unknown fields ignored, as the schema allows);
    ``query.training.resolve`` checks the window."""

    model_config = ConfigDict(extra="ignore")
    start_epoch_millis: int | None = None
    end_epoch_millis: int | None = None
    step_seconds: int | None = None


class LoopsMetricsIn(TrainingMetricsIn):
    """GetLoopsDeploymentMetricsRequestV1; unknown fields are ignored, null is the default."""

    start_epoch_millis: EpochMs | None = None
    end_epoch_millis: EpochMs | None = None
    time_divisor_seconds: int | None = None


# --- the JSON-body parser ----------------------------------------------------------------

M = TypeVar("M", bound=BaseModel)


def json_body(model: type[M], body: Any, *, absent: dict | None = None) -> M:
    """``body`` (as FastAPI's ``Body()`` gave it) validated as ``model``. ``absent`` is
    what a missing body means; None: a missing body is a 400."""
    if isinstance(body, bytes):
        # FastAPI parses only bodies labelled JSON; the vendor's own curl examples
        # (--data without a Content-Type) send their JSON labelled as a form.
        try:
            body = json.loads(body)
        except ValueError:
            raise BadRequest("request body is not valid JSON", field="body", code="invalid_json") from None
    if body is None:
        if absent is None:
            raise BadRequest("a JSON object body is required; send {} for the defaults", field="body")
        body = absent
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object", field="body")
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        # Same mapping as FastAPI's own validation: api/errors.py names the field.
        raise RequestValidationError(exc.errors(include_url=False)) from None
