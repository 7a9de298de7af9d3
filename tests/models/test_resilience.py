"""Exact traces of Envoy's resilience mechanisms (models/resilience.py).

Every expected value is derived by hand in a comment next to it, from the rule in the module's
docstrings (which cite Envoy's source).
"""

from __future__ import annotations

import math

import pytest

from models.resilience import (
    BackOff,
    OutlierDetector,
    RetryBudget,
    TokenBucket,
    envoy_backoff,
    panic_hosts,
)

ALMOST_ONE = 0.9999999999


def const(u: float):
    return lambda: u


# ------------------------------------------------------------------------------------------
# Back-off
# ------------------------------------------------------------------------------------------


def test_backoff_sequence_base_25ms_upper_bounds() -> None:
    # base 25 ms, max 10 x 25 = 250 ms, doubling limit 250 // 2 = 125 ms.
    # intervals: 25; 25 < 125 -> 50; 50 < 125 -> 100; 100 < 125 -> 200; 200 >= 125 -> 250; 250.
    # With u ~ 1 the back-off is floor(u x interval) = interval - 1 ms.
    got = [envoy_backoff(n, 0.025, None, const(ALMOST_ONE)) for n in range(1, 7)]
    assert got == [0.024, 0.049, 0.099, 0.199, 0.249, 0.249]


def test_backoff_sequence_base_25ms_half() -> None:
    # u = 0.5: floor(0.5 x interval) for intervals 25, 50, 100, 200, 250, 250 ms.
    got = [envoy_backoff(n, 0.025, None, const(0.5)) for n in range(1, 7)]
    assert got == [0.012, 0.025, 0.050, 0.100, 0.125, 0.125]


def test_backoff_zero_draw_and_stateful_strategy_agree() -> None:
    assert envoy_backoff(3, 0.025, None, const(0.0)) == 0.0
    strategy = BackOff(0.025, None, const(ALMOST_ONE))
    assert [strategy.next_ms() for _ in range(6)] == [24, 49, 99, 199, 249, 249]
    strategy.reset()
    # After reset the first retry's interval (25 ms) again.
    assert strategy.next_ms(const(0.5)) == 12


def test_backoff_doubling_stops_below_max_over_two() -> None:
    # base 10 ms, max 25 ms: doubling limit 25 // 2 = 12. 10 < 12 -> 20; 20 >= 12 -> 25.
    strategy = BackOff(0.010, 0.025)
    assert [strategy.interval_ms(n) for n in range(1, 5)] == [10, 20, 25, 25]
    assert envoy_backoff(2, 0.010, 0.025, const(ALMOST_ONE)) == 0.019


def test_backoff_draws_once_per_call() -> None:
    draws: list[int] = []

    def uniform() -> float:
        draws.append(1)
        return 0.5

    envoy_backoff(6, 0.025, None, uniform)
    assert len(draws) == 1


def test_backoff_bad_inputs() -> None:
    with pytest.raises(ValueError, match="base_interval"):
        envoy_backoff(1, 0.0, None, const(0.5))
    with pytest.raises(ValueError, match="max_interval .* base_interval"):
        envoy_backoff(1, 0.025, 0.010, const(0.5))
    with pytest.raises(ValueError, match="retry_number"):
        envoy_backoff(0, 0.025, None, const(0.5))
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        envoy_backoff(1, 0.025, None, const(1.0))


# ------------------------------------------------------------------------------------------
# Token bucket
# ------------------------------------------------------------------------------------------


def test_token_bucket_timer_refills_trace() -> None:
    # max 3, 1 token per 100 ms, timer armed at 0: fills at 0.1, 0.2, 0.3, ...
    bucket = TokenBucket(3, 1, 0.1, 0.0)
    assert bucket.tokens(0.0) == 3  # starts full
    trace = [(t, bucket.take(t)) for t in (0.0, 0.01, 0.02, 0.03)]
    # 3 -> 2 -> 1 -> 0, then refused.
    assert trace == [(0.0, True), (0.01, True), (0.02, True), (0.03, False)]
    assert bucket.limited == 1
    assert bucket.tokens(0.099) == 0  # the first fill is not due yet
    # A request exactly at the fill instant 0.1: the fill (0 -> 1) is applied first.
    assert bucket.take(0.1) is True
    assert bucket.tokens(0.1) == 0
    assert bucket.take(0.15) is False  # next fill at 0.2
    assert bucket.limited == 2
    # Fills at 0.2, 0.3, 0.4 give 1, 2, 3; the one at 0.5 is capped at 3.
    assert [bucket.tokens(t) for t in (0.2, 0.3, 0.4, 0.5)] == [1, 2, 3, 3]
    assert bucket.take(0.55) is True  # 3 -> 2
    assert bucket.tokens(0.55) == 2
    assert bucket.tokens(0.6) == 3  # fill at 0.6


def test_token_bucket_fills_from_start_and_tokens_per_fill() -> None:
    # Started at 10.0 with 2 tokens per 0.25 s: fills at 10.25, 10.5, ...
    bucket = TokenBucket(5, 2, 0.25, 10.0)
    assert all(bucket.take(10.0) for _ in range(5))
    assert bucket.take(10.2) is False
    assert bucket.tokens(10.25) == 2
    # Lazily catching up 7 fills at once (10.5 ... 12.0): min(5, 2 + 7 x 2) = 5.
    assert bucket.tokens(12.0) == 5


def test_token_bucket_continuous_mode() -> None:
    # AtomicTokenBucket: 10 tokens/s continuous, max 3, full at 0.
    bucket = TokenBucket(3, 1, 0.1, 0.0, timer_based=False)
    assert [bucket.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.take(0.05) is False  # 0.5 token
    assert bucket.take(0.1) is True  # 1.0 token accrued since 0.0
    assert bucket.tokens(0.35) == 2  # 2.5 tokens accrued since 0.1
    assert bucket.tokens(10.0) == 3  # capped
    assert bucket.limited == 2


def test_token_bucket_bad_inputs() -> None:
    with pytest.raises(ValueError, match="max_tokens"):
        TokenBucket(0, 1, 0.1, 0.0)
    with pytest.raises(ValueError, match="tokens_per_fill"):
        TokenBucket(3, 0, 0.1, 0.0)
    with pytest.raises(ValueError, match="fill_interval .*50ms"):
        TokenBucket(3, 1, 0.01, 0.0)
    with pytest.raises(ValueError, match="fill_interval"):
        TokenBucket(3, 1, -1.0, 0.0)
    bucket = TokenBucket(3, 1, 0.1, 0.0)
    bucket.take(1.0)
    with pytest.raises(ValueError, match="backwards"):
        bucket.take(0.5)


# ------------------------------------------------------------------------------------------
# Outlier detection
# ------------------------------------------------------------------------------------------


def _fail(det: OutlierDetector, host: str, times: list[float], status: int = 500) -> list[bool]:
    return [det.record(host, status, t) for t in times]


def test_outlier_ejection_return_and_growing_ejection_time() -> None:
    # interval 10 s, base 30 s; 2 hosts, max 50 %: 100 x (0 + 1) / 2 = 50 <= 50, allowed.
    det = OutlierDetector(["a", "b"], max_ejection_percent=50.0)
    # Four 5xx, then a 200 resets the count: no ejection.
    assert _fail(det, "a", [1.0, 1.1, 1.2, 1.3]) == [False] * 4
    assert det.record("a", 200, 1.4) is False
    # Five consecutive 5xx: the fifth ejects at once (2.4).
    assert _fail(det, "a", [2.0, 2.1, 2.2, 2.3, 2.4]) == [False] * 4 + [True]
    assert det.is_ejected("a") and det.healthy() == ["b"]
    assert (det.ejections_active, det.ejections_total, det.ejections_enforced_total) == (1, 1, 1)
    assert det.version == 1
    assert det.next_change_s == 10.0  # the next tick
    # Ejected for 30 x 1 = 30 s from 2.4, due 32.4: ticks 10, 20, 30 keep it out,
    # the first tick at or after 32.4 is 40.
    assert det.update(30.0) == []
    assert det.is_ejected("a") and det.next_change_s == 40.0
    det.update(39.99)
    assert det.is_ejected("a")
    assert det.update(40.0) == ["a"]
    assert not det.is_ejected("a") and det.healthy() == ["a", "b"]
    assert det.ejections_active == 0 and det.version == 2 and math.isinf(det.next_change_s)
    assert det.eject_time_backoff("a") == 1
    # Ejected again before the tick at 50 (which would forgive one ejection): backoff 1 -> 2,
    # so 30 x 2 = 60 s from 45, due 105: ticks 50 ... 100 keep it out, it returns at 110.
    assert _fail(det, "a", [41.0, 42.0, 43.0, 44.0, 45.0])[-1] is True
    assert det.eject_time_backoff("a") == 2
    det.update(100.0)
    assert det.is_ejected("a")
    det.update(110.0)
    assert not det.is_ejected("a")
    # Healthy through ticks 120 (120 - 110 >= 10: 2 -> 1) and 130 (1 -> 0).
    det.update(120.0)
    assert det.eject_time_backoff("a") == 1
    det.update(130.0)
    assert det.eject_time_backoff("a") == 0
    # A third ejection at 135 is back to 30 x 1 = 30 s: due 165, returns at tick 170.
    assert _fail(det, "a", [131.0, 132.0, 133.0, 134.0, 135.0])[-1] is True
    det.update(169.0)
    assert det.is_ejected("a")
    det.update(170.0)
    assert not det.is_ejected("a")
    assert det.num_ejections("a") == 3
    assert (det.ejections_total, det.ejections_enforced_total, det.ejections_overflow) == (3, 3, 0)
    assert det.version == 6  # three ejections, three returns


def test_outlier_max_ejection_time_caps_duration() -> None:
    # base 30 s, max 50 s. First ejection at 2.4: min(30 x 1, 50) = 30, back at tick 40.
    det = OutlierDetector(["a", "b"], max_ejection_percent=50.0, max_ejection_s=50.0)
    _fail(det, "a", [2.0, 2.1, 2.2, 2.3, 2.4])
    det.update(40.0)
    assert not det.is_ejected("a")
    # Second at 45: backoff 1 x 30 < 50 + 30 -> 2; min(30 x 2, 50) = 50, due 95: back at 100
    # (uncapped it would be 110).
    _fail(det, "a", [41.0, 42.0, 43.0, 44.0, 45.0])
    det.update(99.0)
    assert det.is_ejected("a")
    det.update(100.0)
    assert not det.is_ejected("a")
    # Third at 101: backoff 2 x 30 = 60 < 80 -> 3; fourth would need 90 < 80: stays 3.
    _fail(det, "a", [101.0, 101.1, 101.2, 101.3, 101.4])
    assert det.eject_time_backoff("a") == 3
    # min(90, 50) = 50 s from 101.4, due 151.4: back at tick 160.
    det.update(150.0)
    assert det.is_ejected("a")
    det.update(160.0)
    assert not det.is_ejected("a")


def test_outlier_max_ejection_percent_three_hosts_ten_percent() -> None:
    # Current Envoy: eject only if 100 x (active + 1) / hosts <= max. 100 x 1 / 3 = 33.3 > 10:
    # no host can ever be ejected; each detection is an overflow and resets the counter.
    det = OutlierDetector(["a", "b", "c"])
    assert _fail(det, "a", [1.0, 1.1, 1.2, 1.3, 1.4]) == [False] * 5
    assert (det.ejections_active, det.ejections_overflow, det.ejections_enforced_total) == (0, 1, 0)
    assert det.ejections_detected_consecutive_5xx == 1
    assert det.healthy() == ["a", "b", "c"] and det.version == 0
    # The counter restarted: four more are not a detection, the fifth is.
    _fail(det, "a", [2.0, 2.1, 2.2, 2.3])
    assert det.ejections_overflow == 1
    det.record("a", 500, 2.4)
    assert det.ejections_overflow == 2


def test_outlier_always_eject_one_host() -> None:
    # always_eject_one_host: the first ejection is allowed although 33.3 % > 10 %; the second
    # (100 x 2 / 3 = 66.7 % > 10 %, one already ejected) overflows.
    det = OutlierDetector(["a", "b", "c"], always_eject_one_host=True)
    assert _fail(det, "a", [1.0, 1.1, 1.2, 1.3, 1.4])[-1] is True
    assert _fail(det, "b", [2.0, 2.1, 2.2, 2.3, 2.4])[-1] is False
    assert (det.ejections_active, det.ejections_overflow) == (1, 1)
    assert det.healthy() == ["b", "c"]


def test_outlier_ten_hosts_ten_percent_ejects_one() -> None:
    # 100 x 1 / 10 = 10 <= 10: allowed; 100 x 2 / 10 = 20 > 10: overflow.
    hosts = [f"h{i}" for i in range(10)]
    det = OutlierDetector(hosts)
    assert _fail(det, "h0", [1.0] * 5)[-1] is True
    assert _fail(det, "h1", [1.0] * 5)[-1] is False
    assert (det.ejections_active, det.ejections_overflow) == (1, 1)


def test_outlier_gateway_failures_and_connect_failures() -> None:
    # Only the gateway detector (3); 502/503/504 and status 0 (connect failure = 503) count,
    # another 5xx resets the gateway counter, a 4xx resets both.
    det = OutlierDetector(["a", "b"], consecutive_5xx=None, consecutive_gateway=3,
                          max_ejection_percent=50.0)  # fmt: skip
    assert det.record("a", 503, 1.0) is False  # gw 1
    assert det.record("a", 500, 1.1) is False  # gw reset to 0
    assert det.record("a", 502, 1.2) is False  # gw 1
    assert det.record("a", 404, 1.3) is False  # gw reset to 0
    assert det.record("a", 504, 1.4) is False  # gw 1
    assert det.record("a", 0, 1.5) is False  # gw 2
    assert det.record("a", 0, 1.6) is True  # gw 3: ejected
    # Envoy's deprecated ejections_total counts consecutive-5xx ejections only.
    assert (det.ejections_total, det.ejections_enforced_total) == (0, 1)
    assert det.ejections_detected_consecutive_gateway_failure == 1
    # Responses from the ejected host do not eject it again.
    assert _fail(det, "a", [2.0, 2.1, 2.2]) == [False] * 3
    assert det.ejections_enforced_total == 1


def test_outlier_5xx_detector_counts_gateway_errors_too() -> None:
    det = OutlierDetector(["a", "b"], max_ejection_percent=50.0)
    # 500, 502, 503, 504, 0 are five 5xx.
    results = [det.record("a", s, 1.0 + i / 10) for i, s in enumerate([500, 502, 503, 504, 0])]
    assert results == [False, False, False, False, True]


def test_outlier_set_hosts_keeps_state() -> None:
    det = OutlierDetector(["a", "b", "c"], max_ejection_percent=100.0)
    _fail(det, "a", [1.0] * 5)
    _fail(det, "b", [1.0] * 3)
    version = det.version
    # b goes, d comes: a stays ejected, b's state is dropped.
    det.set_hosts(["a", "c", "d"])
    assert det.is_ejected("a") and det.healthy() == ["c", "d"]
    assert det.ejections_active == 1 and det.version == version + 1
    det.set_hosts(["a", "b", "c", "d"])
    # b came back fresh: two more 5xx do not eject it (its earlier 3 were forgotten).
    assert _fail(det, "b", [2.0, 2.0]) == [False, False]
    # a removed while ejected: the gauge drops, nothing left to return.
    det.set_hosts(["b", "c", "d"])
    assert det.ejections_active == 0 and math.isinf(det.next_change_s)
    assert det.record("a", 500, 3.0) is False  # a late answer from a removed host is ignored


def test_outlier_default_max_ejection_time_and_start() -> None:
    # max_ejection_s None -> max(300, base). base 400: one ejection lasts 400 s.
    det = OutlierDetector(["a"], base_ejection_s=400.0, max_ejection_s=None,
                          max_ejection_percent=100.0, start_s=5.0)  # fmt: skip
    assert det.max_ejection_s == 400.0
    _fail(det, "a", [6.0] * 5)  # ejected at 6.0, due 406; ticks at 15, 25, ..., 405, 415
    assert det.next_change_s == 15.0
    det.update(405.0)
    assert det.is_ejected("a")
    det.update(415.0)
    assert not det.is_ejected("a")


def test_outlier_bad_inputs() -> None:
    with pytest.raises(ValueError, match="interval"):
        OutlierDetector(["a"], interval_s=-1.0)
    with pytest.raises(ValueError, match="max_ejection_percent"):
        OutlierDetector(["a"], max_ejection_percent=150.0)
    with pytest.raises(ValueError, match="max_ejection_time .* base_ejection_time"):
        OutlierDetector(["a"], base_ejection_s=30.0, max_ejection_s=10.0)
    with pytest.raises(ValueError, match="consecutive_5xx"):
        OutlierDetector(["a"], consecutive_5xx=0)
    with pytest.raises(ValueError, match="distinct"):
        OutlierDetector(["a", "a"])
    det = OutlierDetector(["a"])
    with pytest.raises(ValueError, match="status"):
        det.record("a", 700, 1.0)
    det.update(5.0)
    with pytest.raises(ValueError, match="backwards"):
        det.update(4.0)


# ------------------------------------------------------------------------------------------
# Panic threshold
# ------------------------------------------------------------------------------------------


def test_panic_threshold() -> None:
    everyone = ["a", "b", "c", "d"]
    # 1 of 4 healthy = 25 % < 50 %: panic, balance over all.
    assert panic_hosts(["a"], everyone, 50.0) == everyone
    # 2 of 4 = 50 %, not below 50 %: the healthy ones.
    assert panic_hosts(["a", "b"], everyone, 50.0) == ["a", "b"]
    # Threshold 0 never panics, even with no healthy host.
    assert panic_hosts([], everyone, 0.0) == []
    # 0 healthy, threshold 50: all.
    assert panic_hosts([], everyone, 50.0) == everyone
    with pytest.raises(ValueError, match="healthy_panic_threshold"):
        panic_hosts([], everyone, 150.0)


# ------------------------------------------------------------------------------------------
# Retry budget
# ------------------------------------------------------------------------------------------


def test_retry_budget_min_concurrency_wins_at_low_load() -> None:
    budget = RetryBudget(None, budget_percent=20.0)
    # 20 % of (10 + 0) = 2 < min 3: the limit is 3.
    assert budget.limit(10, 0) == 3
    trace = []
    for _ in range(4):
        ok = budget.allow(10, 0)
        trace.append(ok)
        if ok:
            budget.started()
    assert trace == [True, True, True, False]
    assert (budget.active, budget.overflow) == (3, 1)
    budget.finished()
    assert budget.allow(10, 0) is True


def test_retry_budget_percent_wins_at_high_load() -> None:
    budget = RetryBudget(3, budget_percent=20.0)  # max_retries ignored with a budget
    # 20 % of (100 + 0) = 20 > 3.
    assert budget.limit(100, 0) == 20
    # Pending requests count too: 20 % of (90 + 15) = 21.
    assert budget.limit(90, 15) == 21
    for _ in range(20):
        assert budget.allow(100, 0)
        budget.started()
    assert budget.allow(100, 0) is False and budget.overflow == 1


def test_max_retries() -> None:
    none_allowed = RetryBudget(0)
    assert [none_allowed.allow(5, 0) for _ in range(3)] == [False] * 3
    assert none_allowed.overflow == 3
    three = RetryBudget(3)  # plain Envoy's default
    for _ in range(3):
        assert three.allow(0, 0)
        three.started()
    assert three.allow(1000, 0) is False
    unlimited = RetryBudget(None)
    assert unlimited.limit(0, 0) == math.inf


def test_retry_budget_bad_inputs() -> None:
    with pytest.raises(ValueError, match="budget_percent"):
        RetryBudget(None, budget_percent=150.0)
    with pytest.raises(ValueError, match="max_retries"):
        RetryBudget(-1)
    with pytest.raises(ValueError, match="min_retry_concurrency"):
        RetryBudget(None, budget_percent=20.0, min_retry_concurrency=-1)
    with pytest.raises(ValueError, match="finished"):
        RetryBudget(3).finished()


def test_outlier_ticks_are_caught_up_lazily_by_record() -> None:
    # No update() calls: the record at 45.0 first applies ticks 10 ... 40 (the host returned
    # at 40, see the trace above), so the 500s at 45.x eject it a second time with backoff 2.
    det = OutlierDetector(["a", "b"], max_ejection_percent=50.0)
    _fail(det, "a", [2.0, 2.1, 2.2, 2.3, 2.4])
    assert det.record("a", 500, 45.0) is False  # the host is back; count 1
    assert not det.is_ejected("a") and det.num_ejections("a") == 1
    assert _fail(det, "a", [45.1, 45.2, 45.3, 45.4])[-1] is True
    assert det.eject_time_backoff("a") == 2
    # Due 45.4 + 60 = 105.4: the first tick at or after it is 110.
    assert det.update(109.0) == []
    assert det.update(1000.0) == ["a"]
