"""Tests of sim.distributions: means, shapes, samplers, shorthand and validation errors."""

from __future__ import annotations

import math
import timeit

import numpy as np
import pytest
from pydantic import BaseModel, ValidationError

from sim.distributions import (
    ConstantDist,
    DistributionSpec,
    EmpiricalDist,
    ExponentialDist,
    LognormalDist,
    NormalDist,
    constant,
    exponential,
    parse_distribution,
)

N = 200_000

FINITE_VARIANCE_SPECS = [
    {"kind": "constant", "value": "2ms"},
    {"kind": "exponential", "mean": "2ms"},
    {"kind": "uniform", "low": "1ms", "high": "3ms"},
    {"kind": "normal", "mean": "2ms", "std": "0.5ms"},
    {"kind": "normal", "mean": "1ms", "std": "2ms"},  # heavily truncated
    {"kind": "normal", "mean": 0, "std": 1},  # half-normal
    {"kind": "lognormal", "mean": "2ms", "p99": "10ms"},
    {"kind": "lognormal", "mu": -6.0, "sigma": 0.5},
    {"kind": "gamma", "shape": 0.5, "mean": "2ms"},
    {"kind": "gamma", "shape": 4, "mean": "2ms"},
    {"kind": "erlang", "k": 3, "mean": "3ms"},
    {"kind": "pareto", "alpha": 3.5, "scale": "1ms"},
    {"kind": "empirical", "values": [0.001, 0.002, 0.002, 0.010]},
    {"kind": "empirical", "bins": [0, 0.001, 0.005, 0.02], "counts": [5, 3, 1]},
]


@pytest.mark.parametrize("data", FINITE_VARIANCE_SPECS, ids=lambda d: d["kind"])
def test_sample_mean_matches_analytic_mean(data: dict[str, object]) -> None:
    dist = parse_distribution(data)
    x = dist.sample_n(np.random.default_rng(12345), N)
    assert x.shape == (N,)
    assert np.all(x >= 0)
    stderr = x.std() / math.sqrt(N)
    assert abs(x.mean() - dist.mean()) <= 5 * stderr + 1e-12 * dist.mean()


def test_normal_truncated_mean_formula() -> None:
    # Half-normal: E[X | X >= 0] for N(0, 1) is sqrt(2 / pi).
    assert NormalDist(mean=0, std=1).mean() == pytest.approx(math.sqrt(2 / math.pi))
    # Negligible truncation: the mean is the mean.
    assert NormalDist(mean=1, std=0.01).mean() == pytest.approx(1.0, rel=1e-12)
    assert NormalDist(mean=1, std=0).mean() == 1.0


def test_lognormal_by_mean_and_p99_reproduces_p99() -> None:
    dist = LognormalDist(mean=0.002, p99=0.010)  # type: ignore[arg-type]
    x = dist.sample_n(np.random.default_rng(7), N)
    assert np.quantile(x, 0.99) == pytest.approx(0.010, rel=0.02)
    assert dist.mean() == pytest.approx(0.002, rel=1e-12)


def test_pareto_mean_infinite_for_small_alpha() -> None:
    assert parse_distribution({"kind": "pareto", "alpha": 1, "scale": 1}).mean() == math.inf
    x = parse_distribution({"kind": "pareto", "alpha": 2, "scale": 3}).sample_n(
        np.random.default_rng(0), 1000
    )
    assert x.min() >= 3


def test_empirical_values_resampled_from_data() -> None:
    dist = EmpiricalDist(values=[1.0, 2.0, 5.0])  # type: ignore[arg-type]
    assert set(dist.sample_n(np.random.default_rng(0), 1000).tolist()) == {1.0, 2.0, 5.0}
    assert dist.mean() == pytest.approx(8 / 3)


def test_empirical_bins_respect_weights() -> None:
    dist = EmpiricalDist(bins=[0, 1, 2, 3], counts=[1, 0, 3])  # type: ignore[arg-type]
    x = dist.sample_n(np.random.default_rng(0), 40_000)
    assert not np.any((x > 1) & (x < 2))
    assert np.mean(x >= 2) == pytest.approx(0.75, abs=0.01)
    assert dist.mean() == pytest.approx(0.25 * 0.5 + 0.75 * 2.5)


@pytest.mark.parametrize("data", FINITE_VARIANCE_SPECS, ids=lambda d: d["kind"])
def test_sampler_equals_sample_n_sequence(data: dict[str, object]) -> None:
    dist = parse_distribution(data)
    draw = dist.sampler(np.random.default_rng(99), batch=64)
    got = [draw() for _ in range(64)]
    expected = dist.sample_n(np.random.default_rng(99), 64).tolist()
    assert got == expected
    assert all(isinstance(v, float) for v in got)


def test_sampler_concatenates_batches() -> None:
    dist = exponential(1.0)
    draw = dist.sampler(np.random.default_rng(3), batch=10)
    got = [draw() for _ in range(25)]
    rng = np.random.default_rng(3)
    expected = np.concatenate([dist.sample_n(rng, 10) for _ in range(3)])[:25].tolist()
    assert got == expected


def test_constant_sampler_never_touches_rng() -> None:
    rng = np.random.default_rng(5)
    state = rng.bit_generator.state
    draw = constant("2ms").sampler(rng)
    assert [draw() for _ in range(10)] == [0.002] * 10
    assert constant(0.002).sample(rng) == 0.002
    assert rng.bit_generator.state == state


def test_sampler_is_fast() -> None:
    draw = exponential(1.0).sampler(np.random.default_rng(0))
    n = 200_000
    per_call = min(timeit.repeat(draw, number=n, repeat=3)) / n
    assert per_call < 0.3e-6


def test_shorthand_means_constant() -> None:
    class Spec(BaseModel):
        service_time: DistributionSpec

    assert Spec(service_time="2ms").service_time == ConstantDist(value=0.002)  # type: ignore[arg-type]
    assert Spec(service_time=0.5).service_time == ConstantDist(value=0.5)  # type: ignore[arg-type]
    assert parse_distribution("2ms") == constant(0.002)
    spec = Spec.model_validate({"service_time": {"kind": "exponential", "mean": "1ms"}})
    assert spec.service_time == ExponentialDist(mean=0.001)  # type: ignore[arg-type]


def test_round_trip_through_dump() -> None:
    for data in FINITE_VARIANCE_SPECS:
        dist = parse_distribution(data)
        dumped = dist.model_dump()
        assert parse_distribution(dumped) == dist
        assert "mean_" not in dumped


def test_specs_are_frozen() -> None:
    dist = exponential(1.0)
    with pytest.raises(ValidationError):
        dist.mean_ = 2.0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("data", "fragments"),
    [
        ({"kind": "weibull", "mean": 1}, ["weibull", "exponential"]),
        ({"kind": "exponential", "mean": -1}, ["exponential.mean", "must be >= 0"]),
        ({"kind": "exponential", "mean": 0}, ["exponential.mean", "greater than 0"]),
        ({"kind": "exponential", "mean": "2 weeks"}, ["exponential.mean", "unit"]),
        ({"kind": "uniform", "low": 2, "high": 1}, ["low", "high"]),
        ({"kind": "empirical", "bins": [0, 1, 2], "counts": [1]}, ["bins", "counts"]),
        ({"kind": "empirical", "bins": [0, 1], "counts": [-1]}, ["counts"]),
        ({"kind": "empirical", "values": []}, ["values"]),
        ({"kind": "empirical", "values": [1, -1]}, ["values", "must be >= 0"]),
        ({"kind": "exponential", "mean": 1, "rate": 2}, ["rate", "Extra inputs"]),
        ({"kind": "lognormal", "mean": 1}, ["mean", "p99"]),
        ({"kind": "lognormal", "mean": 1, "p99": 2, "mu": 0, "sigma": 1}, ["exactly one"]),
        ({"kind": "lognormal", "mean": 2, "p99": 1}, ["p99", "greater than mean"]),
        ({"kind": "lognormal", "mean": 1, "p99": 100}, ["p99 must be <="]),
        ({"kind": "erlang", "k": 0, "mean": 1}, ["erlang.k"]),
        ({"kind": "pareto", "alpha": 0, "scale": 1}, ["pareto.alpha"]),
        ("fast", ["cannot parse duration"]),
    ],
)
def test_bad_specs_raise_errors_naming_the_field(data: object, fragments: list[str]) -> None:
    with pytest.raises(ValidationError) as info:
        parse_distribution(data)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message


def test_error_location_inside_a_model() -> None:
    class Spec(BaseModel):
        service_time: DistributionSpec

    with pytest.raises(ValidationError) as info:
        Spec.model_validate({"service_time": {"kind": "exponential", "mean": -2}})
    assert info.value.errors()[0]["loc"] == ("service_time", "exponential", "mean")
