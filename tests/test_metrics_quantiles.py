"""Quantile estimators on merged buckets (sonde.query.quantiles), checked against exact
answers computed here from the raw values or by hand."""

from __future__ import annotations

import numpy as np
import pytest
from opentelemetry.sdk.metrics._internal.exponential_histogram.mapping.logarithm_mapping import LogarithmMapping

from sonde.query.quantiles import ExpBuckets, ExplicitBuckets, exp_quantiles, histogram_quantiles, one_layout_quantiles

QS = (0.5, 0.9, 0.95, 0.99)


def sdk_buckets(values, scale: int) -> ExpBuckets:
    """Bucket positive values exactly as the OpenTelemetry SDK does at ``scale``."""
    mapping = LogarithmMapping(scale)
    idx = np.array([mapping.map_to_index(v) for v in values])
    base = int(idx.min())
    h = ExpBuckets(1.0, scale)
    h.add("pos", base, np.bincount(idx - base))
    return h


@pytest.mark.parametrize("scale", [6, 8])
def test_every_estimate_is_within_the_bucket_error_bound(scale):
    rng = np.random.default_rng(scale)
    values = rng.lognormal(-2.0, 1.5, 4000)
    b = 2 ** (2.0**-scale)
    bound = (b - 1) / (b + 1)
    h = sdk_buckets(values, scale)
    # With one value the estimate of every quantile is that value's bucket point.
    for v in values[:200]:
        est = exp_quantiles(sdk_buckets([v], scale), [0.5])[0]
        assert abs(est - v) / v <= bound * (1 + 1e-9)
    exact = np.quantile(values, QS)
    got = exp_quantiles(h, QS)
    assert np.all(np.abs(np.array(got) - exact) / exact <= bound * (1 + 1e-9))


def test_negative_zero_and_positive_buckets_in_value_order():
    values = np.array([-8.0] * 30 + [-1.0] * 20 + [0.0] * 25 + [0.5] * 15 + [4.0] * 10)
    mapping = LogarithmMapping(4)
    h = ExpBuckets(2.0, 4, zero=25)  # factor 2: the unit conversion applies to every bucket
    for side, vals in (("pos", values[values > 0]), ("neg", -values[values < 0])):
        idx = np.array([mapping.map_to_index(v) for v in vals])
        h.add(side, int(idx.min()), np.bincount(idx - idx.min()))
    qs = [0.1, 0.35, 0.55, 0.7, 0.8, 0.95]
    got = np.array(exp_quantiles(h, qs))
    exact = np.quantile(values, qs) * 2
    b = 2 ** (1 / 16)
    assert np.all(np.abs(got - exact) <= np.abs(exact) * (b - 1) / (b + 1) + 1e-12)
    assert got[2] == 0.0  # inside the zero bucket


def test_explicit_single_layout_is_linear_interpolation():
    # 10 values in (0, 1], 30 in (1, 2], 60 in (2, 4]; min/max unknown
    h = ExplicitBuckets(1.0, [1.0, 2.0, 4.0], [10, 30, 60, 0])
    got = histogram_quantiles([], [h], [0.05, 0.25, 0.5, 0.9], None, None)
    # rank q*100: 5 -> 0 + 1*5/10; 25 -> 1 + 1*15/30; 50 -> 2 + 2*10/60; 90 -> 2 + 2*50/60
    assert got == pytest.approx([0.5, 1.5, 2 + 2 * 10 / 60, 2 + 2 * 50 / 60])


def test_explicit_edges_use_min_and_max_when_sent():
    h = ExplicitBuckets(1.0, [1.0, 2.0], [10, 0, 10])
    # first bucket spans [min, 1], the +Inf bucket [2, max]
    got = histogram_quantiles([], [h], [0.25, 0.75], 0.6, 3.0)
    assert got == pytest.approx([0.6 + 0.4 * 0.5, 2.0 + 1.0 * 0.5])
    # without max, the +Inf bucket collapses onto the last finite bound
    assert histogram_quantiles([], [h], [0.75, 0.99], None, None) == pytest.approx([2.0, 2.0])


def test_buckets_are_narrowed_to_min_and_max():
    # 10 values in (1, 2] that all lie in [1.2, 1.4]: the bucket is spread over [1.2, 1.4]
    h = ExplicitBuckets(1.0, [1.0, 2.0], [0, 10, 0])
    assert histogram_quantiles([], [h], [0.5, 0.9], 1.2, 1.4) == pytest.approx([1.3, 1.38])


def test_different_bounds_merge_as_one_cdf():
    # A: 10 values uniform on (1, 2]; B: 10 values uniform on (0, 4]. Merged CDF
    # F(x) = 10*clip(x-1, 0, 1) + 10*clip(x/4, 0, 1): median solves 12.5x - 10 = 10 -> 1.6,
    # p90 solves 10 + 2.5x = 18 -> 3.2
    a = ExplicitBuckets(1.0, [1.0, 2.0], [0, 10, 0])
    b = ExplicitBuckets(1.0, [0.0, 4.0], [0, 10, 0])
    assert histogram_quantiles([], [a, b], [0.5, 0.9], None, None) == pytest.approx([1.6, 3.2])


def test_units_and_clamping():
    # ms bounds converted to seconds; every value is 0.123 s, which min/max pin exactly
    h = ExplicitBuckets(0.001, [100.0, 200.0], [0, 7, 0])
    assert histogram_quantiles([], [h], QS, 0.123, 0.123) == pytest.approx([0.123] * 4)
    e = sdk_buckets([0.123] * 5, 6)
    assert histogram_quantiles([e], [], QS, 0.123, 0.123) == [0.123] * 4
    assert histogram_quantiles([e], [], QS, None, None) != [0.123] * 4


def test_exponential_groups_of_different_units_merge_as_intervals():
    # the same distribution sent in s and in ms: the merged quantiles stay within a bucket
    rng = np.random.default_rng(3)
    s = rng.lognormal(-3, 0.5, 3000)
    ms = rng.lognormal(-3, 0.5, 3000) * 1000
    a = sdk_buckets(s, 6)
    b = sdk_buckets(ms, 6)
    b.factor = 0.001
    got = histogram_quantiles([a, b], [], QS, None, None)
    exact = np.quantile(np.concatenate([s, ms / 1000]), QS)
    assert np.all(np.abs(np.array(got) - exact) / exact < 0.011)


def test_empty_is_none():
    assert histogram_quantiles([], [ExplicitBuckets(1.0, [1.0], [0, 0])], QS, None, None) is None
    assert exp_quantiles(ExpBuckets(1.0, 3), QS) is None


def test_one_layout_over_many_steps_equals_the_per_step_estimator_exactly():
    """Random layouts, counts, min/max (sent or not), units: every step the vectorised
    estimator answers is bit for bit the per-step one; it declines only point masses
    inside the range and edges np.isclose would merge."""
    rng = np.random.default_rng(15)
    qs = (0.0, *QS, 1.0)
    answered = declined = 0
    for case in range(600):
        if case % 3 == 0:
            bounds = np.sort(rng.choice([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0],
                                        int(rng.integers(1, 12)), replace=False))
        elif case % 3 == 1:
            bounds = np.cumsum(rng.integers(1, 5, int(rng.integers(1, 10)))).astype(float) - 3
        else:
            bounds = np.unique(np.round(rng.lognormal(0, 2, int(rng.integers(1, 14))), 3))
        counts = rng.integers(0, 6, (5, len(bounds) + 1)) * (rng.random((5, len(bounds) + 1)) < 0.6)
        mn = np.where(rng.random(5) < 0.5, rng.uniform(bounds[0] - 1, bounds[-1], 5), np.nan)
        mx = np.where(rng.random(5) < 0.5, np.fmax(mn, rng.uniform(bounds[0], bounds[-1] + 2, 5)), np.nan)
        factor = 1e-3 if case % 2 else 1.0
        got, ok = one_layout_quantiles(bounds * factor, counts, mn, mx, qs)
        for s in range(5):
            if counts[s].sum() == 0:
                continue
            want = histogram_quantiles([], [ExplicitBuckets(factor, list(bounds), list(counts[s]))], qs,
                                       None if np.isnan(mn[s]) else mn[s], None if np.isnan(mx[s]) else mx[s])
            if ok[s]:
                answered += 1
                assert got[s].tolist() == want, (bounds, counts[s], mn[s], mx[s], factor)
            else:
                declined += 1
    assert answered > 400 and declined  # random min/max often contradict the counts: declined
    # buckets filled from values, min/max of those values (what SDKs send): all answered
    for case in range(200):
        values = rng.lognormal(-2, 1, int(rng.integers(1, 300)))
        bounds = np.array([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5])
        counts = np.bincount(np.searchsorted(bounds, values, side="left"), minlength=len(bounds) + 1)[None, :]
        sent = case % 2 == 0
        mn, mx = (np.array([values.min()]), np.array([values.max()])) if sent else (np.array([np.nan]),) * 2
        got, ok = one_layout_quantiles(bounds, counts, mn, mx, qs)
        assert ok[0]
        assert got[0].tolist() == histogram_quantiles([], [ExplicitBuckets(1.0, list(bounds), list(counts[0]))], qs,
                                                      mn[0] if sent else None, mx[0] if sent else None)


def test_one_layout_takes_the_inf_bucket_without_a_max_as_the_per_step_estimator_does():
    got, ok = one_layout_quantiles([1.0, 2.0], np.array([[0, 1, 3], [1, 0, 0]]), np.array([np.nan, np.nan]),
                                   np.array([np.nan, np.nan]), QS)
    assert ok.tolist() == [True, True]
    assert got.tolist() == [histogram_quantiles([], [ExplicitBuckets(1.0, [1.0, 2.0], c)], QS, None, None)
                            for c in ([0, 1, 3], [1, 0, 0])]
    assert got[0].tolist() == [2.0, 2.0, 2.0, 2.0]  # three of four values sit in (2, +Inf): the last bound
