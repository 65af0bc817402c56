"""Cumulative -> delta, per series, with reset and duplicate detection, kept durable.

Per series the last cumulative point seen is the state. A new point newer than it
becomes the difference (a decrease, a new ``start_time_unix_nano``, or changed
histogram bounds is a reset: the point counts from its own start); a point not
newer is a duplicate, dropped, so a client retrying after a crash does not count
twice. Delta up-down counters keep their running level the same way.

Durability: a request's newest accepted point of each series carries its raw point in
``cum_state`` and also goes to ``series_state`` in the same group commit, after the
points (the writer flushes ``metric_points`` before ``series_state``). Older points of
the same series in the request keep ``cum_state`` empty: a replay wants only each
series' newest state, and a request of 180 points a series paid 180 JSON copies
(half of ``metric_points`` on disk in bench/peers). Everything
between assigning ``seq`` and queueing the rows happens under :attr:`SeriesState.lock`,
so commit order is ``seq`` order. At start, :meth:`SeriesState.load` reads
``series_state`` FINAL, then replays ``cum_state`` of the rows committed after the
newest state row (less a safety margin, since a very large insert may land in
several parts); replaying more than needed is harmless, the newest point wins.
A commit that fails sends the series it moved back to what the store holds
(:meth:`SeriesState.settle`) before the client hears of it, so the retry counts once.
"""

from __future__ import annotations

import json
import operator
import threading

import numpy as np
import pyarrow as pa

from ..store import Store
from ..store.schema import ARROW_SCHEMAS
from .columns import Block
from .metrics import intern_bounds

#: seq is about wall-clock nanoseconds: replay what committed up to 5 min before the newest state row
REPLAY_MARGIN_NS = 300 * 10**9
#: a shared-state read touches a few rows per part, more threads only add start-up cost;
#: on a cluster its key columns name the one shard (of several) that holds the series
_POINT_READ = " SETTINGS max_threads = 1, optimize_skip_unused_shards = 1"
_NAN = float("nan")
_STATE = ARROW_SCHEMAS["series_state"]


def _j(x) -> str:
    """A number as JSON; NaN (a histogram without sum/min/max) as null."""
    return "null" if x is None or x != x else repr(x)


def _jlist(xs) -> str:
    return "[" + ",".join(map(repr, xs)) + "]"  # ints and finite floats: repr is JSON


def _num(x: float):
    return None if x != x else x


def _float(x) -> float:
    return _NAN if x is None else x


def _reset_start(s: int, prev: dict) -> bool:
    return bool(s and prev["s"] and s != prev["s"])


# Each step turns row r of a block from the raw point into its delta (or level) given
# the series' previous state and returns the new state; None drops the row (not newer
# than the state). The state's JSON (the row's cum_state) is written once the request's
# newest point of each series is known (_state_json): a request carrying 180 points
# of a series needs it for one of them.

def _sum(b: Block, r: int, prev: dict | None) -> dict | None:
    v, t, s = b.value[r], b.ts[r], b.start[r]
    if prev is not None and prev["k"] == "sum":
        if t <= prev["t"]:
            return None
        if v >= prev["v"] and not _reset_start(s, prev):
            b.value[r] = v - prev["v"]
            b.start[r] = prev["t"]
    return {"k": "sum", "s": s, "t": t, "v": v}


def _level(b: Block, r: int, prev: dict | None) -> dict | None:
    v, t = b.value[r], b.ts[r]
    if prev is not None and prev["k"] == "level":
        if t <= prev["t"]:
            return None
        v = prev["v"] + v
        b.value[r] = v
    return {"k": "level", "t": t, "v": v}


def _delta_extremes(b: Block, r: int, cur: dict, prev: dict) -> None:
    # A cumulative min (max) that moved happened in this window; one that did not is unknown.
    lo, plo = cur["min"], prev["min"]
    b.min[r] = lo if lo is not None and (plo is None or lo < plo) else _NAN
    hi, phi = cur["max"], prev["max"]
    b.max[r] = hi if hi is not None and (phi is None or hi > phi) else _NAN


_BOUNDS_JSON: dict[tuple, str] = {}


def _bounds_json(bounds: tuple) -> str:
    js = _BOUNDS_JSON.get(bounds)
    if js is None:
        if len(_BOUNDS_JSON) > 4096:
            _BOUNDS_JSON.clear()
        js = _BOUNDS_JSON[bounds] = _jlist(bounds)
    return js


def _hist(b: Block, r: int, prev: dict | None) -> dict | None:
    t, s = b.ts[r], b.start[r]
    cur = {"k": "hist", "s": s, "t": t, "n": b.count[r], "sum": _num(b.sum[r]), "min": _num(b.min[r]),
           "max": _num(b.max[r]), "b": b.bounds[r], "c": b.buckets[r]}
    if prev is not None and prev["k"] == "hist":
        if t <= prev["t"]:
            return None
        pc, cc = prev["c"], cur["c"]
        counts = list(map(operator.sub, cc, pc))
        # bounds are interned (metrics.intern_bounds): equal layouts are mostly the same object
        reset = ((cur["b"] is not prev["b"] and cur["b"] != prev["b"]) or cur["n"] < prev["n"] or len(cc) != len(pc)
                 or (counts and min(counts) < 0) or _reset_start(s, prev))
        if not reset:
            b.count[r] = cur["n"] - prev["n"]
            b.sum[r] = _float(cur["sum"]) - _float(prev["sum"])
            b.buckets[r] = counts
            _delta_extremes(b, r, cur, prev)
            b.start[r] = prev["t"]
    return cur


def downscale(offset: int, counts: list[int], by: int) -> tuple[int, list[int]]:
    """Buckets at scale ``s`` as buckets at scale ``s - by``: index i becomes i >> by."""
    if by == 0 or not counts:
        return offset, counts
    first = offset >> by
    out = [0] * (((offset + len(counts) - 1) >> by) - first + 1)
    for i, c in enumerate(counts):
        out[((offset + i) >> by) - first] += c
    return first, out


def subtract(ao: int, ac: list[int], bo: int, bc: list[int]) -> tuple[int, list[int]] | None:
    """(ao, ac) - (bo, bc) at one scale, trimmed; None when some bucket would go negative."""
    if not any(bc):
        return ao, ac
    if not ac:
        return None
    lo = min(ao, bo)
    out = [0] * (max(ao + len(ac), bo + len(bc)) - lo)
    for i, c in enumerate(ac):
        out[ao - lo + i] += c
    for i, c in enumerate(bc):
        out[bo - lo + i] -= c
    if any(x < 0 for x in out):
        return None
    nz = [i for i, x in enumerate(out) if x]
    if not nz:
        return 0, []
    return lo + nz[0], out[nz[0]: nz[-1] + 1]


def _exp(b: Block, r: int, prev: dict | None) -> dict | None:
    t, s = b.ts[r], b.start[r]
    cur = {"k": "exp", "s": s, "t": t, "n": b.count[r], "sum": _num(b.sum[r]), "min": _num(b.min[r]),
           "max": _num(b.max[r]), "sc": b.scale[r], "z": b.zero[r], "po": b.pos_off[r], "pc": b.pos[r],
           "no": b.neg_off[r], "nc": b.neg[r]}
    if prev is not None and prev["k"] == "exp":
        if t <= prev["t"]:
            return None
        scale = min(cur["sc"], prev["sc"])
        pos = subtract(*downscale(cur["po"], cur["pc"], cur["sc"] - scale),
                       *downscale(prev["po"], prev["pc"], prev["sc"] - scale))
        neg = subtract(*downscale(cur["no"], cur["nc"], cur["sc"] - scale),
                       *downscale(prev["no"], prev["nc"], prev["sc"] - scale))
        zero, count = cur["z"] - prev["z"], cur["n"] - prev["n"]
        if pos is not None and neg is not None and zero >= 0 and count >= 0 and not _reset_start(s, prev):
            b.count[r], b.zero[r], b.scale[r] = count, zero, scale
            b.pos_off[r], b.pos[r] = pos
            b.neg_off[r], b.neg[r] = neg
            b.sum[r] = _float(cur["sum"]) - _float(prev["sum"])
            _delta_extremes(b, r, cur, prev)
            b.start[r] = prev["t"]
    return cur


_STEPS = {"sum": _sum, "level": _level, "hist": _hist, "exp": _exp}


def _state_json(c: dict) -> str:
    """A state as cum_state's JSON, written by hand for speed: every value is a finite
    number, an int, a list of them, or null."""
    k = c["k"]
    if k == "sum":
        return f'{{"k":"sum","s":{c["s"]},"t":{c["t"]},"v":{c["v"]!r}}}'
    if k == "level":
        return f'{{"k":"level","t":{c["t"]},"v":{c["v"]!r}}}'
    head = (f'{{"k":"{k}","s":{c["s"]},"t":{c["t"]},"n":{c["n"]},"sum":{_j(c["sum"])},"min":{_j(c["min"])},'
            f'"max":{_j(c["max"])},')
    if k == "hist":
        return head + f'"b":{_bounds_json(c["b"])},"c":{c["c"]!r}}}'
    return head + (f'"sc":{c["sc"]},"z":{c["z"]},"po":{c["po"]},"pc":{c["pc"]!r},"no":{c["no"]},'
                   f'"nc":{c["nc"]!r}}}')


class Change:
    """What one request did to the state: new states, and the ones they replaced."""

    def __init__(self, ws: str):
        self.ws = ws
        self.new: dict[int, dict] = {}
        self.json: dict[int, str] = {}
        self.before: dict[int, object] = {}
        #: series -> (block, row) of the point that set its new state
        self.at: dict[int, tuple[Block, int]] = {}

    def write_json(self) -> None:
        """Each series' new state as JSON, in the row of its newest point only: a
        replay wants only that one (see the module doc)."""
        for h, (b, r) in self.at.items():
            b.cum_state[r] = self.json[h] = _state_json(self.new[h])


class SeriesState:
    """``shared=False``: this process is the store's only writer (chDB), so the state
    is read once at start and then kept in memory. ``shared=True``: other API replicas
    write the same series, so every request first reads its series' state from the
    store, and the newer of that and this process's own (which may be ahead of the
    store by commits still in flight) wins."""

    def __init__(self, store: Store, *, shared: bool = False):
        self.store = store
        self.shared = shared
        #: held from applying a request's state through queueing its rows
        self.lock = threading.Lock()
        # series -> state dict, or its JSON until first used (keeps a restart's load cheap)
        self._state: dict[int, object] = {}
        if not shared:
            self.load()

    def __len__(self) -> int:
        return len(self._state)

    def load(self) -> None:
        self._state = {h: js for h, (_, js) in self._read("", {}).items()}

    def _read(self, where: str, params: dict, points_where: str = "") -> dict[int, tuple[int, str]]:
        """Durable state per series, as (time of its point, JSON): ``series_state``,
        overtaken by any newer ``cum_state`` committed after it. ``points_where``
        narrows the replay further (by the sort key's leading columns)."""
        ex, t = self.store.ex, self.store.t
        saved = ex.query_arrow(
            f"SELECT series, toUnixTimestamp64Nano(ts) AS t, state, seq FROM {t('series_state')} FINAL"
            f" WHERE 1 {where}" + _POINT_READ * bool(points_where), params,
        ).to_pydict()
        state = {h: (ts, js) for h, ts, js in zip(saved["series"], saved["t"], saved["state"])}
        since = max(0, max(saved["seq"], default=0) - REPLAY_MARGIN_NS)
        replay = ex.query_arrow(
            f"SELECT series, toUnixTimestamp64Nano(max(ts)) AS t, argMax(cum_state, ts) AS state"
            f" FROM {t('metric_points')} WHERE seq > {{since:UInt64}} AND cum_state != '' {where} {points_where}"
            f" GROUP BY series" + _POINT_READ * bool(points_where), {**params, "since": since},
        ).to_pydict()
        for series, ts, js in zip(replay["series"], replay["t"], replay["state"]):
            if ts > state.get(series, (-1, ""))[0]:
                state[series] = (ts, js)
        return state

    def _sync(self, ws: str, series: list[int], keys: set[tuple[str, str, str]]) -> None:
        """Shared mode: take the store's state for ``series`` where it is newer.
        ``keys`` (scope, entity, metric) let the replay use metric_points' sort key
        instead of scanning every recent part of the workspace."""
        scopes, entities, metrics = (sorted({k[i] for k in keys}) for i in range(3))
        durable = self._read(
            "AND ws = {ws:String} AND series IN {ids:Array(UInt64)}",
            {"ws": ws, "ids": series, "scopes": scopes, "entities": entities, "metrics": metrics},
            "AND scope IN {scopes:Array(String)} AND entity IN {entities:Array(String)}"
            " AND metric IN {metrics:Array(String)}",
        )
        for h, (ts, js) in durable.items():
            mine = self._get(h)
            if mine is None or ts > mine["t"]:
                self._state[h] = js

    def _get(self, series: int) -> dict | None:
        v = self._state.get(series)
        if isinstance(v, str):
            v = json.loads(v)
            if v["k"] == "hist":
                v["b"] = intern_bounds(v["b"])
            self._state[series] = v
        return v

    def apply(self, ws: str, blocks) -> Change:
        """Turn the stateful rows of ``blocks`` into deltas (or levels); drops duplicates.
        Call under :attr:`lock`; nothing changes until :meth:`commit`."""
        change = Change(ws)
        segs = [(b, r0, r1, mode) for b in blocks for r0, r1, mode in b.stateful]
        hs = [e[0] for b, r0, r1, _ in segs for e in b.ents[r0:r1]]
        if self.shared and hs:
            keys = {(g.scope, g.entity, g.metric)
                    for b, r0, r1, _ in segs for g in map(b.groups.__getitem__, set(b.gidx[r0:r1]))}
            self._sync(ws, sorted(set(hs)), keys)
        if len(set(hs)) == len(hs):
            for b, r0, r1, mode in segs:
                if mode == "sum":
                    self._sums(b, r0, r1, change)
                else:
                    self._rows(b, range(r0, r1), _STEPS[mode], change)
            change.write_json()
            return change  # each series once: every row kept is its newest
        # one series twice in a request: oldest point first
        rows = [(b.ents[r][0], b.ts[r], b, r, _STEPS[mode]) for b, r0, r1, mode in segs for r in range(r0, r1)]
        rows.sort(key=lambda x: (x[0], x[1]))
        for _, _, b, r, step in rows:
            self._rows(b, (r,), step, change)
        change.write_json()
        return change

    def _rows(self, b: Block, rows, step, change: Change) -> None:
        new, before, state, get = change.new, change.before, self._state, self._get
        for r in rows:
            h = b.ents[r][0]
            prev = new.get(h)
            if prev is None:
                before[h] = state.get(h)
                prev = get(h)
            cur = step(b, r, prev)
            if cur is None:
                b.drop.append(r)
            else:
                new[h] = cur
                change.at[h] = (b, r)

    def _sums(self, b: Block, r0: int, r1: int, change: Change) -> None:
        """:func:`_sum` over a run of rows with distinct series: the hot path of the
        OpenTelemetry SDK's default (cumulative) counters, so written out inline."""
        new, before, json_of, state, get = change.new, change.before, change.json, self._state, self._get
        ents, ts, start, value, cum, drop = b.ents, b.ts, b.start, b.value, b.cum_state, b.drop
        for r in range(r0, r1):
            h = ents[r][0]
            before[h] = prev = state.get(h)
            if prev is not None and type(prev) is not dict:
                prev = get(h)
            v, t, s = value[r], ts[r], start[r]
            if prev is not None and prev["k"] == "sum":
                if t <= prev["t"]:
                    drop.append(r)
                    continue
                pv = prev["v"]
                if v >= pv and not (s and prev["s"] and s != prev["s"]):
                    value[r] = v - pv
                    start[r] = prev["t"]
            cum[r] = json_of[h] = f'{{"k":"sum","s":{s},"t":{t},"v":{v!r}}}'
            new[h] = {"k": "sum", "s": s, "t": t, "v": v}

    def commit(self, change: Change) -> None:
        self._state.update(change.new)

    def settle(self, change: Change) -> None:
        """The commit carrying ``change`` failed (maybe half way: points stored, state
        not). For each series no later request has moved on since, take what the store
        holds, which is exactly what the client's retry must be compared with; if the
        store cannot answer either, go back to the state before the request."""
        with self.lock:
            ours = [h for h, state in change.new.items() if self._state.get(h) is state]
            if not ours:
                return
            try:
                read = self._read(
                    "AND ws = {ws:String} AND series IN {ours:Array(UInt64)}", {"ws": change.ws, "ours": ours}
                )
                durable = {h: js for h, (_, js) in read.items()}
            except Exception:  # the store is failing: the in-memory past is the best left
                durable = {h: change.before.get(h) for h in ours}
            for h in ours:
                if durable.get(h) is None:
                    self._state.pop(h, None)
                else:
                    self._state[h] = durable[h]

    def rows(self, ws: str, change: Change, seq: int) -> pa.Table:
        """``series_state`` rows for ``change``, all stamped with the request's last ``seq``."""
        series = list(change.new)
        cols = {
            "ws": [ws] * len(series),
            "series": np.array(series, dtype=np.uint64),
            "ts": np.array([change.new[h]["t"] for h in series], dtype=np.int64),
            "state": [change.json[h] for h in series],
            "seq": np.full(len(series), seq, dtype=np.uint64),
        }
        return pa.Table.from_arrays([pa.array(cols[f.name], f.type) for f in _STATE], schema=_STATE)
