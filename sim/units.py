"""Parsing of quantities with units: durations, sizes, bandwidths and rates.

Every parser accepts plain numbers (already in the base unit) and strings with a unit, as
Istio's configuration does (``"25ms"``, ``"1.5s"``, ``"1KiB"``). Durations may also be written
as Go and Kubernetes write them, several parts in a row (``"1m30s"``, ``"1h2m3.5s"``), and
sizes with Kubernetes' quantity suffixes (``"16Gi"``, ``"500M"``, ``"64k"``). Parse once, at
validation: the pydantic annotated types at the end of this module do exactly that.

Base units: seconds for durations, bytes for sizes, bytes per second for bandwidths and
events per second for rates.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any

from pydantic import BeforeValidator

__all__ = [
    "Bandwidth",
    "Cpu",
    "Duration",
    "Rate",
    "Size",
    "format_duration_ms",
    "parse_bandwidth",
    "parse_cpu",
    "parse_duration",
    "parse_rate",
    "parse_size",
    "DURATION_UNITS",
    "SIZE_UNITS",
    "BANDWIDTH_UNITS",
    "RATE_UNITS",
]

_NUMBER_UNIT = re.compile(
    r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*([A-Za-zµμ/]*)\s*$", re.ASCII
)

# A unit is (multiplier, divisor) to the base unit; dividing keeps "20us" exactly 20 / 1e6.
DURATION_UNITS: dict[str, tuple[float, float]] = {
    "": (1.0, 1.0),
    "ns": (1.0, 1e9),
    "us": (1.0, 1e6),
    "µs": (1.0, 1e6),  # MICRO SIGN U+00B5
    "μs": (1.0, 1e6),  # GREEK SMALL LETTER MU U+03BC
    "ms": (1.0, 1e3),
    "s": (1.0, 1.0),
    "m": (60.0, 1.0),
    "h": (3600.0, 1.0),
}

# A duration as Go's time.ParseDuration (and so Kubernetes) reads it: parts of a number and a
# unit, one after another ("1h15m30.5s").
_DURATION_PARTS = re.compile(r"(?:(?:\d+\.?\d*|\.\d+)(?:ns|us|µs|μs|ms|s|m|h))+", re.ASCII)
_DURATION_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)", re.ASCII)

# Bytes with a unit: "KB" and "KiB" as IEC writes them, and Kubernetes' quantity suffixes
# ("k", "M", "G", ... powers of 1000; "Ki", "Mi", "Gi", ... powers of 1024). Kubernetes'
# "m" (milli) is left out: a thousandth of a byte is a typo for "M".
SIZE_UNITS: dict[str, int] = {
    "": 1,
    "B": 1,
    "k": 1000,
    "kB": 1000,
    **{p + "B": 1000**i for i, p in enumerate("KMGTPE", start=1)},
    **{p: 1000**i for i, p in enumerate("KMGTPE", start=1) if p != "K"},
    **{p + "i": 1024**i for i, p in enumerate("KMGTPE", start=1)},
    **{p + "iB": 1024**i for i, p in enumerate("KMGTPE", start=1)},
}

# Lower-case "bps" is bits per second, upper-case "Bps" and "B/s" bytes per second.
BANDWIDTH_UNITS: dict[str, tuple[float, float]] = {
    "": (1.0, 1.0),
    "bps": (1.0, 8.0),
    "Kbps": (1e3, 8.0),
    "Mbps": (1e6, 8.0),
    "Gbps": (1e9, 8.0),
    "Bps": (1.0, 1.0),
    "KBps": (1e3, 1.0),
    "MBps": (1e6, 1.0),
    "GBps": (1e9, 1.0),
    "B/s": (1.0, 1.0),
    "KB/s": (1e3, 1.0),
    "MB/s": (1e6, 1.0),
    "GB/s": (1e9, 1.0),
    "KiB/s": (1024.0, 1.0),
    "MiB/s": (1024.0**2, 1.0),
    "GiB/s": (1024.0**3, 1.0),
}

RATE_UNITS: dict[str, tuple[float, float]] = {"": (1.0, 1.0), "rps": (1.0, 1.0), "/s": (1.0, 1.0)}


_NOT_FINITE = {"nan", "inf", "infinity", ".nan", ".inf"}


def _finite(value: float, what: str, v: object) -> float:
    """``value``, if the product of a number and its unit did not overflow to infinity."""
    if math.isinf(value):
        raise ValueError(f"{what} {v!r} is too large")
    return value


def _split(
    v: str | float | int, what: str, units: dict[str, Any], hint: str = ""
) -> tuple[float, Any]:
    """Split a value into a non-negative finite number and its unit factor.

    Args:
        v: A number (base unit) or a string such as ``"2ms"``.
        what: Name of the quantity, for error messages.
        units: Accepted unit suffixes and their factors to the base unit.
        hint: Appended to the message when the value cannot be parsed.

    Returns:
        The number and the factor of its unit.

    Raises:
        ValueError: If the value is malformed, negative, not finite or has an unknown unit.
    """
    if isinstance(v, bool):
        raise ValueError(f"{what} must be a number or a string with a unit, got {v!r}")
    if isinstance(v, (int, float)):
        number, factor = float(v), units[""]
    elif isinstance(v, str):
        match = _NUMBER_UNIT.match(v)
        if match is None and v.strip().lstrip("+-").lower() in _NOT_FINITE:
            raise ValueError(f"{what} must be finite, got {v!r}")
        if match is None:
            accepted = ", ".join(repr(u) for u in units if u)
            raise ValueError(
                f"cannot parse {what} {v!r}: expected a number followed by one of {accepted}" + hint
            )
        number = float(match.group(1))
        unit = match.group(2)
        if unit not in units:
            accepted = ", ".join(repr(u) for u in units if u)
            raise ValueError(f"unknown {what} unit {unit!r} in {v!r}; accepted units: {accepted}")
        factor = units[unit]
    else:
        raise ValueError(f"{what} must be a number or a string with a unit, got {v!r}")
    if math.isnan(number) or math.isinf(number):
        raise ValueError(f"{what} must be finite, got {v!r}")
    if number < 0:
        raise ValueError(f"{what} must be >= 0, got {v!r}")
    return number, factor


def parse_duration(v: str | float | int) -> float:
    """Parse a duration into seconds.

    Args:
        v: Seconds as a number or a numeric string, or a string with one of the units
            ``ns``, ``us``, ``µs``, ``ms``, ``s``, ``m``, ``h`` (``"250ns"``, ``"1.5s"``), or
            several such parts in a row, as Go and Kubernetes write durations (``"1m30s"``,
            ``"1h2m3.5s"``).

    Returns:
        The duration in seconds.

    Raises:
        ValueError: If negative, not finite, malformed or with an unknown unit.
    """
    if isinstance(v, str) and _DURATION_PARTS.fullmatch(v.strip()):
        total = 0.0
        for number, unit in _DURATION_PART.findall(v):
            mul, div = DURATION_UNITS[unit]
            total += float(number) * mul / div
        return _finite(total, "duration", v)
    number, (mul, div) = _split(
        v, "duration", DURATION_UNITS, hint=", or such parts in a row ('1m30s')"
    )
    return _finite(number * mul / div, "duration", v)


def parse_size(v: str | float | int) -> int:
    """Parse a size into bytes.

    Args:
        v: Bytes as an integer, or a string with a unit: ``B``, decimal ``KB``/``MB``/...
            ``EB`` or Kubernetes' ``k``/``M``/``G``/``T``/``P``/``E`` (powers of 1000), or
            binary ``KiB``/``MiB``/... ``EiB`` or Kubernetes' ``Ki``/``Mi``/``Gi``/``Ti``/
            ``Pi``/``Ei`` (powers of 1024): ``"16Gi"``, ``"500M"``, ``"1KiB"``.

    Returns:
        The size in bytes, rounded to the nearest integer.

    Raises:
        ValueError: If negative, not finite, malformed or with an unknown unit.
    """
    if isinstance(v, int) and not isinstance(v, bool) and v >= 0:
        return v  # exact, even beyond 2**53
    number, factor = _split(v, "size", SIZE_UNITS)
    return int(round(_finite(number * factor, "size", v)))


def parse_bandwidth(v: str | float | int) -> float:
    """Parse a bandwidth into bytes per second.

    Args:
        v: Bytes per second as a number, or a string with a unit: bits per second
            (``bps``, ``Kbps``, ``Mbps``, ``Gbps``) or bytes per second (``Bps``, ``GBps``,
            ``MB/s``, ``MiB/s``, ...).

    Returns:
        The bandwidth in bytes per second.

    Raises:
        ValueError: If negative, not finite, malformed or with an unknown unit.
    """
    number, (mul, div) = _split(v, "bandwidth", BANDWIDTH_UNITS)
    return _finite(number * mul / div, "bandwidth", v)


def parse_rate(v: str | float | int) -> float:
    """Parse a rate into events per second.

    Args:
        v: Events per second as a number, or a string ``"<n>rps"`` or ``"<n>/s"``.

    Returns:
        The rate per second.

    Raises:
        ValueError: If negative, not finite, malformed or with an unknown unit.
    """
    number, (mul, div) = _split(v, "rate", RATE_UNITS)
    return _finite(number * mul / div, "rate", v)


CPU_UNITS: dict[str, tuple[float, float]] = {"": (1.0, 1.0), "m": (1.0, 1000.0)}


def parse_cpu(v: str | float | int) -> float:
    """Parse a CPU quantity into cores, as Kubernetes writes it.

    Args:
        v: Cores as a number or a numeric string (``0.5``, ``"2"``), or millicores with the
            suffix ``m`` (``"500m"`` is half a core).

    Returns:
        The quantity in cores.

    Raises:
        ValueError: If negative, not finite, malformed or with an unknown unit.
    """
    number, (mul, div) = _split(v, "cpu", CPU_UNITS)
    return _finite(number * mul / div, "cpu", v)


def format_duration_ms(seconds: float) -> str:
    """Format a duration for reports, in milliseconds with three decimals.

    Args:
        seconds: The duration in seconds.

    Returns:
        A string such as ``"2.650 ms"``.
    """
    return f"{seconds * 1e3:.3f} ms"


def _duration(v: Any) -> float:
    return parse_duration(v)


def _cpu(v: Any) -> float:
    return parse_cpu(v)


def _size(v: Any) -> int:
    return parse_size(v)


def _bandwidth(v: Any) -> float:
    return parse_bandwidth(v)


def _rate(v: Any) -> float:
    return parse_rate(v)


Duration = Annotated[float, BeforeValidator(_duration)]
"""A non-negative duration in seconds; accepts numbers and strings such as ``"2ms"`` or
``"1m30s"``."""

Cpu = Annotated[float, BeforeValidator(_cpu)]
"""A non-negative CPU quantity in cores; accepts numbers and Kubernetes' millicores (``"500m"``)."""

Size = Annotated[int, BeforeValidator(_size)]
"""A non-negative size in bytes; accepts integers and strings such as ``"1KiB"`` or ``"16Gi"``."""

Bandwidth = Annotated[float, BeforeValidator(_bandwidth)]
"""A non-negative bandwidth in bytes per second; accepts numbers and strings such as ``"10Gbps"``."""

Rate = Annotated[float, BeforeValidator(_rate)]
"""A non-negative rate per second; accepts numbers and strings such as ``"1000rps"``."""
