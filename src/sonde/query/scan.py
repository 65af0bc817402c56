"""What every metrics query shares: which rows (the ORDER BY prefix first), which step
a row falls in, and how a row's value converts to the vendor's unit.

Every query reads ``metric_points`` through :meth:`Scan.where`, which filters on the
table's ORDER BY prefix (ws, scope, entity, metric IN ..., ts range) so ClickHouse
reads only the granules of one entity's metrics in the window, and binds every value
as a ``{name:Type}`` parameter. Steps are ``intDiv(ts_ns - start_ns, step_ns)``: the
value set a row belongs to, 0-based.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from ..store import Store
from .catalogue import DIMENSIONS, VendorMetric
from .window import Window

if TYPE_CHECKING:
    from .sources import Sources

# Longest a metrics statement may run; a 7-day query takes well under a second.
QUERY_TIMEOUT_S = 30
# A step's index from a row's timestamp; {t0} is the window start, {step} the step (ns).
STEP = "intDiv(toUnixTimestamp64Nano(ts) - {t0:Int64}, {step:Int64})"

#: per vendor metric, {source metric: replicas} left out of its reads (query/sources.py)
Exclusions = Mapping[str, Mapping[str, Sequence[str]]]


@dataclass(frozen=True)
class Scan:
    store: Store
    ws: str
    scope: str
    entity: str
    window: Window
    timeout_s: int = QUERY_TIMEOUT_S
    # Per vendor metric: {source metric: replicas} to leave out because a preferred
    # source of the same replica sent data (decided by query/sources.py).
    excluded: Exclusions = field(default_factory=dict)
    # vendor metrics whose sources the discovery already chose (query/sources.py)
    discovered: frozenset[str] = frozenset()
    # what the store's memories answered for this window, by (memory, source metrics):
    # shared by the copies with_sources makes, so one request reads each once
    memos: dict = field(default_factory=dict, repr=False, compare=False)

    def with_sources(self, sources: Sources) -> Scan:
        """The same scan after the source choice: leaving ``sources.excluded`` out of
        every metric's reads, and not choosing again for the metrics it chose for."""
        return dataclasses.replace(self, excluded=sources.excluded, discovered=sources.discovered)

    def remembered(self, key: tuple, read: Callable[[], Any]) -> Any:
        """``read()`` of a store memory for this window, once a request: the source
        choice, the request totals' sharing and the metric's own path each ask."""
        if key not in self.memos:
            self.memos[key] = read()
        return self.memos[key]

    def chooses(self, vm: VendorMetric) -> bool:
        """Whether ``vm``'s statements pick each replica's source themselves
        (:meth:`first_source`): they can, and the discovery has not already."""
        return vm.chooses_in_statement and vm.name not in self.discovered

    @property
    def table(self) -> str:
        return self.store.t("metric_points")

    def params(self, **extra: Any) -> dict[str, Any]:
        w = self.window
        return {"ws": self.ws, "scope": self.scope, "entity": self.entity, "t0": w.start_ns, "t1": w.end_ns,
                "step": w.step_ns, **extra}

    def where(self, metrics: Sequence[str], lo_ns: int | None = None, hi_ns: int | None = None,
              vm: VendorMetric | None = None) -> tuple[str, dict[str, Any]]:
        """WHERE clause over [lo, hi) (default: the window) for ``metrics``."""
        w = self.window
        params = {"metrics": list(metrics), "lo": w.start_ns if lo_ns is None else lo_ns,
                  "hi": w.end_ns if hi_ns is None else hi_ns}
        sql = ("WHERE ws = {ws:String} AND scope = {scope:String} AND entity = {entity:String}"
               " AND metric IN {metrics:Array(String)}"
               " AND ts >= fromUnixTimestamp64Nano({lo:Int64}) AND ts < fromUnixTimestamp64Nano({hi:Int64})")
        excluded = self.excluded.get(vm.name, {}) if vm else {}
        for i, (metric, replicas) in enumerate(sorted(excluded.items())):
            sql += f" AND NOT (metric = {{xm{i}:String}} AND replica IN {{xr{i}:Array(String)}})"
            params[f"xm{i}"], params[f"xr{i}"] = metric, replicas
        for i, source in enumerate(s for s in (vm.sources if vm else ()) if s.match):
            # a source's points must hold its attribute values (catalogue.Source.match)
            held = " AND ".join(f"attrs[{{mk{i}_{j}:String}}] = {{mv{i}_{j}:String}}" for j in range(len(source.match)))
            sql += f" AND NOT (metric = {{mm{i}:String}} AND NOT ({held}))"
            params[f"mm{i}"] = source.metric
            for j, (k, v) in enumerate(source.match):
                params[f"mk{i}_{j}"], params[f"mv{i}_{j}"] = k, v
        return sql, params

    def factor(self, vm: VendorMetric) -> tuple[str, dict[str, Any]]:
        """SQL for the factor that turns a row's value into ``vm``'s unit: by the unit
        sent when it is a known one, else by the source's documented unit."""
        table = DIMENSIONS[vm.dimension]
        if not table:
            return "toFloat64(1)", {}
        defaults = [vm.factor_of("", s) for s in vm.sources]
        sql = ("transform(unit, {fu:Array(String)}, {ff:Array(Float64)},"
               " transform(metric, {fm:Array(String)}, {fd:Array(Float64)}, toFloat64(1)))")
        return sql, {"fu": list(table), "ff": list(table.values()), "fm": list(vm.source_names), "fd": defaults}

    def first_source(self, vm: VendorMetric, metric: str = "metric") -> tuple[str, dict[str, Any]]:
        """A window condition true for each replica's rows of its first source in
        ``vm``'s order among those it sent: the discovery's choice (query/sources.py)
        made inside a statement, over rows (or groups) that carry ``replica``."""
        rank = f"indexOf({{sources:Array(String)}}, {metric})"
        return f"{rank} = min({rank}) OVER (PARTITION BY replica)", {"sources": list(vm.source_names)}

    def run(self, sql: str, params: dict[str, Any]) -> pa.Table:
        # SETTINGS takes no bound parameters; the limit is an int of ours, never input.
        return self.store.ex.query_arrow(f"{sql} SETTINGS max_execution_time = {int(self.timeout_s)}", params)
