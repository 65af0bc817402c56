"""Custom metrics: any name a deployment has sent, under the name as sent.

A metric outside the catalogue (an engine's own counter, a node exporter's gauge, an
application's histogram) is valid for the metrics endpoint of a deployment that has
sent it, at any time the store still holds: its kind comes from its data (gauges and
non-monotonic sums are GAUGE, monotonic sums COUNTER, histograms HISTOGRAM), values are
as sent (no unit conversion), and gauges and counters have one label set per replica
and attribute set (``LabelKind.ATTRIBUTES``); histograms merge all their series into
the catalogue's quantile label sets. A name neither known nor ever sent stays a 400.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..store import Store
from .catalogue import COUNTER, GAUGE, HISTOGRAM, LabelKind, Source, VendorMetric
from .scan import QUERY_TIMEOUT_S

_UNIT_HINTS = {"s": "SECONDS", "By": "BYTES", "1": "RATIO"}


def _metric(name: str, found: set[str], unit: str) -> VendorMetric:
    if found & {"histogram", "exp_histogram"}:
        kind, labels = HISTOGRAM, LabelKind.HISTOGRAM
    elif "counter" in found:
        kind, labels = COUNTER, LabelKind.ATTRIBUTES
    else:
        kind, labels = GAUGE, LabelKind.ATTRIBUTES
    return VendorMetric(name, kind, _UNIT_HINTS.get(unit, "COUNT"), "count", (Source(name, unit),), labels)


def sent_metrics(store: Store, ws: str, deployment_id: str, names: Sequence[str]) -> dict[str, VendorMetric]:
    """Those of ``names`` the deployment has sent, as metrics of their own."""
    if not names:
        return {}
    rows = store.ex.query_arrow(
        "SELECT metric, groupUniqArray(if(kind = 'sum', if(monotonic, 'counter', 'gauge'), toString(kind))) AS kinds,"
        " any(unit) AS unit"
        f" FROM {store.t('metric_points')}"
        " WHERE ws = {ws:String} AND scope = 'deployment' AND entity = {entity:String}"
        " AND metric IN {names:Array(String)} GROUP BY metric"
        f" SETTINGS max_execution_time = {QUERY_TIMEOUT_S}",
        {"ws": ws, "entity": deployment_id, "names": list(names)},
    ).to_pylist()
    return {r["metric"]: _metric(r["metric"], set(r["kinds"]), r["unit"]) for r in rows}
