"""Traefik Mesh annotations, oxy's circuit breaker and predicate language, Traefik's rate limiter.

Every expected value is derived in a comment from the source's rule (see models/traefik.py for
the file and function each rule comes from).
"""

from __future__ import annotations

import builtins

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.traefik import (
    FALLBACK_STATUS,
    MAX_EXPRESSION_CHARS,
    MAX_NESTING_DEPTH,
    AnnotationError,
    CircuitBreaker,
    ExpressionError,
    RateLimiter,
    RollingMetrics,
    TraefikServiceConfig,
    parse_annotations,
    parse_expression,
)

# ---------------------------------------------------------------------------------------------
# Hand-built metrics
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def metrics() -> RollingMetrics:
    """Ten responses at t = 0.5 s: 5 x 200, 2 x 502, 1 x 504, 1 x 500, 1 x 503.

    Network errors are 502 and 504: 3 of 10 -> NetworkErrorRatio 0.3. 5xx: 5 of 10.
    Latencies: nine at 10 ms and one (the 503) at 150 ms.
    """
    m = RollingMetrics()
    for status in (200, 200, 200, 200, 200, 502, 502, 504, 500):
        m.record(0.5, status, 0.010)
    m.record(0.5, 503, 0.150)
    return m


def holds(text: str, m: RollingMetrics, now: float = 0.5) -> bool:
    return parse_expression(text).evaluate(m, now)


def test_functions_read_the_metrics(metrics: RollingMetrics) -> None:
    assert metrics.total_count(0.5) == 10
    assert metrics.network_error_ratio(0.5) == 3 / 10
    # [500, 600) over [0, 600): 502, 502, 504, 500, 503 = 5 of 10.
    assert metrics.response_code_ratio(0.5, 500, 600, 0, 600) == 0.5
    # Half-open ranges: [502, 504) holds 502, 502, 503 (not 504): 3 of 10.
    assert metrics.response_code_ratio(0.5, 502, 504, 0, 600) == 0.3
    # Zero denominator: no 3xx, so 0 whatever the numerator (RTMetrics.ResponseCodeRatio).
    assert metrics.response_code_ratio(0.5, 500, 600, 300, 400) == 0.0
    # HDR, 2 significant figures: 10 ms = 10000 us lies in bucket 6 (bit_length(10000|255) = 14,
    # minus 8), units of 64 us: 10000 >> 6 = 156, 156 * 64 = 9984 .. 10047 -> 10 ms.
    # Median: count_at = int(0.5 * 10 + 0.5) = 5 -> the 10 ms class.
    assert metrics.latency_at_quantile_ms(0.5, 50.0) == 10
    # 90th: int(9.0 + 0.5) = 9 -> still 10 ms; 95th: int(9.5 + 0.5) = 10 -> needs the 150 ms
    # one: 150000 us, bucket 10, 150000 >> 10 = 146, 146 * 1024 = 149504 .. 150527 -> 150 ms.
    assert metrics.latency_at_quantile_ms(0.5, 90.0) == 10
    assert metrics.latency_at_quantile_ms(0.5, 95.0) == 150
    # Above 100 is clamped to 100.
    assert metrics.latency_at_quantile_ms(0.5, 250.0) == 150


def test_hdr_rounding_reads_the_top_of_the_value_class() -> None:
    m = RollingMetrics()
    # 299.9 ms = 299900 us: bit_length 19 -> bucket 11 (units of 2048 us); 299900 >> 11 = 146;
    # the class is 146 * 2048 = 299008 .. 301055 us, so the p50 reads 301 ms.
    m.record(0.0, 200, 0.2999)
    assert m.latency_at_quantile_ms(0.0, 50.0) == 301
    # p0 (and anything below 50 with one value): count_at = int(p / 100 * 1 + 0.5) = 0, so
    # getValueFromIdxUpToCount stops before the first value: 0, not the minimum.
    assert m.latency_at_quantile_ms(0.0, 0.0) == 0
    assert m.latency_at_quantile_ms(0.0, 49.0) == 0
    # 100 ms = 100000 us: bucket 8 (units of 256): 390 * 256 = 99840 .. 100095 -> 100 ms.
    m2 = RollingMetrics()
    m2.record(0.0, 200, 0.1)
    assert m2.latency_at_quantile_ms(0.0, 50.0) == 100
    # Empty histogram: 0.
    assert RollingMetrics().latency_at_quantile_ms(0.0, 99.0) == 0
    # Beyond 2**32 us (71.6 min) HdrHistogram refuses the value (oxy ignores the error).
    m3 = RollingMetrics()
    m3.record(0.0, 200, 5000.0)
    assert m3.total_count(0.0) == 1
    assert m3.latency_at_quantile_ms(0.0, 100.0) == 0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # NetworkErrorRatio is 3/10 == 0.3 exactly as a double.
        ("NetworkErrorRatio() > 0.25", True),
        ("NetworkErrorRatio() > 0.3", False),
        ("NetworkErrorRatio() >= 0.3", True),
        ("NetworkErrorRatio() < 0.3", False),
        ("NetworkErrorRatio() <= 0.3", True),
        ("NetworkErrorRatio() == 0.3", True),
        ("NetworkErrorRatio() != 0.3", False),
        # Float literal forms Go accepts: .25, 25e-2, 2.5E-1, 1.
        ("NetworkErrorRatio() > .25", True),
        ("NetworkErrorRatio() > 25e-2", True),
        ("NetworkErrorRatio() > 2.5E-1", True),
        ("NetworkErrorRatio() < 1.", True),
        ("ResponseCodeRatio(500, 600, 0, 600) > 0.45", True),  # 0.5
        ("ResponseCodeRatio(500, 600, 0, 600) == 0.5", True),
        ("ResponseCodeRatio(500, 600, 300, 400) == 0.0", True),  # zero denominator
        ("ResponseCodeRatio(500, 600, 0, 600,) > 0.45", True),  # Go's trailing comma
        ("LatencyAtQuantileMS(50.0) > 9", True),  # 10 ms
        ("LatencyAtQuantileMS(50.0) > 10", False),
        ("LatencyAtQuantileMS(95.0) >= 150", True),
        ("LatencyAtQuantileMS(95.0) == 150", True),
        ("RequestThreshold() > 9", True),  # 10 responses
        ("RequestThreshold() == 10", True),
        ("RequestThreshold() < 10", False),
        # Go precedence: && binds tighter than ||. A=true, B=false, C=false:
        # A || B && C = A || (B && C) = true; left to right it would be (A || B) && C = false.
        (
            "NetworkErrorRatio() > 0.25 || RequestThreshold() > 99 && LatencyAtQuantileMS(50.0) > 99",
            True,
        ),
        (
            "(NetworkErrorRatio() > 0.25 || RequestThreshold() > 99) && LatencyAtQuantileMS(50.0) > 99",
            False,
        ),
        # B && C || A: (false && false) || true = true.
        (
            "RequestThreshold() > 99 && LatencyAtQuantileMS(50.0) > 99 || NetworkErrorRatio() > 0.25",
            True,
        ),
        (
            "NetworkErrorRatio() > 0.25 && RequestThreshold() > 9 && LatencyAtQuantileMS(50.0) < 11",
            True,
        ),
        (
            "NetworkErrorRatio() > 0.9 || RequestThreshold() > 99 || LatencyAtQuantileMS(50.0) > 99",
            False,
        ),
        # Parentheses group conditions and may wrap either side of a comparison (ParenExpr).
        ("((NetworkErrorRatio() > 0.25))", True),
        ("(NetworkErrorRatio()) > (0.25)", True),
        # Go whitespace: tabs, and a line break after an operator.
        ("NetworkErrorRatio()\t>\t0.25 &&\n  RequestThreshold() > 9\n", True),
    ],
)
def test_grammar_forms_evaluate(metrics: RollingMetrics, text: str, expected: bool) -> None:
    expression = parse_expression(text)
    assert expression.text == text
    assert expression.evaluate(metrics, 0.5) is expected


def test_nesting_up_to_the_limit_parses() -> None:
    deep = "(" * MAX_NESTING_DEPTH + "NetworkErrorRatio() > 0.5" + ")" * MAX_NESTING_DEPTH
    m = RollingMetrics()
    m.record(0.0, 502, 0.001)  # ratio 1.0
    assert parse_expression(deep).evaluate(m, 0.0) is True


_VALID = "NetworkErrorRatio() > 0.5"

# (expression, 1-based column, words the message must contain). Columns counted by hand:
# "NetworkErrorRatio()" is 19 characters, so " > " puts '>' at 21 and the number at 23.
HOSTILE = [
    ("__import__('os')", 1, "unknown function '__import__'"),
    ("1 +", 3, "arithmetic"),
    ("NetworkErrorRatio() >", 22, "ends too early"),
    ("Unknown() > 1", 1, "unknown function 'Unknown'"),
    ("NetworkErrorRatio() > 0.3 &&", 29, "ends too early"),
    ("NetworkErrorRatio(1) > 0", 19, "takes 0 arguments, got 1"),
    ("ResponseCodeRatio(500, 600) > 0.1", 1, "takes 4 arguments, got 2"),
    # "ResponseCodeRatio(" is 18 characters; the fifth argument '1' is at 37.
    ("ResponseCodeRatio(500, 600, 0, 600, 1) > 0.1", 37, "takes 4 arguments, got 5"),
    ("ResponseCodeRatio(500.0, 600, 0, 600) > 0.1", 19, "must be an integer"),
    # oxy's typed comparisons: a float function needs a float literal, an int one an integer.
    ("NetworkErrorRatio() > 0", 23, "float"),
    ("LatencyAtQuantileMS(50.0) > 100.0", 29, "integer"),
    # LatencyAtQuantileMS takes a float64: reflection refuses an int.
    ("LatencyAtQuantileMS(50) > 100", 21, "must be a float"),
    ("RequestThreshold() > 99999999999999999999", 22, "out of range"),
    ("LatencyAtQuantileMS(1e400) > 1", 21, "out of range"),
    ("LatencyAtQuantileMS(50.0) > 010", 29, "leading zero"),
    ("NetworkErrorRatio() > 0x1", 23, "malformed number"),
    ("NetworkErrorRatio() > 1_0.5", 23, "malformed number"),
    ("NetworkErrorRatio() > -0.5", 23, "signed"),
    ("NetworkErrorRatio() ≥ 0.5", 21, "U+2265"),
    ("NetworkErrorRatio() > 0.5 && é", 30, "non-ASCII"),
    ("!(NetworkErrorRatio() > 0.5)", 1, "NOT"),
    ("NetworkErrorRatio() = 0.5", 21, "'=='"),
    ("NetworkErrorRatio() > 0.5 & RequestThreshold() > 1", 27, "'&&'"),
    ("0.5 < NetworkErrorRatio()", 1, "left side"),
    ("NetworkErrorRatio() > RequestThreshold()", 23, "right side"),
    ("NetworkErrorRatio()", 1, "not a condition"),
    ("0.5", 1, "not a condition"),
    ("NetworkErrorRatio() > 0.1 > 0.2", 27, "chained"),
    ("NetworkErrorRatio() > 0.5 && 0.7", 30, "joins conditions"),
    ("(NetworkErrorRatio() > 0.5", 27, "expected ')'"),
    ("NetworkErrorRatio() > 0.5)", 26, "unexpected ')'"),
    ("()", 2, "empty parentheses"),
    ("", 1, "empty expression"),
    ("   ", 4, "empty expression"),
    ("os.system('x')", 3, "selectors"),
    ("NetworkErrorRatio", 1, "not defined"),
    ("NetworkErrorRatio()\n> 0.5", 21, "line break"),
    ("LatencyAtQuantileMS((50.0)) > 1", 21, "number literals"),
    ("LatencyAtQuantileMS(NetworkErrorRatio()) > 1", 21, "number literals"),
    ('NetworkErrorRatio() > "0.5"', 23, "strings"),
    ("NetworkErrorRatio() > 0.5 // comment", 27, "comments"),
    ("NetworkErrorRatio() > 0.5;", 26, "unexpected character ';'"),
    ("NetworkErrorRatio() > 0.5\x00", 26, "U+0000"),
]


@pytest.mark.parametrize(("text", "column", "words"), HOSTILE)
def test_hostile_expressions_are_refused_with_the_column(
    text: str, column: int, words: str
) -> None:
    with pytest.raises(ExpressionError) as info:
        parse_expression(text)
    assert info.value.column == column
    assert words in str(info.value)
    assert f"column {column}" in str(info.value)
    assert isinstance(info.value, ValueError)


def test_oversized_and_deep_inputs_stop_early() -> None:
    # 1 MB: refused before tokenizing, at the first character past the cap.
    with pytest.raises(ExpressionError) as info:
        parse_expression("(" * 2**20)
    assert info.value.column == MAX_EXPRESSION_CHARS + 1
    assert "1048576 characters" in str(info.value)
    # 10,000 parentheses deep is longer than the cap too.
    deep = "(" * 10_000 + _VALID + ")" * 10_000
    with pytest.raises(ExpressionError) as info:
        parse_expression(deep)
    assert info.value.column == MAX_EXPRESSION_CHARS + 1
    # One level deeper than allowed, within the length cap: refused at the 33rd '('.
    deeper = "(" * (MAX_NESTING_DEPTH + 1) + _VALID + ")" * (MAX_NESTING_DEPTH + 1)
    with pytest.raises(ExpressionError) as info:
        parse_expression(deeper)
    assert info.value.column == MAX_NESTING_DEPTH + 1
    assert "nested deeper than 32" in str(info.value)


def test_parsing_never_executes_anything(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("parse_expression must not execute code")

    for name in ("eval", "exec", "compile", "__import__"):
        monkeypatch.setattr(builtins, name, forbidden)
    for text, _, _ in HOSTILE:
        with pytest.raises(ExpressionError):
            parse_expression(text)
    assert parse_expression(_VALID).evaluate(RollingMetrics(), 0.0) is False


_PIECES = st.sampled_from(
    [
        "NetworkErrorRatio()",
        "ResponseCodeRatio(500, 600, 0, 600)",
        "LatencyAtQuantileMS(50.0)",
        "RequestThreshold()",
        "(",
        ")",
        "&&",
        "||",
        ">",
        ">=",
        "==",
        "!=",
        "0.5",
        "7",
        ",",
        " ",
        "\n",
        "!",
        "-",
        "x",
    ]
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.lists(_PIECES, max_size=12).map("".join), st.text(max_size=40)))
def test_any_text_parses_or_fails_with_a_column_inside_it(text: str) -> None:
    # Property: never another exception, and the column points inside the text (or just past
    # its end, for an expression that ends too early).
    try:
        expression = parse_expression(text)
    except ExpressionError as e:
        assert 1 <= e.column <= len(text) + 1
    else:
        assert isinstance(expression.evaluate(RollingMetrics(), 0.0), bool)


# ---------------------------------------------------------------------------------------------
# Rolling windows
# ---------------------------------------------------------------------------------------------


def test_counters_forget_buckets_older_than_the_window() -> None:
    # oxy's RollingCounter: 10 one-second buckets; a count made in second s is zeroed once
    # now reaches second s + 10.
    m = RollingMetrics()
    m.record(0.5, 502, 0.001)  # second 0
    m.record(3.2, 200, 0.001)  # second 3
    assert m.total_count(9.99) == 2
    assert m.network_error_ratio(9.99) == 0.5
    # Second 10 reuses second 0's bucket: the 502 is gone.
    assert m.total_count(10.0) == 1
    assert m.network_error_ratio(10.0) == 0.0
    assert m.response_code_ratio(10.0, 200, 300, 0, 600) == 1.0
    assert m.total_count(12.99) == 1
    # Second 13: the 200 is gone too; empty ratios are 0.
    assert m.total_count(13.0) == 0
    assert m.network_error_ratio(13.0) == 0.0
    assert m.response_code_ratio(13.0, 200, 300, 0, 600) == 0.0
    # A record after a long gap starts from empty buckets.
    m.record(25.0, 504, 0.001)
    assert m.total_count(25.0) == 1
    assert m.network_error_ratio(25.0) == 1.0


def test_counter_window_follows_the_resolution() -> None:
    # 20 s window of 10 buckets: 2 s resolution; getBucket takes the truncated time's whole
    # seconds modulo 10, so slots 0, 2, 4, .. land in buckets 0, 2, 4, .. and slot 5 (t = 10 s)
    # lands back in bucket 0: the window is 10 s, not 20 (oxy's quirk for resolutions > 1 s).
    m = RollingMetrics(window_s=20.0, buckets=10)
    m.record(0.0, 200, 0.001)
    assert m.total_count(9.99) == 1
    assert m.total_count(10.0) == 0
    with pytest.raises(ValueError, match="at least 1 s"):
        RollingMetrics(window_s=5.0, buckets=10)
    with pytest.raises(ValueError, match="buckets"):
        RollingMetrics(buckets=0)


def test_histogram_rotates_only_when_recording() -> None:
    # 6 sub-histograms, a new one when a record comes >= 10 s after the last rotation. The
    # record at t=0 rotates (the last rotation is Go's zero time), then t = 10, .., 50 rotate:
    # six sub-histograms in use. The seventh rotation, at t = 60, clears t = 0's.
    m = RollingMetrics()
    m.record(0.0, 200, 0.2)  # 200000 us: bucket 10, 195 * 1024 = 199680 .. 200703 -> 200 ms
    for t in (10.0, 20.0, 30.0, 40.0, 50.0):
        m.record(t, 200, 0.001)  # 1000 us: bucket 2, 1000 .. 1003 -> 1 ms
    assert m.latency_at_quantile_ms(50.0, 100.0) == 200
    # Reading never rotates: with no traffic the old latency stays, long after the counters
    # have forgotten it.
    assert m.latency_at_quantile_ms(1000.0, 100.0) == 200
    assert m.total_count(1000.0) == 0
    # A record 9.9 s after the last rotation does not rotate; one at +10 s does.
    m.record(59.9, 200, 0.001)
    assert m.latency_at_quantile_ms(59.9, 100.0) == 200
    m.record(60.0, 200, 0.001)
    assert m.latency_at_quantile_ms(60.0, 100.0) == 1


def test_metrics_reset_and_bad_latency() -> None:
    m = RollingMetrics()
    m.record(1.0, 502, 0.5)
    m.reset(1.0)
    assert m.total_count(1.0) == 0
    assert m.latency_at_quantile_ms(1.0, 100.0) == 0
    assert m.response_code_ratio(1.0, 500, 600, 0, 600) == 0.0
    with pytest.raises(ValueError, match="latency_s"):
        m.record(1.0, 200, -0.1)
    with pytest.raises(ValueError, match="latency_s"):
        m.record(1.0, 200, float("nan"))


# ---------------------------------------------------------------------------------------------
# Circuit breaker
# ---------------------------------------------------------------------------------------------


def never_called() -> float:
    raise AssertionError("oxy's recovery ramp draws no random number")


def tripped_breaker() -> CircuitBreaker:
    """A breaker that trips at t = 0.375 (dyadic times: exact in binary).

    Check period 0.25 s, fallback 4 s, recovery 8 s, condition NetworkErrorRatio() > 0.5.
    """
    cb = CircuitBreaker(
        parse_expression("NetworkErrorRatio() > 0.5"),
        check_period_s=0.25,
        fallback_s=4.0,
        recovery_s=8.0,
    )
    assert cb.allow(0.0, never_called)
    # The first response is always checked (lastCheck starts at Go's zero time): ratio 0.
    cb.record(0.0, 200, 0.001)
    # Next check strictly after 0.25. The condition holds from t = 0.1875 on (2 of 3, then
    # 3 of 4), but no response comes strictly after 0.25 until t = 0.375.
    cb.record(0.125, 502, 0.001)  # 1/2: not > 0.5 anyway
    cb.record(0.1875, 502, 0.001)  # 2/3 > 0.5, not checked
    cb.record(0.25, 502, 0.001)  # 3/4, not checked: 0.25 is not after 0.25
    assert cb.state == "standby"
    assert cb.trips == 0
    cb.record(0.375, 200, 0.001)  # 3/5 = 0.6 > 0.5, checked: trips
    return cb


def test_breaker_trips_on_the_first_check_after_the_condition_holds() -> None:
    cb = tripped_breaker()
    assert cb.state == "tripped"
    assert cb.trips == 1
    assert cb.transitions == [(0.375, "tripped")]
    assert cb.response_code == FALLBACK_STATUS == 503
    # Tripping resets the metrics.
    assert cb.metrics.total_count(0.375) == 0


def test_fallback_then_linear_recovery_then_standby() -> None:
    cb = tripped_breaker()
    # Fallback answers until 0.375 + 4 = 4.375.
    assert not cb.allow(0.5, never_called)
    assert not cb.allow(4.25, never_called)
    assert cb.state == "tripped"
    # The first request at 4.375 starts recovery (until 4.375 + 8 = 12.375) and is judged by
    # the ratio controller: target 0.5 * 0 / 8 = 0; allowing it would make 1/1 >= 0: denied.
    assert not cb.allow(4.375, never_called)
    assert cb.state == "recovering"
    # Requests at ramp offsets 2, 4, 6, 8 s (targets 0.125, 0.25, 0.375, 0.5):
    #   +2: 1/2 = 0.5 >= 0.125 -> deny (a=0, d=2)
    #   +4: 1/3 >= 0.25 -> deny (d=3)
    #   +6: 1/4 = 0.25 < 0.375 -> allow (a=1)
    #   +8: not after until; 2/5 = 0.4 < 0.5 -> allow (a=2)
    decisions = []
    for offset in (2.0, 4.0, 6.0, 8.0):
        allowed = cb.allow(4.375 + offset, never_called)
        decisions.append(allowed)
        if allowed:
            cb.record(4.375 + offset, 200, 0.001)
    assert decisions == [False, False, True, True]
    assert cb.state == "recovering"
    # Strictly after 12.375: standby, and the request goes through.
    assert cb.allow(12.4375, never_called)
    assert cb.state == "standby"
    assert cb.transitions == [(0.375, "tripped"), (4.375, "recovering"), (12.4375, "standby")]
    assert cb.trips == 1


def test_recovery_ramp_lets_through_the_ramped_share() -> None:
    cb = tripped_breaker()
    # Steady traffic, a request every 1/64 s from the start of recovery (4.375) to its end.
    times = [4.375 + k / 64 for k in range(8 * 64 + 1)]  # 513 requests over 8 s
    allowed = [cb.allow(t, never_called) for t in times]
    for t, ok in zip(times, allowed, strict=True):
        if ok:
            cb.record(t, 200, 0.001)
    assert cb.state == "recovering"
    # The cumulative share follows the target 0.5 * x (x = elapsed / 8), so about half of all
    # requests pass: 513 / 2 = 256.5.
    assert abs(sum(allowed) - 513 / 2) <= 1
    # Passed so far = 0.5 * x * (requests so far) = 0.5 * 512 * x**2; so the instantaneous
    # share is about x: the last quarter passes 0.5 * 512 * (1 - 0.75**2) = 112 of 128.
    assert abs(sum(allowed[384:512]) - 112) <= 2
    # The first quarter: 0.5 * 512 * 0.25**2 = 16 of 128.
    assert abs(sum(allowed[:128]) - 16) <= 2
    # The invariant the controller keeps: after each allowed request, passed / seen < target.
    passed = 0
    for k, ok in enumerate(allowed):
        passed += ok
        if ok:
            assert passed / (k + 1) < 0.5 * (times[k] - 4.375) / 8


def test_retrip_during_recovery() -> None:
    cb = tripped_breaker()
    assert not cb.allow(4.375, never_called)  # recovering
    assert not cb.allow(6.375, never_called)
    assert not cb.allow(8.375, never_called)
    assert cb.allow(10.375, never_called)  # as in the ramp test: the +6 s request passes
    # Its response is a 502: the metrics (reset at the trip) hold 1 network error in 1, and
    # the check is due (last check set at 0.375 + 0.25), so it trips again, until 14.375.
    cb.record(10.375, 502, 0.001)
    assert cb.state == "tripped"
    assert cb.trips == 2
    assert not cb.allow(14.25, never_called)
    assert not cb.allow(14.375, never_called)  # recovering again, first request denied
    assert cb.transitions == [
        (0.375, "tripped"),
        (4.375, "recovering"),
        (10.375, "tripped"),
        (14.375, "recovering"),
    ]


def test_breaker_defaults_and_validation() -> None:
    cb = CircuitBreaker(parse_expression("NetworkErrorRatio() > 0.5"))
    # Traefik's CircuitBreaker.SetDefaults and oxy's defaults: 100 ms, 10 s, 10 s.
    assert (cb.check_period_s, cb.fallback_s, cb.recovery_s) == (0.1, 10.0, 10.0)
    assert cb.allow(0.0)  # uniform is optional and never used
    for bad in ({"check_period_s": 0.0}, {"fallback_s": -1.0}, {"recovery_s": float("inf")}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            CircuitBreaker(parse_expression(_VALID), **bad)


# ---------------------------------------------------------------------------------------------
# Rate limiter
# ---------------------------------------------------------------------------------------------


def test_rate_limiter_refills_at_exact_instants() -> None:
    # average 2/s, burst 3: maxDelay = 1 s / (2 * 2) = 0.25 s; buckets start full.
    rl = RateLimiter(average=2, burst=3)
    assert rl.max_delay_s == 0.25
    assert [rl.reserve(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]  # 3 -> 0 tokens
    # 4th at t=0: tokens -1, wait 1 / 2 = 0.5 s > 0.25: refused, its token given back.
    assert rl.reserve(0.0) is None
    assert rl.limited == 1
    # t=0.25: 0 + 0.25 * 2 = 0.5 -> -0.5: wait 0.25 s = maxDelay: let through after 0.25 s.
    assert rl.reserve(0.25) == 0.25
    assert rl.delayed == 1
    # Again at 0.25: -0.5 - 1 = -1.5, wait 0.75 s: refused, back to -0.5.
    assert not rl.allow(0.25)
    # t=0.5: -0.5 + 0.5 = 0 -> -1: wait 0.5 s: refused.
    assert not rl.allow(0.5)
    assert rl.limited == 3
    # t=0.75: 0 + 0.5 = 0.5 -> -0.5: wait 0.25 s.
    assert rl.reserve(0.75) == 0.25
    # t=2.75: -0.5 + 2 * 2 = 3.5, capped at burst 3 -> 2: at once, twice, then 1 -> 0.
    assert [rl.reserve(2.75) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert rl.reserve(2.75) is None
    assert (rl.limited, rl.delayed) == (4, 2)


def test_idle_buckets_expire_and_come_back_full() -> None:
    # average 1/s, burst 10: maxDelay = 1 s / 2 = 0.5 s; ttl 2 s.
    rl = RateLimiter(average=1, burst=10)
    assert all(rl.allow(0.0) for _ in range(10))
    assert not rl.allow(0.0)  # wait 1 s > 0.5
    assert rl.reserve(1.0) == 0.0  # one token refilled: 1 -> 0
    # Expiry floor(1.0 + 2) = 3 > floor(2.5): still there, 0 + 1.5 = 1.5 tokens -> 0.5.
    assert rl.reserve(2.5) == 0.0
    # Expiry floor(2.5 + 2) = 4 <= floor(4.5): dropped, so a fresh, full bucket (10) instead of
    # the 0.5 + 2 = 2.5 tokens a kept bucket would hold.
    assert sum(rl.allow(4.5) for _ in range(11)) == 10


def test_buckets_are_per_source() -> None:
    rl = RateLimiter(average=1, burst=1)
    assert rl.allow(0.0, "10.0.0.1")
    assert not rl.allow(0.0, "10.0.0.1")
    assert rl.allow(0.0, "10.0.0.2")


def test_rate_limiter_long_run_rate() -> None:
    # 10 requests/s against 2/s with burst 1 for 10 s: at most burst + rate * T plus what the
    # last accepted ones borrow (rate * maxDelay = 0.5): 1 + 20 + 0.5; at least rate * T = 20.
    rl = RateLimiter(average=2, burst=1)
    accepted = sum(rl.allow(k / 10) for k in range(100))
    assert 20 <= accepted <= 21


def test_rate_limiter_max_delay_and_ttl_rules() -> None:
    # Below 1/s: maxDelay 0.5 s, ttl 1 + int(1 / rate): average 1 per 4 s -> ttl 5.
    slow = RateLimiter(average=1, burst=1, period_s=4.0)
    assert slow.rate_per_s == 0.25
    assert slow.max_delay_s == 0.5
    assert slow.ttl_s == 5
    # 2.5/s: time.Duration(2.5) truncates to 2 -> 1 s / 4 = 0.25 s.
    assert RateLimiter(average=5, burst=1, period_s=2.0).max_delay_s == 0.25
    # 3/s: 1e9 ns // 6 = 166666666 ns.
    assert RateLimiter(average=3, burst=1).max_delay_ns == 166_666_666
    for kwargs, word in (
        ({"average": 0, "burst": 1}, "average"),
        ({"average": 1, "burst": 0}, "burst"),
        ({"average": 1, "burst": 1, "period_s": 0.0}, "period_s"),
    ):
        with pytest.raises(ValueError, match=word):
            RateLimiter(**kwargs)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# Annotations
# ---------------------------------------------------------------------------------------------


def test_full_valid_set() -> None:
    config = parse_annotations(
        {
            "mesh.traefik.io/traffic-type": "http",
            "mesh.traefik.io/scheme": "h2c",
            "mesh.traefik.io/retry-attempts": "3",
            "mesh.traefik.io/circuit-breaker-expression": "NetworkErrorRatio() > 0.30",
            "mesh.traefik.io/ratelimit-average": "100",
            "mesh.traefik.io/ratelimit-burst": "200",
            "kubectl.kubernetes.io/last-applied-configuration": "{}",  # not ours: ignored
        }
    )
    assert config.traffic_type == "http"
    assert config.scheme == "h2c"
    assert config.retry_attempts == 3
    assert config.circuit_breaker is not None
    assert config.circuit_breaker.text == "NetworkErrorRatio() > 0.30"
    assert (config.ratelimit_average, config.ratelimit_burst) == (100.0, 200)
    rl = config.new_rate_limiter()
    assert rl is not None and (rl.rate_per_s, rl.burst) == (100.0, 200)
    cb = config.new_circuit_breaker()
    assert cb is not None and cb.expression == config.circuit_breaker


def test_defaults_legacy_prefix_and_precedence() -> None:
    assert parse_annotations({}) == TraefikServiceConfig()
    assert parse_annotations({}).new_rate_limiter() is None
    assert parse_annotations({}).new_circuit_breaker() is None
    assert parse_annotations({}, default_traffic_type="tcp").traffic_type == "tcp"
    legacy = parse_annotations(
        {"maesh.containo.us/traffic-type": "http", "maesh.containo.us/retry-attempts": "2"}
    )
    assert legacy.retry_attempts == 2
    # getAnnotation: the mesh.traefik.io key wins over its maesh.containo.us twin.
    both = parse_annotations(
        {"mesh.traefik.io/retry-attempts": "5", "maesh.containo.us/retry-attempts": "2"}
    )
    assert both.retry_attempts == 5
    # strconv.Atoi takes a sign.
    assert parse_annotations({"mesh.traefik.io/retry-attempts": "+4"}).retry_attempts == 4
    tcp = parse_annotations({"mesh.traefik.io/traffic-type": "tcp"})
    assert tcp.traffic_type == "tcp" and tcp.retry_attempts is None
    assert parse_annotations({"mesh.traefik.io/traffic-type": "udp"}).traffic_type == "udp"


@pytest.mark.parametrize(
    ("annotations", "key", "words"),
    [
        ({"mesh.traefik.io/traffic-type": "grpc"}, "mesh.traefik.io/traffic-type", "unsupported"),
        ({"mesh.traefik.io/traffic-type": "HTTP"}, "mesh.traefik.io/traffic-type", "unsupported"),
        ({"mesh.traefik.io/scheme": "ftp"}, "mesh.traefik.io/scheme", "unsupported scheme"),
        (
            {"mesh.traefik.io/retry-attempts": "three"},
            "mesh.traefik.io/retry-attempts",
            "not an integer",
        ),
        (
            {"mesh.traefik.io/retry-attempts": " 3"},
            "mesh.traefik.io/retry-attempts",
            "not an integer",
        ),
        (
            {"mesh.traefik.io/retry-attempts": "3.0"},
            "mesh.traefik.io/retry-attempts",
            "not an integer",
        ),
        (
            {"mesh.traefik.io/retry-attempts": "1_0"},
            "mesh.traefik.io/retry-attempts",
            "not an integer",
        ),
        ({"mesh.traefik.io/retry-attempts": "0"}, "mesh.traefik.io/retry-attempts", "at least 1"),
        (
            {"maesh.containo.us/retry-attempts": "-1"},
            "maesh.containo.us/retry-attempts",
            "at least 1",
        ),
        (
            {"mesh.traefik.io/retry-attempts": "99999999999999999999"},
            "mesh.traefik.io/retry-attempts",
            "out of range",
        ),
        # Only one of average and burst: Mesh silently drops the rate limit; we say so.
        (
            {"mesh.traefik.io/ratelimit-average": "10"},
            "mesh.traefik.io/ratelimit-average",
            "mesh.traefik.io/ratelimit-burst",
        ),
        (
            {"maesh.containo.us/ratelimit-burst": "10"},
            "maesh.containo.us/ratelimit-burst",
            "maesh.containo.us/ratelimit-average",
        ),
        (
            {"mesh.traefik.io/ratelimit-average": "10", "mesh.traefik.io/ratelimit-burst": "0"},
            "mesh.traefik.io/ratelimit-burst",
            "greater than 0",
        ),
        (
            {"mesh.traefik.io/ratelimit-average": "-5", "mesh.traefik.io/ratelimit-burst": "1"},
            "mesh.traefik.io/ratelimit-average",
            "greater than 0",
        ),
        (
            {"mesh.traefik.io/ratelimit-average": "2.5", "mesh.traefik.io/ratelimit-burst": "1"},
            "mesh.traefik.io/ratelimit-average",
            "not an integer",
        ),
        # Unknown keys under either prefix: a typo is an error, not silence.
        ({"mesh.traefik.io/retry-attempt": "3"}, "mesh.traefik.io/retry-attempt", "unknown"),
        (
            {"maesh.containo.us/circuit-breaker": "x"},
            "maesh.containo.us/circuit-breaker",
            "unknown",
        ),
        # Middlewares on a tcp/udp service: Mesh ignores them; we refuse.
        (
            {"mesh.traefik.io/traffic-type": "tcp", "mesh.traefik.io/retry-attempts": "2"},
            "mesh.traefik.io/retry-attempts",
            "http services only",
        ),
        (
            {
                "mesh.traefik.io/traffic-type": "udp",
                "mesh.traefik.io/circuit-breaker-expression": _VALID,
            },
            "mesh.traefik.io/circuit-breaker-expression",
            "http services only",
        ),
    ],
)
def test_invalid_annotations_name_the_key(
    annotations: dict[str, str], key: str, words: str
) -> None:
    with pytest.raises(AnnotationError) as info:
        parse_annotations(annotations)
    assert info.value.key == key
    assert repr(key) in str(info.value)
    assert words in str(info.value)
    assert isinstance(info.value, ValueError)


def test_invalid_expression_annotation_names_key_and_column() -> None:
    key = "mesh.traefik.io/circuit-breaker-expression"
    with pytest.raises(AnnotationError) as info:
        parse_annotations({key: "NetworkErrorRatio() > 0"})
    assert info.value.key == key
    assert info.value.column == 23
    assert f"annotation {key!r} at column 23" in str(info.value)
    assert "float" in str(info.value)
