"""The real systems' defaults for every traffic-policy field meshsim models, in one table.

When a VirtualService, DestinationRule or annotation leaves a field out, the value used is the
one here, which is the one the real system uses (shared/REFERENCE.md sections 1-3 and 7, which
``tests/models/test_defaults.py`` checks this table against). Istio overrides several of
plain Envoy's defaults (circuit-breaker limits, the panic threshold), so each system has its
own column.

Also here: Envoy's ``retryOn`` words, parsed once (:func:`parse_retry_on`), and the decision
whether an attempt's outcome is retried (:meth:`RetryOn.retries`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "UNLIMITED",
    "ISTIO",
    "ENVOY",
    "TRAEFIK",
    "RetryOn",
    "parse_retry_on",
    "Outcome",
    "ISTIO_RETRY_ON",
    "CONNECT_FAILURE_ONLY",
]

UNLIMITED = 2**32 - 1
"""Istio's "no limit" for connection-pool fields (it overrides Envoy's 1024)."""

ISTIO: dict[str, Any] = {
    # VirtualService http[]: no timeout; the mesh-wide retry policy (meshConfig
    # defaultHttpRetryPolicy) when a route has no ``retries``.
    "timeout": None,
    "retries.attempts": 2,
    "retries.retryOn": "connect-failure,refused-stream,unavailable,cancelled,"
    "retriable-status-codes",
    "retries.retriableStatusCodes": (503,),
    "retries.perTryTimeout": None,
    "retries.hostSelectionRetryMaxAttempts": 5,
    "retries.backoffBase": 0.025,
    "retries.backoffMax": 0.25,
    "fault.percentage": 100.0,
    "mirrorPercentage": 100.0,
    # DestinationRule trafficPolicy.
    "loadBalancer.simple": "LEAST_REQUEST",
    "consistentHash.minimumRingSize": 1024,
    "connectionPool.tcp.maxConnections": UNLIMITED,
    "connectionPool.tcp.connectTimeout": 10.0,
    "connectionPool.http.http1MaxPendingRequests": UNLIMITED,
    "connectionPool.http.http2MaxRequests": UNLIMITED,
    "connectionPool.http.maxRequestsPerConnection": 0,
    "connectionPool.http.maxRetries": UNLIMITED,
    "connectionPool.http.idleTimeout": 3600.0,  # Envoy's HttpProtocolOptions.idle_timeout
    "outlierDetection.consecutive5xxErrors": 5,
    "outlierDetection.consecutiveGatewayErrors": None,
    "outlierDetection.interval": 10.0,
    "outlierDetection.baseEjectionTime": 30.0,
    "outlierDetection.maxEjectionTime": 300.0,
    "outlierDetection.maxEjectionPercent": 10,
    # Istio sets Envoy's healthy panic threshold from minHealthPercent, 0 when absent: panic
    # mode is off unless asked for.
    "outlierDetection.minHealthPercent": 0,
    "retryBudget.percent": 20.0,
    "retryBudget.minRetryConcurrency": 3,
    # PeerAuthentication and AuthorizationPolicy.
    "mtls.mode": "PERMISSIVE",
    "authorization.action": "ALLOW",
    "authorization.rootNamespace": "istio-system",
}

ENVOY: dict[str, Any] = {
    "circuitBreakers.maxConnections": 1024,
    "circuitBreakers.maxPendingRequests": 1024,
    "circuitBreakers.maxRequests": 1024,
    "circuitBreakers.maxRetries": 3,
    "retryBudget.budgetPercent": 20.0,
    "retryBudget.minRetryConcurrency": 3,
    "leastRequest.choiceCount": 2,
    "outlierDetection.consecutive5xx": 5,
    "outlierDetection.interval": 10.0,
    "outlierDetection.baseEjectionTime": 30.0,
    "outlierDetection.maxEjectionTime": 300.0,
    "outlierDetection.maxEjectionPercent": 10,
    "panicThreshold": 50.0,
    "localRateLimit.tokensPerFill": 1,
    "localRateLimit.minFillInterval": 0.05,
    "localRateLimit.status": 429,
}

TRAEFIK: dict[str, Any] = {
    "retryAttempts": None,
    "circuitBreaker.checkPeriod": 0.1,
    "circuitBreaker.fallbackDuration": 10.0,
    "circuitBreaker.recoveryDuration": 10.0,
    "circuitBreaker.status": 503,
    "acl.deniedStatus": 403,
    "acl.noRouteStatus": 404,
    "rateLimit.status": 429,
    "connectFailure.status": 502,
    "dialTimeout": 30.0,  # serversTransport.forwardingTimeouts.dialTimeout (Traefik docs)
    "limits.http": 10,
    "limits.tcp": 25,
    "provider.pollInterval": 5.0,
    "proxy.cpuRequest": 0.1,
    "proxy.cpuLimit": 0.2,
}

# --- retryOn ----------------------------------------------------------------------------------

_HTTP_WORDS = {
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "envoy-ratelimited",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "retriable-headers",
    "http3-post-connect-failure",
}
# gRPC statuses (``x-envoy-retry-grpc-on``), which Istio accepts in the same list. meshsim's
# services answer HTTP statuses, so these only ever match through gRPC's mapping of 503 to
# UNAVAILABLE (``unavailable``); the others never occur.
_GRPC_WORDS = {"cancelled", "deadline-exceeded", "internal", "resource-exhausted", "unavailable"}

Outcome = Literal["response", "connect_failure", "timeout", "reset"]
"""How an attempt ended: a response came back (with its status), the connection failed, the
per-try timeout fired, or the stream was reset."""


@dataclass(frozen=True, slots=True)
class RetryOn:
    """The conditions of a ``retryOn`` list, and the status codes retried by number."""

    words: frozenset[str]
    codes: frozenset[int]

    def retries(self, outcome: Outcome, status: int, grpc: bool = False) -> bool:
        """Whether an attempt that ended this way is retried (Envoy's retry_state_impl:
        ``wouldRetryFromReset`` and ``wouldRetryFromHeaders``)."""
        words = self.words
        if outcome != "response":
            if words & {"5xx", "gateway-error", "reset"}:
                return True
            return outcome == "connect_failure" and (
                "connect-failure" in words or "reset-before-request" in words
            )
        if status >= 500 and "5xx" in words:
            return True
        if status in (502, 503, 504) and "gateway-error" in words:
            return True
        if status == 409 and "retriable-4xx" in words:
            return True
        if status in self.codes and "retriable-status-codes" in words:
            return True
        return grpc and status == 503 and "unavailable" in words


def parse_retry_on(text: str, codes: tuple[int, ...] = ()) -> RetryOn:
    """Parse a ``retryOn`` value (``"5xx,connect-failure,503"``); numbers are retriable
    status codes (Istio adds them to ``retriable-status-codes``). Raises ValueError naming
    an unknown word."""
    words: set[str] = set()
    numbers = set(codes)
    for raw in text.split(","):
        word = raw.strip()
        if not word:
            continue
        if word.isdigit():
            code = int(word)
            if not 100 <= code <= 599:
                raise ValueError(f"retryOn: status {word} is not an HTTP status (100-599)")
            numbers.add(code)
            words.add("retriable-status-codes")
        elif word in _HTTP_WORDS or word in _GRPC_WORDS:
            words.add(word)
        else:
            known = ", ".join(sorted(_HTTP_WORDS | _GRPC_WORDS))
            raise ValueError(f"retryOn: unknown condition {word!r}; known: {known}")
    return RetryOn(frozenset(words), frozenset(numbers))


ISTIO_RETRY_ON = parse_retry_on(ISTIO["retries.retryOn"], ISTIO["retries.retriableStatusCodes"])
"""Istio's default retry conditions: connect failures and 503."""

CONNECT_FAILURE_ONLY = parse_retry_on("connect-failure")
"""Traefik Mesh's ``retry-attempts``: network errors only, never once the request was sent."""
