"""Requests by status and the latency's per-step sums from the five-minute buckets the
store keeps in memory (store/request_counts.py), for windows whose edges and step fall
on them.

The arithmetic is :func:`query.histograms.status_counts`' and statement 1 of
:func:`query.histograms.totals` over whole buckets: the same points (the request
histograms' sources, the discovery's exclusions), per replica the first source in
catalogue order that sent any point in the window (of whatever kind), then per step
and status class the observations of the histogram points kept (a class with no
histogram point left out, one whose points observed nothing a 0; only 2xx-5xx, the
classes request totals report), or per step and explicit layout the merged sums and
buckets. ``tests/test_request_counts.py`` holds both paths to one answer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pyarrow as pa

from ..store.request_counts import BUCKET_NS, CLASSES, Buckets
from .catalogue import CATALOGUE, LabelKind, VendorMetric

#: the metrics the store counts per five minutes: the request totals' sources
METRICS = frozenset(s.metric for vm in CATALOGUE.values() if vm.labels is LabelKind.STATUS for s in vm.sources)


def aligned(t0: int, t1: int, step: int) -> bool:
    """Whether a window [t0, t1) in steps of ``step`` (ns) is a union of whole buckets."""
    return not (t0 % BUCKET_NS or t1 % BUCKET_NS or step % BUCKET_NS)


def status_counts(c: Buckets, vm: VendorMetric, *, t0: int, step: int, chooses: bool,
                  excluded: Mapping[str, Sequence[str]]) -> pa.Table:
    """Rows ``{k, cls, n}`` as ``histograms.status_counts`` gives them for classes 2-5."""
    n_all, points_all, rows_all = (c.values[f] for f in ("n", "points", "rows"))
    if not c.keys or not n_all.shape[1]:
        return _counts([], [], [])
    keep = _chosen(c, vm, chooses, excluded, rows_all.sum(axis=1) > 0)
    cls = np.array([x for _, _, x in c.keys], dtype=np.int64)
    keep &= np.isin(cls, CLASSES)
    at = np.flatnonzero(keep)
    if not at.size:
        return _counts([], [], [])
    # each step's buckets (a run of whole buckets) added up, then per class the kept keys'
    at = at[np.argsort(cls[at], kind="stable")]
    cls = cls[at]
    by_class = np.flatnonzero(np.append(True, cls[1:] != cls[:-1]))
    k = (c.start_ns + np.arange(n_all.shape[1], dtype=np.int64) * BUCKET_NS - t0) // step
    starts = np.flatnonzero(np.append(True, k[1:] != k[:-1]))

    def added(a: np.ndarray) -> np.ndarray:
        return np.add.reduceat(np.add.reduceat(a[at], starts, axis=1, dtype=np.int64), by_class, axis=0)

    n, points = added(n_all), added(points_all)
    cs, ks = np.nonzero(points)
    return _counts(k[starts[ks]], cls[by_class][cs], n[cs, ks])


def _counts(k, cls, n) -> pa.Table:
    return pa.table({"k": pa.array(k, pa.int64()), "cls": pa.array(cls, pa.int64()), "n": pa.array(n, pa.int64())})


def _chosen(c: Buckets, vm: VendorMetric, chooses: bool, excluded: Mapping[str, Sequence[str]],
            sent: np.ndarray) -> np.ndarray:
    """The keys read: not left out by the discovery (``excluded``); when choosing, of each
    replica's first source in ``vm``'s order that ``sent`` anything in the window."""
    metric = np.array([key[0] for key in c.keys], dtype=object)
    rank = np.array([vm.source_names.index(m) for m in metric.tolist()], dtype=np.int64)
    replicas, replica_i = np.unique(np.array([key[1] for key in c.keys], dtype=object), return_inverse=True)
    keep = np.ones(len(c.keys), dtype=bool)
    for m, left_out in excluded.items():
        keep &= ~((metric == m) & np.isin(replicas[replica_i], list(left_out)))
    if chooses:
        best = np.full(len(replicas), np.iinfo(np.int64).max)
        np.minimum.at(best, replica_i[keep & sent], rank[keep & sent])
        keep &= rank == best[replica_i]
    return keep


def latency_totals(c: Buckets, vm: VendorMetric, *, t0: int, step: int, chooses: bool,
                   excluded: Mapping[str, Sequence[str]]) -> list[dict] | None:
    """Statement 1's rows of ``histograms.totals`` (not split by status) from the sums
    the store keeps per five minutes: per step and explicit layout (metric, unit,
    bounds) over the replicas kept, a row where any histogram point is. None where an
    exponential histogram is in the window: its buckets are statement 2's to read."""
    v = c.values
    if not c.keys or not v["n"].shape[1]:
        return []
    sent = v["rows"].sum(axis=1) > 0
    kind = np.array([k[2] for k in c.keys], dtype=object)
    if (sent & (kind == "exp_histogram")).any():
        return None
    keep = _chosen(c, vm, chooses, excluded, sent) & (kind == "histogram")
    k = (c.start_ns + np.arange(v["n"].shape[1], dtype=np.int64) * BUCKET_NS - t0) // step
    starts = np.flatnonzero(np.append(True, k[1:] != k[:-1]))
    layouts: dict[tuple, list[int]] = {}
    for i in np.flatnonzero(keep).tolist():
        metric, _, _, unit, bounds = c.keys[i]
        layouts.setdefault((metric, unit, bounds), []).append(i)
    out = []
    for (metric, unit, bounds), at in layouts.items():
        def per_step(name: str, ufunc: np.ufunc = np.add) -> np.ndarray:
            return ufunc.reduceat(ufunc.reduce(v[name][at], axis=0), starts)
        points = per_step("rows")
        n, s, no_min, no_max = per_step("n"), per_step("s"), per_step("no_min"), per_step("no_max")
        mn, mx = per_step("mn", np.minimum), per_step("mx", np.maximum)
        buckets = np.add.reduceat(np.sum([v["buckets"][i] for i in at], axis=0), starts, axis=0)
        replicas = np.add.reduceat(v["rows"][at], starts, axis=1) > 0
        for j in np.flatnonzero(points).tolist():
            out.append({"k": int(k[starts[j]]), "kind": "histogram", "metric": metric, "unit": unit,
                        "bounds": list(bounds), "scale": 0, "cls": 0, "n": int(n[j]), "s": float(s[j]),
                        "mn": float(mn[j]), "mx": float(mx[j]), "no_min": int(no_min[j]), "no_max": int(no_max[j]),
                        "zero": 0, "with_pos": 0, "pos_lo": 0, "with_neg": 0, "neg_lo": 0,
                        "buckets": buckets[j].tolist(),
                        "replicas": [c.keys[i][1] for i, held in zip(at, replicas[:, j]) if held]})
    return out
