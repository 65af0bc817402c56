"""Training projects and jobs: inventory reads and upserts, job metrics, and the resolver
of job logs.

Shapes are the vendor's (``ListTrainingProjectsResponseV1``, ``ListTrainingJobsResponseV1``,
``GetTrainingJobResponseV1``, ``GetTrainingJobMetricsResponseV1``). docs/training.md gives
the defaults for fields telemetry cannot know.

A PUT body may be the whole read shape (``api/bodies.py``): a project's ``id``,
``created_at``, ``updated_at`` and ``latest_job``, and a job's ``id``, ``created_at``,
``updated_at``, ``training_project_id`` and ``training_project`` are accepted and ignored;
every other field of ``TrainingProjectV1`` / ``TrainingJobV1`` (a job's
``availability_model``, ``checkpoint_sync_status``, ``user``, ``priority``...) is stored.
A job's PUT body is the job itself (``TrainingJobV1``), not the GET's
``{"training_project", "training_job"}`` envelope.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from fastapi import APIRouter, Body, Depends, Request, Response
from pydantic import Field

from ..query import training as tq
from ..query.logs import Target
from ..query.window import iso
from ..store.accounts import ApiKey
from ..store.inventory import Inventory
from . import auth
from .bodies import BodyIn, NamedIn, ReadOnly, ResourceIn, TrainingMetricsIn, UserIn, echoed, json_body
from .ids import valid_id

router = APIRouter(tags=["training"])

#: instance type shown until a PUT names one (telemetry does not carry the vendor's
#: instance-type catalogue); see docs/training.md
UNKNOWN_INSTANCE = {"id": "unknown", "name": "unknown", "memory_limit_mib": 0, "millicpu_limit": 0,
                    "gpu_count": 0, "gpu_type": None, "gpu_memory_limit_mib": None}


class ProjectIn(NamedIn):
    updated_at: ReadOnly = None
    latest_job: ReadOnly = None


class InstanceTypeIn(BodyIn):
    id: str = Field(min_length=1, max_length=256)
    name: str = Field(min_length=1, max_length=256)
    memory_limit_mib: int = Field(ge=0)
    millicpu_limit: int = Field(ge=0)
    gpu_count: int = Field(ge=0)
    gpu_type: str | None = Field(default=None, max_length=256)
    gpu_memory_limit_mib: int | None = Field(default=None, ge=0)


class JobIn(ResourceIn):
    updated_at: ReadOnly = None
    training_project_id: ReadOnly = None
    training_project: ReadOnly = None
    name: str | None = Field(default=None, min_length=1, max_length=256)
    current_status: str = Field(default="RUNNING", min_length=1, max_length=64)
    error_message: str | None = Field(default=None, max_length=4096)
    instance_type: InstanceTypeIn | None = None
    priority: int | None = None
    checkpoint_sync_status: Literal["SYNCING", "COMPLETED"] | None = None
    availability_model: Literal["dedicated", "spot"] | None = None
    user: UserIn | None = None


# --- views -------------------------------------------------------------------------


def _summary(project: dict) -> dict:
    return {"id": project["id"], "name": project["doc"].get("name") or project["id"]}


def observed_type(doc: dict) -> dict:
    """The instance type the agent observed, else the placeholder."""
    return doc.get("observed_instance_type") or dict(UNKNOWN_INSTANCE)


def job_view(row: dict, project: dict) -> dict:
    doc = row["doc"]
    return {
        "id": row["id"],
        "created_at": iso(row["created_ms"]),
        "current_status": doc.get("current_status") or "RUNNING",
        "error_message": doc.get("error_message"),
        "instance_type": doc.get("instance_type") or observed_type(doc),
        "updated_at": iso(row["updated_ms"]),
        "training_project_id": project["id"],
        "training_project": _summary(project),
        "name": doc.get("name") or row["id"],
        "checkpoint_sync_status": doc.get("checkpoint_sync_status"),
        "priority": int(doc.get("priority") or 0),
        "availability_model": doc.get("availability_model") or "dedicated",
        "user": doc.get("user"),
    }


def project_view(row: dict, jobs: list[dict]) -> dict:
    latest = max(jobs, key=lambda j: (j["created_ms"], j["id"])) if jobs else None
    return {
        "id": row["id"],
        "name": row["doc"].get("name") or row["id"],
        "created_at": iso(row["created_ms"]),
        "updated_at": iso(row["updated_ms"]),
        "team_name": row["doc"].get("team_name"),
        "latest_job": job_view(latest, row) if latest else None,
    }


def _project(inv: Inventory, ws: str, project_id: str) -> tuple[dict, list[dict]]:
    project = inv.get(ws, "training_project", valid_id(project_id, "training_project_id"))
    return project, inv.list(ws, "training_job", project_id)


def _job(inv: Inventory, ws: str, project_id: str, job_id: str) -> tuple[dict, dict]:
    """(project view, job view); 404 when either is unknown or the job is another project's."""
    valid_id(project_id, "training_project_id")
    valid_id(job_id, "training_job_id")
    project, jobs = _project(inv, ws, project_id)
    row = inv.get(ws, "training_job", job_id, parent=project_id)
    return project_view(project, jobs), job_view(row, project)


# --- inventory routes ----------------------------------------------------------------


@router.get("/v1/training_projects")
def list_projects(request: Request, key: ApiKey = Depends(auth.management)) -> dict:
    inv = request.app.state.inventory
    jobs = inv.list(key.ws, "training_job")
    return {"training_projects": [project_view(p, [j for j in jobs if j["parent"] == p["id"]])
                                  for p in inv.list(key.ws, "training_project")]}


@router.put("/v1/training_projects/{training_project_id}")
def put_project(training_project_id: str, body: ProjectIn, request: Request,
                key: ApiKey = Depends(auth.management)) -> dict:
    valid_id(training_project_id, "training_project_id")
    inv = request.app.state.inventory
    inv.put(key.ws, "training_project", training_project_id, "", body.model_dump(exclude_none=True))
    return project_view(*_project(inv, key.ws, training_project_id))


@router.get("/v1/training_projects/{training_project_id}/jobs")
def list_jobs(training_project_id: str, request: Request, key: ApiKey = Depends(auth.management)) -> dict:
    project, jobs = _project(request.app.state.inventory, key.ws, training_project_id)
    return {"training_project": project_view(project, jobs), "training_jobs": [job_view(j, project) for j in jobs]}


@router.get("/v1/training_projects/{training_project_id}/jobs/{training_job_id}")
def get_job(training_project_id: str, training_job_id: str, request: Request,
            key: ApiKey = Depends(auth.management)) -> dict:
    project, job = _job(request.app.state.inventory, key.ws, training_project_id, training_job_id)
    return {"training_project": project, "training_job": job}


@router.put("/v1/training_projects/{training_project_id}/jobs/{training_job_id}")
def put_job(training_project_id: str, training_job_id: str, body: JobIn, request: Request,
            key: ApiKey = Depends(auth.management)) -> dict:
    valid_id(training_project_id, "training_project_id")
    valid_id(training_job_id, "training_job_id")
    inv = request.app.state.inventory
    inv.ensure(key.ws, "training_project", training_project_id, "", {})
    doc = body.model_dump(mode="json")
    old = (inv.find(key.ws, "training_job", training_job_id) or {}).get("doc", {})
    doc["instance_type"] = echoed(doc["instance_type"], old.get("instance_type"), observed_type(old))
    inv.put(key.ws, "training_job", training_job_id, training_project_id, doc)
    project, job = _job(inv, key.ws, training_project_id, training_job_id)
    return {"training_project": project, "training_job": job}


# --- metrics -------------------------------------------------------------------------

METRICS_PATH = "/v1/training_projects/{training_project_id}/jobs/{training_job_id}/metrics"


def _metrics(request: Request, key: ApiKey, project_id: str, job_id: str, q: TrainingMetricsIn) -> Response:
    valid_id(project_id, "training_project_id")
    valid_id(job_id, "training_job_id")
    # Parameters first: a malformed request is a 400 whether or not the job exists.
    window = tq.resolve(q.start_epoch_millis, q.end_epoch_millis, q.step_seconds)
    # The job's view only: its project's jobs (for latest_job) are not needed here.
    inv = request.app.state.inventory
    project = inv.get(key.ws, "training_project", project_id)
    job = job_view(inv.get(key.ws, "training_job", job_id, parent=project_id), project)
    # The body comes back as JSON text: ~50k points are too many for a generic encoder.
    body = tq.training_job_metrics(request.app.state.store, key.ws, job_id, window, job)
    return Response(body, media_type="application/json")


@router.get(METRICS_PATH)
def get_job_metrics(training_project_id: str, training_job_id: str, request: Request,
                    start_epoch_millis: int | None = None, end_epoch_millis: int | None = None,
                    step_seconds: int | None = None, key: ApiKey = Depends(auth.management)) -> Response:
    q = TrainingMetricsIn(start_epoch_millis=start_epoch_millis, end_epoch_millis=end_epoch_millis,
                          step_seconds=step_seconds)
    return _metrics(request, key, training_project_id, training_job_id, q)


@router.post(METRICS_PATH)
def post_job_metrics(training_project_id: str, training_job_id: str, request: Request,
                     key: ApiKey = Depends(auth.management), body: Any = Body(None)) -> Response:
    q = json_body(TrainingMetricsIn, body, absent={})
    return _metrics(request, key, training_project_id, training_job_id, q)


# --- logs ----------------------------------------------------------------------------


def job_logs_target(inv: Inventory, ws: str, p: Mapping[str, str]) -> Target:
    """Training job logs (a row of ``logs.ROUTES``)."""
    _job(inv, ws, p["training_project_id"], p["training_job_id"])
    return Target("training_job", entity=p["training_job_id"])
