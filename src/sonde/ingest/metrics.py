"""ExportMetricsServiceRequest -> column blocks of ``metric_points`` rows.

Per metric the data points are read field by field into lists (one pass per field
is cheaper than a Python object per row), checked in bulk with C-level builtins
(a per-point check only runs for a metric that fails the bulk one), and tied to
their series' :class:`~.columns.SeriesCache` entry. What a point breaks
is counted under a reason that names the metric; those counts become the
response's ``partial_success``. Cumulative state is applied afterwards, under the
state lock (:mod:`.cumulative`); this module is stateless.
"""

from __future__ import annotations

import math
import operator
import time
from collections import Counter
from collections.abc import Callable

from .columns import MAX_TS, Block, Group, SeriesCache, SeriesGroup
from .exemplars import Exemplars
from .proto import kv_pairs
from .resource import Placement, place
from .series_limit import SeriesLimit

DELTA, CUMULATIVE = 1, 2
_KINDS = {"gauge": "gauge", "sum": "sum", "histogram": "histogram", "exponential_histogram": "exp_histogram"}
_NAN = float("nan")
#: how far ahead of this server's clock a point may be: clock skew, not a date years out,
#: whose one point would make every later point of its series a duplicate (and outlive retention)
MAX_AHEAD_NS = 3600 * 10**9

_BOUNDS: dict[tuple, tuple] = {}


def intern_bounds(bounds) -> tuple:
    """One tuple object per distinct bucket layout: cheap to compare (``is``) and to
    key caches with. Bounded: cleared past 4096 layouts."""
    t = tuple(bounds)
    if len(_BOUNDS) > 4096:
        _BOUNDS.clear()
    return _BOUNDS.setdefault(t, t)


class Rejects:
    """Rejected points by reason, for ``partial_success``."""

    def __init__(self):
        self.count = 0
        self.reasons: Counter[str] = Counter()

    def add(self, n: int, reason: str) -> None:
        if n:
            self.count += n
            self.reasons[reason] += n

    def message(self, noun: str) -> str:
        if not self.count:
            return ""
        top = self.reasons.most_common(10)
        parts = [f"{reason} ({n})" for reason, n in top]
        more = len(self.reasons) - len(top)
        return f"{self.count} {noun} rejected: " + "; ".join(parts) + (f"; and {more} more reasons" if more else "")


def _point_count(rm) -> int:
    n = 0
    for sm in rm.scope_metrics:
        for m in sm.metrics:
            which = m.WhichOneof("data")
            if which:
                n += len(getattr(m, which).data_points)
    return n


def _time_reason(t: int, s: int, latest: int) -> str | None:
    if t == 0:
        return "time_unix_nano is 0"
    if t > MAX_TS:
        return "time_unix_nano is after the year 2262"
    if t > latest:
        return "time_unix_nano is more than 1 hour ahead of the server's clock"
    if s > t:
        return "start_time_unix_nano is after time_unix_nano"
    return None


class MetricsWalk:
    """One request's points as blocks; ``placer(ws, placement)`` returns the row parent
    (and registers the entity)."""

    def __init__(self, ws: str, cache: SeriesCache, placer: Callable[[str, Placement], str],
                 limit: SeriesLimit | None = None):
        self.ws = ws
        self.cache = cache
        self.placer = placer
        self.limit = limit
        self.latest = min(MAX_TS, time.time_ns() + MAX_AHEAD_NS)
        self.blocks = {f: Block(f) for f in ("number", "hist", "exp")}
        self.rejects = Rejects()
        self.exemplars = Exemplars()
        self._bounds_ok: dict[tuple, str | None] = {}

    def walk(self, req) -> "MetricsWalk":
        for rm in req.resource_metrics:
            pl = place(kv_pairs(rm.resource.attributes))
            if isinstance(pl, str):
                self.rejects.add(_point_count(rm), pl)
                continue
            parent = self.placer(self.ws, pl)
            extra = {"sonde.node_id": pl.node_id} if pl.node_id else {}
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    self._metric(m, pl, parent, extra)
        return self

    def _metric(self, m, pl: Placement, parent: str, extra: dict) -> None:
        which = m.WhichOneof("data")
        if which is None:
            return
        body = getattr(m, which)
        dps = body.data_points
        if not dps:
            return
        name = m.name
        label = f"metric {name[:100]!r}"
        if not name:
            return self.rejects.add(len(dps), "metric with an empty name")
        if which == "summary":
            return self.rejects.add(len(dps), f"{label} is a Summary, which Sonde does not store; send a histogram")
        mode = None
        monotonic = False
        if which != "gauge":
            temporality = body.aggregation_temporality
            if temporality not in (DELTA, CUMULATIVE):
                return self.rejects.add(len(dps), f"{label} has no aggregation_temporality")
            cumulative = temporality == CUMULATIVE
            if which == "sum":
                monotonic = body.is_monotonic
                if monotonic and cumulative:
                    mode = "sum"
                elif not monotonic and not cumulative:
                    mode = "level"
            elif cumulative:
                mode = "hist" if which == "histogram" else "exp"
        kind = _KINDS[which]
        ident = (self.ws, pl.scope, pl.entity, name, pl.replica, pl.node_rank, pl.node_id)
        group = Group(ws=self.ws, scope=pl.scope, entity=pl.entity, parent=parent, metric=name, kind=kind,
                      monotonic=monotonic, unit=m.unit, replica=pl.replica, node_rank=pl.node_rank)
        if which in ("gauge", "sum"):
            self._numbers(dps, ident, group, mode, extra, label)
            return
        self.exemplars.add(group, dps)
        if which == "histogram":
            self._histograms(dps, ident, group, mode, extra, label)
        else:
            self._exponential(dps, ident, group, mode, extra, label)

    def _entries(self, ident: tuple, extra: dict, keys: list[tuple]) -> tuple[SeriesGroup, list]:
        g = self.cache.group(ident)
        get = g.entries.get
        ents = [get(k) for k in keys]
        if None in ents:
            for j, e in enumerate(ents):
                if e is None:
                    k = keys[j]
                    ents[j] = g.entries.get(k) or self.cache.resolve(ident, extra, g, k)
        return g, ents

    def _numbers(self, dps, ident, group, mode, extra, label) -> None:
        dps = list(dps)  # one wrapper object per point, reused by every pass below
        ts = [p.time_unix_nano for p in dps]
        st = [p.start_time_unix_nano for p in dps]
        # as_double and as_int share a oneof; whichever is set is the non-zero one
        vals = [p.as_double or p.as_int for p in dps]
        # tuple() of a slice: twice as fast as tuple() iterating the repeated field
        keys = [tuple(p.attributes[:]) for p in dps]
        flagged = any([p.flags & 1 for p in dps])
        unset = [j for j, v in enumerate(vals) if not v and dps[j].WhichOneof("value") is None] if 0 in vals else ()
        clean = (not flagged and not unset and min(ts) > 0 and max(ts) <= self.latest
                 and all(map(math.isfinite, vals)) and (not any(st) or all(map(operator.le, st, ts))))
        if not clean:
            keep = self._check_numbers(dps, ts, st, vals, set(unset), label)
            ts, st, vals, keys = ([x for x, k in zip(col, keep) if k] for col in (ts, st, vals, keys))
            if not ts:
                return
        g, ents = self._entries(ident, extra, keys)
        keep = self._admit(ents, label)
        if keep is not None:
            ts, st, vals, ents = ([x for x, k in zip(col, keep) if k] for col in (ts, st, vals, ents))
            if not ts:
                return
        b = self.blocks["number"]
        r0 = len(b)
        b.add_group(group, len(ts))
        self._attach(b, r0, g, ents)
        b.ts += ts
        b.start += st
        b.value += vals
        if mode:
            b.stateful.append((r0, len(b), mode))

    def _check_numbers(self, dps, ts, st, vals, unset: set, label: str) -> list[bool]:
        keep = []
        for j, p in enumerate(dps):
            if p.flags & 1:  # FLAG_NO_RECORDED_VALUE: nothing to store, nothing wrong
                keep.append(False)
                continue
            reason = _time_reason(ts[j], st[j], self.latest)
            if reason is None and j in unset:
                reason = "data point has no value"
            if reason is None and not math.isfinite(vals[j]):
                reason = "value is NaN or infinite"
            if reason:
                self.rejects.add(1, f"{label}: {reason}")
            keep.append(reason is None)
        return keep

    def _common(self, p) -> str | None:
        reason = _time_reason(p.time_unix_nano, p.start_time_unix_nano, self.latest)
        if reason:
            return reason
        for field in ("sum", "min", "max"):
            if p.HasField(field) and not math.isfinite(getattr(p, field)):
                return f"{field} is NaN or infinite"
        return None

    def _histograms(self, dps, ident, group, mode, extra, label) -> None:
        dps = list(dps)
        ts = [p.time_unix_nano for p in dps]
        st = [p.start_time_unix_nano for p in dps]
        cnt = [p.count for p in dps]
        counts = [p.bucket_counts[:] for p in dps]  # a slice is twice as fast as list()
        bounds = [intern_bounds(p.explicit_bounds[:]) for p in dps]
        opt = {f: ([p.HasField(f) for p in dps], [getattr(p, f) for p in dps]) for f in ("sum", "min", "max")}
        keys = [tuple(p.attributes[:]) for p in dps]
        flagged = any([p.flags & 1 for p in dps])
        clean = (not flagged and min(ts) > 0 and max(ts) <= self.latest and (not any(st) or all(map(operator.le, st, ts)))
                 and all(all(map(math.isfinite, raw)) for _, raw in opt.values())
                 and not any(self._bounds_reason(x) for x in {id(x): x for x in bounds}.values())
                 and all(len(c) == len(x) + 1 for c, x in zip(counts, bounds))
                 and list(map(sum, counts)) == cnt)
        cols = [ts, st, cnt, counts, bounds, keys, *(c for pair in opt.values() for c in pair)]
        if not clean:
            keep = [self._hist_reason(p, c, x, label) is None for p, c, x in zip(dps, counts, bounds)]
            cols = [[v for v, k in zip(col, keep) if k] for col in cols]
            if not cols[0]:
                return
        g, cols[5] = self._entries(ident, extra, cols[5])  # keys -> series entries
        keep = self._admit(cols[5], label)
        if keep is not None:
            cols = [[v for v, k in zip(col, keep) if k] for col in cols]
            if not cols[0]:
                return
        ts, st, cnt, counts, bounds, ents = cols[:6]
        opt = {f: (cols[6 + 2 * i], cols[7 + 2 * i]) for i, f in enumerate(opt)}
        b = self.blocks["hist"]
        r0 = len(b)
        b.ts += ts
        b.start += st
        b.count += cnt
        b.sum += [v if h else _NAN for h, v in zip(*opt["sum"])]
        b.min += [v if h else _NAN for h, v in zip(*opt["min"])]
        b.max += [v if h else _NAN for h, v in zip(*opt["max"])]
        b.bounds += bounds
        b.buckets += counts
        self._finish(b, r0, group, mode, g, ents)

    def _hist_reason(self, p, counts: list[int], bounds: tuple, label: str) -> str | None:
        if p.flags & 1:
            return "no recorded value"  # skipped, not rejected
        reason = self._common(p) or self._bounds_reason(bounds)
        if reason is None and (counts or bounds):
            if len(counts) != len(bounds) + 1:
                reason = f"{len(counts)} bucket_counts for {len(bounds)} explicit_bounds (want {len(bounds) + 1})"
            elif sum(counts) != p.count:
                reason = f"bucket_counts add up to {sum(counts)}, not count {p.count}"
        if reason:
            self.rejects.add(1, f"{label}: {reason}")
        return reason

    def _bounds_reason(self, bounds: tuple) -> str | None:
        if bounds in self._bounds_ok:
            return self._bounds_ok[bounds]
        reason = None
        if not all(math.isfinite(x) for x in bounds):
            reason = "explicit_bounds hold NaN or infinity"
        elif any(a >= b for a, b in zip(bounds, bounds[1:])):
            reason = "explicit_bounds are not strictly increasing"
        self._bounds_ok[bounds] = reason
        return reason

    def _exponential(self, dps, ident, group, mode, extra, label) -> None:
        good, keys = [], []
        for p in dps:
            if p.flags & 1:
                continue
            pos, neg = p.positive, p.negative
            pc, nc = pos.bucket_counts[:], neg.bucket_counts[:]
            reason = self._common(p)
            if reason is None and not -10 <= p.scale <= 20:
                reason = f"scale {p.scale} is outside [-10, 20]"
            if reason is None and p.zero_count + sum(pc) + sum(nc) != p.count:
                reason = f"zero_count and buckets add up to {p.zero_count + sum(pc) + sum(nc)}, not count {p.count}"
            if reason:
                self.rejects.add(1, f"{label}: {reason}")
                continue
            keys.append(tuple(p.attributes[:]))
            good.append((p, pc, nc))
        if not good:
            return
        g, ents = self._entries(ident, extra, keys)
        keep = self._admit(ents, label)
        if keep is not None:
            good, ents = ([x for x, k in zip(col, keep) if k] for col in (good, ents))
        b = self.blocks["exp"]
        r0 = len(b)
        for p, pc, nc in good:
            pos, neg = p.positive, p.negative
            b.ts.append(p.time_unix_nano)
            b.start.append(p.start_time_unix_nano)
            b.count.append(p.count)
            b.sum.append(p.sum if p.HasField("sum") else _NAN)
            b.min.append(p.min if p.HasField("min") else _NAN)
            b.max.append(p.max if p.HasField("max") else _NAN)
            b.scale.append(p.scale)
            b.zero.append(p.zero_count)
            b.pos_off.append(pos.offset)
            b.pos.append(pc)
            b.neg_off.append(neg.offset)
            b.neg.append(nc)
        self._finish(b, r0, group, mode, g, ents)

    def _admit(self, ents: list, label: str) -> list[bool] | None:
        """Which points the workspace's series limit lets in; None: all of them."""
        if self.limit is None:
            return None
        keep = self.limit.admit(self.ws, [e[0] for e in ents])
        if keep is not None:
            self.rejects.add(keep.count(False), f"{label}: {self.limit.reason()}")
        return keep

    def _attach(self, b: Block, r0: int, g: SeriesGroup, ents: list) -> None:
        b.ents += ents
        b.segments.append((g, r0, r0 + len(ents)))

    def _finish(self, b: Block, r0: int, group, mode, g: SeriesGroup, ents: list) -> None:
        if not ents:
            return
        b.add_group(group, len(ents))
        self._attach(b, r0, g, ents)
        if mode:
            b.stateful.append((r0, len(b), mode))
