"""Traefik Mesh's per-service annotations, Traefik's circuit breaker and its rate limiter.

Pure logic with explicit times (``now``, seconds of simulated time): no SimPy, no clock, no
random stream of its own, so every behaviour is exactly testable. The node proxy's router
drives it: ``allow`` before forwarding, ``record`` when the answer comes back.

What is modelled, and from where (the sources read, at the versions the projects pin):

- Annotations: traefik/mesh ``pkg/annotations/annotations.go`` (``getAnnotation``,
  ``GetTrafficType``, ``GetScheme``, ``GetRetryAttempts``, ``GetRateLimitAverage``,
  ``GetRateLimitBurst``, ``GetCircuitBreakerExpression``) and ``pkg/annotations/middleware.go``
  (``BuildMiddlewares``); ``pkg/provider/provider.go`` (``buildConfigForService``: middlewares
  only for HTTP services; an annotation error drops the service's whole configuration).
- Circuit breaker: vulcand/oxy ``cbreaker/cbreaker.go`` (``activateFallback``, ``serve``,
  ``checkAndSet``, ``setRecovering``, defaults), ``cbreaker/ratio.go`` (``ratioController``),
  ``cbreaker/predicates*.go`` (the functions and operators), vulcand/predicate ``parse.go``
  (the grammar: Go expressions through ``go/parser``); Traefik
  ``pkg/middlewares/circuitbreaker/circuit_breaker.go`` (``New``: fallback answers 503 in
  v2.8, ``ResponseCode`` defaulting to 503 in v3, ``pkg/config/dynamic/middlewares.go``
  ``CircuitBreaker.SetDefaults``).
- Metrics: oxy ``memmetrics/roundtrip.go`` (``RTMetrics``: ``Record``, ``NetworkErrorRatio``,
  ``ResponseCodeRatio``, ``Reset``, the bucket constants), ``memmetrics/counter.go``
  (``RollingCounter``), ``memmetrics/histogram.go`` (``RollingHDRHistogram``), and
  HdrHistogram/hdrhistogram-go v1.2.0 ``hdr.go`` (``New``, ``getBucketIndex``,
  ``ValueAtPercentile``).
- Rate limiter: Traefik ``pkg/middlewares/ratelimiter/rate_limiter.go`` (``New``,
  ``ServeHTTP``), ``in_memory_limiter.go`` (``Allow``), ``ttlmap/ttlmap.go``; golang.org/x/time
  ``rate/rate.go`` (``NewLimiter``, ``reserveN``, ``advance``, ``CancelAt``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

__all__ = [
    "AnnotationError",
    "CircuitBreaker",
    "Expression",
    "ExpressionError",
    "FALLBACK_STATUS",
    "MAX_EXPRESSION_CHARS",
    "MAX_NESTING_DEPTH",
    "RateLimiter",
    "RollingMetrics",
    "TraefikServiceConfig",
    "parse_annotations",
    "parse_expression",
]

#: Status of the breaker's fallback answer (Traefik v2.8 writes 503; v3's ``ResponseCode``
#: defaults to 503 and Traefik Mesh never sets it).
FALLBACK_STATUS = 503
#: Longest expression accepted, in characters (ours: oxy has no cap).
MAX_EXPRESSION_CHARS = 1024
#: Deepest parenthesis nesting accepted (ours: go/parser stops at 100,000).
MAX_NESTING_DEPTH = 32


# ---------------------------------------------------------------------------------------------
# The predicate language
# ---------------------------------------------------------------------------------------------


class ExpressionError(ValueError):
    """A circuit-breaker expression oxy would not accept.

    Attributes:
        column: 1-based column (in characters) of the offending token in the expression.
        reason: What is wrong, without the column.
    """

    def __init__(self, reason: str, column: int) -> None:
        super().__init__(f"column {column}: {reason}")
        self.reason = reason
        self.column = column


# The functions oxy registers (cbreaker/predicates.go, parseExpression) with their argument
# kinds and the kind they return (cbreaker/predicates_functions.go). A Go ``int`` argument must
# be an integer literal and a ``float64`` one a float literal: vulcand/predicate's
# ``callFunction`` calls them through reflection, which rejects an int for a float64.
# RequestThreshold exists in oxy v2 (Traefik v3) only, not in oxy v1.4 (Traefik v2.8, Mesh).
_FUNCTIONS: dict[str, tuple[tuple[str, ...], str]] = {
    "NetworkErrorRatio": ((), "float"),
    "ResponseCodeRatio": (("int", "int", "int", "int"), "float"),
    "LatencyAtQuantileMS": (("float",), "int"),
    "RequestThreshold": ((), "int"),
}
_COMPARISONS = (">=", "<=", "==", "!=", ">", "<")
_INT64_MAX = 2**63 - 1


@dataclass(frozen=True)
class _Token:
    kind: str  # "ident", "int", "float", "(", ")", ",", "&&", "||", a comparison, "eof"
    text: str
    column: int


def _char_name(ch: str) -> str:
    if ch.isascii() and ch.isprintable():
        return repr(ch)
    return f"{ch!r} (U+{ord(ch):04X})"


_NUMBER = re.compile(r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Characters oxy's Go syntax knows but oxy's language has no use for: a clear word each.
_UNSUPPORTED = {
    "!": "'!' (not) is not supported: oxy defines no NOT operator",
    "&": "a single '&' is not an operator; 'and' is '&&'",
    "|": "a single '|' is not an operator; 'or' is '||'",
    "=": "'=' is not an operator; equality is '=='",
    "+": "arithmetic is not supported (and numbers cannot be signed)",
    "-": "arithmetic is not supported (and numbers cannot be signed)",
    "*": "arithmetic is not supported",
    "/": "arithmetic and comments are not supported",
    "%": "arithmetic is not supported",
    '"': "strings are not supported",
    "'": "strings are not supported",
    "`": "strings are not supported",
    "[": "indexing is not supported",
    "]": "indexing is not supported",
    ".": "selectors are not supported",
}


def _tokenize(text: str) -> Iterator[_Token]:
    """Split ``text`` into tokens, lazily, rejecting every character the language has no use for.

    Lazily, so that the parser reports the first error in reading order. Whitespace is Go's
    (space, tab, CR, LF), with Go's rule that a line break after an identifier, a number or
    ``)`` ends the expression (automatic semicolon insertion).
    """
    i = 0
    n = len(text)
    newline_before = False
    previous: _Token | None = None
    while i < n:
        ch = text[i]
        column = i + 1
        if ch in " \t\r\n":
            newline_before = newline_before or ch == "\n"
            i += 1
            continue
        if newline_before and previous and previous.kind in ("ident", "int", "float", ")"):
            raise ExpressionError(
                f"a line break after {previous.text!r} ends the expression in Go's syntax",
                column,
            )
        newline_before = False
        token: _Token
        two = text[i : i + 2]
        if two in ("&&", "||", ">=", "<=", "==", "!="):
            token = _Token(two, two, column)
            i += 2
        elif ch in "()<>,":
            token = _Token(ch, ch, column)
            i += 1
        elif "0" <= ch <= "9" or (ch == "." and "0" <= text[i + 1 : i + 2] <= "9"):
            match = _NUMBER.match(text, i)
            assert match is not None  # a digit, or a dot then a digit, always matches
            end = match.end()
            if end < n and (text[end].isalnum() or text[end] in "_."):
                raise ExpressionError(
                    f"malformed number {text[i : end + 1]!r}: only decimal integers and "
                    "decimal floats are accepted (no hex, octal, underscores or suffixes)",
                    column,
                )
            literal = match.group()
            is_float = any(c in literal for c in ".eE")
            if not is_float and len(literal) > 1 and literal[0] == "0":
                raise ExpressionError(
                    f"integer {literal!r} has a leading zero, which Go reads as octal", column
                )
            token = _Token("float" if is_float else "int", literal, column)
            i = end
        elif ch.isascii() and (ch.isalpha() or ch == "_"):
            match = _IDENT.match(text, i)
            assert match is not None
            token = _Token("ident", match.group(), column)
            i = match.end()
        elif ch in _UNSUPPORTED:
            raise ExpressionError(_UNSUPPORTED[ch], column)
        elif not ch.isascii():
            raise ExpressionError(f"non-ASCII character {_char_name(ch)}", column)
        else:
            raise ExpressionError(f"unexpected character {_char_name(ch)}", column)
        previous = token
        yield token
    yield _Token("eof", "", n + 1)


@dataclass(frozen=True)
class _Number:
    value: float | int
    is_float: bool
    column: int


@dataclass(frozen=True)
class _Metric:
    """A call of one of oxy's functions: a value read from the metrics when evaluated."""

    name: str
    args: tuple[float | int, ...]
    kind: str  # "float" or "int", the Go type the function returns
    column: int

    def value(self, metrics: RollingMetrics, now: float) -> float | int:
        if self.name == "NetworkErrorRatio":
            return metrics.network_error_ratio(now)
        if self.name == "ResponseCodeRatio":
            a, b, c, d = (int(x) for x in self.args)
            return metrics.response_code_ratio(now, a, b, c, d)
        if self.name == "LatencyAtQuantileMS":
            return metrics.latency_at_quantile_ms(now, float(self.args[0]))
        return metrics.total_count(now)  # RequestThreshold


@dataclass(frozen=True)
class _Compare:
    metric: _Metric
    op: str
    number: float | int

    def holds(self, metrics: RollingMetrics, now: float) -> bool:
        v = self.metric.value(metrics, now)
        c = self.number
        # predicates_operators.go: le is lt || eq, ge is gt || eq, neq is not eq.
        if self.op == ">":
            return v > c
        if self.op == "<":
            return v < c
        if self.op == ">=":
            return v > c or v == c
        if self.op == "<=":
            return v < c or v == c
        if self.op == "==":
            return v == c
        return v != c


@dataclass(frozen=True)
class _Join:
    op: str  # "&&" or "||"
    terms: tuple[_Compare | _Join, ...]

    def holds(self, metrics: RollingMetrics, now: float) -> bool:
        # predicates_operators.go: and/or stop at the first term that decides.
        if self.op == "&&":
            return all(t.holds(metrics, now) for t in self.terms)
        return any(t.holds(metrics, now) for t in self.terms)


_Condition = _Compare | _Join
_Node = _Condition | _Metric | _Number


def _describe(node: _Node) -> str:
    if isinstance(node, _Number):
        return f"the number {node.value!r}"
    if isinstance(node, _Metric):
        return f"the value {node.name}()"
    return "a condition"


class _Parser:
    """Recursive descent over oxy's grammar, with Go's precedence: ``||`` < ``&&`` < comparison.

    vulcand/predicate ``parse.go`` (``predicateParser.parse``): a binary ``&&``/``||`` joins
    two predicates; a comparison takes a function value on the left and a literal on the
    right (``predicates_operators.go``: ``gt(m any, value any)`` type-switches ``m`` on the
    function kinds); parentheses group (``*ast.ParenExpr``); function arguments must be bare
    literals (``evaluateArguments`` knows no parentheses, no signs); a unary operator
    (``!``, ``-``) has no operator function and is refused.
    """

    def __init__(self, tokens: Iterator[_Token]) -> None:
        self.tokens = tokens
        self.tok = next(tokens)

    def advance(self) -> _Token:
        tok = self.tok
        if tok.kind != "eof":
            self.tok = next(self.tokens)
        return tok

    def fail(self, reason: str, tok: _Token | None = None) -> ExpressionError:
        tok = tok or self.tok
        if tok.kind == "eof":
            reason = f"the expression ends too early: {reason}"
        return ExpressionError(reason, tok.column)

    def parse(self) -> _Condition:
        if self.tok.kind == "eof":
            raise self.fail("empty expression")
        node, column = self.parse_or(0)
        if self.tok.kind != "eof":
            raise self.fail(f"unexpected {self.tok.text!r} after a complete expression")
        if not isinstance(node, _Compare | _Join):
            raise ExpressionError(
                f"the expression is {_describe(node)}, not a condition: compare it with a "
                "number, e.g. NetworkErrorRatio() > 0.5",
                column,
            )
        return node

    def parse_or(self, depth: int) -> tuple[_Node, int]:
        return self.parse_join("||", depth)

    def parse_join(self, op: str, depth: int) -> tuple[_Node, int]:
        def operand() -> tuple[_Node, int]:
            return self.parse_join("&&", depth) if op == "||" else self.parse_comparison(depth)

        first, column = operand()
        if self.tok.kind != op:
            return first, column
        terms: list[tuple[_Node, int]] = [(first, column)]
        while self.tok.kind == op:
            self.advance()
            terms.append(operand())
        for node, col in terms:
            if not isinstance(node, _Compare | _Join):
                raise ExpressionError(
                    f"{op!r} joins conditions, but this is {_describe(node)}; compare it with "
                    "a number",
                    col,
                )
        conditions = tuple(n for n, _ in terms if isinstance(n, _Compare | _Join))
        return _Join(op, conditions), column

    def parse_comparison(self, depth: int) -> tuple[_Node, int]:
        left, column = self.parse_operand(depth)
        if self.tok.kind not in _COMPARISONS:
            return left, column
        op_tok = self.advance()
        right, right_column = self.parse_operand(depth)
        if self.tok.kind in _COMPARISONS:
            raise self.fail("comparisons cannot be chained; join them with '&&' or '||'")
        if not isinstance(left, _Metric):
            raise ExpressionError(
                f"the left side of {op_tok.text!r} must be a function such as "
                f"NetworkErrorRatio(), not {_describe(left)} (oxy compares a function with a "
                "number, in that order)",
                column,
            )
        if not isinstance(right, _Number):
            raise ExpressionError(
                f"the right side of {op_tok.text!r} must be a number, not {_describe(right)}",
                right_column,
            )
        if (left.kind == "float") != right.is_float:
            want = "a float literal such as 0.5" if left.kind == "float" else "an integer"
            raise ExpressionError(
                f"{left.name}() returns {'a float' if left.kind == 'float' else 'an integer'}, "
                f"so oxy compares it only with {want}, not {right.value!r}",
                right_column,
            )
        return _Compare(left, op_tok.text, right.value), column

    def parse_operand(self, depth: int) -> tuple[_Node, int]:
        tok = self.tok
        if tok.kind == "(":
            if depth >= MAX_NESTING_DEPTH:
                raise self.fail(f"parentheses nested deeper than {MAX_NESTING_DEPTH}")
            self.advance()
            if self.tok.kind == ")":
                raise self.fail("empty parentheses")
            node, _ = self.parse_or(depth + 1)
            if self.tok.kind != ")":
                raise self.fail(f"expected ')' to close the '(' at column {tok.column}")
            self.advance()
            return node, tok.column
        if tok.kind in ("int", "float"):
            self.advance()
            return self.number(tok), tok.column
        if tok.kind == "ident":
            return self.call(), tok.column
        if tok.kind == "eof":
            raise self.fail("expected a function call, a number or '('")
        raise self.fail(f"expected a function call, a number or '(', found {tok.text!r}")

    def number(self, tok: _Token) -> _Number:
        if tok.kind == "float":
            value = float(tok.text)
            if math.isinf(value):
                raise ExpressionError(f"number {tok.text!r} is out of range", tok.column)
            return _Number(value, True, tok.column)
        ivalue = int(tok.text)
        if ivalue > _INT64_MAX:  # strconv.Atoi's range on 64-bit Go
            raise ExpressionError(f"integer {tok.text!r} is out of range", tok.column)
        return _Number(ivalue, False, tok.column)

    def call(self) -> _Metric:
        name_tok = self.advance()
        name = name_tok.text
        if self.tok.kind != "(":
            raise ExpressionError(
                f"{name!r} is not defined: only the calls {', '.join(f + '()' for f in _FUNCTIONS)} "
                "are known",
                name_tok.column,
            )
        if name not in _FUNCTIONS:
            raise ExpressionError(
                f"unknown function {name!r}; oxy knows {', '.join(_FUNCTIONS)}", name_tok.column
            )
        params, kind = _FUNCTIONS[name]
        self.advance()
        args: list[_Number] = []
        while self.tok.kind != ")":
            tok = self.tok
            if tok.kind not in ("int", "float"):
                raise self.fail(
                    f"arguments of {name} must be number literals"
                    + ("" if tok.kind == "eof" else f", found {tok.text!r}")
                )
            self.advance()
            args.append(self.number(tok))
            if self.tok.kind == ",":
                self.advance()  # Go accepts a trailing comma in a call
            elif self.tok.kind != ")":
                raise self.fail(f"expected ',' or ')' in the call of {name}")
        self.advance()
        if len(args) != len(params):
            bad = args[len(params)] if len(args) > len(params) else None
            raise ExpressionError(
                f"{name} takes {len(params)} argument{'s' if len(params) != 1 else ''}, "
                f"got {len(args)}",
                bad.column if bad else name_tok.column,
            )
        for arg, param in zip(args, params, strict=True):
            if arg.is_float != (param == "float"):
                want = "a float (write 50.0, not 50)" if param == "float" else "an integer"
                raise ExpressionError(
                    f"argument {arg.value!r} of {name} must be {want}", arg.column
                )
        return _Metric(name, tuple(a.value for a in args), kind, name_tok.column)


@dataclass(frozen=True)
class Expression:
    """A parsed circuit-breaker condition; evaluate it against the metrics at a time.

    Attributes:
        text: The expression as written.
    """

    text: str
    _root: _Condition = field(repr=False)

    def evaluate(self, metrics: RollingMetrics, now: float) -> bool:
        """Whether the condition holds on ``metrics`` at ``now`` (seconds)."""
        return self._root.holds(metrics, now)

    def __str__(self) -> str:
        return self.text


def parse_expression(text: str) -> Expression:
    """Parse one of oxy's circuit-breaker expressions, with our own tokenizer and parser.

    The language (vulcand/predicate ``parse.go`` over Go's syntax, with oxy's definitions in
    ``cbreaker/predicates.go`` ``parseExpression``): a condition is ``Function(args) op
    number`` with ``op`` one of ``> < >= <= == !=``, the function on the left; conditions are
    joined with ``&&`` and ``||`` (``&&`` binds tighter, as in Go) and grouped with
    parentheses. ``NetworkErrorRatio()`` and ``ResponseCodeRatio(a, b, c, d)`` (integer
    arguments) are floats and compare only with float literals (``> 0.5``, never ``> 0``);
    ``LatencyAtQuantileMS(q)`` (a float argument: ``50.0``) and ``RequestThreshold()`` are
    integers and compare only with integer literals. Nothing here is ever executed: the text
    is tokenized and parsed into a tree that reads the metrics.

    Narrower than Go on purpose: numbers are decimal only (Go would also read hex floats and
    ``1_000.5`` in a float literal), and there are no comments. Input is capped at
    ``MAX_EXPRESSION_CHARS`` characters and ``MAX_NESTING_DEPTH`` levels of parentheses.

    Args:
        text: The expression, e.g. ``NetworkErrorRatio() > 0.30``.

    Returns:
        The parsed expression.

    Raises:
        ExpressionError: What is wrong, with its 1-based ``column``.
    """
    if not isinstance(text, str):
        raise ExpressionError(f"the expression must be a string, not {type(text).__name__}", 1)
    if len(text) > MAX_EXPRESSION_CHARS:
        raise ExpressionError(
            f"the expression is {len(text)} characters long; the limit is {MAX_EXPRESSION_CHARS}",
            MAX_EXPRESSION_CHARS + 1,
        )
    return Expression(text, _Parser(_tokenize(text)).parse())


# ---------------------------------------------------------------------------------------------
# Metrics: oxy's memmetrics.RTMetrics
# ---------------------------------------------------------------------------------------------


class _RollingCounter:
    """oxy ``memmetrics/counter.go`` ``RollingCounter``: ``buckets`` slots of ``resolution_s``.

    A slot is the time truncated to the resolution (Go's ``Time.Truncate``); its bucket is the
    truncated time in whole seconds modulo the bucket count (``getBucket``: ``Unix() % len``).
    ``cleanup`` zeroes the buckets of the slots after the last update, up to ``now``. So a count
    made in slot ``s`` is gone once ``now`` reaches slot ``s + buckets``.
    """

    def __init__(self, buckets: int, resolution_s: float) -> None:
        self.resolution_s = resolution_s
        self.values = [0] * buckets
        self.last_slot: int | None = None  # slot of lastUpdated; None for Go's zero time

    def _bucket(self, slot: int) -> int:
        return math.floor(slot * self.resolution_s) % len(self.values)

    def _cleanup(self, now: float) -> None:
        if self.last_slot is None:
            return  # every bucket is already zero (new, or Reset)
        now_slot = math.floor(now / self.resolution_s)
        for i in range(len(self.values)):
            slot = now_slot - i
            if slot <= self.last_slot:
                break
            self.values[self._bucket(slot)] = 0

    def inc(self, now: float, v: int = 1) -> None:
        self._cleanup(now)
        slot = math.floor(now / self.resolution_s)
        self.values[self._bucket(slot)] += v
        self.last_slot = slot

    def count(self, now: float) -> int:
        self._cleanup(now)
        return sum(self.values)

    def reset(self) -> None:
        self.values = [0] * len(self.values)
        self.last_slot = None


# HdrHistogram as oxy builds it (memmetrics/roundtrip.go: histMin 1, histMax 3,600,000,000 µs,
# 2 significant figures), from hdrhistogram-go hdr.go ``New``: single-unit resolution up to
# 2 * 10**2 = 200, rounded up to a power of two: 256 sub-buckets (half 128, magnitude 7), unit
# magnitude 0; getBucketsNeededToCoverValue(256, 3.6e9) = 25 buckets, so a value is recordable
# below 256 << 24 = 2**32 µs (RecordValues fails above, and oxy ignores the error).
_HDR_SUB_BUCKET_MASK = 255
_HDR_SUB_BUCKET_HALF_MAGNITUDE = 7


def _hdr_buckets_needed(smallest_untrackable: int, highest: int) -> int:
    needed = 1
    while smallest_untrackable < highest:
        smallest_untrackable <<= 1
        needed += 1
    return needed


_HDR_LIMIT_US = 256 << (_hdr_buckets_needed(256, 3_600_000_000) - 1)


def _hdr_bucket(v: int) -> int:
    # hdr.go getBucketIndex: pow2ceiling(v | subBucketMask) - unitMagnitude - (halfMagnitude+1)
    return (v | _HDR_SUB_BUCKET_MASK).bit_length() - (_HDR_SUB_BUCKET_HALF_MAGNITUDE + 1)


def _hdr_lowest_equivalent(v: int) -> int:
    b = _hdr_bucket(v)
    return (v >> b) << b


def _hdr_highest_equivalent(v: int) -> int:
    b = _hdr_bucket(v)
    return ((v >> b) << b) + (1 << b) - 1


class _RollingHistogram:
    """oxy ``memmetrics/histogram.go`` ``RollingHDRHistogram``: ``buckets`` sub-histograms.

    ``getHist`` rotates to the next sub-histogram (clearing it) when a value is recorded
    ``period_s`` or more after the last rotation; reading (``Merged``) never rotates. So the
    window is the last ``buckets`` rotations that recording caused, not a time span: with no
    traffic, old latencies stay.
    """

    def __init__(self, buckets: int, period_s: float) -> None:
        self.period_s = period_s
        self.subs: list[dict[int, int]] = [{} for _ in range(buckets)]
        self.idx = 0
        self.last_roll: float | None = None  # Go's zero time: the first record rotates

    def record(self, now: float, value_us: int) -> None:
        if self.last_roll is None or now - self.last_roll >= self.period_s:
            self.idx = (self.idx + 1) % len(self.subs)
            self.subs[self.idx] = {}
            self.last_roll = now
        if 0 <= value_us < _HDR_LIMIT_US:
            key = _hdr_lowest_equivalent(value_us)
            sub = self.subs[self.idx]
            sub[key] = sub.get(key, 0) + 1

    def reset(self, now: float) -> None:
        self.subs = [{} for _ in self.subs]
        self.idx = 0
        self.last_roll = now

    def value_at_percentile(self, percentile: float) -> int:
        """hdr.go ``ValueAtPercentile`` on the merged sub-histograms, in µs."""
        merged: dict[int, int] = {}
        for sub in self.subs:
            for key, count in sub.items():
                merged[key] = merged.get(key, 0) + count
        total = sum(merged.values())
        percentile = min(percentile, 100.0)
        count_at = int(percentile / 100 * total + 0.5)
        value = 0
        seen = 0
        for key in sorted(merged):
            if seen >= count_at:
                break
            seen += merged[key]
            value = key
        if percentile == 0.0:
            return _hdr_lowest_equivalent(value)
        return _hdr_highest_equivalent(value)


class RollingMetrics:
    """oxy ``memmetrics/roundtrip.go`` ``RTMetrics``: what a circuit breaker watches.

    Counters (total, network errors, one per status code) over a rolling window of ``buckets``
    slots of ``window_s / buckets`` seconds (oxy: 10 buckets of 1 s, ``counterBuckets`` and
    ``counterResolution``), and a rolling latency histogram of ``histogram_buckets``
    sub-histograms rotated every ``histogram_period_s`` (oxy: 6 of 10 s, ``histBuckets`` and
    ``histPeriod``; see ``_RollingHistogram`` for when it forgets).

    Args:
        window_s: Counter window, seconds.
        buckets: Counter buckets; the resolution ``window_s / buckets`` must be at least 1 s
            (``NewCounter``).
        histogram_period_s: Histogram rotation period, seconds.
        histogram_buckets: Histogram sub-histograms.
    """

    def __init__(
        self,
        window_s: float = 10.0,
        buckets: int = 10,
        *,
        histogram_period_s: float = 10.0,
        histogram_buckets: int = 6,
    ) -> None:
        if buckets < 1:
            raise ValueError(f"buckets must be at least 1, got {buckets}")
        resolution_s = window_s / buckets
        if not resolution_s >= 1.0:
            raise ValueError(
                f"window_s / buckets must be at least 1 s (oxy's NewCounter), got {resolution_s}"
            )
        if histogram_buckets < 1 or not histogram_period_s > 0:
            raise ValueError("histogram_buckets must be >= 1 and histogram_period_s > 0")
        self._buckets = buckets
        self._resolution_s = resolution_s
        self._total = _RollingCounter(buckets, resolution_s)
        self._net_errors = _RollingCounter(buckets, resolution_s)
        self._codes: dict[int, _RollingCounter] = {}
        self._histogram = _RollingHistogram(histogram_buckets, histogram_period_s)

    def record(self, now: float, status: int, latency_s: float) -> None:
        """Count one response (``RTMetrics.Record``).

        A network error is a 502 or a 504 (``http.StatusBadGateway``,
        ``http.StatusGatewayTimeout``): what Traefik's proxy answers when the upstream
        connection fails or times out.

        Args:
            now: Time of the response, seconds.
            status: HTTP status code.
            latency_s: Round-trip latency, seconds (recorded in whole µs).
        """
        if not (math.isfinite(latency_s) and latency_s >= 0):
            raise ValueError(f"latency_s must be finite and >= 0, got {latency_s}")
        self._total.inc(now)
        if status in (502, 504):
            self._net_errors.inc(now)
        counter = self._codes.get(status)
        if counter is None:
            counter = self._codes[status] = _RollingCounter(self._buckets, self._resolution_s)
        counter.inc(now)
        # HDRHistogram.RecordLatencies: int64(d / time.Microsecond), d in whole nanoseconds.
        self._histogram.record(now, round(latency_s * 1e9) // 1000)

    def reset(self, now: float) -> None:
        """Forget everything (``RTMetrics.Reset``, done when the breaker trips)."""
        self._histogram.reset(now)
        self._total.reset()
        self._net_errors.reset()
        self._codes = {}

    def total_count(self, now: float) -> int:
        """Responses in the window (``TotalCount``; ``RequestThreshold()``)."""
        return self._total.count(now)

    def network_error_ratio(self, now: float) -> float:
        """Network errors / responses in the window; 0 with no response."""
        total = self._total.count(now)
        if total == 0:
            return 0.0
        return self._net_errors.count(now) / total

    def response_code_ratio(
        self, now: float, start_a: int, end_a: int, start_b: int, end_b: int
    ) -> float:
        """Count of codes in [start_a, end_a) / count in [start_b, end_b); 0 if the latter is 0.

        ``RTMetrics.ResponseCodeRatio``: half-open ranges, so ``ResponseCodeRatio(500, 600, 0,
        600)`` is the share of 5xx among all responses.
        """
        a = 0
        b = 0
        for code, counter in self._codes.items():
            if start_a <= code < end_a:
                a += counter.count(now)
            if start_b <= code < end_b:
                b += counter.count(now)
        if b != 0:
            return a / b
        return 0.0

    def latency_at_quantile_ms(self, now: float, quantile: float) -> int:
        """Latency at ``quantile`` in whole milliseconds (``latencyAtQuantile``).

        ``quantile`` is a percentile, 0 to 100 (hdrhistogram-go's ``ValueAtQuantile`` is
        ``ValueAtPercentile``): ``LatencyAtQuantileMS(50.0)`` is the median. The value is the
        highest equivalent value of its HDR bucket (2 significant figures), truncated to ms.
        0 with no data. ``now`` is unused: reading never rotates the histogram.
        """
        del now
        return self._histogram.value_at_percentile(quantile) // 1000


# ---------------------------------------------------------------------------------------------
# The circuit breaker: oxy cbreaker
# ---------------------------------------------------------------------------------------------


class CircuitBreaker:
    """oxy's circuit breaker (``cbreaker/cbreaker.go``) as Traefik's middleware runs it.

    - standby: every request goes through. After each response (``serve`` then
      ``checkAndSet``), if ``now`` is strictly after the next check time, the next check is
      set to ``now + check_period_s`` and the condition is evaluated; if it holds, the breaker
      trips: state tripped until ``now + fallback_s``, metrics reset. The first response ever
      is always checked.
    - tripped: every request gets the fallback (503) until ``until``. The first request at or
      after ``until`` moves it to recovering (``setRecovering``: until ``now + recovery_s``,
      measured from that request, not from the end of the fallback) and is then treated as a
      recovering one. Fallback answers are not recorded.
    - recovering: a request strictly after ``until`` moves it to standby and goes through.
      Otherwise ``ratioController.allowRequest``: it goes through if (allowed + 1) /
      (allowed + denied + 1) < 0.5 * (now - start) / recovery_s: the cumulative share let
      through since the ramp began follows a target that grows linearly from 0 to 1/2, so under
      steady traffic the share let through at a given moment grows from 0 to about 1, and half
      of the ramp's requests get through in all. Deterministic: no random draw. Responses are
      recorded and checked as in standby, so the condition can trip it again.

    Args:
        expression: The trip condition.
        check_period_s: Minimum time between checks, seconds (oxy and Traefik: 0.1).
        fallback_s: Time in tripped, seconds (10).
        recovery_s: Length of the recovery ramp, seconds (10).

    Attributes:
        state: ``"standby"``, ``"tripped"`` or ``"recovering"``.
        transitions: ``(time, new state)`` for every change.
        trips: Times it tripped.
        response_code: The fallback's status (503).
        metrics: The rolling metrics the condition reads.
    """

    def __init__(
        self,
        expression: Expression,
        check_period_s: float = 0.1,
        fallback_s: float = 10.0,
        recovery_s: float = 10.0,
    ) -> None:
        for name, value in (
            ("check_period_s", check_period_s),
            ("fallback_s", fallback_s),
            ("recovery_s", recovery_s),
        ):
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {value}")
        self.expression = expression
        self.check_period_s = check_period_s
        self.fallback_s = fallback_s
        self.recovery_s = recovery_s
        self.response_code = FALLBACK_STATUS
        self.metrics = RollingMetrics()
        self.state = "standby"
        self.until = 0.0
        self.transitions: list[tuple[float, str]] = []
        self.trips = 0
        self._last_check = -math.inf
        self._ramp_start = 0.0
        self._allowed = 0
        self._denied = 0

    def _set_state(self, now: float, state: str, until: float) -> None:
        self.state = state
        self.until = until
        self.transitions.append((now, state))

    def allow(self, now: float, uniform: Callable[[], float] | None = None) -> bool:
        """Whether a request at ``now`` goes through; False: answer ``response_code``.

        ``activateFallback`` inverted. ``uniform`` is accepted for the router's sake and never
        called: oxy's recovery ramp is a deterministic ratio controller.
        """
        del uniform
        if self.state == "standby":
            return True
        if self.state == "tripped":
            if now < self.until:
                return False
            self._set_state(now, "recovering", now + self.recovery_s)
            self._ramp_start = now
            self._allowed = 0
            self._denied = 0
        if now > self.until:
            self._set_state(now, "standby", now)
            return True
        # ratio.go ratioController.allowRequest / targetRatio.
        target = 0.5 * (now - self._ramp_start) / self.recovery_s
        if (self._allowed + 1) / (self._allowed + self._denied + 1) < target:
            self._allowed += 1
            return True
        self._denied += 1
        return False

    def record(self, now: float, status: int, latency_s: float) -> None:
        """Record the response of a request ``allow`` let through, then maybe check.

        Args:
            now: Time of the response, seconds.
            status: Its HTTP status.
            latency_s: Its latency through the breaker, seconds.
        """
        self.metrics.record(now, status, latency_s)
        # checkAndSet: timeToCheck is now.After(lastCheck), strictly.
        if not now > self._last_check:
            return
        self._last_check = now + self.check_period_s
        if self.state == "tripped":
            return
        if not self.expression.evaluate(self.metrics, now):
            return
        self._set_state(now, "tripped", now + self.fallback_s)
        self.trips += 1
        self.metrics.reset(now)


# ---------------------------------------------------------------------------------------------
# The rate limiter: Traefik's ratelimiter middleware over golang.org/x/time/rate
# ---------------------------------------------------------------------------------------------

_MAX_SOURCES = 65536  # rate_limiter.go maxSources


@dataclass
class _Bucket:
    tokens: float
    last: float | None  # None: Go's zero time, so the first advance fills the bucket
    expiry_s: int = 0


class RateLimiter:
    """Traefik's rate limiter: one token bucket per source, requests delayed or refused.

    ``rate_limiter.go`` ``New``: rate = average / period; burst at least 1; ``maxDelay`` is
    1 s / (2 * int(rate)) (integer nanoseconds) for a rate of 1/s or more, else 0.5 s.
    ``ServeHTTP`` and ``in_memory_limiter.go`` ``Allow``: the source's bucket reserves a
    token (``rate.Limiter.Reserve``): with tokens left the request goes at once; otherwise it
    would wait ``-tokens / rate`` (truncated to ns), and it waits if that is at most
    ``maxDelay``, else the reservation is cancelled (its token given back: ``CancelAt``) and
    the answer is 429. Buckets start full (``NewLimiter``) and are dropped after ``ttl``
    whole seconds without a request (``ttlmap``: expiry ``Unix(now + ttl)``, expired when
    ``expiry <= Unix(now)``; ttl 2 s for a rate of 1/s or more, else 1 + int(1 / rate)), so
    a source that comes back gets a full bucket. Sources are keyed by client IP by default
    (``SourceCriterion`` defaults to ``IPStrategy{}``: the remote address); pass the client's
    name as ``source``.

    Args:
        average: Requests allowed per ``period_s`` on average.
        burst: Bucket size, requests.
        period_s: Period of ``average``, seconds (Traefik's default 1 s).

    Attributes:
        limited: Requests refused (429).
        delayed: Requests let through after a wait.
    """

    def __init__(self, average: float, burst: int, period_s: float = 1.0) -> None:
        if not (math.isfinite(average) and average > 0):
            raise ValueError(f"average must be a finite number > 0, got {average}")
        if isinstance(burst, bool) or not isinstance(burst, int) or burst < 1:
            raise ValueError(f"burst must be an integer >= 1, got {burst!r}")
        if not (math.isfinite(period_s) and period_s > 0):
            raise ValueError(f"period_s must be a finite number > 0, got {period_s}")
        self.average = average
        self.burst = burst
        self.period_s = period_s
        self.rate_per_s = average / period_s
        if self.rate_per_s < 1:
            self.max_delay_ns = 500_000_000
            self.ttl_s = 1 + int(1 / self.rate_per_s)
        else:
            self.max_delay_ns = 1_000_000_000 // (int(self.rate_per_s) * 2)
            self.ttl_s = 2
        self.limited = 0
        self.delayed = 0
        self._buckets: dict[str, _Bucket] = {}

    @property
    def max_delay_s(self) -> float:
        """Longest wait a request is given before it is refused, seconds."""
        return self.max_delay_ns / 1e9

    def _bucket(self, now: float, source: str) -> _Bucket:
        unix_now = math.floor(now)
        bucket = self._buckets.get(source)
        if bucket is not None and bucket.expiry_s <= unix_now:
            del self._buckets[source]
            bucket = None
        if bucket is None:
            if len(self._buckets) >= _MAX_SOURCES:  # ttlmap freeSpace: earliest expiry goes
                oldest = min(self._buckets, key=lambda k: self._buckets[k].expiry_s)
                del self._buckets[oldest]
            bucket = self._buckets[source] = _Bucket(float(self.burst), None)
        bucket.expiry_s = math.floor(now + self.ttl_s)
        return bucket

    def reserve(self, now: float, source: str = "") -> float | None:
        """Reserve a token for a request at ``now``.

        Returns:
            The wait before forwarding it, seconds (0.0 at once), or None: refuse it (429).
        """
        bucket = self._bucket(now, source)
        # rate.go advance: refill for the time since the last reservation, capped at burst.
        tokens = float(self.burst)
        if bucket.last is not None:
            elapsed = max(0.0, now - bucket.last)
            tokens = min(float(self.burst), bucket.tokens + elapsed * self.rate_per_s)
        tokens -= 1.0
        wait_ns = int(-tokens / self.rate_per_s * 1e9) if tokens < 0 else 0
        bucket.last = now
        if wait_ns > self.max_delay_ns:
            # Reservation.CancelAt right away: nothing reserved since, so the token comes back.
            bucket.tokens = min(float(self.burst), tokens + 1.0)
            self.limited += 1
            return None
        bucket.tokens = tokens
        if wait_ns > 0:
            self.delayed += 1
        return wait_ns / 1e9

    def allow(self, now: float, source: str = "") -> bool:
        """Whether a request at ``now`` is let through (perhaps after ``reserve``'s wait)."""
        return self.reserve(now, source) is not None


# ---------------------------------------------------------------------------------------------
# Annotations: Traefik Mesh's pkg/annotations
# ---------------------------------------------------------------------------------------------

MESH_PREFIX = "mesh.traefik.io/"
LEGACY_PREFIX = "maesh.containo.us/"
_KNOWN = (
    "traffic-type",
    "scheme",
    "retry-attempts",
    "circuit-breaker-expression",
    "ratelimit-average",
    "ratelimit-burst",
)
_MIDDLEWARES = (
    "retry-attempts",
    "circuit-breaker-expression",
    "ratelimit-average",
    "ratelimit-burst",
)
_ATOI = re.compile(r"[+-]?[0-9]+")


class AnnotationError(ValueError):
    """An invalid Traefik Mesh service annotation.

    Attributes:
        key: The annotation key as written.
        column: For an expression, the 1-based column of the error in it; else None.
    """

    def __init__(self, key: str, reason: str, column: int | None = None) -> None:
        where = f" at column {column}" if column is not None else ""
        super().__init__(f"annotation {key!r}{where}: {reason}")
        self.key = key
        self.column = column


@dataclass(frozen=True)
class TraefikServiceConfig:
    """What a service's annotations ask of Traefik Mesh.

    Attributes:
        traffic_type: ``"http"``, ``"tcp"`` or ``"udp"``.
        scheme: ``"http"``, ``"h2c"`` or ``"https"`` (to the pods, for HTTP services).
        retry_attempts: Total tries (Traefik's ``Retry.Attempts``; retries on network errors
            only, never once the request was written; Mesh sets no backoff), or None.
        circuit_breaker: The breaker's condition, or None.
        ratelimit_average: Requests per second on average, or None.
        ratelimit_burst: Bucket size, or None.
    """

    traffic_type: str = "http"
    scheme: str = "http"
    retry_attempts: int | None = None
    circuit_breaker: Expression | None = None
    ratelimit_average: float | None = None
    ratelimit_burst: int | None = None

    def new_circuit_breaker(self) -> CircuitBreaker | None:
        """A fresh breaker with Traefik's defaults (Mesh sets only the expression)."""
        return CircuitBreaker(self.circuit_breaker) if self.circuit_breaker else None

    def new_rate_limiter(self) -> RateLimiter | None:
        """A fresh rate limiter (Mesh sets only average and burst: period 1 s)."""
        if self.ratelimit_average is None or self.ratelimit_burst is None:
            return None
        return RateLimiter(self.ratelimit_average, self.ratelimit_burst)


def _atoi(key: str, value: str) -> int:
    # strconv.Atoi: optional sign, ASCII decimal digits, int64 range; no spaces, no '_'.
    if not _ATOI.fullmatch(value):
        raise AnnotationError(key, f"{value!r} is not an integer")
    number = int(value)
    if not -(2**63) <= number <= _INT64_MAX:
        raise AnnotationError(key, f"{value!r} is out of range")
    return number


def parse_annotations(
    annotations: Mapping[str, str], *, default_traffic_type: str = "http"
) -> TraefikServiceConfig:
    """Read a service's ``mesh.traefik.io/*`` and legacy ``maesh.containo.us/*`` annotations.

    As Traefik Mesh does (``pkg/annotations/annotations.go``): a ``mesh.traefik.io/`` key wins
    over its ``maesh.containo.us/`` twin; ``traffic-type`` is http, tcp or udp (default: the
    controller's ``defaultMode``, http); ``scheme`` is http, h2c or https; integers are read
    with ``strconv.Atoi``; the rate limit needs both average and burst > 0.

    Stricter than Traefik Mesh, on purpose (a mistake silently ignored is worse than an
    error): an unknown key under either prefix is an error (Mesh ignores it); a rate limit
    with only one of average and burst is an error (Mesh builds no rate limit); middleware
    annotations on a tcp or udp service are an error (Mesh ignores them); ``retry-attempts``
    below 1 is an error here (Mesh accepts it and Traefik's retry middleware then refuses it,
    ``incorrect (or empty) value for attempt``); the expression is checked here (Mesh passes
    it through and Traefik fails to build the middleware). Where Mesh does report an error, the
    service gets no configuration at all (``BuildConfig``).

    Args:
        annotations: The service's annotations.
        default_traffic_type: Traffic type when none is annotated.

    Returns:
        The service's configuration.

    Raises:
        AnnotationError: Naming the key (and, for an expression, the column).
    """
    for key in sorted(annotations):
        for prefix in (MESH_PREFIX, LEGACY_PREFIX):
            if key.startswith(prefix) and key[len(prefix) :] not in _KNOWN:
                raise AnnotationError(
                    key, f"unknown Traefik Mesh annotation; known names: {', '.join(_KNOWN)}"
                )

    def get(name: str) -> tuple[str, str] | None:
        for prefix in (MESH_PREFIX, LEGACY_PREFIX):
            key = prefix + name
            if key in annotations:
                value = annotations[key]
                if not isinstance(value, str):
                    raise AnnotationError(key, f"the value must be a string, got {value!r}")
                return key, value
        return None

    traffic_type = default_traffic_type
    found = get("traffic-type")
    if found is not None:
        key, traffic_type = found
        if traffic_type not in ("http", "tcp", "udp"):
            raise AnnotationError(
                key, f"unsupported traffic type {traffic_type!r}; use http, tcp or udp"
            )
    scheme = "http"
    found = get("scheme")
    if found is not None:
        key, scheme = found
        if scheme not in ("http", "h2c", "https"):
            raise AnnotationError(key, f"unsupported scheme {scheme!r}; use http, h2c or https")

    if traffic_type != "http":
        for name in _MIDDLEWARES:
            found = get(name)
            if found is not None:
                raise AnnotationError(
                    found[0],
                    f"Traefik Mesh applies middlewares to http services only; this service's "
                    f"traffic type is {traffic_type}, so the annotation would be ignored",
                )
        return TraefikServiceConfig(traffic_type=traffic_type, scheme=scheme)

    retry_attempts: int | None = None
    found = get("retry-attempts")
    if found is not None:
        retry_attempts = _atoi(*found)
        if retry_attempts < 1:
            raise AnnotationError(
                found[0], f"must be at least 1 (total tries), got {retry_attempts}"
            )

    circuit_breaker: Expression | None = None
    found = get("circuit-breaker-expression")
    if found is not None:
        try:
            circuit_breaker = parse_expression(found[1])
        except ExpressionError as e:
            raise AnnotationError(found[0], e.reason, e.column) from None

    average = get("ratelimit-average")
    burst = get("ratelimit-burst")
    ratelimit_average: float | None = None
    ratelimit_burst: int | None = None
    if average is not None or burst is not None:
        if average is None or burst is None:
            given, missing = (
                (average, "ratelimit-burst") if burst is None else (burst, "ratelimit-average")
            )
            assert given is not None
            prefix = given[0][: -len(given[0].split("/", 1)[1])]
            raise AnnotationError(
                given[0],
                f"needs {prefix}{missing} too (Traefik Mesh silently drops a rate limit "
                "with only one of them)",
            )
        average_value = _atoi(*average)
        burst_value = _atoi(*burst)
        for (key, _), value in ((average, average_value), (burst, burst_value)):
            if value <= 0:
                raise AnnotationError(key, f"must be greater than 0, got {value}")
        ratelimit_average = float(average_value)
        ratelimit_burst = burst_value

    return TraefikServiceConfig(
        traffic_type=traffic_type,
        scheme=scheme,
        retry_attempts=retry_attempts,
        circuit_breaker=circuit_breaker,
        ratelimit_average=ratelimit_average,
        ratelimit_burst=ratelimit_burst,
    )
