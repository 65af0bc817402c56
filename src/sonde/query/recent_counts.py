"""Requests by status class from the five-minute counts the store keeps in memory
(store/request_counts.py), for windows whose edges and step fall on its buckets.

The arithmetic is :func:`query.histograms.status_counts`' over whole buckets: the same
points (the request histograms' sources, the discovery's exclusions), per replica the
first source in catalogue order that sent any point in the window (of whatever kind),
and per (step, status class) the observations of the histogram points kept; a (step,
class) with no histogram point is left out, one whose points observed nothing is a 0.
Only classes 2xx-5xx are given, the ones request totals report
(``counters.requests_by_status``); ``tests/test_request_counts.py`` holds both paths to
one answer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ..store.request_counts import BUCKET_NS, CLASSES, Counts
from .catalogue import CATALOGUE, LabelKind, VendorMetric

#: the metrics the store counts per five minutes: the request totals' sources
METRICS = frozenset(s.metric for vm in CATALOGUE.values() if vm.labels is LabelKind.STATUS for s in vm.sources)


def aligned(t0: int, t1: int, step: int) -> bool:
    """Whether a window [t0, t1) in steps of ``step`` (ns) is a union of whole buckets."""
    return not (t0 % BUCKET_NS or t1 % BUCKET_NS or step % BUCKET_NS)


def status_counts(c: Counts, vm: VendorMetric, *, t0: int, step: int, chooses: bool,
                  excluded: Mapping[str, Sequence[str]]) -> list[dict]:
    """Rows ``{k, cls, n}`` as ``histograms.status_counts`` gives them for classes 2-5."""
    if not c.keys or not c.n.shape[1]:
        return []
    sources = vm.source_names
    metric = [m for m, _, _ in c.keys]
    rank = np.array([sources.index(m) for m in metric], dtype=np.int64)
    replicas, replica_i = np.unique(np.array([r for _, r, _ in c.keys], dtype=object), return_inverse=True)
    keep = np.ones(len(c.keys), dtype=bool)
    for m, left_out in excluded.items():
        keep &= ~(np.array([x == m for x in metric]) & np.isin(replicas[replica_i], list(left_out)))
    if chooses:
        sent = keep & (c.rows.sum(axis=1) > 0)
        best = np.full(len(replicas), np.iinfo(np.int64).max)
        np.minimum.at(best, replica_i[sent], rank[sent])
        keep &= rank == best[replica_i]
    cls = np.array([x for _, _, x in c.keys], dtype=np.int64)
    keep &= np.isin(cls, CLASSES)
    at = np.flatnonzero(keep)
    if not at.size:
        return []
    # per class, the kept keys' buckets added up; then each step's buckets (a run of
    # whole buckets) added up
    col = np.searchsorted(CLASSES, cls[at])
    n = np.stack([c.n[at[col == j]].sum(axis=0) for j in range(len(CLASSES))])
    points = np.stack([c.points[at[col == j]].sum(axis=0) for j in range(len(CLASSES))])
    k = (c.start_ns + np.arange(c.n.shape[1], dtype=np.int64) * BUCKET_NS - t0) // step
    starts = np.flatnonzero(np.append(True, k[1:] != k[:-1]))
    n, points = np.add.reduceat(n, starts, axis=1), np.add.reduceat(points, starts, axis=1)
    cs, ks = np.nonzero(points)
    return [{"k": int(k[starts[a]]), "cls": CLASSES[b], "n": int(v)}
            for b, a, v in zip(cs.tolist(), ks.tolist(), n[cs, ks].tolist())]
