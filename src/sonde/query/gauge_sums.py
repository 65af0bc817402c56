"""GAUGE means over the holds the store sums per bucket in memory (store/gauge_sums.py).

A day's or a week's GPU utilisation reads 0.3-2 M samples in a statement; where the
store's one writer has every hold of the window summed per bucket, the answer is the
sum of the buckets each step holds whole, plus the hold of each series' newest sample
(one interval: nothing follows it yet), cut at the steps: :func:`query.gauges.time_weighted`'s
answer, from (series x buckets) numbers instead of samples. The rest is the statement's,
step for step: the per-replica source choice (a replica's first source with any row
in the window's reads), the discovery's exclusions, the unit factor per series and
unit, per-series means, then per label set their sum (their mean for RATIO gauges).
Only the order floating-point sums are added in differs (tests/test_gauge_sums.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pyarrow as pa

from .catalogue import DIMENSIONS, LabelKind, VendorMetric
from .recent import _EMPTY, combine, pairs
from ..store.gauge_sums import Sums


def time_weighted(got: Sums, vm: VendorMetric, *, t0: int, t1: int, step: int, chooses: bool,
                  excluded: Mapping[str, Sequence[str]]) -> pa.Table:
    """Rows ``{k, l_host, l_device, v}`` as :func:`query.gauges.time_weighted` gives them."""
    sources = vm.source_names
    n_steps = (t1 - t0) // step
    keys = got.keys
    metric = [k[0] for k in keys]
    replica = [k[3] for k in keys]
    live = np.array([m in sources and r not in excluded.get(m, ()) for m, r in zip(metric, replica)], dtype=bool)
    if chooses and keys:
        # a replica's series of a later source are out when it sent an earlier one
        seen = got.presence.values["rows"].sum(axis=1) > 0
        best: dict[str, int] = {}
        for (m, r), any_row in zip(got.presence.keys, seen.tolist()):
            if any_row and m in sources and r not in excluded.get(m, ()):
                best[r] = min(best.get(r, len(sources)), sources.index(m))
        live &= np.array([sources.index(m) == best.get(r, -1) if m in sources else False
                          for m, r in zip(metric, replica)], dtype=bool)
    if not live.any():
        return _EMPTY
    factor = _factors(vm, keys)
    per = step // got.width
    integral = (got.integral * factor[:, None]).reshape(len(keys), n_steps, per).sum(axis=2)
    covered = got.covered.reshape(len(keys), n_steps, per).sum(axis=2)
    # the newest samples' holds, one interval each, cut at the window and the steps
    a, b = np.maximum(got.tail_t, t0), np.minimum(got.tail_t + got.tail_e, t1)
    held = b > a
    tk, tv, a, b = got.tail_key[held], got.tail_v[held] * factor[got.tail_key[held]], a[held], b[held]
    ka = (a - t0) // step
    n = (b - 1 - t0) // step - ka + 1
    rep = np.repeat(np.arange(a.size), n)
    kk = ka[rep] + (np.arange(rep.size) - np.repeat(np.cumsum(n) - n, n))
    piece = np.minimum(b[rep], t0 + (kk + 1) * step) - np.maximum(a[rep], t0 + kk * step)
    np.add.at(integral, (tk[rep], kk), tv[rep] * piece)
    np.add.at(covered, (tk[rep], kk), piece)
    # per series (its units' keys together), per step: the mean
    series_ids, series_of = np.unique(np.array([k[1] for k in keys], dtype=np.uint64)[live], return_inverse=True)
    series_of = series_of.ravel()
    live_i = np.flatnonzero(live)
    s_int = np.zeros((series_ids.size, n_steps))
    s_cov = np.zeros((series_ids.size, n_steps), dtype=np.int64)
    np.add.at(s_int, series_of, integral[live_i])
    np.add.at(s_cov, series_of, covered[live_i])
    first = np.zeros(series_ids.size, dtype=np.int64)
    first[series_of[::-1]] = live_i[::-1]  # each series' first key stands for its labels
    label_keys, label_i = _labels(vm, [keys[j] for j in first.tolist()])
    cell_s, cell_k = np.nonzero(s_cov > 0)
    mean = s_int[cell_s, cell_k] / s_cov[cell_s, cell_k]
    return combine(vm, n_steps, label_keys, label_i[cell_s], cell_k, mean)


def _factors(vm: VendorMetric, keys: list) -> np.ndarray:
    """Each key's factor into ``vm``'s unit (Scan.factor: by the unit sent when it is a
    known one, else by its source's documented unit)."""
    if not DIMENSIONS[vm.dimension]:
        return np.ones(len(keys))
    by_metric = {s.metric: s for s in vm.sources}
    return np.array([vm.factor_of(k[2], by_metric[k[0]]) if k[0] in by_metric else 1.0 for k in keys])


def _labels(vm: VendorMetric, keys: list) -> tuple[list[tuple], np.ndarray]:
    """The distinct (l_host, l_device) of series given by a key each, as
    query.gauges.label_columns makes them, and each series' index into them."""
    kind = vm.labels
    if kind.per_node:
        hosts = [str(k[4]) for k in keys]
    elif kind is LabelKind.PLAIN:
        hosts = [""] * len(keys)
    else:
        hosts = [k[3] for k in keys]
    devices = [k[5] for k in keys] if kind.device == "gpu" else [""] * len(keys)
    h_words, h_i = np.unique(np.array(hosts, dtype=object), return_inverse=True) if keys else ([], np.zeros(0, int))
    d_words, d_i = np.unique(np.array(devices, dtype=object), return_inverse=True) if keys else ([], np.zeros(0, int))
    return pairs(list(h_words), h_i.ravel(), list(d_words), d_i.ravel())
