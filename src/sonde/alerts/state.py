"""The life of an alert instance: inactive -> pending -> firing -> resolved.

One instance per (rule, label set). Its labels are the rule's (``alertname``,
``severity``, ``model_id``, ``deployment_id``, ``rule_id``) plus the label set's, and
its fingerprint is Alertmanager's own of those labels (FNV-1a 64 over the sorted
names and values), so Sonde, Alertmanager and a webhook name an alert the same way.

Each evaluation gives the label sets whose condition holds (with their values):
- a new one is *pending* from now (``active_at``), or *firing* at once when the rule's
  ``for_seconds`` is 0;
- a pending one fires once it has held for ``for_seconds``;
- one that no longer holds is dropped when pending, *resolved* when firing (announced once).
An evaluation that failed (``None``) leaves the rule's instances as they were.
State is a document per instance in the store, so a firing alert stays firing, with
the same ``fired_at``, across a restart and is not announced again.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

#: the labels a rule gives its alerts, besides the label set's
PLACEMENT = ("alertname", "severity", "model_id", "deployment_id", "training_project_id", "training_job_id",
             "rule_id")
_FNV_OFFSET, _FNV_PRIME, _MASK = 14695981039346656037, 1099511628211, (1 << 64) - 1
_TEMPLATE = re.compile(r"\{\{\s*\$(value|labels\.([A-Za-z_][A-Za-z0-9_]*))\s*\}\}")


def fingerprint(labels: dict[str, str]) -> str:
    """Alertmanager's label-set fingerprint (prometheus/common model.LabelSet.Fingerprint)."""
    h = _FNV_OFFSET
    for name in sorted(labels):
        for part in (name, labels[name]):
            for b in part.encode() + b"\xff":
                h = ((h ^ b) * _FNV_PRIME) & _MASK
    return f"{h:016x}"


def alert_labels(rule: dict, labels: dict[str, str]) -> dict[str, str]:
    # the rule's own labels win over a label set's label of the same name
    own = {"alertname": rule["name"], **{k: rule[k] for k in PLACEMENT[1:] if rule.get(k) is not None}}
    return {**labels, **own, "rule_id": rule["id"]}


def render(annotations: dict[str, str], labels: dict[str, str], value: float | None) -> dict[str, str]:
    """Annotations with ``{{ $value }}`` and ``{{ $labels.NAME }}`` filled in, as in Prometheus's rules."""
    def fill(m: re.Match) -> str:
        if m.group(1) == "value":
            return "" if value is None else f"{value:g}"
        return labels.get(m.group(2), "")

    return {k: _TEMPLATE.sub(fill, v) for k, v in annotations.items()}


@dataclass
class Transition:
    """What one evaluation of one rule did: instances to store, to forget, to announce."""

    keep: list[dict] = field(default_factory=list)
    forget: list[str] = field(default_factory=list)
    fired: list[dict] = field(default_factory=list)
    resolved: list[dict] = field(default_factory=list)


def step(rule: dict | None, prior: dict[str, dict], holding: list[tuple[dict, float]] | None,
         now_ms: int) -> Transition:
    """Advance one rule's instances. ``rule`` None: the rule was deleted (its instances
    end); ``holding``: label sets whose condition holds now with their values, None when
    the evaluation failed."""
    out = Transition()
    if holding is None and rule is not None:
        out.keep = list(prior.values())
        return out
    seen: set[str] = set()
    for labels, value in holding or ():
        full = alert_labels(rule, labels)
        fp = fingerprint(full)
        seen.add(fp)
        inst = dict(prior.get(fp) or {"fingerprint": fp, "rule_id": rule["id"], "labels": full,
                                      "state": "pending", "active_at_ms": now_ms, "fired_at_ms": None})
        inst["value"] = value
        inst["annotations"] = render(rule.get("annotations") or {}, full, value)
        if inst["state"] == "pending" and now_ms - inst["active_at_ms"] >= rule["for_seconds"] * 1000:
            inst["state"], inst["fired_at_ms"] = "firing", now_ms
            out.fired.append(inst)
        out.keep.append(inst)
    for fp, inst in prior.items():
        if fp in seen:
            continue
        out.forget.append(fp)
        if inst["state"] == "firing":
            out.resolved.append({**inst, "resolved_at_ms": now_ms})
    return out
