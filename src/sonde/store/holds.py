"""The gauges' hold rule (docs/metrics.md#gauge-time-weighted-mean), in numpy: where each
sample's hold ends. query/gauges.py states it in SQL for the statement; query/recent.py,
query/training_values.py and store/gauge_sums.py (which settles holds as commits bring
each sample's successor) use these, so the rule is written twice, and
tests/test_recent.py and tests/test_gauge_sums.py hold the two to one answer.

It lives in the store because the store's memory applies it at write time.
"""

from __future__ import annotations

import numpy as np

#: a sample's interval is the time since the previous sample of its series when that is
#: at most MAX_INTERVAL_NS, else (a series' first sample, or one after a longer gap)
#: DEFAULT_INTERVAL_NS, the OpenTelemetry SDK's default export interval
MAX_INTERVAL_NS = 300 * 10**9
DEFAULT_INTERVAL_NS = 60 * 10**9
#: the rows a window reads reach this far before and after it: every hold reaching into
#: it starts at most 2 x MAX_INTERVAL_NS before it, and that sample's predecessor at most
#: MAX_INTERVAL_NS before that
LOOK_AROUND_NS = 3 * MAX_INTERVAL_NS


def holds(s: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Where each sample's hold ends (query.gauges' rule), for samples sorted by series
    ``s``, then time ``t``: at the next sample of its series if that comes within two
    of its intervals, else one interval later (:func:`intervals`)."""
    first = np.append(True, s[1:] != s[:-1])
    last = np.append(first[1:], True)
    interval = intervals(first, t)
    gap = np.append(t[1:], 0) - t
    return np.where(~last & (gap <= 2 * interval), t + gap, t + interval)


def intervals(first: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Each sample's interval, for samples sorted by series (``first`` marks each
    series' first) then time ``t``."""
    since = t - np.append(t[:1], t[:-1])
    return np.where(first | (since > MAX_INTERVAL_NS), DEFAULT_INTERVAL_NS, since)


def by_series(s: np.ndarray, t: np.ndarray) -> np.ndarray:
    """The order by series ``s`` (non-negative ids), then time ``t``, rows of one time in
    their given order: what :func:`holds` takes. Each series' rows mostly come in time
    order (commits are, and the store's parts), so one stable radix sort of the ids
    usually does; a check finds when it does not."""
    ids = _small(s)
    order = np.argsort(ids, kind="stable")
    ss, tt = s[order], t[order]
    if np.all((tt[1:] >= tt[:-1]) | (ss[1:] != ss[:-1])):
        return order
    # np.lexsort's order, from two stable sorts of one key each (a radix sort for the ids)
    order = np.argsort(t, kind="stable")
    return order[np.argsort(ids[order], kind="stable")]


def _small(ids: np.ndarray) -> np.ndarray:
    """Non-negative ids as int16 where they fit: numpy sorts those stably by radix."""
    return ids.astype(np.int16) if ids.size and ids.max() < 2**15 else ids
