"""The defaults table (models/defaults.py) against the real systems' defaults.

Each expectation below is a row of shared/REFERENCE.md (sections 1, 2, 3 and 7), quoted in
its comment. When the reference file is at hand (the project's shared folder next to the
repository), the quoted text is also looked for in it, so a reference that changes and a
table that does not fail together.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from models.dataplane import ISTIO_RETRIES
from models.defaults import ENVOY, ISTIO, ISTIO_RETRY_ON, TRAEFIK, UNLIMITED, parse_retry_on
from models.per_node import PerNodeSpec
from models.policies import ConsistentHash, DestinationRule, OutlierDetection
from models.routing import compile_policies
from models.sidecar import SidecarSpec
from topologies import CallGraphSpec, ServiceSpec

REFERENCE = Path(__file__).resolve().parents[3] / "shared" / "REFERENCE.md"

# (table key, value, the text of REFERENCE.md that gives it)
ROWS = [
    (ISTIO, "retries.attempts", 2, "mesh default: 2 attempts on"),
    (
        ISTIO,
        "retries.retryOn",
        "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes",
        "`connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes`",
    ),
    (ISTIO, "retries.retriableStatusCodes", (503,), "with retriable code 503"),
    (ISTIO, "retries.hostSelectionRetryMaxAttempts", 5, "host-selection retry attempts 5"),
    (ISTIO, "retries.backoffBase", 0.025, "base 25 ms, max interval 10 × base"),
    (ISTIO, "retries.backoffMax", 0.25, "base 25 ms, max interval 10 × base"),
    (ISTIO, "timeout", None, "| `http[].timeout` | whole request timeout | off |"),
    (ISTIO, "mirrorPercentage", 100.0, "100 % when set"),
    (ISTIO, "loadBalancer.simple", "LEAST_REQUEST", "LEAST_REQUEST recommended"),
    (ISTIO, "consistentHash.minimumRingSize", 1024, "ring 1024"),
    (ISTIO, "connectionPool.tcp.maxConnections", UNLIMITED, "2^32-1 (Istio overrides"),
    (ISTIO, "connectionPool.tcp.connectTimeout", 10.0, "| 10 s |"),
    (ISTIO, "connectionPool.http.http1MaxPendingRequests", UNLIMITED, "2^32-1 each in Istio"),
    (ISTIO, "connectionPool.http.http2MaxRequests", UNLIMITED, "2^32-1 each in Istio"),
    (ISTIO, "connectionPool.http.maxRetries", UNLIMITED, "2^32-1 each in Istio"),
    (ISTIO, "connectionPool.http.maxRequestsPerConnection", 0, "0 = unlimited"),
    (ISTIO, "outlierDetection.consecutive5xxErrors", 5, "5 / 10 s / 30 s / 10 %"),
    (ISTIO, "outlierDetection.interval", 10.0, "5 / 10 s / 30 s / 10 %"),
    (ISTIO, "outlierDetection.baseEjectionTime", 30.0, "5 / 10 s / 30 s / 10 %"),
    (ISTIO, "outlierDetection.maxEjectionPercent", 10, "5 / 10 s / 30 s / 10 %"),
    (ISTIO, "mtls.mode", "PERMISSIVE", "`DISABLE`, `PERMISSIVE`, `STRICT` | PERMISSIVE"),
    (ISTIO, "authorization.action", "ALLOW", "else deny | ALLOW"),
    (ENVOY, "circuitBreakers.maxConnections", 1024, "`max_connections` 1024"),
    (ENVOY, "circuitBreakers.maxPendingRequests", 1024, "`max_pending_requests` 1024"),
    (ENVOY, "circuitBreakers.maxRequests", 1024, "`max_requests` 1024"),
    (ENVOY, "circuitBreakers.maxRetries", 3, "`max_retries` 3"),
    (ENVOY, "retryBudget.budgetPercent", 20.0, "retry budget 20 % of active + pending"),
    (ENVOY, "retryBudget.minRetryConcurrency", 3, "at least 3"),
    (ENVOY, "leastRequest.choiceCount", 2, "`choice_count` = 2"),
    (ENVOY, "outlierDetection.consecutive5xx", 5, "`consecutive_5xx` 5"),
    (ENVOY, "outlierDetection.maxEjectionTime", 300.0, "`max_ejection_time` 300 s"),
    (ENVOY, "panicThreshold", 50.0, "panic threshold 50 %"),
    (ENVOY, "localRateLimit.tokensPerFill", 1, "`tokens_per_fill` default 1"),
    (ENVOY, "localRateLimit.minFillInterval", 0.05, "at least 50 ms"),
    (ENVOY, "localRateLimit.status", 429, "answers 429"),
    (TRAEFIK, "circuitBreaker.checkPeriod", 0.1, "check period 100 ms"),
    (TRAEFIK, "circuitBreaker.fallbackDuration", 10.0, "fallback 10 s"),
    (TRAEFIK, "circuitBreaker.recoveryDuration", 10.0, "recovery 10 s"),
    (TRAEFIK, "circuitBreaker.status", 503, "an open breaker answers 503"),
    (TRAEFIK, "limits.http", 10, "`limits.http: 10`"),
    (TRAEFIK, "limits.tcp", 25, "`limits.tcp: 25`"),
    (TRAEFIK, "provider.pollInterval", 5.0, "polls every 5 s"),
    (TRAEFIK, "proxy.cpuRequest", 0.1, "proxy CPU request 100m"),
    (TRAEFIK, "proxy.cpuLimit", 0.2, "limit 200m"),
]


@pytest.mark.parametrize(("table", "key", "value", "quote"), ROWS, ids=[r[1] for r in ROWS])
def test_the_table_holds_the_reference_default(table, key, value, quote):
    assert table[key] == value
    if REFERENCE.exists():
        text = " ".join(REFERENCE.read_text(encoding="utf-8").split())
        assert " ".join(quote.split()) in text, f"REFERENCE.md no longer says {quote!r}"


def test_the_fields_left_out_take_the_tables_values():
    # A DestinationRule with an empty outlierDetection gets Istio's defaults.
    assert (
        ConsistentHash(httpHeaderName="x").minimumRingSize
        == ISTIO["consistentHash.minimumRingSize"]
    )
    od = OutlierDetection()
    assert od.consecutive5xxErrors is None  # absent: filled from the table when compiled
    rule = DestinationRule.model_validate(
        {
            "metadata": {"name": "r"},
            "spec": {"host": "srv", "trafficPolicy": {"outlierDetection": {}}},
        }
    )
    graph = CallGraphSpec(services=[ServiceSpec(name="srv")], entry="srv")
    cluster = compile_policies([rule], graph).clusters[("srv", None)]
    assert cluster.outlier == {
        "consecutive_5xx": 5,
        "consecutive_gateway": None,
        "interval_s": 10.0,
        "base_ejection_s": 30.0,
        "max_ejection_s": 300.0,
        "max_ejection_percent": 10.0,
    }
    assert cluster.panic_threshold == 0.0  # Istio: minHealthPercent, 0 when absent


def test_the_meshes_default_retries_are_the_real_ones():
    sidecar = SidecarSpec().retries.policy()
    assert SidecarSpec().retries == ISTIO_RETRIES
    assert sidecar.attempts == 2 and sidecar.on == ISTIO_RETRY_ON
    assert sidecar.backoff_base == 0.025 and sidecar.backoff_max == 0.25
    assert sidecar.on.retries("response", 503) and not sidecar.on.retries("response", 500)
    assert sidecar.on.retries("connect_failure", 0)
    # Traefik Mesh: no retries unless a service's retry-attempts annotation asks.
    assert PerNodeSpec().retries.attempts == 0
    assert TRAEFIK["retryAttempts"] is None


def test_retry_on_words_follow_envoys_conditions():
    on = parse_retry_on("5xx")
    assert on.retries("response", 500) and on.retries("timeout", 504)
    assert on.retries("connect_failure", 0) and not on.retries("response", 429)
    gateway = parse_retry_on("gateway-error")
    assert gateway.retries("response", 502) and not gateway.retries("response", 500)
    codes = parse_retry_on("429,connect-failure")
    assert codes.retries("response", 429) and not codes.retries("response", 503)
    assert not parse_retry_on("connect-failure").retries("timeout", 504)
    with pytest.raises(ValueError, match="unknown condition 'sometimes'"):
        parse_retry_on("5xx,sometimes")
    with pytest.raises(ValueError, match="not an HTTP status"):
        parse_retry_on("999")
