"""Envoy's resilience mechanisms as pure state machines: no events, no SimPy, time passed in.

Each class or function here reproduces one mechanism the way Envoy's C++ source does it, with
the file and function cited in its docstring. Times are floats in seconds and are passed in
explicitly (``now``), so every trace is exactly testable; randomness comes in as a
zero-argument callable ``uniform()`` returning a float in [0, 1). The router calls these; they
never schedule anything themselves.

- :func:`envoy_backoff` / :class:`BackOff`: the fully jittered exponential retry back-off.
- :class:`TokenBucket`: the local rate limit filter's token bucket (429 ``RL`` when empty).
- :class:`OutlierDetector`: consecutive-5xx and consecutive-gateway-failure ejection.
- :func:`panic_hosts`: the load balancer's healthy panic threshold.
- :class:`RetryBudget`: the cluster circuit breaker on concurrent retries (``max_retries`` or a
  retry budget).

Instants that coincide are ordered the same way everywhere: a timer tick at time ``t`` (a
token fill, an outlier-detection interval) happens before a request or response at ``t``.
Floating-point instants are compared with a 1 ns tolerance, the resolution of Envoy's
monotonic clock, so ``0.35 + 30.0`` counts as reaching ``30.35``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Any

__all__ = [
    "DEFAULT_BASE_RETRY_BACKOFF_S",
    "DEFAULT_MAX_EJECTION_S",
    "BackOff",
    "OutlierDetector",
    "RetryBudget",
    "TokenBucket",
    "envoy_backoff",
    "panic_hosts",
]

# Envoy's runtime key ``upstream.base_retry_backoff_ms`` defaults to 25 ms
# (source/common/router/retry_state_impl.cc, RetryStateImpl::RetryStateImpl).
DEFAULT_BASE_RETRY_BACKOFF_S = 0.025
# max_ejection_time's default (source/common/upstream/outlier_detection_impl.cc,
# DetectorConfig::DetectorConfig: max(DEFAULT_MAX_EJECTION_TIME_MS, base_ejection_time)).
DEFAULT_MAX_EJECTION_S = 300.0
# The minimum fill interval of the local rate limit filter (local_ratelimit_impl.cc).
MIN_FILL_INTERVAL_S = 0.050

# Envoy's monotonic clock counts nanoseconds; two float instants closer than this are the same.
_EPS_S = 1e-9


def _to_ms(field: str, seconds: float) -> int:
    """A duration in whole milliseconds, as Envoy's protobuf Durations are read.

    Envoy truncates a Duration to milliseconds (``PROTOBUF_GET_MS_*``); a float such as
    0.029 s is 28.999... ms in binary, so we round to the nearest millisecond instead, which
    gives Envoy's value for every duration that is a whole number of milliseconds.
    """
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"{field} must be a positive number of seconds, got {seconds!r}")
    return max(1, round(seconds * 1000.0))


def _check_percent(field: str, value: float) -> float:
    if not isinstance(value, (int, float)) or not 0.0 <= value <= 100.0:
        raise ValueError(f"{field} must be a percentage between 0 and 100, got {value!r}")
    return float(value)


# --------------------------------------------------------------------------------------------
# Retry back-off
# --------------------------------------------------------------------------------------------


class BackOff:
    """Envoy's ``JitteredExponentialBackOffStrategy``: one per request, as the router keeps it.

    Source: source/common/common/backoff_strategy.cc,
    ``JitteredExponentialBackOffStrategy::nextBackOffMs``; the defaults come from
    source/common/router/retry_state_impl.cc, ``RetryStateImpl::RetryStateImpl`` (base
    ``upstream.base_retry_backoff_ms`` = 25 ms, max interval 10 x base unless the route's
    ``retry_back_off.max_interval`` says otherwise; max must be >= base,
    ``BackOffStrategyUtils::validateBackOffStrategyConfig``).

    The strategy keeps ``next_interval`` (starting at the base). Each call returns
    ``random() % next_interval`` milliseconds, then doubles ``next_interval`` while it is
    below ``max_interval / 2`` (integer division) and otherwise sets it to ``max_interval``.
    So with base 25 ms and max 250 ms the intervals of retries 1, 2, 3, ... are 25, 50, 100,
    200, 250, 250, ... ms and the back-off of retry N is uniform over the whole milliseconds
    ``[0, interval_N)``. (Envoy's docs still give ``[0, (2^N - 1) B)``; that was the older
    ``JitteredBackOffStrategy``, replaced in the source.)

    The arithmetic is Envoy's, in integer milliseconds; ``random() % interval`` over a 64-bit
    uniform integer is drawn here as ``floor(uniform() * interval)``, the same distribution.
    """

    def __init__(
        self,
        base_s: float = DEFAULT_BASE_RETRY_BACKOFF_S,
        max_s: float | None = None,
        uniform: Callable[[], float] | None = None,
    ) -> None:
        """Build a strategy at its first retry.

        Args:
            base_s: base interval in seconds (rounded to whole ms, at least 1 ms).
            max_s: max interval in seconds; None means 10 x ``base_s`` (Envoy's default).
            uniform: zero-argument callable returning a float in [0, 1); required to draw.
        """
        self.base_ms = _to_ms("retry back-off base_interval", base_s)
        self.max_ms = self.base_ms * 10 if max_s is None else _to_ms("max_interval", max_s)
        if self.max_ms < self.base_ms:
            raise ValueError(
                f"retry back-off max_interval ({self.max_ms} ms) must be greater than or equal "
                f"to base_interval ({self.base_ms} ms)"
            )
        self._doubling_limit_ms = self.max_ms // 2
        self._uniform = uniform
        self.next_interval_ms = self.base_ms

    def next_ms(self, uniform: Callable[[], float] | None = None) -> int:
        """The next back-off in whole milliseconds (one draw), advancing the interval.

        Args:
            uniform: overrides the constructor's random source for this draw.
        """
        draw = uniform if uniform is not None else self._uniform
        if draw is None:
            raise ValueError("BackOff needs a uniform() random source to draw a back-off")
        interval = self.next_interval_ms
        # backoff_strategy.cc: double unless doubling would pass the max (or overflow).
        if self.next_interval_ms < self._doubling_limit_ms:
            self.next_interval_ms *= 2
        else:
            self.next_interval_ms = self.max_ms
        return _jitter_ms(interval, draw())

    def next_s(self, uniform: Callable[[], float] | None = None) -> float:
        """The next back-off in seconds (see :meth:`next_ms`)."""
        return self.next_ms(uniform) / 1000.0

    def reset(self) -> None:
        """Start again from the base interval (``JitteredExponentialBackOffStrategy::reset``)."""
        self.next_interval_ms = self.base_ms

    def interval_ms(self, retry_number: int) -> int:
        """The interval (exclusive upper bound of the back-off) of retry ``retry_number``.

        Args:
            retry_number: 1 for the first retry.
        """
        if isinstance(retry_number, bool) or not isinstance(retry_number, int) or retry_number < 1:
            raise ValueError(f"retry_number must be an integer >= 1, got {retry_number!r}")
        interval = self.base_ms
        for _ in range(retry_number - 1):
            if interval < self._doubling_limit_ms:
                interval *= 2
            else:
                # Once at the max it stays there: no need to walk the rest.
                return self.max_ms
        return interval


def _jitter_ms(interval_ms: int, u: float) -> int:
    if not 0.0 <= u < 1.0:
        raise ValueError(f"uniform() must return a float in [0, 1), got {u!r}")
    # random() % interval, drawn as floor(u * interval); min() guards u * interval rounding up.
    return min(int(u * interval_ms), interval_ms - 1)


def envoy_backoff(
    retry_number: int, base_s: float, max_s: float | None, uniform: Callable[[], float]
) -> float:
    """The back-off before retry number ``retry_number`` (1 for the first retry), in seconds.

    As Envoy computes it (:class:`BackOff`, after source/common/common/backoff_strategy.cc,
    ``JitteredExponentialBackOffStrategy::nextBackOffMs``): a whole number of milliseconds,
    uniform over ``[0, interval)`` where the interval is ``base``, doubled per retry while
    below ``max / 2``, then ``max``. One ``uniform()`` draw per call, so a router that keeps
    only the retry count draws exactly as Envoy's stateful strategy does.

    Args:
        retry_number: 1 for the first retry.
        base_s: base interval in seconds (Envoy's default 0.025).
        max_s: max interval in seconds; None means 10 x ``base_s``.
        uniform: zero-argument callable returning a float in [0, 1).
    """
    strategy = BackOff(base_s, max_s)
    return _jitter_ms(strategy.interval_ms(retry_number), uniform()) / 1000.0


# --------------------------------------------------------------------------------------------
# Local rate limit
# --------------------------------------------------------------------------------------------


class TokenBucket:
    """The token bucket of Envoy's local rate limit filter (HTTP 429, flag ``RL``).

    Source: source/extensions/filters/common/local_ratelimit/local_ratelimit_impl.cc.

    Timer-based (the default, ``TimerTokenBucket`` / ``LocalRateLimiterImpl::onFillTimer``):
    the bucket starts full with ``max_tokens``; a timer armed at the filter's start fires
    every ``fill_interval`` (at ``start + k x fill_interval``, k = 1, 2, ...) and adds
    ``tokens_per_fill``, capped at ``max_tokens`` (``onFillTimerHelper``); a request takes one
    token or, when there is none, is refused (``TimerTokenBucket::consume`` /
    ``requestAllowedHelper``). The constructor rejects a fill interval under 50 ms ("local
    rate limit token bucket fill timer must be >= 50ms"). A fill due at the very instant of a
    request is applied first.

    Continuous (``timer_based=False``): newer Envoy releases replaced the timer with
    ``AtomicTokenBucket`` (runtime guard
    ``envoy.reloadable_features.no_timer_based_rate_limit_token_bucket``, later the only
    path): tokens accrue continuously at ``tokens_per_fill / fill_interval`` per second up to
    ``max_tokens`` (source/common/common/token_bucket_impl.cc,
    ``AtomicTokenBucketImpl::consume``), starting full, and a request takes one whole token.

    Attributes:
        limited: requests refused (each would be answered 429).
    """

    def __init__(
        self,
        max_tokens: int,
        tokens_per_fill: int,
        fill_interval_s: float,
        start_s: float,
        *,
        timer_based: bool = True,
    ) -> None:
        """Build a full bucket at ``start_s``.

        Args:
            max_tokens: bucket size (>= 1).
            tokens_per_fill: tokens added per fill (>= 1; Envoy's default 1).
            fill_interval_s: seconds between fills (>= 0.05).
            start_s: when the filter started (its fill timer is armed then), in seconds.
            timer_based: True for the fill timer, False for continuous refill (see above).
        """
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise ValueError(f"token_bucket.max_tokens must be an integer >= 1, got {max_tokens!r}")
        if (
            isinstance(tokens_per_fill, bool)
            or not isinstance(tokens_per_fill, int)
            or tokens_per_fill < 1
        ):
            raise ValueError(
                f"token_bucket.tokens_per_fill must be an integer >= 1, got {tokens_per_fill!r}"
            )
        if not math.isfinite(fill_interval_s) or fill_interval_s < MIN_FILL_INTERVAL_S - _EPS_S:
            raise ValueError(
                "token_bucket.fill_interval must be at least 0.05 s (Envoy: 'local rate limit "
                f"token bucket fill timer must be >= 50ms'), got {fill_interval_s!r}"
            )
        if not math.isfinite(start_s):
            raise ValueError(f"start_s must be a finite time in seconds, got {start_s!r}")
        self.max_tokens = max_tokens
        self.tokens_per_fill = tokens_per_fill
        self.fill_interval_s = float(fill_interval_s)
        self.start_s = float(start_s)
        self.timer_based = timer_based
        self.limited = 0
        self._last_s = self.start_s
        # Timer mode: whole tokens and the number of fills applied so far.
        self._tokens = max_tokens
        self._fills = 0
        # Continuous mode (AtomicTokenBucketImpl): the instant at which the bucket would have
        # been empty; tokens now = min(max, (now - t) x rate). Starting full puts t in the past.
        self._rate = tokens_per_fill / self.fill_interval_s
        self._empty_at_s = self.start_s - max_tokens / self._rate

    def _advance(self, now: float) -> None:
        if not math.isfinite(now) or now < self._last_s - _EPS_S:
            raise ValueError(
                f"time went backwards for the token bucket: now={now!r} after {self._last_s!r}"
            )
        self._last_s = max(self._last_s, now)
        if not self.timer_based:
            return
        fills = math.floor((now - self.start_s + _EPS_S) / self.fill_interval_s)
        if fills > self._fills:
            # Each fill is min(max, tokens + per_fill); n of them in a row is the same as one
            # min(max, tokens + n x per_fill), because tokens never exceed max.
            self._tokens = min(
                self.max_tokens, self._tokens + (fills - self._fills) * self.tokens_per_fill
            )
            self._fills = fills

    def _continuous_tokens(self, now: float) -> float:
        return min(float(self.max_tokens), (now - self._empty_at_s) * self._rate)

    def take(self, now: float) -> bool:
        """Take one token at ``now``: True if there was one, False if rate limited (429).

        Args:
            now: the request's arrival time in seconds (never before the previous call).
        """
        self._advance(now)
        if self.timer_based:
            if self._tokens > 0:
                self._tokens -= 1
                return True
        else:
            total = self._continuous_tokens(now)
            # The 1e-9 absorbs float error at the instant a token completes.
            if total >= 1.0 - 1e-9:
                self._empty_at_s = now - max(0.0, total - 1.0) / self._rate
                return True
        self.limited += 1
        return False

    def tokens(self, now: float) -> int:
        """Whole tokens in the bucket at ``now`` (fills up to ``now`` applied).

        Args:
            now: time in seconds (never before the previous call).
        """
        self._advance(now)
        if self.timer_based:
            return self._tokens
        return math.floor(self._continuous_tokens(now) + 1e-9)


# --------------------------------------------------------------------------------------------
# Outlier detection
# --------------------------------------------------------------------------------------------


class _HostMonitor:
    """Per-host state (``DetectorHostMonitorImpl``)."""

    __slots__ = (
        "consecutive_5xx",
        "consecutive_gateway",
        "ejected",
        "last_ejection_s",
        "last_unejection_s",
        "eject_time_backoff",
        "num_ejections",
    )

    def __init__(self) -> None:
        self.consecutive_5xx = 0
        self.consecutive_gateway = 0
        self.ejected = False
        self.last_ejection_s = 0.0
        self.last_unejection_s: float | None = None
        self.eject_time_backoff = 0
        self.num_ejections = 0


class OutlierDetector:
    """Envoy's outlier detector for one upstream cluster: consecutive 5xx / gateway failures.

    Source: source/common/upstream/outlier_detection_impl.cc.

    Counting (``DetectorHostMonitorImpl::putHttpResponseCode``): a 5xx (500-599) increments
    the consecutive-5xx counter; a gateway error (502, 503, 504) also increments the
    consecutive-gateway counter, while any other 5xx resets that one; any non-5xx response
    resets both. A detector fires when its counter *equals* its threshold. Status 0 stands for
    a connect failure or reset: with local and external errors not split (Envoy's default),
    ``putResultNoLocalExternalSplit`` / ``resultToHttpCode`` report ``LocalOriginConnectFailed``
    as 503 (a timeout, ``LocalOriginTimeout``, is 504: pass 504 for those), so status 0 counts
    as a 503.

    Ejection (``onConsecutiveErrorWorker``, ``ejectHost``): at once when the count is reached
    (Envoy posts it to the main thread; here it is immediate). A host already ejected is left
    alone and its counter is not reset. Otherwise the cap is checked: the ejection is allowed
    when ``100 x (ejections_active + 1) / hosts <= max_ejection_percent``, or, with
    ``always_eject_one_host``, when no host is ejected yet. So with 3 hosts and the default
    10 %, current Envoy ejects nothing (33 % > 10 %) and counts ``ejections_overflow``; before
    ``always_eject_one_host`` existed Envoy's test was ``100 x ejections_active / hosts <
    max_ejection_percent``, which always let one host go. An allowed ejection counts
    ``ejections_enforced_total`` (enforcement is taken as always on: ``enforcing_consecutive_5xx``
    defaults to 100 %, and Istio sets ``enforcing_consecutive_gateway_failure`` to 100 % with
    ``consecutiveGatewayErrors``; a detector Istio leaves unset is passed here as None), and
    ``ejections_total`` as Envoy's deprecated counter does: only for consecutive-5xx ejections.
    The counter that fired is reset whether or not the cap allowed the ejection. On ejection the
    host's ``eject_time_backoff`` is incremented while ``backoff x base < max + base``.

    Return (``onIntervalTimer``, ``checkHostForUneject``, ``unejectHost``): the interval timer
    fires at ``start + k x interval``; at each tick an ejected host returns when
    ``min(base_ejection x eject_time_backoff, max_ejection) <= tick - ejected_at`` (jitter:
    ``max_ejection_time_jitter`` defaults to 0 and is not modelled); its counters are reset.
    Then every host not ejected that returned at least one interval before the tick has its
    ``eject_time_backoff`` decremented (not below 0): a host that stays healthy is forgiven
    one ejection per interval, so "base x number of ejections" holds only for ejections in
    quick succession.

    Host changes (``initialize``'s member update callback): hosts added get a fresh monitor,
    hosts removed take their ejection with them (``ejections_active`` drops).

    Ticks are processed lazily: :meth:`update` (and :meth:`record`, which calls it) applies
    every tick up to ``now`` in order (and returns the hosts that came back), so the state is
    exact whenever it is called. A tick at the very instant of a response is applied first.
    Istio, for reference: ``consecutive5xxErrors`` / ``consecutiveGatewayErrors`` set the
    threshold with enforcement 100 % (0 disables), the deprecated ``consecutiveErrors`` set the
    gateway detector only, and ``minHealthPercent`` becomes the panic threshold (default 0).

    Attributes:
        ejections_active: hosts ejected now (gauge ``outlier_detection.ejections_active``).
        ejections_total: Envoy's deprecated ``ejections_total`` (consecutive-5xx ejections
            the cap allowed).
        ejections_enforced_total: every ejection (``ejections_enforced_total``).
        ejections_overflow: ejections the cap refused (``ejections_overflow``).
        ejections_detected_consecutive_5xx / ejections_detected_consecutive_gateway_failure:
            detections, allowed or not (``ejections_detected_*``).
        version: bumped whenever the healthy set changes.
        next_change_s: the next tick that could return a host; inf when none is ejected.
    """

    def __init__(
        self,
        hosts: Sequence[Hashable],
        *,
        consecutive_5xx: int | None = 5,
        consecutive_gateway: int | None = None,
        interval_s: float = 10.0,
        base_ejection_s: float = 30.0,
        max_ejection_s: float | None = DEFAULT_MAX_EJECTION_S,
        max_ejection_percent: float = 10.0,
        start_s: float = 0.0,
        always_eject_one_host: bool = False,
    ) -> None:
        """Build a detector with every host healthy and the interval timer armed at start.

        Args:
            hosts: the cluster's endpoints (hashable, distinct), in balancing order.
            consecutive_5xx: consecutive 5xx that eject (>= 1); None disables the detector.
            consecutive_gateway: consecutive 502/503/504 that eject (>= 1); None disables it.
            interval_s: seconds between ejection sweeps (> 0).
            base_ejection_s: base ejection time in seconds (> 0).
            max_ejection_s: cap on the ejection time in seconds (>= base); None means Envoy's
                default, max(300 s, base).
            max_ejection_percent: cap on the share of hosts ejected at once, 0 to 100.
            start_s: when the detector started, in seconds.
            always_eject_one_host: Envoy's ``always_eject_one_host`` (default false).
        """
        for name, threshold in (
            ("consecutive_5xx", consecutive_5xx),
            ("consecutive_gateway", consecutive_gateway),
        ):
            if threshold is not None and (
                isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 1
            ):
                raise ValueError(
                    f"outlier detection {name} must be an integer >= 1 (None disables it), "
                    f"got {threshold!r}"
                )
        for name, value in (("interval", interval_s), ("base_ejection_time", base_ejection_s)):
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ValueError(
                    f"outlier detection {name} must be a positive number of seconds, got {value!r}"
                )
        if max_ejection_s is None:
            max_ejection_s = max(DEFAULT_MAX_EJECTION_S, base_ejection_s)
        if not math.isfinite(max_ejection_s) or max_ejection_s < base_ejection_s:
            # DetectorImpl::create refuses this configuration.
            raise ValueError(
                f"outlier detection max_ejection_time ({max_ejection_s!r} s) cannot be smaller "
                f"than base_ejection_time ({base_ejection_s!r} s)"
            )
        if not math.isfinite(start_s):
            raise ValueError(f"start_s must be a finite time in seconds, got {start_s!r}")
        self.consecutive_5xx = consecutive_5xx
        self.consecutive_gateway = consecutive_gateway
        self.interval_s = float(interval_s)
        self.base_ejection_s = float(base_ejection_s)
        self.max_ejection_s = float(max_ejection_s)
        self.max_ejection_percent = _check_percent(
            "outlier detection max_ejection_percent", max_ejection_percent
        )
        self.start_s = float(start_s)
        self.always_eject_one_host = always_eject_one_host
        self.ejections_active = 0
        self.ejections_total = 0
        self.ejections_enforced_total = 0
        self.ejections_overflow = 0
        self.ejections_detected_consecutive_5xx = 0
        self.ejections_detected_consecutive_gateway_failure = 0
        self.version = 0
        self._hosts: list[Hashable] = []
        self._monitors: dict[Hashable, _HostMonitor] = {}
        self._tick = 1  # index k of the next tick, at start + k x interval
        self._now_s = self.start_s
        self.next_change_s = math.inf
        self._install_hosts(hosts)

    # -- hosts ---------------------------------------------------------------------------

    def _install_hosts(self, hosts: Iterable[Hashable]) -> None:
        new_hosts = list(hosts)
        if len(set(new_hosts)) != len(new_hosts):
            raise ValueError("outlier detection hosts must be distinct")
        monitors = {host: self._monitors.get(host) or _HostMonitor() for host in new_hosts}
        for host, monitor in self._monitors.items():
            if host not in monitors and monitor.ejected:
                self.ejections_active -= 1
        self._hosts = new_hosts
        self._monitors = monitors
        self._refresh_next_change()

    def set_hosts(self, hosts: Sequence[Hashable]) -> None:
        """Take a new endpoint list; hosts still there keep their state, new ones start fresh.

        Args:
            hosts: the new endpoints (hashable, distinct), in balancing order.
        """
        before = self.healthy()
        self._install_hosts(hosts)
        if self.healthy() != before:
            self.version += 1

    @property
    def hosts(self) -> list[Hashable]:
        """Every host, ejected or not, in the order given."""
        return list(self._hosts)

    def healthy(self) -> list[Any]:
        """Hosts not ejected, in the order given (as of the last processed instant)."""
        return [h for h in self._hosts if not self._monitors[h].ejected]

    def is_ejected(self, host: Hashable) -> bool:
        """Whether ``host`` is ejected (False for a host not in the cluster)."""
        monitor = self._monitors.get(host)
        return monitor is not None and monitor.ejected

    def num_ejections(self, host: Hashable) -> int:
        """How many times ``host`` has been ejected."""
        return self._monitors[host].num_ejections

    def eject_time_backoff(self, host: Hashable) -> int:
        """The multiplier of ``host``'s next ejection time (Envoy's ``ejectTimeBackoff``)."""
        return self._monitors[host].eject_time_backoff

    # -- time ----------------------------------------------------------------------------

    def _tick_s(self, k: int) -> float:
        # Computed from the index, not accumulated, so ticks do not drift.
        return self.start_s + k * self.interval_s

    def _refresh_next_change(self) -> None:
        self.next_change_s = self._tick_s(self._tick) if self.ejections_active > 0 else math.inf

    def update(self, now: float) -> list[Any]:
        """Process every interval tick up to and including ``now``.

        Args:
            now: time in seconds (never before the previous call).

        Returns:
            The hosts that returned at those ticks, in tick order then host order.
        """
        if not math.isfinite(now) or now < self._now_s - _EPS_S:
            raise ValueError(
                f"time went backwards for the outlier detector: now={now!r} after {self._now_s!r}"
            )
        self._now_s = max(self._now_s, now)
        last = math.floor((now - self.start_s + _EPS_S) / self.interval_s)
        returned: list[Any] = []
        while self._tick <= last:
            if self.ejections_active == 0 and not any(
                m.eject_time_backoff for m in self._monitors.values()
            ):
                # Nothing can change at the remaining ticks: skip them.
                self._tick = last + 1
                break
            returned.extend(self._on_interval(self._tick_s(self._tick)))
            self._tick += 1
        self._refresh_next_change()
        return returned

    def _on_interval(self, tick: float) -> list[Any]:
        """One ``DetectorImpl::onIntervalTimer`` at ``tick``; the hosts that returned."""
        returned: list[Any] = []
        for host, monitor in self._monitors.items():
            if not monitor.ejected:
                continue
            eject_for = min(self.base_ejection_s * monitor.eject_time_backoff, self.max_ejection_s)
            if eject_for <= tick - monitor.last_ejection_s + _EPS_S:
                self._uneject(monitor, tick)
                returned.append(host)
        for monitor in self._monitors.values():
            if (
                not monitor.ejected
                and monitor.last_unejection_s is not None
                and tick - monitor.last_unejection_s >= self.interval_s - _EPS_S
                and monitor.eject_time_backoff > 0
            ):
                monitor.eject_time_backoff -= 1
        if returned:
            self.version += 1
        return returned

    def _uneject(self, monitor: _HostMonitor, now: float) -> None:
        """``DetectorImpl::unejectHost``."""
        self.ejections_active -= 1
        monitor.ejected = False
        monitor.consecutive_5xx = 0
        monitor.consecutive_gateway = 0
        monitor.last_unejection_s = now

    # -- responses -----------------------------------------------------------------------

    def record(self, host: Hashable, status: int, now: float) -> bool:
        """Count one response from ``host`` at ``now``; True if it ejected the host.

        Args:
            host: the upstream host that answered (ignored if no longer in the cluster, as
                Envoy ignores a late result for a removed host).
            status: HTTP status (100-599), or 0 for a connect failure / reset (counts as 503).
            now: time in seconds (never before the previous call).
        """
        if isinstance(status, bool) or not isinstance(status, int):
            raise ValueError(f"status must be an int, got {status!r}")
        if status != 0 and not 100 <= status <= 599:
            raise ValueError(f"status must be 0 (connect failure) or 100-599, got {status}")
        self.update(now)
        monitor = self._monitors.get(host)
        if monitor is None:
            return False
        code = 503 if status == 0 else status
        ejected = False
        if 500 <= code <= 599:
            if code in (502, 503, 504):
                monitor.consecutive_gateway += 1
                if monitor.consecutive_gateway == self.consecutive_gateway:
                    ejected |= self._on_consecutive(monitor, now, gateway=True)
            else:
                monitor.consecutive_gateway = 0
            monitor.consecutive_5xx += 1
            if monitor.consecutive_5xx == self.consecutive_5xx:
                ejected |= self._on_consecutive(monitor, now, gateway=False)
        else:
            monitor.consecutive_5xx = 0
            monitor.consecutive_gateway = 0
        return ejected

    def _on_consecutive(self, monitor: _HostMonitor, now: float, *, gateway: bool) -> bool:
        """``DetectorImpl::onConsecutiveErrorWorker`` then ``ejectHost``."""
        if monitor.ejected:
            return False
        if gateway:
            self.ejections_detected_consecutive_gateway_failure += 1
        else:
            self.ejections_detected_consecutive_5xx += 1
        ejected_percent = 100.0 * (self.ejections_active + 1) / len(self._monitors)
        should_eject = ejected_percent <= self.max_ejection_percent
        if self.always_eject_one_host:
            should_eject = should_eject or self.ejections_active == 0
        if should_eject:
            if not gateway:
                self.ejections_total += 1  # Envoy's deprecated counter: 5xx (and SR) only
            self.ejections_active += 1
            self.ejections_enforced_total += 1
            monitor.ejected = True
            monitor.num_ejections += 1
            monitor.last_ejection_s = now
            if (
                monitor.eject_time_backoff * self.base_ejection_s
                < self.max_ejection_s + self.base_ejection_s
            ):
                monitor.eject_time_backoff += 1
            self.version += 1
            self._refresh_next_change()
        else:
            self.ejections_overflow += 1
        if gateway:
            monitor.consecutive_gateway = 0
        else:
            monitor.consecutive_5xx = 0
        return should_eject


# --------------------------------------------------------------------------------------------
# Panic threshold
# --------------------------------------------------------------------------------------------


def panic_hosts(
    healthy: Sequence[Any], all_hosts: Sequence[Any], panic_threshold_percent: float
) -> Sequence[Any]:
    """The hosts to balance over: the healthy ones, or all of them in panic.

    Source: source/common/upstream/load_balancer_impl.cc (now
    source/extensions/load_balancing_policies/common/load_balancer_impl.cc),
    ``LoadBalancerBase::isHostSetInPanic``: with ``healthy_percent = 100 x healthy / hosts``
    (0 when there are no hosts), the host set is in panic when ``healthy_percent <
    threshold``, and then the balancer uses every host. The threshold (Envoy's default 50 %)
    is a rounded integer capped at 100 (``PROTOBUF_PERCENT_TO_ROUNDED_INTEGER_OR_DEFAULT``);
    0 never panics (nothing is below 0 %), so with every host ejected there is no host to pick
    (503 ``UH``). Degraded and excluded hosts are not modelled.

    Args:
        healthy: the healthy hosts.
        all_hosts: every host of the set.
        panic_threshold_percent: 0 to 100.
    """
    threshold = _check_percent("healthy_panic_threshold", panic_threshold_percent)
    threshold = min(100, math.floor(threshold + 0.5))
    healthy_percent = 100.0 * len(healthy) / len(all_hosts) if all_hosts else 0.0
    return all_hosts if healthy_percent < threshold else healthy


# --------------------------------------------------------------------------------------------
# Retry circuit breaker / budget
# --------------------------------------------------------------------------------------------


class RetryBudget:
    """The cluster circuit breaker on concurrent retries: ``max_retries`` or a retry budget.

    Source: source/common/upstream/resource_manager_impl.h, ``RetryBudgetImpl``. Without a
    budget the limit is ``max_retries`` (plain Envoy's default 3; Istio's ``http.maxRetries``
    default is 2^32 - 1: pass None for no limit). With a budget (``budget_percent`` set) the
    limit is ``max(uint64(budget_percent / 100 x (active + pending requests)),
    min_retry_concurrency)`` (defaults 20 % and 3) and ``max_retries`` is ignored. A retry may
    start when the retries in flight are below the limit (``canCreate``: ``count() < max()``);
    otherwise the router counts ``upstream_rq_retry_overflow`` and does not retry
    (source/common/router/retry_state_impl.cc, ``RetryStateImpl::shouldRetry``).

    Attributes:
        active: retries in flight.
        overflow: retries refused (``upstream_rq_retry_overflow``).
    """

    def __init__(
        self,
        max_retries: int | None,
        budget_percent: float | None = None,
        min_retry_concurrency: int = 3,
    ) -> None:
        """Build the limit.

        Args:
            max_retries: concurrent retries allowed without a budget (>= 0); None = no limit.
            budget_percent: the budget's share of active + pending requests, 0 to 100; None
                for no budget.
            min_retry_concurrency: the budget's floor (>= 0).
        """
        if max_retries is not None and (
            isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0
        ):
            raise ValueError(
                f"circuit_breakers max_retries must be an integer >= 0 (None for no limit), "
                f"got {max_retries!r}"
            )
        if budget_percent is not None:
            _check_percent("retry_budget.budget_percent", budget_percent)
        if (
            isinstance(min_retry_concurrency, bool)
            or not isinstance(min_retry_concurrency, int)
            or min_retry_concurrency < 0
        ):
            raise ValueError(
                "retry_budget.min_retry_concurrency must be an integer >= 0, "
                f"got {min_retry_concurrency!r}"
            )
        self.max_retries = max_retries
        self.budget_percent = None if budget_percent is None else float(budget_percent)
        self.min_retry_concurrency = min_retry_concurrency
        self.active = 0
        self.overflow = 0

    def limit(self, active_requests: int, pending_requests: int) -> float:
        """The most retries allowed in flight now (``RetryBudgetImpl::max``); inf if none.

        Args:
            active_requests: requests in flight to the cluster (retries included).
            pending_requests: requests waiting for a connection.
        """
        if active_requests < 0 or pending_requests < 0:
            raise ValueError(
                "active_requests and pending_requests must be >= 0, "
                f"got {active_requests!r} and {pending_requests!r}"
            )
        if self.budget_percent is None:
            return math.inf if self.max_retries is None else self.max_retries
        current = active_requests + pending_requests
        # Same expression and truncation as the C++ (double, then uint64).
        return max(int(self.budget_percent / 100.0 * current), self.min_retry_concurrency)

    def allow(self, active_requests: int, pending_requests: int) -> bool:
        """May one more retry start now? A refusal counts one overflow.

        Args:
            active_requests: requests in flight to the cluster (retries included).
            pending_requests: requests waiting for a connection.
        """
        if self.active < self.limit(active_requests, pending_requests):
            return True
        self.overflow += 1
        return False

    def started(self) -> None:
        """A retry begins (``inc``)."""
        self.active += 1

    def finished(self) -> None:
        """A retry ends (``dec``)."""
        if self.active == 0:
            raise ValueError("RetryBudget.finished() called with no retry in flight")
        self.active -= 1
