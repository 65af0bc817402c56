"""Telemetry registers what it names: the inventory side of ingest.

:class:`Registrar` is called by the metrics and logs walks for every resource
(``ingest/resource.Placement``): it answers the rows' parent entity, registering an
entity the inventory lacks, stores the hardware the agent observed, and applies a
training process's end report to its job.
"""

from __future__ import annotations

import json
import threading

from .resource import UNASSIGNED, Hardware, Placement, instance_type


class Registrar:
    """Telemetry naming an unknown entity registers it (docs/api.md#inventory); returns row parents.

    The parent of a known entity is the inventory's, whatever the resource says (an
    explicit PUT outranks telemetry). An unknown entity whose parent the resource
    does not name goes under ``_unassigned`` (registered too, so the vendor read
    endpoints reach it). Answers are cached: an entity never moves to another parent.
    """

    def __init__(self, inventory, *, remember_hardware: bool = True):
        self.inventory = inventory
        # Only the store's sole writer may skip a write because it stored the same
        # hardware before: with other replicas, one of them may have stored something
        # else since, so each observation is compared with the stored doc instead.
        self._remember_hw = remember_hardware
        self._parents: dict[tuple[str, str, str], str] = {}
        self._lock = threading.Lock()
        #: (ws, kind, id, chainlet) -> the hardware last stored for it by this process
        self._hw: dict[tuple[str, str, str, str], Hardware] = {}
        self._hw_lock = threading.Lock()

    def __call__(self, ws: str, pl: Placement) -> str:
        owner = pl.owner
        key = (ws, owner.kind, owner.id)
        parent = self._parents.get(key)
        if parent is None:
            found = self.inventory.find(ws, owner.kind, owner.id)
            if found is not None:
                parent = found["parent"]
            else:
                parent = owner.parent or (UNASSIGNED if owner.parent_kind else "")
                if owner.parent_kind:
                    self.inventory.ensure(ws, owner.parent_kind, parent, "", {})
                doc = json.loads(json.dumps(dict(owner.doc)))  # plain JSON types, fresh copies
                self.inventory.ensure(ws, owner.kind, owner.id, parent, doc)
            with self._lock:
                self._parents[key] = parent
        if pl.hw is not None:
            self._observe(ws, pl)
        # a chainlet's row parent is its chain deployment, fixed by the resource
        return parent if pl.parent is None else pl.parent

    def _observe(self, ws: str, pl: Placement) -> None:
        """Store the instance type the agent observed (``sonde.hw.*``) as the entity's
        ``observed_instance_type`` (a chain deployment: ``observed_instance_types`` per
        chainlet). Read views use it only when no PUT wrote one. A dict hit per request
        once stored; a new value (other hardware) is written again."""
        owner = pl.owner
        sub = pl.entity if pl.scope == "chainlet" else ""
        key = (ws, owner.kind, owner.id, sub)
        if self._hw.get(key) == pl.hw:
            return
        it = instance_type(pl.hw)

        def change(doc: dict) -> bool:
            if sub:
                by = doc.setdefault("observed_instance_types", {})
                if by.get(sub) == it:
                    return False
                by[sub] = it
                return True
            if doc.get("observed_instance_type") == it:
                return False
            doc["observed_instance_type"] = it
            return True

        with self._hw_lock:  # one writer per process: chainlets of one chain deployment share a doc
            if not self._remember_hw or self._hw.get(key) != pl.hw:
                self.inventory.amend(ws, owner.kind, owner.id, change)
                if self._remember_hw:
                    self._hw[key] = pl.hw

    def job_exit(self, ws: str, job: str, status: str, error: str, node_rank: int) -> None:
        """The agent's report that a training process ended (``sonde.job.status`` on a
        ``sonde.agent`` log record): the job becomes FAILED (any node; ``error_message`` =
        the last error line) or COMPLETED (the leader only: rank 0 or no rank), but only
        while it is RUNNING: a status a PUT set otherwise is left alone, and the first
        end wins. Idempotent, so a retried request changes nothing."""
        if status not in ("COMPLETED", "FAILED") or (status == "COMPLETED" and node_rank > 0):
            return

        def change(doc: dict) -> bool:
            if (doc.get("current_status") or "RUNNING") != "RUNNING":
                return False
            doc["current_status"] = status
            doc["error_message"] = (error or None) if status == "FAILED" else None
            return True

        with self._hw_lock:
            self.inventory.amend(ws, "training_job", job, change, touch=True)
