"""Tests of sim.units: durations as Go and Kubernetes write them, sizes as Kubernetes does,
and quantities that overflow."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ValidationError

from sim.units import Duration, Size, parse_bandwidth, parse_duration, parse_rate, parse_size


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1m30s", 90.0),
        ("2h", 7200.0),
        ("500us", 500e-6),
        ("500µs", 500e-6),
        ("1h2m3.5s", 3723.5),
        ("1h15m30.918273645s", 4530.918273645),
        ("1.5h", 5400.0),
        ("300ms", 0.3),
        ("1s500ms", 1.5),
        ("2m0.5s", 120.5),
        (".5s", 0.5),
        ("0", 0.0),
    ],
)
def test_go_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds, rel=1e-15)


@pytest.mark.parametrize("bad", ["1m 30s", "1m30", "-1m30s", "1d", "m30s", "1m30s!"])
def test_malformed_go_durations(bad: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(bad)


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("16Gi", 16 * 2**30),
        ("500M", 500 * 10**6),
        ("1KiB", 1024),
        ("1Ki", 1024),
        ("64k", 64_000),
        ("128Mi", 128 * 2**20),
        ("2Ti", 2 * 2**40),
        ("1Pi", 2**50),
        ("1Ei", 2**60),
        ("1.5Gi", 3 * 2**29),
        ("1E", 10**18),
        ("1PB", 10**15),
        ("129e6", 129_000_000),
    ],
)
def test_kubernetes_sizes(text: str, size: int) -> None:
    value = parse_size(text)
    assert value == size
    assert isinstance(value, int)


@pytest.mark.parametrize("bad", ["500m", "1K", "1gi", "1 Gi i"])
def test_sizes_that_kubernetes_would_not_take_either(bad: str) -> None:
    with pytest.raises(ValueError, match="size"):
        parse_size(bad)


@pytest.mark.parametrize(
    ("parse", "text"),
    [
        (parse_duration, "1e308h"),
        (parse_size, "1e300Ei"),
        (parse_bandwidth, "1e308Gbps"),
        (parse_duration, "9" * 400 + "h"),
    ],
)
def test_an_overflow_is_a_value_error(parse, text) -> None:
    with pytest.raises(ValueError, match="too large|finite"):
        parse(text)


@pytest.mark.parametrize(
    ("parse", "text"),
    [(parse_duration, "nan"), (parse_duration, "inf"), (parse_rate, "-inf"), (parse_size, "NaN")],
)
def test_nan_and_inf_as_text(parse, text) -> None:
    with pytest.raises(ValueError, match="must be finite"):
        parse(text)


class _Spec(BaseModel):
    timeout: Duration
    memory: Size


def test_the_annotated_types_take_them() -> None:
    spec = _Spec(timeout="1m30s", memory="16Gi")
    assert spec.timeout == 90.0
    assert spec.memory == 16 * 2**30


def test_an_overflow_in_a_model_is_a_validation_error() -> None:
    with pytest.raises(ValidationError, match="memory"):
        _Spec(timeout="1s", memory="1e300Ei")
