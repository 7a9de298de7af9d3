"""Distribution specifications: validated, frozen, serialisable, and fast to sample.

A spec is a pydantic model tagged by ``kind``; it holds parameters only and draws from a
generator passed in by the caller (a component's own stream, see :mod:`sim.random`), so one
spec can serve many runs. Time-like parameters are in seconds and accept duration strings
(``"2ms"``).

In configuration use :data:`DistributionSpec`, which also accepts a shorthand: a bare number
or a duration string means a constant (``service_time: "2ms"``).

The simulator's hot path draws through :meth:`sampler`, a zero-argument callable that draws
``batch`` values at a time with :meth:`sample_n` and hands them out one by one. Its sequence of
values is the concatenation of successive ``sample_n(rng, batch)`` calls.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from itertools import chain, repeat
from typing import Annotated, Any, Literal, Union

import numpy as np
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PositiveFloat,
    PrivateAttr,
    TypeAdapter,
    model_validator,
)

from sim.units import Duration, parse_duration

__all__ = [
    "ConstantDist",
    "Distribution",
    "DistributionSpec",
    "EmpiricalDist",
    "ErlangDist",
    "ExponentialDist",
    "GammaDist",
    "LognormalDist",
    "NormalDist",
    "ParetoDist",
    "UniformDist",
    "constant",
    "exponential",
    "parse_distribution",
]

Z99 = 2.3263478740408408
"""The 0.99 quantile of the standard normal distribution."""


class _DistBase(BaseModel):
    """Common interface of every distribution spec."""

    # A field cannot be called ``mean`` next to the ``mean()`` method, so such fields are
    # ``mean_`` with the alias ``mean``, used for validation, errors and serialisation.
    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
    )

    def sample_n(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Draw ``n`` values.

        Args:
            rng: The generator to draw from.
            n: Number of values.

        Returns:
            A float array of shape ``(n,)``.
        """
        raise NotImplementedError

    def sample(self, rng: np.random.Generator) -> float:
        """Draw one value (slow path; the simulator uses :meth:`sampler`).

        Args:
            rng: The generator to draw from.

        Returns:
            One draw.
        """
        return float(self.sample_n(rng, 1)[0])

    def mean(self) -> float:
        """Return the analytic mean (``inf`` if it does not exist)."""
        raise NotImplementedError

    def sampler(self, rng: np.random.Generator, batch: int = 512) -> Callable[[], float]:
        """Return a fast zero-argument callable that returns one draw per call.

        Values are drawn ``batch`` at a time with :meth:`sample_n`, so the sequence equals the
        concatenation of successive ``sample_n(rng, batch)`` results. The callable is the C
        ``__next__`` of an ``itertools.chain`` over the batches: a draw runs no Python frame,
        only a refill does.

        Args:
            rng: The generator to draw from (owned by the caller; draws happen lazily).
            batch: Number of values drawn per refill (>= 1).

        Returns:
            A callable returning a Python float.
        """
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        sample_n = self.sample_n

        def batches() -> Iterator[list[float]]:
            while True:
                yield sample_n(rng, batch).tolist()

        return chain.from_iterable(batches()).__next__


class ConstantDist(_DistBase):
    """A fixed value.

    Attributes:
        value: The value (seconds for a time).
    """

    kind: Literal["constant"] = "constant"
    value: Duration

    def sample_n(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return np.full(n, self.value, dtype=float)

    def sample(self, rng: np.random.Generator) -> float:
        return self.value

    def mean(self) -> float:
        return self.value

    def sampler(self, rng: np.random.Generator, batch: int = 512) -> Callable[[], float]:
        """Return a callable returning the value (C-level); it never touches ``rng``."""
        return repeat(float(self.value)).__next__


class ExponentialDist(_DistBase):
    """An exponential distribution (memoryless; Poisson inter-arrival times).

    Attributes:
        mean: The mean (seconds), > 0.
    """

    kind: Literal["exponential"] = "exponential"
    mean_: Duration = Field(alias="mean", gt=0)

    def sample_n(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.exponential(self.mean_, n)

    def mean(self) -> float:
        return self.mean_


class UniformDist(_DistBase):
    """A uniform distribution on ``[low, high]``.

    Attributes:
        low: Lower bound (seconds).
        high: Upper bound (seconds), >= low.
    """

    kind: Literal["uniform"] = "uniform"
    low: Duration
    high: Duration

    @model_validator(mode="after")
    def _check_bounds(self) -> UniformDist:
        if self.low > self.high:
            raise ValueError(f"uniform: low ({self.low}) must be <= high ({self.high})")
        return self

    def sample_n(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.uniform(self.low, self.high, n)

    def mean(self) -> float:
        return 0.5 * (self.low + self.high)


class NormalDist(_DistBase):
    """A normal distribution truncated at 0 (times cannot be negative).

    Negative draws are resampled (vectorised, until none is negative), so the draws follow the
    normal distribution conditioned on being >= 0, and :meth:`mean` is that conditional mean,
    ``mu + std * phi(a) / (1 - Phi(a))`` with ``a = -mu / std``; it exceeds the ``mean`` field
    when ``std`` is not small against it.

    Attributes:
        mean: Mean of the untruncated normal (seconds), >= 0.
        std: Standard deviation of the untruncated normal (seconds), >= 0.
    """

    kind: Literal["normal"] = "normal"
    mean_: Duration = Field(alias="mean")
    std: Duration

    def sample_n(self, rng: np.random.Generator, n: int) -> np.ndarray:
        out = rng.normal(self.mean_, self.std, n)
        negative = np.flatnonzero(out < 0)
        while negative.size:
            redraw = rng.normal(self.mean_, self.std, negative.size)
            out[negative] = redraw
            negative = negative[redraw < 0]
        return out

    def mean(self) -> float:
        if self.std == 0:
            return self.mean_
        a = -self.mean_ / self.std
        pdf = math.exp(-0.5 * a * a) / math.sqrt(2 * math.pi)
        tail = 0.5 * math.erfc(a / math.sqrt(2))  # 1 - Phi(a), accurate for large a
        return self.mean_ + self.std * pdf / tail


class LognormalDist(_DistBase):
    """A lognormal distribution, given either by ``mean`` and ``p99`` or by ``mu`` and ``sigma``.

    From ``mean`` and ``p99`` (seconds): with ``d = ln(p99 / mean)`` and ``z`` the normal 0.99
    quantile, ``mean = exp(mu + s^2/2)`` and ``p99 = exp(mu + z s)`` give
    ``s^2/2 - z s + d = 0``; the smaller root ``s = z - sqrt(z^2 - 2d)`` is used. A solution
    needs ``mean < p99 <= mean * exp(z^2 / 2)`` (about 14.97 times the mean).

    Attributes:
        mean: Mean (seconds), > 0; together with ``p99``.
        p99: 99th percentile (seconds); together with ``mean``.
        mu: Mean of the logarithm (log-seconds); together with ``sigma``.
        sigma: Standard deviation of the logarithm, >= 0; together with ``mu``.
    """

    kind: Literal["lognormal"] = "lognormal"
    mean_: Duration | None = Field(default=None, alias="mean", gt=0)
    p99: Duration | None = Field(default=None, gt=0)
    mu: float | None = Field(default=None, allow_inf_nan=False)
    sigma: float | None = Field(default=None, ge=0, allow_inf_nan=False)

    _mu: float = PrivateAttr(0.0)
    _sigma: float = PrivateAttr(0.0)

    @model_validator(mode="after")
    def _solve(self) -> LognormalDist:
        by_mean = self.mean_ is not None or self.p99 is not None
        by_log = self.mu is not None or self.sigma is not None
        if by_mean == by_log:
            raise ValueError(
                "lognormal: give exactly one pair of parameters, either mean and p99, "
                "or mu and sigma"
            )
        if by_log:
            if self.mu is None or self.sigma is None:
                raise ValueError("lognormal: mu and sigma must be given together")
            self._mu, self._sigma = self.mu, self.sigma
            return self
        if self.mean_ is None or self.p99 is None:
            raise ValueError("lognormal: mean and p99 must be given together")
        if self.p99 <= self.mean_:
            raise ValueError(
                f"lognormal: p99 ({self.p99}) must be greater than mean ({self.mean_})"
            )
        d = math.log(self.p99 / self.mean_)
        disc = Z99 * Z99 - 2 * d
        if disc < 0:
            limit = self.mean_ * math.exp(Z99 * Z99 / 2)
            raise ValueError(
                f"lognormal: no lognormal has mean {self.mean_} and p99 {self.p99}; "
                f"p99 must be <= {limit:.6g} (mean * exp(z99^2 / 2))"
            )
        s = Z99 - math.sqrt(disc)
        self._sigma = s
        self._mu = math.log(self.mean_) - s * s / 2
        return self

    @property
    def log_mu(self) -> float:
        """Mean of the logarithm (the solved ``mu``)."""
        return self._mu

    @property
    def log_sigma(self) -> float:
        """Standard deviation of the logarithm (the solved ``sigma``)."""
        return self._sigma

    def sample_n(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.lognormal(self._mu, self._sigma, n)

    def mean(self) -> float:
        return math.exp(self._mu + self._sigma * self._sigma / 2)


class GammaDist(_DistBase):
    """A gamma distribution given by its shape and mean (scale = mean / shape).

    Attributes:
        shape: Shape parameter, > 0 (squared coefficient of variation is 1 / shape).
        mean: Mean (seconds), > 0.
    """

    kind: Literal["gamma"] = "gamma"
    shape: PositiveFloat = Field(allow_inf_nan=False)
    mean_: Duration = Field(alias="mean", gt=0)

    def sample_n(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.gamma(self.shape, self.mean_ / self.shape, n)

    def mean(self) -> float:
        return self.mean_


class ErlangDist(_DistBase):
    """An Erlang distribution: the sum of ``k`` exponentials (a gamma with integer shape).

    Attributes:
        k: Number of phases, >= 1.
        mean: Mean (seconds), > 0.
    """

    kind: Literal["erlang"] = "erlang"
    k: int = Field(ge=1)
    mean_: Duration = Field(alias="mean", gt=0)

    def sample_n(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.gamma(self.k, self.mean_ / self.k, n)

    def mean(self) -> float:
        return self.mean_


class ParetoDist(_DistBase):
    """A Pareto (type I) distribution with minimum ``scale``: ``scale * (1 + Lomax(alpha))``.

    Attributes:
        alpha: Tail index, > 0; the mean is finite only for alpha > 1, the variance for alpha > 2.
        scale: Minimum value (seconds), > 0.
    """

    kind: Literal["pareto"] = "pareto"
    alpha: PositiveFloat = Field(allow_inf_nan=False)
    scale: Duration = Field(gt=0)

    def sample_n(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return self.scale * (1.0 + rng.pareto(self.alpha, n))

    def mean(self) -> float:
        if self.alpha <= 1:
            return math.inf
        return self.alpha * self.scale / (self.alpha - 1)


class EmpiricalDist(_DistBase):
    """An empirical distribution, from raw values or from a histogram.

    Give either ``values`` (resampled uniformly) or ``bins`` and ``counts``: a bin is drawn
    with probability proportional to its count, then a value uniformly within it.

    Attributes:
        values: Observed values (seconds), non-empty.
        bins: ``n + 1`` increasing bin edges (seconds).
        counts: ``n`` non-negative bin weights with a positive sum.
    """

    kind: Literal["empirical"] = "empirical"
    values: list[Duration] | None = None
    bins: list[Duration] | None = None
    counts: list[float] | None = None

    _values: np.ndarray = PrivateAttr()
    _lows: np.ndarray = PrivateAttr()
    _widths: np.ndarray = PrivateAttr()
    _cum: np.ndarray = PrivateAttr()

    @model_validator(mode="after")
    def _check(self) -> EmpiricalDist:
        if self.values is not None:
            if self.bins is not None or self.counts is not None:
                raise ValueError("empirical: give either values, or bins and counts, not both")
            if not self.values:
                raise ValueError("empirical: values must not be empty")
            self._values = np.asarray(self.values, dtype=float)
            return self
        if self.bins is None or self.counts is None:
            raise ValueError("empirical: give either values, or both bins and counts")
        if len(self.bins) != len(self.counts) + 1:
            raise ValueError(
                f"empirical: bins must have one more edge than counts has weights, got "
                f"{len(self.bins)} bins and {len(self.counts)} counts"
            )
        if not self.counts:
            raise ValueError("empirical: counts must not be empty")
        edges = np.asarray(self.bins, dtype=float)
        if np.any(np.diff(edges) <= 0):
            raise ValueError("empirical: bins must be strictly increasing")
        weights = np.asarray(self.counts, dtype=float)
        if not np.all(np.isfinite(weights)) or np.any(weights < 0):
            raise ValueError("empirical: counts must be finite and >= 0")
        total = weights.sum()
        if total <= 0:
            raise ValueError("empirical: counts must have a positive sum")
        self._lows = edges[:-1]
        self._widths = np.diff(edges)
        cum = np.cumsum(weights) / total
        cum[-1] = 1.0
        self._cum = cum
        return self

    # The private lookup tables are numpy arrays derived from the fields, so equality and
    # hashing look at the fields only (pydantic's default would compare the arrays too).
    def __eq__(self, other: object) -> bool:
        if not isinstance(other, EmpiricalDist):
            return NotImplemented
        return self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(tuple(tuple(v) if v is not None else None for v in self._fields()))

    def _fields(self) -> tuple[list[float] | None, ...]:
        return (self.values, self.bins, self.counts)

    def sample_n(self, rng: np.random.Generator, n: int) -> np.ndarray:
        if self.values is not None:
            return self._values[rng.integers(0, self._values.size, n)]
        idx = np.searchsorted(self._cum, rng.random(n), side="right")
        np.minimum(idx, self._cum.size - 1, out=idx)
        return self._lows[idx] + rng.random(n) * self._widths[idx]

    def mean(self) -> float:
        if self.values is not None:
            return float(self._values.mean())
        probs = np.diff(self._cum, prepend=0.0)
        return float(np.sum(probs * (self._lows + self._widths / 2)))


Distribution = Annotated[
    Union[  # noqa: UP007 - a Union reads better than a chain of | over nine lines
        ConstantDist,
        ExponentialDist,
        UniformDist,
        NormalDist,
        LognormalDist,
        GammaDist,
        ErlangDist,
        ParetoDist,
        EmpiricalDist,
    ],
    Field(discriminator="kind"),
]
"""Any distribution spec, selected by its ``kind`` field."""


def _shorthand(v: Any) -> Any:
    """Turn a bare number or duration string into a constant spec; pass anything else on."""
    if isinstance(v, (int, float, str)) and not isinstance(v, bool):
        return ConstantDist(value=parse_duration(v))
    return v


DistributionSpec = Annotated[Distribution, BeforeValidator(_shorthand)]
"""A distribution spec that also accepts a number or a duration string (``"2ms"``) as a constant.

Use this as the field type of every distribution in configuration.
"""

_ADAPTER: TypeAdapter[Any] = TypeAdapter(DistributionSpec)


def parse_distribution(data: Any) -> Distribution:
    """Validate a distribution spec from plain data.

    Args:
        data: A mapping with a ``kind`` (``{"kind": "exponential", "mean": "2ms"}``), a spec
            instance, or the constant shorthand (a number or a duration string).

    Returns:
        The validated spec.

    Raises:
        pydantic.ValidationError: If the data is not a valid spec.
    """
    result: Distribution = _ADAPTER.validate_python(data)
    return result


def constant(value: float | str) -> ConstantDist:
    """Return a constant spec.

    Args:
        value: The value (seconds, or a duration string).
    """
    return ConstantDist(value=value)  # type: ignore[arg-type]


def exponential(mean: float | str) -> ExponentialDist:
    """Return an exponential spec.

    Args:
        mean: The mean (seconds, or a duration string), > 0.
    """
    return ExponentialDist.model_validate({"mean": mean})
