"""Where telemetry belongs: resource attributes -> (scope, entity, parent, replica, ...).

SONDE.md's table. The first placing group present wins, most specific first:
a chainlet (``sonde.chainlet_id`` + ``sonde.chain_deployment_id``), then a model
deployment (``sonde.deployment_id``), a training job (``sonde.training_job_id``),
a loops deployment (``sonde.loops_deployment_id``). A resource with none of them,
or with an id that breaks the id rule, cannot be placed: its points are rejected
(partial success) and the rest of the request goes in.

A parent the resource does not name (a deployment without ``sonde.model_id``, a
training job without its project, a chain deployment without its chain) is taken
from the inventory when the entity is known there, else it is ``_unassigned``
(resolved by :class:`~sonde.ingest.pipeline.Registrar`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_ID = re.compile(r"[A-Za-z0-9_.\-]{1,64}")

#: parent id used when telemetry names an entity but not its parent, and the
#: inventory does not know the entity yet.
UNASSIGNED = "_unassigned"

PLACING = (
    "sonde.deployment_id", "sonde.chainlet_id", "sonde.training_job_id", "sonde.loops_deployment_id",
)


@dataclass(frozen=True)
class Owner:
    """The inventory record telemetry registers: ``kind``/``id`` under a parent of
    ``parent_kind``; ``parent`` is None when the resource did not name it."""

    kind: str
    id: str
    parent_kind: str | None
    parent: str | None
    doc: tuple[tuple[str, object], ...]


@dataclass(frozen=True)
class Placement:
    scope: str
    entity: str
    #: the row's ``parent`` when fixed by the resource itself; None: resolve ``owner``'s parent
    parent: str | None
    replica: str
    node_rank: int
    node_id: str
    environment: str
    owner: Owner


def _bad_id(attrs: dict[str, str], *names: str) -> str | None:
    for name in names:
        value = attrs.get(name)
        if value is not None and not _ID.fullmatch(value):
            return f"resource attribute {name}={value[:80]!r} is not 1 to 64 of A-Z a-z 0-9 _ . -"
    return None


def place(attrs: dict[str, str]) -> Placement | str:
    """The placement of a resource, or the reason it has none."""
    get = attrs.get
    bad = _bad_id(
        attrs, "sonde.deployment_id", "sonde.model_id", "sonde.chain_id", "sonde.chain_deployment_id",
        "sonde.chainlet_id", "sonde.training_project_id", "sonde.training_job_id", "sonde.loops_deployment_id",
    )
    if bad:
        return bad
    rank_text = get("sonde.node_rank", "")
    try:
        node_rank = int(rank_text) if rank_text != "" else -1
    except ValueError:
        return f"resource attribute sonde.node_rank={rank_text[:40]!r} is not an integer"
    env = get("sonde.environment", "")
    status: tuple[tuple[str, object], ...] = (("status", "ACTIVE"),)
    env_doc: tuple[tuple[str, object], ...] = (("environment", env),) if env else ()
    if get("sonde.chainlet_id"):
        cd = get("sonde.chain_deployment_id")
        if not cd:
            return "resource has sonde.chainlet_id but no sonde.chain_deployment_id"
        chainlet = get("sonde.chainlet_id")
        chainlets = ({"id": chainlet, "name": chainlet, "status": "ACTIVE"},)
        owner = Owner("chain_deployment", cd, "chain", get("sonde.chain_id") or None,
                      status + env_doc + (("chainlets", chainlets),))
        scope, entity, parent = "chainlet", chainlet, cd
    elif get("sonde.deployment_id"):
        dep = get("sonde.deployment_id")
        owner = Owner("deployment", dep, "model", get("sonde.model_id") or None, status + env_doc)
        scope, entity, parent = "deployment", dep, None
    elif get("sonde.training_job_id"):
        job = get("sonde.training_job_id")
        owner = Owner("training_job", job, "training_project", get("sonde.training_project_id") or None,
                      (("current_status", "RUNNING"),))
        scope, entity, parent = "training_job", job, None
    elif get("sonde.loops_deployment_id"):
        loops = get("sonde.loops_deployment_id")
        owner = Owner("loops_deployment", loops, None, None, (("status", {"name": "RUNNING"}),))
        scope, entity, parent = "loops", loops, ""
    else:
        return "resource has no placing attribute (" + ", ".join(PLACING) + ")"
    return Placement(
        scope=scope, entity=entity, parent=parent,
        replica=get("sonde.replica") or get("service.instance.id") or "",
        node_rank=node_rank, node_id=get("sonde.node_id", ""), environment=env, owner=owner,
    )
