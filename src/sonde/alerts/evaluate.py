"""Conditions -> the label sets for which they hold, read through the query layer.

A metric condition's value is exactly what the deployment metrics endpoint answers in
SUMMARY mode over the last ``window_seconds``, so a rule and a chart never disagree.
Rules of one deployment with the same window share one such query (a workspace with a
thousand rules over a few dozen deployments costs a few dozen queries, not a thousand).
A logs condition counts the lines the deployment logs endpoint would return with those
filters (a deployment's or a training job's); an absent condition holds when the
metric has no value in the window, or, without a metric, when the target sent no
metric point at all (value 1, as Prometheus's ``absent()``).
"""

from __future__ import annotations

import logging
from collections import defaultdict

from ..query.catalogue import CATALOGUE, VendorMetric
from ..query.custom import sent_metrics
from ..query.logs import LogFilters, LogQuery, Target, count_logs
from ..query.metrics import deployment_metrics
from ..query.presence import points_between
from ..query.window import Window
from ..store import Store
from .rules import OPS, target

log = logging.getLogger("sonde.alerts")

#: per rule id: (labels, value) of each label set whose condition holds; None: not evaluated
Holding = dict[str, "list[tuple[dict, float]] | None"]


def _summary(store: Store, ws: str, deployment: str, window_s: int, names: set[str],
             now_ms: int) -> dict[str, list[tuple[dict, float]]]:
    """Per metric name with data: (label set, value) of the SUMMARY answer."""
    known = {n: CATALOGUE[n] for n in names if n in CATALOGUE}
    known.update(sent_metrics(store, ws, deployment, sorted(names - known.keys())))
    metrics: list[VendorMetric] = list(known.values())
    if not metrics:
        return {}
    window = Window("SUMMARY", now_ms - window_s * 1000, now_ms, None)
    body = deployment_metrics(store, ws, deployment, window, metrics)
    values = body["metric_values"][0]["values"] if body["metric_values"] else []
    out: dict[str, list[tuple[dict, float]]] = {}
    for desc, column in zip(body["metric_descriptors"], values):
        out[desc["name"]] = [({k: str(v) for k, v in ls.items()}, float(v))
                             for ls, v in zip(desc["label_sets"], column) if v is not None]
    return out


def _logs(store: Store, ws: str, rule: dict, now_ms: int) -> float:
    c = rule["condition"]
    scope, entity = target(rule)
    # the filters as the logs endpoint takes them, so both read them the same way
    q = LogQuery.resolve(LogFilters(**(c.get("filters") or {}), start_epoch_millis=now_ms - c["window_seconds"] * 1000,
                                    end_epoch_millis=now_ms), now_ms)
    return float(count_logs(store, ws, Target(scope, entity=entity), q))


def _silent(store: Store, ws: str, rule: dict, now_ms: int) -> bool:
    """No point of any metric from the rule's target in its window."""
    scope, entity = target(rule)
    start_ms = now_ms - rule["condition"]["window_seconds"] * 1000
    return points_between(store, ws, scope, entity, start_ms * 1_000_000, now_ms * 1_000_000) == 0


def _holds(c: dict, value: float) -> bool:
    return OPS[c["op"]](value, float(c["threshold"]))


def evaluate(store: Store, ws: str, rules: list[dict], now_ms: int) -> Holding:
    """Evaluate one workspace's rules at ``now_ms``."""
    out: Holding = {}
    groups: dict[tuple[str, int], list[dict]] = defaultdict(list)
    for rule in rules:
        c = rule["condition"]
        if c["type"] == "logs" or (c["type"] == "absent" and not c.get("metric")):
            try:
                if c["type"] == "logs":
                    n = _logs(store, ws, rule, now_ms)
                    out[rule["id"]] = [({}, n)] if _holds(c, n) else []
                else:
                    out[rule["id"]] = [({}, 1.0)] if _silent(store, ws, rule, now_ms) else []
            except Exception:  # one rule's failure must not stop the others
                log.exception("alert rule %s: %s condition failed", rule["id"], c["type"])
                out[rule["id"]] = None
        else:
            groups[(rule["deployment_id"], c["window_seconds"])].append(rule)
    for (deployment, window_s), group in groups.items():
        names = {r["condition"]["metric"] for r in group}
        try:
            answer = _summary(store, ws, deployment, window_s, names, now_ms)
        except Exception:
            log.exception("alert rules of deployment %s: metrics query failed", deployment)
            out.update({r["id"]: None for r in group})
            continue
        for rule in group:
            c = rule["condition"]
            points = answer.get(c["metric"], [])
            if c["type"] == "absent":
                out[rule["id"]] = [] if points else [({}, 1.0)]
                continue
            want = c.get("labels") or {}
            out[rule["id"]] = [(ls, v) for ls, v in points
                               if all(ls.get(k) == w for k, w in want.items()) and _holds(c, v)]
    return out
