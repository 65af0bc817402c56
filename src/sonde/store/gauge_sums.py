"""Gauge holds summed per bucket in memory, per entity and series, by the store's one writer.

A gauge's time-weighted mean over a day or a week reads every sample of the window in
a statement: 60-200 ms here, most of it sorting samples into series and cutting their
holds at the steps (docs/benchmarks.md). The hold rule is local (query/gauges.py: a
sample holds until the next one if that comes within two of its intervals, else one
interval; its interval is the time since the previous sample, or 60 s after more than
5 minutes), so a sample's hold is settled once its successor is committed, whatever
window is asked later. :class:`GaugeSums` adds each settled hold, cut at bucket edges, to its series'
integral (value x time) and covered time per bucket: 300 s buckets for the last
``FINE_S`` (a day's window ending up to two hours ago, in 300 s steps), 1800 s buckets
for the whole horizon (a week's window, in 1800 s steps). A window whose edges and step
fall on a grid's buckets is then a sum of whole buckets, plus the hold of each series'
newest sample (its successor is not here yet: it holds one interval), which
query/gauge_sums.py works out with the same per-replica source choice as the statement
(from :class:`GaugePresence`, every row of the sources per (metric, replica) and five
minutes).

Each series' newest sample (time, value, interval, unit) is kept to settle its hold when
the next commit brings its successor. A sample older than its series' newest arrives
late: the holds around it are not redone here, so every window reading from 15 minutes
before it to 15 minutes after the newest sample then is read from the store. At start
the horizon is loaded from the store, one statement per entity, settling holds as the
statement does.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .five_minutes import BUCKET_NS, Buckets
from .gauge_grid import COARSE_NS, FINE_NS, Entity, GaugePresence, Key, numbers
from .holds import DEFAULT_INTERVAL_NS, LOOK_AROUND_NS as LOOK_NS, MAX_INTERVAL_NS, by_series, intervals
from .recent import gpu_labels
from .memory import UPTO, Memory, Query, entity_groups

FINE_S = 26 * 3600
_GAUGE = "(kind = 'gauge' OR (kind = 'sum' AND NOT monotonic))"
_ENTITY = ("ws", "scope", "entity")


@dataclass(frozen=True)
class Sums:
    """An entity's sums over [t0, t1) for ``keys``: ``integral`` and ``covered`` as
    (keys, buckets of ``width``) arrays, the newest sample of each series whose hold is
    not summed (``tail_key``, ``tail_t``, ``tail_v``, ``tail_e``), and the sources'
    rows per (metric, replica) and five minutes around the window (``presence``)."""

    keys: list[Key]
    width: int
    integral: np.ndarray
    covered: np.ndarray
    tail_key: np.ndarray
    tail_t: np.ndarray
    tail_v: np.ndarray
    tail_e: np.ndarray
    presence: Buckets


class GaugeSums(Memory):
    def __init__(self, metrics: Iterable[str], horizon_s: float, *, future_ns: int,
                 clock: Callable[[], int] = time.time_ns):
        super().__init__(metrics, horizon_s, future_ns=future_ns, clock=clock)
        self.fine_ns = min(self.horizon_ns, FINE_S * 10**9)
        self._sizes = tuple(-(-(h + future_ns) // w) + 3 for h, w in ((self.fine_ns, FINE_NS),
                                                                        (self.horizon_ns, COARSE_NS)))
        self.presence = GaugePresence(metrics, horizon_s, future_ns=future_ns, clock=clock)
        self._entities: dict[tuple[str, str, str], Entity] = {}
        self._ceiling = 2**63 - 1
        self._pruned = -1  # the half hour of the last pass dropping what the horizon left

    # the life cycle, shared with the presence counts
    def lost(self, points: list[pa.Table]) -> None:
        super().lost(points)
        self.presence.lost(points)

    def reset(self) -> None:
        super().reset()
        self.presence.reset()

    def clear(self) -> None:
        super().clear()
        self.presence.clear()

    def _forget(self) -> None:
        self._entities = {}

    def since(self) -> int:
        # a hold settled here needs its sample's predecessor: the first LOOK_NS is not sure
        return max(super().since() + LOOK_NS, self.presence.since())

    def load_sql(self, table: str) -> str:
        """Per key and fine bucket, the settled holds' sums of one entity (binds ws,
        scope, entity, metrics, lo, cap, w, upto); plus each series' newest sample as a row
        with ``b`` = -1 (its time, value, interval in ``i``, ``c``, ``e``)."""
        return f"""
        SELECT metric, series, unit, replica, node_rank, gpu, b, i, c, e FROM (
            SELECT any(metric) AS metric, series, unit, any(replica) AS replica, any(node_rank) AS node_rank,
                   any(gpu) AS gpu, intDiv(p, {{w:Int64}}) AS b, sum(hv * piece) AS i, sum(piece) AS c,
                   toInt64(0) AS e
            FROM (
                SELECT metric, series, unit, replica, node_rank, gpu, hv, p,
                       least(end, (intDiv(p, {{w:Int64}}) + 1) * {{w:Int64}}) - p AS piece
                FROM (
                    SELECT metric, series, u AS unit, replica, node_rank, gpu, hv, t,
                           if(n - t <= 2 * e, n, t + e) AS end
                    FROM ({_series_sql(table)})
                    ARRAY JOIN times AS t, arrayPushBack(arrayPopFront(times), 0) AS n, vals AS hv, units AS u,
                               intervals AS e
                    WHERE n != 0
                )
                ARRAY JOIN arrayFilter(x -> x < end,
                    arrayMap(j -> if(j = 0, t, (intDiv(t, {{w:Int64}}) + j) * {{w:Int64}}), range(3))) AS p
            )
            WHERE p >= {{lo:Int64}}
            GROUP BY series, unit, b
            UNION ALL
            SELECT metric, series, units[-1], replica, node_rank, gpu, toInt64(-1), vals[-1], times[-1],
                   intervals[-1]
            FROM ({_series_sql(table)})
        )"""

    def load_from(self, query: Query, table: str, upto: int) -> None:
        """The presence counts, then the sums one entity at a time."""
        lo = Memory.since(self) // BUCKET_NS * BUCKET_NS
        names = self.metrics.to_pylist()
        self.presence.load_from(query, table, upto, lo=lo - LOOK_NS)
        sql = self.load_sql(table)
        for group in entity_groups(query, table, names, lo, upto, size=1):
            ws, scope, entity = group["ws"], group["scope"], group["entities"][0]
            self.load(ws, scope, entity, query(sql, {
                "ws": ws, "scope": scope, "entity": entity, "metrics": names, "lo": lo, "look": LOOK_NS,
                "cap": MAX_INTERVAL_NS, "dgap": DEFAULT_INTERVAL_NS, "w": BUCKET_NS, "upto": upto}))

    def load(self, ws: str, scope: str, entity: str, rows: pa.Table) -> None:
        """One entity's :meth:`load_sql` rows, read at start."""
        if not rows.num_rows:
            return
        cols = {c: rows.column(c).to_pylist() for c in rows.column_names}
        keys = list(zip(cols["metric"], cols["series"], cols["unit"], cols["replica"], cols["node_rank"], cols["gpu"]))
        b = np.array(cols["b"], dtype=np.int64)
        with self._lock:
            ent = self._entity((ws, scope, entity))
            k = ent.key_of(keys)
            sums = b >= 0
            self._add(ent, k[sums], b[sums] * FINE_NS, np.array(cols["i"])[sums],
                      np.array(cols["c"], dtype=np.int64)[sums])
            tail = np.flatnonzero(~sums)
            at = ent.series_of([cols["series"][j] for j in tail])
            ent.t[at] = np.array(cols["c"], dtype=np.int64)[tail]
            ent.v[at] = np.array(cols["i"])[tail]
            ent.e[at] = np.array(cols["e"], dtype=np.int64)[tail]
            ent.k[at] = k[tail]

    def add(self, points: pa.Table) -> None:
        """Rows of ``metric_points`` as ingest builds them, committed just now."""
        oldest = (self._clock() - self.horizon_ns) // COARSE_NS * COARSE_NS - LOOK_NS
        ts = numbers(points.column("ts").cast(pa.int64()))
        at = np.flatnonzero(pc.is_in(points.column("metric"), value_set=self.metrics).to_numpy(zero_copy_only=False)
                            & (ts >= oldest))
        if not at.size:
            return
        kind = points.column("kind")
        gauge = pc.or_(pc.equal(kind, "gauge"), pc.and_(pc.equal(kind, "sum"), pc.invert(points.column("monotonic"))))
        gauge = gauge.to_numpy(zero_copy_only=False)[at]
        t, v, series = ts[at], numbers(points.column("value"))[at], numbers(points.column("series"))[at]
        # a key is (series, unit): its words are worked out once, from one of its rows
        # (entity, metric, replica and attributes are part of a series' key)
        units = pc.dictionary_encode(pc.fill_null(points.column("unit").combine_chunks().cast(pa.string()), ""))
        unit_i = units.indices.to_numpy(zero_copy_only=False)[at].astype(np.uint64)
        pairs = pc.dictionary_encode(pa.array(series.astype(np.uint64) * np.uint64(len(units.dictionary) + 1) + unit_i))
        pair_i = pairs.indices.to_numpy(zero_copy_only=False).astype(np.int64)
        one = np.empty(len(pairs.dictionary), dtype=np.int64)
        one[pair_i] = np.arange(at.size)
        firsts = points.select([*_ENTITY, "metric", "replica", "node_rank"]).take(pa.array(at[one]))
        gpu = gpu_labels(points.column("attrs").take(pa.array(at[one]))).to_pylist()
        words = {c: firsts.column(c).cast(pa.string()).to_pylist() for c in (*_ENTITY, "metric", "replica")}
        unit_words = units.dictionary.to_pylist()
        keys = [(m, int(sr), unit_words[u], r, n, g) for m, sr, u, r, n, g in zip(
            words["metric"], series[one].tolist(), unit_i[one].tolist(), words["replica"],
            firsts.column("node_rank").to_pylist(), gpu)]
        entity = list(zip(*(words[c] for c in _ENTITY)))
        self._present(entity, keys, pair_i, t)
        by: dict[tuple, list[int]] = {}
        for j, e in enumerate(entity):
            by.setdefault(e, []).append(j)
        ent_of_pair = np.empty(len(one), dtype=np.int64)
        for n, members in enumerate(by.values()):
            ent_of_pair[members] = n
        g = np.flatnonzero(gauge)
        row_ent = ent_of_pair[pair_i[g]]
        order = g[np.argsort(row_ent, kind="stable")]  # each entity's gauge rows, in commit order
        cut = np.searchsorted(ent_of_pair[pair_i[order]], np.arange(len(by) + 1))
        with self._lock:
            self._prune()
            ahead = (self._clock() + self._future_ns) // FINE_NS * FINE_NS + FINE_NS
            if (t > ahead).any():
                self._ceiling = min(self._ceiling, int(t[t > ahead].min()))
            for n, (e, members) in enumerate(by.items()):
                j = order[cut[n]:cut[n + 1]]
                j = j[t[j] <= ahead]
                if not j.size:
                    continue
                ent = self._entity(e)
                key_of = np.zeros(len(one), dtype=np.int64)
                key_of[members] = ent.key_of([keys[x] for x in members])
                self._settle(ent, series[j], t[j], v[j], key_of[pair_i[j]])

    def _present(self, entity: list, keys: list, pair_i: np.ndarray, t: np.ndarray) -> None:
        """Count the rows (of any kind) per (metric, replica) and five minutes."""
        code: dict[tuple, int] = {}
        pcode = np.array([code.setdefault((e, k[0], k[3]), len(code)) for e, k in zip(entity, keys)], dtype=np.int64)
        keep = t >= self.presence._oldest()
        b = t[keep] // BUCKET_NS
        if not b.size:
            return
        b0, nb = int(b.min()), int(b.max()) - int(b.min()) + 1
        counts = np.bincount(pcode[pair_i[keep]] * nb + (b - b0), minlength=len(code) * nb)
        combo = np.flatnonzero(counts)
        rows = counts[combo]
        which = list(code)
        c, bb = np.divmod(combo, nb)
        self.presence._add_rows([which[x][0] for x in c.tolist()], [which[x][1:] for x in c.tolist()], bb + b0,
                                {"rows": rows.astype(np.int32)})

    def _prune(self) -> None:
        """Once a half hour: drop the series (and entities) whose newest sample is past
        the horizon and the longest hold (a replica gone, a deployment deleted)."""
        now = self._clock() // COARSE_NS
        if now == self._pruned:
            return
        self._pruned = now
        cutoff = self._clock() - self.horizon_ns - 2 * LOOK_NS
        for e, ent in list(self._entities.items()):
            if not ent.forget_before(cutoff):
                del self._entities[e]

    def _entity(self, e: tuple[str, str, str]) -> Entity:
        ent = self._entities.get(e)
        if ent is None:
            ent = self._entities[e] = Entity(*self._sizes)
        return ent

    def _settle(self, ent: Entity, series: np.ndarray, t: np.ndarray, v: np.ndarray, key: np.ndarray) -> None:
        """Settle the holds the new samples decide, sum them, keep each series' newest."""
        uniq, local = np.unique(series, return_inverse=True)
        at = ent.series_of(uniq.tolist())
        sid = at[local.ravel()]
        prev_t = ent.t[at]
        # late: older than its series' newest; the holds around it are left unsettled
        late = t < ent.t[sid]
        if late.any():
            lo = int(t[late].min()) - LOOK_NS
            horizon = self._clock() - self.horizon_ns
            ent.dirty = [d for d in ent.dirty if d[1] > horizon] + [(lo, int(ent.t[sid[late]].max()) + LOOK_NS)]
            sid, t, v, key = sid[~late], t[~late], v[~late], key[~late]
        # each series' kept newest sample first, then the new ones in time order
        had = np.flatnonzero(prev_t >= 0)
        s = np.concatenate([at[had], sid])
        tt = np.concatenate([prev_t[had], t])
        vv = np.concatenate([ent.v[at[had]], v])
        kk = np.concatenate([ent.k[at[had]], key])
        old = np.concatenate([np.ones(had.size, bool), np.zeros(sid.size, bool)])
        order = by_series(s, tt)
        s, tt, vv, kk, old = s[order], tt[order], vv[order], kk[order], old[order]
        first = np.append(True, s[1:] != s[:-1])
        last = np.append(first[1:], True)
        e = np.where(old, ent.e[s], intervals(first, tt))
        gap = np.append(tt[1:], 0) - tt
        end = np.where(gap <= 2 * e, tt + gap, tt + e)
        held = np.flatnonzero(~last & (end > tt))
        self._add(ent, kk[held], tt[held], vv[held], end[held] - tt[held], split=True)
        newest = np.flatnonzero(last)
        ent.t[s[newest]], ent.v[s[newest]], ent.e[s[newest]], ent.k[s[newest]] = (
            tt[newest], vv[newest], e[newest], kk[newest])

    def _add(self, ent: Entity, key: np.ndarray, a: np.ndarray, v: np.ndarray, length: np.ndarray,
             *, split: bool = False) -> None:
        """Add holds ``[a, a + length)`` of values ``v`` to both grids, cut at the fine
        buckets' edges (``split``; else they lie in one: a load's sums)."""
        if split:  # a hold is at most 2 x 5 minutes: it reaches at most three buckets
            b = a + length
            starts, ends, keys, values = [a], [np.minimum(b, (a // FINE_NS + 1) * FINE_NS)], [key], [v]
            for _ in (1, 2):  # the part past each bucket's end, where there is one
                over = np.flatnonzero(b > ends[-1])
                if not over.size:
                    break
                s = ends[-1][over]
                starts.append(s)
                ends.append(np.minimum(b[over], s + FINE_NS))
                keys.append(keys[-1][over])
                values.append(values[-1][over])
                b = b[over]
            a = np.concatenate(starts)
            length = np.concatenate(ends) - a
            key, integral = np.concatenate(keys), np.concatenate(values) * length
        else:
            integral = v
        for grid in (ent.fine, ent.coarse):
            grid.add(key, a // grid.width, integral, length)

    def window(self, ws: str, scope: str, entity: str, t0: int, t1: int, step: int,
               metrics: Iterable[str]) -> Sums | None:
        """The entity's sums of ``metrics``' series over [t0, t1) in buckets the steps
        hold whole, or None where they may be missing (not kept, not on a grid's edges,
        not from as early as the window's reads, or a late sample near it)."""
        wanted = frozenset(metrics)
        if not wanted <= self._kept or t1 <= t0 or (t1 - t0) % step:
            return None
        lo, hi = t0 - LOOK_NS, t1 + LOOK_NS
        presence = self.presence.window(ws, scope, entity, lo, hi, wanted)
        with self._lock:
            floor = max(self._clock() - self.fine_ns + LOOK_NS, self._floor)
            width = next((w for w in (FINE_NS, COARSE_NS) if not (t0 % w or t1 % w or step % w)
                          and (w == COARSE_NS or lo >= floor)), None)
            if width is None or presence is None or lo < self.since() or hi > self._ceiling:
                return None
            ent = self._entities.get((ws, scope, entity))
            if ent is None:
                return Sums([], width, np.zeros((0, (t1 - t0) // width)), np.zeros((0, (t1 - t0) // width), np.int64),
                            *(np.zeros(0, np.int64),) * 4, presence)
            if any(a < hi and lo < b for a, b in ent.dirty):
                return None
            keys = np.array([j for j, k in enumerate(ent.keys) if k[0] in wanted], dtype=np.int64)
            grid = ent.fine if width == FINE_NS else ent.coarse
            integral, covered = grid.window(t0 // width, t1 // width, keys)
            s = np.arange(len(ent.series))
            tail = s[(ent.t[s] < t1) & (ent.t[s] + ent.e[s] > t0) & np.isin(ent.k[s], keys)]
            pos = np.searchsorted(keys, ent.k[tail])
            return Sums([ent.keys[j] for j in keys.tolist()], width, integral, covered, pos,
                        ent.t[tail].copy(), ent.v[tail].copy(), ent.e[tail].copy(), presence)

    def __len__(self) -> int:
        """Series held, over every entity."""
        with self._lock:
            return sum(len(ent.series) for ent in self._entities.values())


def _series_sql(table: str) -> str:
    """One entity's gauge rows of the horizon as per-series time-sorted arrays with each
    sample's interval (query.gauges' rule)."""
    return f"""
        SELECT series, any(metric) AS metric, any(replica) AS replica, any(node_rank) AS node_rank,
               any(gpu) AS gpu, arraySort(groupArray(toUnixTimestamp64Nano(ts))) AS times,
               arraySort((x, y) -> y, groupArray(value), groupArray(toUnixTimestamp64Nano(ts))) AS vals,
               arraySort((x, y) -> y, groupArray(toString(unit)), groupArray(toUnixTimestamp64Nano(ts))) AS units,
               arrayMap(d -> if(d <= {{cap:Int64}}, d, {{dgap:Int64}}),
                        arrayPopFront(arrayDifference(arrayPushFront(times, 0)))) AS intervals
        FROM (  -- the rows alone: the aggregates' aliases above shadow their columns
            SELECT series, metric, replica, node_rank, gpu, ts, value, unit FROM {table}
            WHERE ws = {{ws:String}} AND scope = {{scope:String}} AND entity = {{entity:String}}
              AND metric IN {{metrics:Array(String)}} AND ts >= fromUnixTimestamp64Nano({{lo:Int64}} - {{look:Int64}})
              AND {_GAUGE} AND {UPTO}
        )
        GROUP BY series"""
