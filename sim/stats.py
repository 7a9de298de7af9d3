"""Streaming statistics: latency histograms, tallies, time-weighted levels, windowed series.

All of them use memory independent of the number of observations and merge exactly, so
results can be combined across replications and processes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np

__all__ = [
    "LatencyHistogram",
    "Tally",
    "TimeWeighted",
    "SeriesWindow",
    "WindowedSeries",
    "WindowedLevel",
    "t_quantile_975",
    "mean_half_width",
]


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


class SeriesWindow:
    """One window of a :class:`WindowedSeries`: what ended in it.

    Attributes:
        count: observations (requests that ended in the window).
        errors: of them, errors.
        sum: sum of their values (seconds).
        hist: their values' histogram (mergeable).
        measured: of ``count``, those marked measured (started after the warm-up).
        labels: errors by label (a response flag, a status code).
        measured_labels: errors by label, of the measured observations only.
    """

    __slots__ = ("count", "errors", "hist", "labels", "measured", "measured_labels", "sum")

    def __init__(self, relative_accuracy: float) -> None:
        self.count = 0
        self.errors = 0
        self.sum = 0.0
        self.measured = 0
        self.hist = LatencyHistogram(relative_accuracy)
        self.labels: dict[Any, int] = {}
        self.measured_labels: dict[Any, int] = {}

    def merge(self, other: SeriesWindow) -> None:
        """Add ``other``'s observations into this window (in place)."""
        self.count += other.count
        self.errors += other.errors
        self.sum += other.sum
        self.measured += other.measured
        self.hist.merge(other.hist)
        for into, found in (
            (self.labels, other.labels),
            (self.measured_labels, other.measured_labels),
        ):
            for label, n in found.items():
                into[label] = into.get(label, 0) + n


class WindowedSeries:
    """A time series in fixed windows: throughput, errors (by label) and latency per window.

    Window ``i`` covers ``[t0 + i * window_s, t0 + (i + 1) * window_s)``; an observation
    counts in the window of its time ``t`` (for a request: when it ended, as a dashboard
    counts it). Windows are made as observations reach them (memory grows with the windows
    that saw something, never with the observations).

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
        self._windows: dict[int, SeriesWindow] = {}

    @property
    def window_s(self) -> float:
        """Window width (seconds)."""
        return self._window_s

    @property
    def t0(self) -> float:
        """Start of the first window (seconds)."""
        return self._t0

    def index(self, t: float) -> int:
        """The index of the window that holds time ``t`` (seconds)."""
        return int((t - self._t0) // self._window_s)

    def add(
        self, t: float, value: float, ok: bool = True, label: Any = None, measured: bool = True
    ) -> None:
        """Record an observation (typically a request that ended, and its latency).

        Args:
            t: Time of the observation (seconds), >= t0.
            value: The observed value (seconds for a latency), >= 0.
            ok: False for an error.
            label: An error's label (response flags, status code), counted by label.
            measured: Whether the observation is also counted as measured (a request that
                started after the warm-up).
        """
        if t < self._t0:
            raise ValueError(f"time {t} is before the start of the series {self._t0}")
        i = int((t - self._t0) // self._window_s)
        w = self._windows.get(i)
        if w is None:
            w = self._windows[i] = SeriesWindow(self._a)
        w.count += 1
        w.sum += value
        w.hist.add(value)
        if measured:
            w.measured += 1
        if not ok:
            w.errors += 1
            labels = w.labels
            labels[label] = labels.get(label, 0) + 1
            if measured:
                labels = w.measured_labels
                labels[label] = labels.get(label, 0) + 1

    def window(self, i: int) -> SeriesWindow | None:
        """Window ``i``, or None if nothing was observed in it."""
        return self._windows.get(i)

    def last_index(self) -> int:
        """The index of the last window that saw something (-1 if none did)."""
        return max(self._windows, default=-1)

    def fold_after(self, last: int) -> None:
        """Merge every window after ``last`` into window ``last`` (observations exactly at
        the end of a run, which would open a window of their own).

        Args:
            last: The index of the last window to keep, >= 0.
        """
        for i in sorted(k for k in self._windows if k > last):
            extra = self._windows.pop(i)
            w = self._windows.get(last)
            if w is None:
                self._windows[last] = extra
            else:
                w.merge(extra)

    def merge(self, other: WindowedSeries) -> None:
        """Add another series' windows into this one (in place; same windows).

        Raises:
            ValueError: If the windows differ.
        """
        if other._window_s != self._window_s or other._t0 != self._t0 or other._a != self._a:
            raise ValueError("cannot merge series with different windows or accuracies")
        for i, found in other._windows.items():
            w = self._windows.get(i)
            if w is None:
                w = self._windows[i] = SeriesWindow(self._a)
            w.merge(found)

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
            if w is None or w.count == 0:
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


class WindowedLevel:
    """A level (requests in flight) in fixed windows: per window, its time-weighted mean and
    its value at the window's start.

    Window ``i`` covers ``[t0 + i * window_s, t0 + (i + 1) * window_s)``. A change at time
    ``t`` happens in the window that holds ``t``: the level at the start of a window is the
    level before the changes at that instant.

    Args:
        window_s: Window width (seconds), > 0.
        t0: Start of the first window (seconds).
        value: Level at ``t0``.
    """

    __slots__ = ("_area", "_i_last", "_starts", "_t0", "_t_last", "_value", "_window_s")

    def __init__(self, window_s: float, t0: float = 0.0, value: float = 0.0) -> None:
        if not window_s > 0:
            raise ValueError(f"window_s must be > 0, got {window_s}")
        self._window_s = float(window_s)
        self._t0 = float(t0)
        self._value = value
        self._t_last = self._t0
        self._i_last = 0
        self._area: dict[int, float] = {}
        self._starts: dict[int, float] = {0: value}

    def _advance(self, t: float) -> None:
        if t < self._t_last:
            raise ValueError(f"time must not go backwards: {t} < {self._t_last}")
        w = self._window_s
        i = int((t - self._t0) // w)
        value = self._value
        last = self._i_last
        area = self._area
        if i == last:
            area[i] = area.get(i, 0.0) + value * (t - self._t_last)
        else:
            # The rest of the last window, whole windows between, then the start of window i.
            end = self._t0 + (last + 1) * w
            area[last] = area.get(last, 0.0) + value * max(0.0, end - self._t_last)
            starts = self._starts
            for j in range(last + 1, i):
                area[j] = value * w
                starts[j] = value
            starts[i] = value
            area[i] = value * max(0.0, t - (self._t0 + i * w))
            self._i_last = i
        self._t_last = t

    def add(self, t: float, delta: float) -> None:
        """Change the level by ``delta`` at time ``t``.

        Args:
            t: Time of the change (seconds), not before the previous change.
            delta: Change of the level (+1 when a request is sent, -1 when it is answered).
        """
        self._advance(t)
        self._value += delta

    @property
    def value(self) -> float:
        """The current level."""
        return self._value

    def finish(self, t_end: float) -> tuple[list[float], list[float], list[float]]:
        """Close the series at ``t_end``: the windows from ``t0`` to ``t_end``.

        The last window ends at ``t_end`` (it may be shorter than the others); a change at
        ``t_end`` or later, which would open a window of its own, counts in it.

        Args:
            t_end: End of the series (seconds), > t0.

        Returns:
            Per window: the time-weighted mean level, the level at its start and the level at
            its end.
        """
        w = self._window_s
        n = max(1, math.ceil((t_end - self._t0) / w - 1e-9))
        if self._t_last < t_end:
            self._advance(t_end)
        means: list[float] = []
        starts: list[float] = []
        area = self._area
        for i in range(n):
            lo = self._t0 + i * w
            hi = min(self._t0 + (i + 1) * w, t_end)
            a = area.get(i, 0.0)
            if i == n - 1:
                a += sum(v for k, v in area.items() if k >= n)
            means.append(a / (hi - lo) if hi > lo else self._value)
            starts.append(self._starts[i])
        ends = starts[1:] + [self._value]
        return means, starts, ends


# Student's t distribution's 0.975 quantile for 1..30 degrees of freedom (the two-sided 95 %
# critical value), to 9 decimals, from the standard tables (NIST/SEMATECH e-Handbook of
# Statistical Methods, section 1.3.6.7.2; equal to scipy.stats.t.ppf(0.975, df)).
_T975 = (
    12.706204736, 4.302652730, 3.182446305, 2.776445105, 2.570581836,
    2.446911851, 2.364624252, 2.306004135, 2.262157163, 2.228138852,
    2.200985160, 2.178812830, 2.160368656, 2.144786688, 2.131449546,
    2.119905299, 2.109815578, 2.100922040, 2.093024054, 2.085963447,
    2.079613845, 2.073873068, 2.068657610, 2.063898562, 2.059538553,
    2.055529439, 2.051830516, 2.048407142, 2.045229642, 2.042272456,
)  # fmt: skip
_Z975 = 1.959963984540054  # the normal distribution's 0.975 quantile


def t_quantile_975(df: int) -> float:
    """Student's t 0.975 quantile with ``df`` degrees of freedom: the factor of a two-sided
    95 % confidence interval's half-width.

    Exact (to 9 decimals) for ``df`` 1 to 30 from a table; beyond, the Cornish-Fisher
    expansion of t around the normal quantile (Abramowitz and Stegun 26.7.5, three terms),
    within 1e-5 of the exact value for ``df > 30`` and tending to 1.96 (the normal).

    Raises:
        ValueError: ``df`` below 1.
    """
    if df < 1:
        raise ValueError(f"degrees of freedom must be at least 1, got {df}")
    if df <= len(_T975):
        return _T975[df - 1]
    z = _Z975
    g1 = (z**3 + z) / 4
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
    return z + g1 / df + g2 / df**2 + g3 / df**3


def mean_half_width(values: Iterable[float]) -> tuple[float, float, int]:
    """The mean of ``values`` and its 95 % confidence half-width, Student t over them:
    ``t(0.975, n - 1) * s / sqrt(n)`` with ``s`` the sample standard deviation (``n - 1`` in
    its denominator); the method of independent replications, each value one replication's
    estimate.

    NaN values (a replication that measured nothing) are left out; ``n`` is the number
    kept. The mean is NaN when none is left, the half-width NaN with fewer than two.

    Returns:
        ``(mean, half_width, n)``.
    """
    kept = [float(v) for v in values if not math.isnan(v)]
    n = len(kept)
    if n == 0:
        return math.nan, math.nan, 0
    mean = math.fsum(kept) / n
    if n < 2:
        return mean, math.nan, n
    variance = math.fsum((v - mean) ** 2 for v in kept) / (n - 1)
    return mean, t_quantile_975(n - 1) * math.sqrt(variance / n), n
