"""Tests of sim.units: parsing quantities with units."""

from __future__ import annotations

import math

import pytest
from pydantic import BaseModel, ValidationError

from sim.units import (
    Bandwidth,
    Duration,
    Rate,
    Size,
    format_duration_ms,
    parse_bandwidth,
    parse_duration,
    parse_rate,
    parse_size,
)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("250ns", 250e-9),
        ("20us", 20e-6),
        ("20µs", 20e-6),
        ("20μs", 20e-6),
        ("2ms", 2e-3),
        ("1.5s", 1.5),
        ("1m", 60.0),
        ("1h", 3600.0),
        ("0.5", 0.5),
        (" 3 ms ", 3e-3),
        ("1e-3s", 1e-3),
        (2, 2.0),
        (0.25, 0.25),
        (0, 0.0),
    ],
)
def test_parse_duration(text: str | float, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds, rel=1e-15)


def test_parse_duration_is_exact_for_decimal_microseconds() -> None:
    assert parse_duration("20us") == 20 / 1e6
    assert parse_duration("100us") == 1e-4


@pytest.mark.parametrize("bad", [-1, "-2ms", -0.5])
def test_parse_duration_negative(bad: str | float) -> None:
    with pytest.raises(ValueError, match="duration must be >= 0, got"):
        parse_duration(bad)


@pytest.mark.parametrize("bad", ["2xs", "3 days"])
def test_parse_duration_unknown_unit_names_accepted_units(bad: str) -> None:
    with pytest.raises(ValueError, match="accepted units: .*'ms'"):
        parse_duration(bad)


@pytest.mark.parametrize("bad", ["", "ms", "abc", "1..2s", math.nan, math.inf, True, None])
def test_parse_duration_malformed(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("512B", 512),
        ("1KB", 1000),
        ("1KiB", 1024),
        ("1.5MiB", 1536 * 1024),
        ("1MB", 10**6),
        ("1GiB", 2**30),
        ("1GB", 10**9),
        (4096, 4096),
        ("4096", 4096),
        (2**60 + 1, 2**60 + 1),
    ],
)
def test_parse_size(text: str | int, size: int) -> None:
    value = parse_size(text)
    assert value == size
    assert isinstance(value, int)


def test_parse_size_errors() -> None:
    with pytest.raises(ValueError, match="size must be >= 0"):
        parse_size(-1)
    with pytest.raises(ValueError, match="accepted units"):
        parse_size("1kib")


@pytest.mark.parametrize(
    ("text", "bytes_per_s"),
    [
        ("10Gbps", 1.25e9),
        ("1Gbps", 1.25e8),
        ("100Mbps", 1.25e7),
        ("1GBps", 1e9),
        ("125MB/s", 1.25e8),
        (1000, 1000.0),
    ],
)
def test_parse_bandwidth(text: str | int, bytes_per_s: float) -> None:
    assert parse_bandwidth(text) == pytest.approx(bytes_per_s, rel=1e-15)


@pytest.mark.parametrize(("text", "rate"), [(100, 100.0), ("1000rps", 1000.0), ("50/s", 50.0)])
def test_parse_rate(text: str | int, rate: float) -> None:
    assert parse_rate(text) == rate


def test_parse_rate_errors() -> None:
    with pytest.raises(ValueError, match="rate must be >= 0"):
        parse_rate("-5rps")
    with pytest.raises(ValueError, match="accepted units"):
        parse_rate("60/m")


def test_format_duration_ms() -> None:
    assert format_duration_ms(0.00265) == "2.650 ms"


class _Spec(BaseModel):
    timeout: Duration = 1.0
    size: Size = 0
    link: Bandwidth = 0.0
    rate: Rate = 0.0


def test_annotated_types_parse_at_validation() -> None:
    spec = _Spec(timeout="25ms", size="1KiB", link="1Gbps", rate="10rps")  # type: ignore[arg-type]
    assert spec.timeout == pytest.approx(0.025)
    assert spec.size == 1024
    assert spec.link == pytest.approx(1.25e8)
    assert spec.rate == 10.0


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("timeout", "-1s", "duration must be >= 0"),
        ("timeout", "5 fortnights", "unknown duration unit"),
        ("size", -3, "size must be >= 0"),
        ("link", "-1Gbps", "bandwidth must be >= 0"),
        ("rate", -1, "rate must be >= 0"),
    ],
)
def test_annotated_types_errors_name_field(field: str, value: object, message: str) -> None:
    with pytest.raises(ValidationError) as info:
        _Spec.model_validate({field: value})
    errors = info.value.errors()
    assert errors[0]["loc"] == (field,)
    assert message in str(info.value)
