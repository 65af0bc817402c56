"""Where telemetry belongs: resource attributes -> (scope, entity, parent, replica, ...).

docs/api.md#placement. The first placing group present wins, most specific first:
a chainlet (``sonde.chainlet_id`` + ``sonde.chain_deployment_id``), then a model
deployment (``sonde.deployment_id``), a training job (``sonde.training_job_id``),
a loops deployment (``sonde.loops_deployment_id``). A resource with none of them,
or with an id that breaks the id rule, cannot be placed: its points are rejected
(partial success) and the rest of the request goes in.

A parent the resource does not name (a deployment without ``sonde.model_id``, a
training job without its project, a chain deployment without its chain) is taken
from the inventory when the entity is known there, else it is ``_unassigned``
(resolved by :class:`~sonde.ingest.registrar.Registrar`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

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
    #: the ``sonde.hw.*`` attributes (:func:`hardware`), None when absent or malformed
    hw: Hardware | None = None


@dataclass(frozen=True)
class Hardware:
    """What the agent saw (``sonde.hw.*``, agent/hardware.py); hashable, so a cache key."""

    gpu_count: int
    gpu_type: str | None
    gpu_memory_mib: int | None
    cpu_millicores: int
    memory_mib: int


def hardware(attrs: dict[str, str]) -> Hardware | None:
    """The ``sonde.hw.*`` attributes, or None when CPU or memory is missing or any value
    is malformed (hardware never rejects telemetry; it just fills nothing)."""
    get = attrs.get
    cpu, mem = get("sonde.hw.cpu_millicores"), get("sonde.hw.memory_mib")
    if not cpu or not mem:
        return None
    try:
        gpus = int(get("sonde.hw.gpu_count") or 0)
        gpu_mem = get("sonde.hw.gpu_memory_mib")
        hw = Hardware(gpus, (get("sonde.hw.gpu_type") or "GPU")[:128] if gpus else None,
                      int(gpu_mem) if gpus and gpu_mem else None, int(cpu), int(mem))
    except ValueError:
        return None
    if min(hw.gpu_count, hw.cpu_millicores, hw.memory_mib, hw.gpu_memory_mib or 0) < 0:
        return None
    return hw


def _gib(mib: int) -> str:
    return f"{round(mib / 1024)}GiB" if mib >= 1024 else f"{mib}MiB"


def instance_type(hw: Hardware) -> dict[str, Any]:
    """The InstanceTypeV1 derived from hardware; ``id`` and ``name`` are the same stable,
    readable name: ``<n>x<GPU>-<GPU memory>-<cpus>cpu-<memory>`` (``1xH200-140GiB-16cpu-128GiB``)
    or, without GPUs, ``cpu-<cpus>cpu-<memory>`` (``cpu-4cpu-16GiB``). GPU: the NVML name
    without its ``NVIDIA `` prefix, other characters than ``A-Z a-z 0-9 . -`` as ``-``;
    GPU memory per GPU and memory rounded to whole GiB (MiB below 1 GiB); CPUs
    ``millicores / 1000`` (a fraction kept: ``2.5cpu``)."""
    cpus = hw.cpu_millicores / 1000
    cpu = f"{cpus:g}cpu"
    if hw.gpu_count:
        gpu = re.sub(r"[^A-Za-z0-9.\-]+", "-", re.sub(r"^NVIDIA\s+", "", hw.gpu_type or "GPU")).strip("-") or "GPU"
        per = f"-{_gib(hw.gpu_memory_mib)}" if hw.gpu_memory_mib else ""
        name = f"{hw.gpu_count}x{gpu}{per}-{cpu}-{_gib(hw.memory_mib)}"
    else:
        name = f"cpu-{cpu}-{_gib(hw.memory_mib)}"
    return {"id": name, "name": name, "memory_limit_mib": hw.memory_mib, "millicpu_limit": hw.cpu_millicores,
            "gpu_count": hw.gpu_count, "gpu_type": hw.gpu_type, "gpu_memory_limit_mib": hw.gpu_memory_mib}


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
        hw=hardware(attrs) if "sonde.hw.cpu_millicores" in attrs else None,
    )
