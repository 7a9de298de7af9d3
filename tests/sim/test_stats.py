"""Tests of sim.stats: histogram accuracy, merging and memory; tallies; levels; windows."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.stats import LatencyHistogram, Tally, TimeWeighted, WindowedSeries

A = 0.01
N = 100_000
QS = [0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999]


def _samples(name: str, n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if name == "exponential":
        return rng.exponential(0.002, n)
    if name == "lognormal_heavy":
        return rng.lognormal(-7.0, 2.0, n)
    if name == "uniform":
        return rng.uniform(0.001, 0.003, n)
    if name == "pareto":
        return 0.001 * (1 + rng.pareto(1.2, n))
    if name == "bimodal":
        fast = rng.normal(0.001, 0.0001, n)
        slow = rng.normal(0.100, 0.010, n)
        return np.abs(np.where(rng.random(n) < 0.9, fast, slow))
    raise AssertionError(name)


DISTS = ["exponential", "lognormal_heavy", "uniform", "pareto", "bimodal"]


@pytest.mark.parametrize("name", DISTS)
def test_quantiles_within_relative_error_of_exact(name: str) -> None:
    x = _samples(name, N)
    hist = LatencyHistogram(relative_accuracy=A)
    hist.add_many(x)
    exact = np.quantile(x, QS, method="lower")
    estimates = hist.quantiles(QS)
    for q, v, e in zip(QS, estimates, exact, strict=True):
        assert abs(v - e) <= A * e * (1 + 1e-9), (q, v, e)
    assert hist.quantile(0) == x.min()
    assert hist.quantile(1) == x.max()
    assert hist.count == N
    assert hist.mean == pytest.approx(x.mean(), rel=1e-12)
    assert hist.min == x.min()
    assert hist.max == x.max()


def test_add_and_add_many_agree() -> None:
    x = _samples("lognormal_heavy", 20_000)
    one, many = LatencyHistogram(), LatencyHistogram()
    for v in x.tolist():
        one.add(v)
    many.add_many(x)
    assert one.quantiles(QS) == many.quantiles(QS)
    assert one.bucket_count == many.bucket_count


def test_merge_of_halves_equals_whole() -> None:
    x = _samples("bimodal", N)
    whole, left, right = LatencyHistogram(), LatencyHistogram(), LatencyHistogram()
    whole.add_many(x)
    left.add_many(x[: N // 3])
    right.add_many(x[N // 3 :])
    left.merge(right)
    assert left.to_dict()["bucket_indexes"] == whole.to_dict()["bucket_indexes"]
    assert left.to_dict()["bucket_counts"] == whole.to_dict()["bucket_counts"]
    assert left.count == whole.count
    assert left.quantiles(QS) == whole.quantiles(QS)
    assert (left.min, left.max) == (whole.min, whole.max)
    assert left.sum == pytest.approx(whole.sum, rel=1e-12)


def test_merge_requires_same_accuracy() -> None:
    with pytest.raises(ValueError, match="different relative_accuracy"):
        LatencyHistogram(0.01).merge(LatencyHistogram(0.02))


def test_memory_bounded_by_range_not_count() -> None:
    rng = np.random.default_rng(1)
    small, large = LatencyHistogram(), LatencyHistogram()
    small.add_many(rng.lognormal(-6, 1.5, 10_000))
    for _ in range(10):
        large.add_many(rng.lognormal(-6, 1.5, 100_000))
    assert small.bucket_count <= small.bucket_bound()
    assert large.bucket_count <= large.bucket_bound()
    # A hundred times the samples, a bounded handful more buckets (the range grows slowly).
    assert large.bucket_count < 2 * small.bucket_count
    assert large.bucket_bound() < 2_000


def test_zero_bucket_and_negative_values() -> None:
    hist = LatencyHistogram(min_value=1e-6)
    hist.add(0.0)
    hist.add(5e-7)
    hist.add(0.001)
    assert hist.bucket_count == 2
    assert hist.quantile(0.0) == 0.0
    assert hist.quantile(0.5) == 0.0  # rank 1 is 5e-7, in the zero bucket
    assert hist.quantile(1.0) == 0.001
    with pytest.raises(ValueError, match=">= 0"):
        hist.add(-1.0)
    with pytest.raises(ValueError, match=">= 0"):
        hist.add_many(np.array([1.0, -1.0]))


def test_empty_histogram() -> None:
    hist = LatencyHistogram()
    assert math.isnan(hist.quantile(0.5))
    assert math.isnan(hist.mean)
    assert hist.count == 0
    assert hist.bucket_count == 0
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        hist.quantile(1.5)


def test_to_dict_round_trip_and_copy() -> None:
    hist = LatencyHistogram(0.02)
    hist.add_many(_samples("pareto", 1000))
    hist.add(0.0)
    data = json.loads(json.dumps(hist.to_dict()))
    restored = LatencyHistogram.from_dict(data)
    assert restored == hist
    assert restored.quantiles(QS) == hist.quantiles(QS)
    empty = LatencyHistogram.from_dict(json.loads(json.dumps(LatencyHistogram().to_dict())))
    assert empty.count == 0
    clone = hist.copy()
    clone.add(1.0)
    assert clone.count == hist.count + 1


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.floats(min_value=0, max_value=1e4, allow_nan=False, allow_infinity=False),
        min_size=1,
        max_size=200,
    )
)
def test_quantiles_monotone_and_bounded(values: list[float]) -> None:
    hist = LatencyHistogram(A)
    for v in values:
        hist.add(v)
    qs = np.linspace(0, 1, 21).tolist()
    est = hist.quantiles(qs)
    assert all(a <= b for a, b in itertools.pairwise(est))
    assert all(min(values) <= v <= max(values) * (1 + A) for v in est)
    exact = np.quantile(np.array(values), qs, method="lower")
    for v, e in zip(est, exact, strict=True):
        assert abs(v - e) <= max(A * e * (1 + 1e-9), hist.min_value)


def test_tally_matches_numpy_and_merges_exactly() -> None:
    x = np.random.default_rng(2).normal(10.0, 3.0, 10_001)
    whole, left, right = Tally(), Tally(), Tally()
    for v in x.tolist():
        whole.add(v)
    for v in x[:3000].tolist():
        left.add(v)
    for v in x[3000:].tolist():
        right.add(v)
    assert whole.count == x.size
    assert whole.mean == pytest.approx(x.mean(), rel=1e-12)
    assert whole.variance == pytest.approx(x.var(), rel=1e-9)
    assert whole.sample_variance == pytest.approx(x.var(ddof=1), rel=1e-9)
    assert whole.std == pytest.approx(x.std(), rel=1e-9)
    assert (whole.min, whole.max) == (x.min(), x.max())
    left.merge(right)
    assert left.count == whole.count
    assert left.mean == pytest.approx(whole.mean, rel=1e-12)
    assert left.variance == pytest.approx(whole.variance, rel=1e-9)
    assert (left.min, left.max) == (whole.min, whole.max)
    empty = Tally()
    empty.merge(whole)
    assert empty.to_dict() == whole.to_dict()
    assert Tally().to_dict()["mean"] is None


def test_time_weighted_mean_of_step_function() -> None:
    # Level 0 on [0, 1), 2 on [1, 3), 1 on [3, 4), 4 on [4, 6): area 0 + 4 + 1 + 8 = 13.
    level = TimeWeighted(0.0, 0.0)
    level.set(1.0, 2.0)
    level.add(3.0, -1.0)
    level.add(4.0, 3.0)
    assert level.mean(6.0) == pytest.approx(13 / 6)
    assert level.value == 4.0
    assert level.max == 4.0
    # Restart at 5: level 4 throughout, then 0 from 7 to 9.
    level.reset(5.0)
    assert level.mean(5.0) == 4.0
    level.set(7.0, 0.0)
    assert level.mean(9.0) == pytest.approx(8 / 4)
    assert level.max == 4.0
    with pytest.raises(ValueError, match="backwards"):
        level.set(6.0, 1.0)
    with pytest.raises(ValueError, match="backwards"):
        level.mean(6.5)


def test_time_weighted_reset_keeps_value_and_resets_max() -> None:
    level = TimeWeighted(0.0, 5.0)
    level.set(1.0, 1.0)
    level.reset(2.0)
    assert level.max == 1.0
    assert level.mean(4.0) == 1.0


def test_windowed_series_hand_example() -> None:
    series = WindowedSeries(window_s=1.0, t0=10.0)
    series.add(10.1, 0.002)
    series.add(10.5, 0.004, ok=False)
    series.add(12.9, 0.010)
    rows = series.windows()
    assert [r["start_s"] for r in rows] == [10.0, 11.0, 12.0]
    assert [r["count"] for r in rows] == [2, 0, 1]
    assert [r["errors"] for r in rows] == [1, 0, 0]
    assert rows[0]["rate_per_s"] == 2.0
    assert rows[0]["error_rate"] == 0.5
    assert rows[0]["mean"] == pytest.approx(0.003)
    assert rows[0]["p99"] == pytest.approx(0.002, rel=0.01)  # rank floor(0.99 * 1) = 0
    assert rows[1] == {
        "start_s": 11.0,
        "count": 0,
        "rate_per_s": 0.0,
        "errors": 0,
        "error_rate": 0.0,
        "mean": 0.0,
        "p99": 0.0,
    }
    assert rows[2]["p99"] == pytest.approx(0.010, rel=0.01)
    with pytest.raises(ValueError, match="before the start"):
        series.add(9.0, 0.001)
    assert WindowedSeries(0.5).windows() == []
