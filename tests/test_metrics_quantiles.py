"""Quantile estimators on merged buckets (sonde.query.quantiles), checked against exact
answers computed here from the raw values or by hand."""

from __future__ import annotations

import numpy as np
import pytest
from opentelemetry.sdk.metrics._internal.exponential_histogram.mapping.logarithm_mapping import LogarithmMapping

from sonde.query.quantiles import ExpBuckets, ExplicitBuckets, exp_quantiles, histogram_quantiles

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
