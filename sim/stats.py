"""Streaming statistics: latency histograms, tallies, time-weighted levels, windowed series.

All of them use memory independent of the number of observations and merge exactly, so
results can be combined across replications and processes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np

__all__ = ["LatencyHistogram", "Tally", "TimeWeighted", "WindowedSeries"]


class LatencyHistogram:
    """A streaming, mergeable, log-bucketed histogram (DDSketch-style) for latencies.

    With ``a = relative_accuracy`` and ``gamma = (1 + a) / (1 - a)``, a value ``x > min_value``
    goes to bucket ``i = ceil(log_gamma(x))``, which covers ``(gamma^(i-1), gamma^i]``; the value
    reported for the bucket is ``2 gamma^i / (gamma + 1)``, which lies within relative error
    ``a`` of every value in the bucket. Values ``<= min_value`` (including 0) go to a zero
    bucket reported as 0.

    Guarantee: sort the ``n`` samples as ``x_(0) <= ... <= x_(n-1)`` and let
    ``k = floor(q * (n - 1))`` (numpy's ``method="lower"``). Then ``quantile(q)`` returns ``v``
    with ``|v - x_(k)| <= a * x_(k)`` when ``x_(k) > min_value``, and ``|v - x_(k)| <=
    min_value`` otherwise (up to floating-point rounding at bucket edges). Ranks 0 and
    ``n - 1`` return the exact minimum and maximum, and other estimates are clamped to
    ``[min, max]``, which only moves them closer to ``x_(k)``.

    Memory: one dict entry per non-empty bucket, at most
    ``ceil(log(max / max(min, min_value)) / log(gamma)) + 2`` (the +2 covers the two end
    buckets and the zero bucket), independent of the number of samples.

    ``count``, ``sum``, ``min``, ``max`` and ``mean`` are exact.

    Args:
        relative_accuracy: ``a`` in (0, 1).
        min_value: Values at or below this (seconds) count as zero; > 0.
    """

    __slots__ = (
        "_a",
        "_buckets",
        "_count",
        "_gamma",
        "_inv_log_gamma",
        "_log_gamma",
        "_max",
        "_min",
        "_min_value",
        "_sum",
        "_zero",
    )

    def __init__(self, relative_accuracy: float = 0.01, min_value: float = 1e-9) -> None:
        if not 0 < relative_accuracy < 1:
            raise ValueError(f"relative_accuracy must be in (0, 1), got {relative_accuracy}")
        if not min_value > 0:
            raise ValueError(f"min_value must be > 0, got {min_value}")
        self._a = float(relative_accuracy)
        self._min_value = float(min_value)
        self._gamma = (1 + self._a) / (1 - self._a)
        self._log_gamma = math.log(self._gamma)
        self._inv_log_gamma = 1.0 / self._log_gamma
        self._buckets: dict[int, int] = {}
        self._zero = 0
        self._count = 0
        self._sum = 0.0
        self._min = math.inf
        self._max = -math.inf

    # -- recording -------------------------------------------------------------------------

    def add(self, x: float) -> None:
        """Record one value.

        Args:
            x: The value (seconds), >= 0.

        Raises:
            ValueError: If ``x`` is negative or NaN.
        """
        if x > self._min_value:
            i = math.ceil(math.log(x) * self._inv_log_gamma)
            self._buckets[i] = self._buckets.get(i, 0) + 1
        elif x >= 0:
            self._zero += 1
        else:
            raise ValueError(f"histogram values must be >= 0, got {x}")
        self._count += 1
        self._sum += x
        if x < self._min:
            self._min = x
        if x > self._max:
            self._max = x

    def add_many(self, values: np.ndarray | Iterable[float]) -> None:
        """Record many values at once (vectorised).

        Args:
            values: The values (seconds), all >= 0.

        Raises:
            ValueError: If any value is negative or NaN.
        """
        arr = np.asarray(values, dtype=float).ravel()
        if arr.size == 0:
            return
        if np.isnan(arr).any() or (arr < 0).any():
            raise ValueError("histogram values must be >= 0 (found a negative or NaN value)")
        positive = arr[arr > self._min_value]
        self._zero += int(arr.size - positive.size)
        if positive.size:
            idx = np.ceil(np.log(positive) * self._inv_log_gamma).astype(np.int64)
            keys, counts = np.unique(idx, return_counts=True)
            buckets = self._buckets
            for k, c in zip(keys.tolist(), counts.tolist(), strict=True):
                buckets[k] = buckets.get(k, 0) + c
        self._count += int(arr.size)
        self._sum += float(arr.sum())
        self._min = min(self._min, float(arr.min()))
        self._max = max(self._max, float(arr.max()))

    def merge(self, other: LatencyHistogram) -> None:
        """Add another histogram's observations into this one (in place).

        Args:
            other: A histogram with the same relative accuracy and min_value.

        Raises:
            ValueError: If the accuracies or min_values differ.
        """
        if other._a != self._a or other._min_value != self._min_value:
            raise ValueError(
                "cannot merge histograms with different relative_accuracy/min_value: "
                f"({self._a}, {self._min_value}) vs ({other._a}, {other._min_value})"
            )
        buckets = self._buckets
        for k, c in other._buckets.items():
            buckets[k] = buckets.get(k, 0) + c
        self._zero += other._zero
        self._count += other._count
        self._sum += other._sum
        self._min = min(self._min, other._min)
        self._max = max(self._max, other._max)

    def copy(self) -> LatencyHistogram:
        """Return an independent copy."""
        new = LatencyHistogram(self._a, self._min_value)
        new.merge(self)
        return new

    # -- queries ---------------------------------------------------------------------------

    def quantile(self, q: float) -> float:
        """Estimate a quantile (see the class docstring for the guarantee).

        Args:
            q: The quantile in [0, 1].

        Returns:
            The estimate (seconds); NaN if the histogram is empty.

        Raises:
            ValueError: If ``q`` is outside [0, 1].
        """
        return self.quantiles([q])[0]

    def quantiles(self, qs: Iterable[float]) -> list[float]:
        """Estimate several quantiles in one pass over the buckets.

        Args:
            qs: Quantiles in [0, 1], in any order.

        Returns:
            The estimates (seconds), in the order of ``qs``; NaNs if the histogram is empty.
        """
        qs = list(qs)
        for q in qs:
            if not 0 <= q <= 1:
                raise ValueError(f"quantile must be in [0, 1], got {q}")
        if self._count == 0:
            return [math.nan] * len(qs)
        keys = sorted(self._buckets)
        cum = np.cumsum([self._zero] + [self._buckets[k] for k in keys])
        out = []
        for q in qs:
            rank = math.floor(q * (self._count - 1))
            if rank == 0:
                out.append(self._min)
                continue
            if rank == self._count - 1:
                out.append(self._max)
                continue
            pos = int(np.searchsorted(cum, rank, side="right"))
            # pos 0 is the zero bucket; bucket i reports 2 gamma^i / (gamma + 1).
            v = 0.0 if pos == 0 else 2 * self._gamma ** keys[pos - 1] / (self._gamma + 1)
            out.append(min(max(v, self._min), self._max))
        return out

    @property
    def relative_accuracy(self) -> float:
        """The relative accuracy ``a`` of quantile estimates."""
        return self._a

    @property
    def min_value(self) -> float:
        """Values at or below this count as zero (seconds)."""
        return self._min_value

    @property
    def count(self) -> int:
        """Number of recorded values."""
        return self._count

    @property
    def sum(self) -> float:
        """Sum of recorded values (seconds)."""
        return self._sum

    @property
    def mean(self) -> float:
        """Exact mean (seconds); NaN if empty."""
        return self._sum / self._count if self._count else math.nan

    @property
    def min(self) -> float:
        """Exact minimum (seconds); NaN if empty."""
        return self._min if self._count else math.nan

    @property
    def max(self) -> float:
        """Exact maximum (seconds); NaN if empty."""
        return self._max if self._count else math.nan

    @property
    def bucket_count(self) -> int:
        """Number of non-empty buckets, the zero bucket included (the memory used)."""
        return len(self._buckets) + (1 if self._zero else 0)

    def bucket_bound(self) -> int:
        """Upper bound on :attr:`bucket_count` from the current min and max."""
        if self._count == 0:
            return 0
        lo = max(self._min, self._min_value)
        hi = max(self._max, self._min_value)
        return math.ceil(math.log(hi / lo) * self._inv_log_gamma) + 2

    # -- serialisation ---------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-safe dict; :meth:`from_dict` restores an equal histogram."""
        keys = sorted(self._buckets)
        return {
            "relative_accuracy": self._a,
            "min_value": self._min_value,
            "count": self._count,
            "sum": self._sum,
            "min": self._min if self._count else None,
            "max": self._max if self._count else None,
            "zero_count": self._zero,
            "bucket_indexes": keys,
            "bucket_counts": [self._buckets[k] for k in keys],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LatencyHistogram:
        """Rebuild a histogram from :meth:`to_dict` output.

        Args:
            data: The dict.
        """
        new = cls(data["relative_accuracy"], data["min_value"])
        new._buckets = {
            int(k): int(c)
            for k, c in zip(data["bucket_indexes"], data["bucket_counts"], strict=True)
        }
        new._zero = int(data["zero_count"])
        new._count = int(data["count"])
        new._sum = float(data["sum"])
        new._min = math.inf if data["min"] is None else float(data["min"])
        new._max = -math.inf if data["max"] is None else float(data["max"])
        return new

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LatencyHistogram):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"LatencyHistogram(count={self._count}, a={self._a}, buckets={self.bucket_count})"


class Tally:
    """Per-observation statistics: count, mean, variance, min, max (Welford's algorithm)."""

    __slots__ = ("_count", "_m2", "_max", "_mean", "_min")

    def __init__(self) -> None:
        self._count = 0
        self._mean = 0.0
        self._m2 = 0.0
        self._min = math.inf
        self._max = -math.inf

    def add(self, x: float) -> None:
        """Record one observation.

        Args:
            x: The observed value.
        """
        self._count += 1
        delta = x - self._mean
        self._mean += delta / self._count
        self._m2 += delta * (x - self._mean)
        if x < self._min:
            self._min = x
        if x > self._max:
            self._max = x

    def merge(self, other: Tally) -> None:
        """Add another tally's observations into this one (Chan et al.'s parallel formula).

        Args:
            other: The tally to merge in.
        """
        if other._count == 0:
            return
        if self._count == 0:
            self._count, self._mean, self._m2 = other._count, other._mean, other._m2
            self._min, self._max = other._min, other._max
            return
        n = self._count + other._count
        delta = other._mean - self._mean
        self._mean += delta * other._count / n
        self._m2 += other._m2 + delta * delta * self._count * other._count / n
        self._count = n
        self._min = min(self._min, other._min)
        self._max = max(self._max, other._max)

    @property
    def count(self) -> int:
        """Number of observations."""
        return self._count

    @property
    def sum(self) -> float:
        """Sum of observations."""
        return self._mean * self._count

    @property
    def mean(self) -> float:
        """Mean; NaN if empty."""
        return self._mean if self._count else math.nan

    @property
    def variance(self) -> float:
        """Population variance (divides by n); NaN if empty."""
        return self._m2 / self._count if self._count else math.nan

    @property
    def sample_variance(self) -> float:
        """Sample variance (divides by n - 1); NaN with fewer than two observations."""
        return self._m2 / (self._count - 1) if self._count > 1 else math.nan

    @property
    def std(self) -> float:
        """Population standard deviation; NaN if empty."""
        return math.sqrt(self.variance) if self._count else math.nan

    @property
    def sample_std(self) -> float:
        """Sample standard deviation; NaN with fewer than two observations."""
        return math.sqrt(self.sample_variance) if self._count > 1 else math.nan

    @property
    def min(self) -> float:
        """Minimum; NaN if empty."""
        return self._min if self._count else math.nan

    @property
    def max(self) -> float:
        """Maximum; NaN if empty."""
        return self._max if self._count else math.nan

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-safe summary (None for undefined values)."""

        def safe(v: float) -> float | None:
            return None if math.isnan(v) else v

        return {
            "count": self._count,
            "mean": safe(self.mean),
            "variance": safe(self.variance),
            "sample_variance": safe(self.sample_variance),
            "std": safe(self.std),
            "min": safe(self.min),
            "max": safe(self.max),
        }

    def __repr__(self) -> str:
        return f"Tally(count={self._count}, mean={self.mean:.6g}, std={self.std:.6g})"


class TimeWeighted:
    """A level that holds between changes (queue length, in-flight requests, busy cores).

    The mean is the integral of the level over time divided by the elapsed time since the last
    :meth:`reset` (or construction).

    Args:
        t0: Start time (seconds).
        value: Level at ``t0``.
    """

    __slots__ = ("_area", "_max", "_t_last", "_t_start", "_value")

    def __init__(self, t0: float = 0.0, value: float = 0.0) -> None:
        self._t_start = t0
        self._t_last = t0
        self._value = value
        self._area = 0.0
        self._max = value

    def _advance(self, t: float) -> None:
        if t < self._t_last:
            raise ValueError(f"time must not go backwards: {t} < {self._t_last}")
        self._area += self._value * (t - self._t_last)
        self._t_last = t

    def set(self, t: float, value: float) -> None:
        """Set the level from time ``t`` on.

        Args:
            t: Time of the change (seconds), not before the previous change.
            value: New level.

        Raises:
            ValueError: If time goes backwards.
        """
        self._advance(t)
        self._value = value
        if value > self._max:
            self._max = value

    def add(self, t: float, delta: float) -> None:
        """Change the level by ``delta`` at time ``t``.

        Args:
            t: Time of the change (seconds), not before the previous change.
            delta: Change of the level (e.g. +1 on arrival, -1 on departure).
        """
        # On the hot path of every server visit: one call, no helpers.
        last = self._t_last
        if t < last:
            raise ValueError(f"time must not go backwards: {t} < {last}")
        value = self._value
        self._area += value * (t - last)
        self._t_last = t
        value += delta
        self._value = value
        if value > self._max:
            self._max = value

    def reset(self, t: float) -> None:
        """Restart averaging at ``t``, keeping the current level (end of warm-up).

        Args:
            t: Time of the reset (seconds).
        """
        self._advance(t)
        self._t_start = t
        self._area = 0.0
        self._max = self._value

    def mean(self, t_end: float) -> float:
        """Return the time average from the last reset to ``t_end``.

        Args:
            t_end: End of the averaging interval (seconds), not before the last change.

        Returns:
            The time-weighted mean; the current level if no time has elapsed.
        """
        if t_end < self._t_last:
            raise ValueError(f"time must not go backwards: {t_end} < {self._t_last}")
        elapsed = t_end - self._t_start
        if elapsed <= 0:
            return self._value
        return (self._area + self._value * (t_end - self._t_last)) / elapsed

    @property
    def value(self) -> float:
        """The current level."""
        return self._value

    @property
    def max(self) -> float:
        """The largest level since the last reset."""
        return self._max

    def __repr__(self) -> str:
        return f"TimeWeighted(value={self._value}, t_last={self._t_last})"


class _Window:
    __slots__ = ("count", "errors", "hist", "sum")

    def __init__(self, relative_accuracy: float) -> None:
        self.count = 0
        self.errors = 0
        self.sum = 0.0
        self.hist = LatencyHistogram(relative_accuracy)


class WindowedSeries:
    """A time series in fixed windows: throughput, errors and latency per window.

    Window ``i`` covers ``[t0 + i * window_s, t0 + (i + 1) * window_s)``.

    Args:
        window_s: Window width (seconds), > 0.
        t0: Start of the first window (seconds).
        relative_accuracy: Relative accuracy of each window's latency histogram.
    """

    def __init__(self, window_s: float, t0: float = 0.0, relative_accuracy: float = 0.01) -> None:
        if not window_s > 0:
            raise ValueError(f"window_s must be > 0, got {window_s}")
        self._window_s = float(window_s)
        self._t0 = float(t0)
        self._a = relative_accuracy
        self._windows: dict[int, _Window] = {}

    @property
    def window_s(self) -> float:
        """Window width (seconds)."""
        return self._window_s

    def add(self, t: float, value: float, ok: bool = True) -> None:
        """Record an observation (typically a completed request and its latency).

        Args:
            t: Time of the observation (seconds), >= t0.
            value: The observed value (seconds for a latency), >= 0.
            ok: False for an error.
        """
        if t < self._t0:
            raise ValueError(f"time {t} is before the start of the series {self._t0}")
        i = int((t - self._t0) // self._window_s)
        w = self._windows.get(i)
        if w is None:
            w = self._windows[i] = _Window(self._a)
        w.count += 1
        w.sum += value
        w.hist.add(value)
        if not ok:
            w.errors += 1

    def windows(self) -> list[dict[str, float]]:
        """Return one row per window, from the first window to the last non-empty one.

        Returns:
            Dicts with ``start_s``, ``count``, ``rate_per_s`` (count / window_s), ``errors``,
            ``error_rate`` (errors / count), ``mean`` and ``p99`` (of the values); empty
            windows have zeros everywhere but ``start_s``.
        """
        if not self._windows:
            return []
        rows: list[dict[str, float]] = []
        for i in range(max(self._windows) + 1):
            start = self._t0 + i * self._window_s
            w = self._windows.get(i)
            if w is None:
                rows.append(
                    {
                        "start_s": start,
                        "count": 0,
                        "rate_per_s": 0.0,
                        "errors": 0,
                        "error_rate": 0.0,
                        "mean": 0.0,
                        "p99": 0.0,
                    }
                )
            else:
                rows.append(
                    {
                        "start_s": start,
                        "count": w.count,
                        "rate_per_s": w.count / self._window_s,
                        "errors": w.errors,
                        "error_rate": w.errors / w.count,
                        "mean": w.sum / w.count,
                        "p99": w.hist.quantile(0.99),
                    }
                )
        return rows
