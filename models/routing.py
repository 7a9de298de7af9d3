"""Policies compiled into what the data plane runs: match tables, clusters, local answers.

:func:`compile_policies` turns an experiment's validated policy objects (:mod:`models.policies`)
and the topology's service annotations into one immutable :class:`PolicySet`, shared by every
proxy of the mesh:

* per destination host, the **routes** of its VirtualService or SMI TrafficSplit: an ordered
  list of (matches, :class:`Action`); the first rule whose match holds routes;
* per (host, subset), a :class:`ClusterPolicy`: which endpoints (a subset's labels), the load
  balancer, the connection-pool limits, the retry budget, outlier detection, the panic
  threshold;
* per workload, what its inbound proxy may answer itself: authorization (Istio's order) and
  Envoy's local rate limit;
* Traefik Mesh's per-service annotations and SMI access control.

At run time each proxy's router (:class:`models.router.Router`) makes a :class:`Cluster` per
(host, subset) it routes to, from its current configuration. A host without any policy gets
the plain cluster the mesh always had (its balancer, the mesh's retries), so a mesh without
policies runs what it ran before.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from models.connections import PoolLimits
from models.defaults import CONNECT_FAILURE_ONLY, ENVOY, ISTIO, UNLIMITED, RetryOn, parse_retry_on
from models.loadbalancer import make_balancer
from models.messages import Flags, Request, Response
from models.policies import (
    AuthorizationPolicy,
    DestinationRule,
    HTTPRouteGroup,
    LocalRateLimit,
    PeerAuthentication,
    StringMatch,
    TrafficPolicy,
    TrafficSplit,
    TrafficTarget,
    VirtualService,
    short_host,
)
from models.resilience import OutlierDetector, RetryBudget, TokenBucket, panic_hosts
from models.traefik import CircuitBreaker, RateLimiter, TraefikServiceConfig, parse_annotations
from sim.random import stable_hash
from topologies import CallGraphSpec

__all__ = [
    "RetryPolicy",
    "Fault",
    "Action",
    "Match",
    "HostRoutes",
    "ClusterPolicy",
    "PolicySet",
    "Cluster",
    "Counters",
    "compile_policies",
    "EMPTY_POLICIES",
    "NO_RETRY",
]


# --- counters ---------------------------------------------------------------------------------


class Counters:
    """Envoy's counters of one cluster or one proxy, by Envoy's stat names (counted from the
    start; the mesh resets them at the end of the warm-up)."""

    __slots__ = (
        "upstream_rq_total",
        "upstream_rq_retry",
        "upstream_rq_retry_overflow",
        "upstream_rq_retry_limit_exceeded",
        "upstream_rq_pending_overflow",
        "upstream_rq_timeout",
        "upstream_rq_per_try_timeout",
        "upstream_cx_connect_fail",
        "upstream_rq_5xx",
        "outlier_detection_ejections_total",
        "outlier_detection_ejections_overflow",
        "rq_mirrored",
        "fault_delays_injected",
        "fault_aborts_injected",
        "rbac_denied",
        "rate_limited",
        "circuit_breaker_open",
        "acl_denied",
        "no_route",
    )

    upstream_rq_total: int
    upstream_rq_retry: int
    upstream_rq_retry_overflow: int
    upstream_rq_retry_limit_exceeded: int
    upstream_rq_pending_overflow: int
    upstream_rq_timeout: int
    upstream_rq_per_try_timeout: int
    upstream_cx_connect_fail: int
    upstream_rq_5xx: int
    outlier_detection_ejections_total: int
    outlier_detection_ejections_overflow: int
    rq_mirrored: int
    fault_delays_injected: int
    fault_aborts_injected: int
    rbac_denied: int
    rate_limited: int
    circuit_breaker_open: int
    acl_denied: int
    no_route: int

    def __init__(self) -> None:
        for name in self.__slots__:
            setattr(self, name, 0)

    def reset(self) -> None:
        self.__init__()  # type: ignore[misc]

    def as_dict(self) -> dict[str, int]:
        """The counters that are not zero."""
        return {n: getattr(self, n) for n in self.__slots__ if getattr(self, n)}

    def add(self, other: Counters) -> None:
        for name in self.__slots__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


# --- what a route does ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """A router's retries: ``attempts`` after the first try, on what ``on`` names, each try
    with ``per_try_timeout`` (None: none), back-off from ``backoff_base`` up to
    ``backoff_max``, and ``host_attempts`` picks to find a host not tried yet."""

    attempts: int
    on: RetryOn
    per_try_timeout: float | None = None
    backoff_base: float = ISTIO["retries.backoffBase"]
    backoff_max: float = ISTIO["retries.backoffMax"]
    host_attempts: int = ISTIO["retries.hostSelectionRetryMaxAttempts"]


NO_RETRY = RetryPolicy(0, CONNECT_FAILURE_ONLY)


@dataclass(frozen=True, slots=True)
class Fault:
    """A VirtualService's fault: a delay and/or an abort, each on a share (0 to 1)."""

    delay_s: float = 0.0
    delay_share: float = 0.0
    abort_status: int = 0
    abort_share: float = 0.0


@dataclass(frozen=True, slots=True)
class Action:
    """What a matched route does: split over (host, subset) targets by cumulative weight,
    with a timeout (None: none), retries (None: the mesh's), a fault, a mirror."""

    targets: tuple[tuple[str, str | None], ...]
    cumulative: tuple[float, ...]
    timeout: float | None = None
    retry: RetryPolicy | None = None
    fault: Fault | None = None
    mirror: tuple[str, str | None] | None = None
    mirror_share: float = 0.0
    name: str = ""

    def target(self, uniform: Callable[[], float]) -> tuple[str, str | None]:
        """The (host, subset) this request goes to (one draw only when there is a split)."""
        if len(self.targets) == 1:
            return self.targets[0]
        return self.targets[bisect_right(self.cumulative, uniform() * self.cumulative[-1])]


class Match:
    """One match entry: every condition given holds (Istio's AND); None fields match all."""

    __slots__ = ("uri", "method", "headers")

    def __init__(
        self,
        uri: Callable[[str], bool] | None,
        method: Callable[[str], bool] | None,
        headers: tuple[tuple[str, Callable[[str], bool]], ...],
    ) -> None:
        self.uri = uri
        self.method = method
        self.headers = headers

    def __call__(self, request: Request) -> bool:
        if self.uri is not None and not self.uri(request.path):
            return False
        if self.method is not None and not self.method(request.method):
            return False
        headers = request.headers
        for name, test in self.headers:
            value = headers.get(name)
            if value is None or not test(value):
                return False
        return True


def _string_test(match: StringMatch) -> Callable[[str], bool]:
    if match.exact is not None:
        exact = match.exact
        return lambda s: s == exact
    if match.prefix is not None:
        prefix = match.prefix
        return lambda s: s.startswith(prefix)
    assert match.regex is not None
    pattern = re.compile(match.regex)
    return lambda s: pattern.fullmatch(s) is not None


@dataclass(frozen=True, slots=True)
class HostRoutes:
    """The rules of one host, in order: (matches, action); no matches = catch-all."""

    rules: tuple[tuple[tuple[Match, ...], Action], ...]

    def action(self, request: Request) -> Action | None:
        """The action of the first rule that matches ``request``; None: no route (404)."""
        for matches, action in self.rules:
            if not matches:
                return action
            for match in matches:
                if match(request):
                    return action
        return None


# --- clusters ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClusterPolicy:
    """A DestinationRule's traffic policy for one (host, subset), defaults filled in.

    Attributes:
        selector: the subset's labels (None: every endpoint of the host); or, for an SMI
            backend that names a workload, ``{"<workload>": name}``.
        lb: ``round_robin``, ``least_request``, ``random``, or None for the mesh's own.
        hash_on: consistent hashing: (``header``, name), (``cookie``, name) or
            (``source_ip``, ""); None for none.
        max_connections, max_pending, max_requests, max_requests_per_connection: the
            connection-pool limits, enforced per cluster (None: the proxy's own).
        idle_timeout: ``connectionPool.http.idleTimeout`` (seconds; None: the proxy's own).
        max_retries: retries in flight at once (None: unlimited, Istio's default).
        budget: (percent, min concurrency) of Envoy's retry budget, or None.
        outlier: the outlier detector's settings (``models.resilience.OutlierDetector``
            keywords), or None.
        panic_threshold: Envoy's healthy panic threshold, in percent.
    """

    selector: Mapping[str, str] | None = None
    lb: str | None = None
    hash_on: tuple[str, str] | None = None
    ring_size: int = ISTIO["consistentHash.minimumRingSize"]
    max_connections: int | None = None
    max_pending: int | None = None
    max_requests: int | None = None
    max_requests_per_connection: int | None = None
    idle_timeout: float | None = None
    max_retries: int | None = None
    budget: tuple[float, int] | None = None
    outlier: Mapping[str, Any] | None = None
    panic_threshold: float = ISTIO["outlierDetection.minHealthPercent"]
    connect_timeout: float | None = None

    @property
    def limits_pools(self) -> bool:
        """Whether the pools of this cluster share per-cluster limits."""
        return any(
            v is not None
            for v in (
                self.max_connections,
                self.max_pending,
                self.max_requests_per_connection,
                self.idle_timeout,
            )
        )


def _selects(selector: Mapping[str, str] | None, pod: Any) -> bool:
    if selector is None:
        return True
    if "<workload>" in selector:
        return bool(pod.workload == selector["<workload>"])
    labels = pod.labels
    return all(labels.get(k) == v for k, v in selector.items())


class Cluster:
    """An Envoy cluster of one proxy: the endpoints of a (host, subset), how one is picked,
    the circuit breakers, the retry budget and outlier detection; and its counters."""

    def __init__(
        self,
        proxy: Any,
        host: str,
        subset: str | None,
        policy: ClusterPolicy,
        endpoints: Sequence[Any],
        lb_policy: str,
        uniform: Callable[[], float],
        in_flight: dict[int, int],
        stats: Counters,
    ) -> None:
        self.proxy = proxy
        self.host = host
        self.subset = subset
        self.policy = policy
        self.all = [p for p in endpoints if _selects(policy.selector, p)]
        self.stats = stats
        self._lb = policy.lb or lb_policy
        self._uniform = uniform
        self._in_flight = in_flight
        self.active = 0  # requests in flight (max_requests, the retry budget)
        self.connect_timeout = policy.connect_timeout  # None: the mesh's
        self.max_requests = policy.max_requests if policy.max_requests is not None else UNLIMITED
        self.retries: RetryBudget | None = None
        if policy.max_retries is not None or policy.budget is not None:
            percent, least = policy.budget if policy.budget is not None else (None, 0)
            self.retries = RetryBudget(policy.max_retries, percent, least)
        self.limits: PoolLimits | None = None
        if policy.limits_pools:
            spec = proxy.spec.connection_pool
            self.limits = PoolLimits(
                policy.max_connections or spec.max_connections,
                policy.max_pending if policy.max_pending is not None else spec.max_pending_requests,
                policy.max_requests_per_connection
                if policy.max_requests_per_connection is not None
                else spec.max_requests_per_connection,
                policy.idle_timeout if policy.idle_timeout is not None else spec.idle_timeout,
            )
        self.outlier: OutlierDetector | None = None
        if policy.outlier is not None and self.all:
            self.outlier = OutlierDetector(self.all, start_s=proxy.env.now, **policy.outlier)
        self._outlier_version = -1
        self.balancer: Any = None
        self._ring: tuple[list[int], list[Any]] | None = None
        # The balancer's pick when a first try needs nothing else (see _rebuild), else None.
        self.simple_pick: Callable[[], Any] | None = None
        self.version = proxy.config_version  # the configuration its endpoints come from
        self._rebuild()

    def set_endpoints(self, endpoints: Sequence[Any]) -> None:
        """The endpoints of a new configuration (outlier state kept for those still there)."""
        self.all = [p for p in endpoints if _selects(self.policy.selector, p)]
        if self.outlier is not None and self.all:
            self.outlier.set_hosts(self.all)
        self._rebuild()

    def _rebuild(self) -> None:
        """The balancer over the hosts to use: the healthy ones (or all, in panic)."""
        hosts: Sequence[Any] = self.all
        self.simple_pick = None
        if self.outlier is not None:
            self._outlier_version = self.outlier.version
            hosts = panic_hosts(self.outlier.healthy(), self.all, self.policy.panic_threshold)
        if not hosts:
            self.balancer = None
            return
        self.balancer = make_balancer(self._lb, hosts, self._uniform, self._in_flight)  # type: ignore[arg-type]
        if self.policy.hash_on is not None:
            self._ring = _ring(hosts, self.policy.ring_size)
        elif self.outlier is None:
            # Nothing to check before a first try's pick (no ejection, no hash): the data
            # plane calls the balancer straight away (see models.dataplane.Exchange._try).
            self.simple_pick = self.balancer.pick

    def pick(self, request: Request, src: Any, tried: list[Any] | None, attempts: int) -> Any:
        """An endpoint for ``request``, or None when the cluster has none (``UH``); with
        ``tried``, up to ``attempts`` picks to find a host not tried yet (Envoy's previous
        hosts predicate)."""
        outlier = self.outlier
        if outlier is not None:
            now = self.proxy.env.now
            if now >= outlier.next_change_s:
                outlier.update(now)
            if outlier.version != self._outlier_version:
                self._rebuild()
        balancer = self.balancer
        if balancer is None:
            return None
        if self._ring is not None:
            key = _hash_key(self.policy.hash_on, request, src)
            if key is None:  # Envoy's ring hash without a hash key: a random host
                hosts = balancer.endpoints
                return hosts[int(self._uniform() * len(hosts))]
            return _ring_pick(self._ring, key, tried)
        candidate = balancer.pick()
        if tried:
            for _ in range(attempts - 1):
                if candidate not in tried:
                    break
                candidate = balancer.pick()
        return candidate

    def started(self, endpoint: Any) -> None:
        self.active += 1
        if self.balancer is not None:
            self.balancer.started(endpoint)

    def finished(self, endpoint: Any) -> None:
        self.active -= 1
        key = id(endpoint)
        if self._in_flight.get(key):
            self._in_flight[key] -= 1

    def record(self, endpoint: Any, status: int) -> None:
        """An attempt's outcome for outlier detection (status 0: a connect failure)."""
        outlier = self.outlier
        if outlier is None:
            return
        before = outlier.ejections_enforced_total
        overflow = outlier.ejections_overflow
        if outlier.record(endpoint, status, self.proxy.env.now):
            self._rebuild()
        self.stats.outlier_detection_ejections_total += outlier.ejections_enforced_total - before
        self.stats.outlier_detection_ejections_overflow += outlier.ejections_overflow - overflow


def _ring(hosts: Sequence[Any], size: int) -> tuple[list[int], list[Any]]:
    """Envoy's ring hash in short: ``size`` points spread over the hosts, each at the stable
    hash of (host, replica); a key goes to the first point at or after its hash."""
    per_host = max(1, size // len(hosts))
    points = sorted(
        (stable_hash(f"{h.name}_{i}"), n) for n, h in enumerate(hosts) for i in range(per_host)
    )
    return [p for p, _ in points], [hosts[n] for _, n in points]


def _ring_pick(ring: tuple[list[int], list[Any]], key: str, tried: list[Any] | None) -> Any:
    """The owner of the first point after the key's hash; on a retry, the next owner along
    the ring not tried yet (as Envoy's ring hash walks on for a retry)."""
    points, owners = ring
    i = bisect_right(points, stable_hash(key))
    n = len(owners)
    if tried:
        for step in range(n):
            owner = owners[(i + step) % n]
            if owner not in tried:
                return owner
    return owners[i % n]


def _hash_key(hash_on: tuple[str, str] | None, request: Request, src: Any) -> str | None:
    if hash_on is None:
        return None
    kind, name = hash_on
    if kind == "header":
        return request.headers.get(name)
    if kind == "cookie":
        cookie = request.headers.get("cookie", "")
        for part in cookie.split(";"):
            k, _, v = part.strip().partition("=")
            if k == name:
                return v
        return None
    return str(src.name)  # source IP: one per pod


# --- local answers at the server's proxy -------------------------------------------------------


class _Authorization:
    """Istio's AuthorizationPolicy evaluation for one workload (security/authz docs, "Allow
    and deny"): any matching DENY policy denies; no ALLOW policy allows; a matching ALLOW
    policy allows; otherwise deny. A denial is 403 from the server's proxy."""

    __slots__ = ("deny", "allow", "stats")

    def __init__(
        self,
        deny: list[AuthorizationPolicy],
        allow: list[AuthorizationPolicy],
        stats: Counters,
    ) -> None:
        self.deny = deny
        self.allow = allow
        self.stats = stats

    def local_reply(self, proxy: Any, src: Any, host: str, request: Request) -> Response | None:
        for policy in self.deny:
            if _policy_matches(policy, src, request):
                self.stats.rbac_denied += 1
                return DENIED
        if not self.allow:
            return None
        for policy in self.allow:
            if _policy_matches(policy, src, request):
                return None
        self.stats.rbac_denied += 1
        return DENIED


DENIED = Response(403, 19, Flags.NONE)  # "RBAC: access denied", as Envoy writes it


def _glob(patterns: list[str], value: str) -> bool:
    """Istio's string match in authorization: exact, ``prefix*``, ``*suffix`` or ``*``.
    An absent value (a plaintext peer's principal and namespace) matches nothing, not even
    ``*``, which Istio turns into a presence match."""
    if not value:
        return False
    for p in patterns:
        if p == "*" or p == value:
            return True
        if p.endswith("*") and value.startswith(p[:-1]):
            return True
        if p.startswith("*") and value.endswith(p[1:]):
            return True
    return False


def _policy_matches(policy: AuthorizationPolicy, src: Any, request: Request) -> bool:
    rules = policy.spec.rules
    if rules is None:
        # ALLOW without rules allows nothing; DENY without rules denies nothing.
        return False
    return any(_rule_matches(rule, src, request) for rule in rules)


def _rule_matches(rule: Any, src: Any, request: Request) -> bool:
    if rule.from_ and not any(_source_matches(f.source, src) for f in rule.from_):
        return False
    return not (rule.to and not any(_operation_matches(t.operation, request) for t in rule.to))


def _source_matches(source: Any, src: Any) -> bool:
    principal = src.principal
    namespace = src.namespace
    if source.principals and not _glob(source.principals, principal):
        return False
    if source.notPrincipals and _glob(source.notPrincipals, principal):
        return False
    if source.namespaces and not _glob(source.namespaces, namespace):
        return False
    return not (source.notNamespaces and _glob(source.notNamespaces, namespace))


def _operation_matches(op: Any, request: Request) -> bool:
    if op.methods and not _glob(op.methods, request.method):
        return False
    if op.notMethods and _glob(op.notMethods, request.method):
        return False
    if op.paths and not _glob(op.paths, request.path):
        return False
    return not (op.notPaths and _glob(op.notPaths, request.path))


class _LocalRateLimit:
    """Envoy's local rate limit on a proxy's inbound listener: one token per request; an
    empty bucket answers 429 with flag ``RL``."""

    __slots__ = ("bucket", "stats", "env")

    def __init__(self, bucket: TokenBucket, stats: Counters, env: Any) -> None:
        self.bucket = bucket
        self.stats = stats
        self.env = env

    def local_reply(self, proxy: Any, src: Any, host: str, request: Request) -> Response | None:
        if self.bucket.take(self.env.now):
            return None
        self.stats.rate_limited += 1
        return RATE_LIMITED


RATE_LIMITED = Response(ENVOY["localRateLimit.status"], 18, Flags.RATE_LIMITED)


class LocalChain:
    """Several local responders in order (authorization, rate limit, then Mixer's check,
    which may take time and so comes last)."""

    __slots__ = ("first", "last")

    def __init__(self, first: list[Any], last: Any | None) -> None:
        self.first = first
        self.last = last

    def local_reply(self, proxy: Any, src: Any, host: str, request: Request) -> Any:
        for responder in self.first:
            answer = responder.local_reply(proxy, src, host, request)
            if answer is not None:
                return answer
        if self.last is not None:
            return self.last.local_reply(proxy, src, host, request)
        return None


# --- Traefik Mesh -----------------------------------------------------------------------------


class TraefikService:
    """What a Traefik node proxy runs for one service: its circuit breaker, its rate limiter
    (a bucket per source pod, as Traefik keys them by client IP) and its retries."""

    __slots__ = ("config", "breaker", "limiter", "stats", "retry")

    def __init__(self, config: TraefikServiceConfig, stats: Counters) -> None:
        self.config = config
        self.breaker: CircuitBreaker | None = config.new_circuit_breaker()
        self.limiter: RateLimiter | None = config.new_rate_limiter()
        self.stats = stats
        # ``retry-attempts`` counts every try; Traefik retries network errors only, and
        # Traefik Mesh sets no back-off interval (so retries go at once).
        self.retry: RetryPolicy | None = None
        if config.retry_attempts is not None:
            self.retry = RetryPolicy(
                config.retry_attempts - 1, CONNECT_FAILURE_ONLY, None, 0.0, 0.0
            )

    def rate_wait(self, src: Any, now: float) -> float | None:
        """How long a request from ``src`` waits for a token (0: none), or None when it is
        refused (429)."""
        if self.limiter is None:
            return 0.0
        wait = self.limiter.reserve(now, src.name)
        if wait is None:
            self.stats.rate_limited += 1
        return wait


@dataclass(frozen=True)
class AclRule:
    """An SMI TrafficTarget compiled: the destination service account, the sources allowed,
    and the route matches they may use (empty: any request)."""

    destination: tuple[str, str]
    sources: frozenset[tuple[str, str]]
    matches: tuple[Match, ...]


# --- the compiled set -------------------------------------------------------------------------


@dataclass(frozen=True)
class PolicySet:
    """Every policy of an experiment, compiled (see the module docstring)."""

    routes: Mapping[str, HostRoutes] = field(default_factory=dict)
    clusters: Mapping[tuple[str, str | None], ClusterPolicy] = field(default_factory=dict)
    authorization: tuple[AuthorizationPolicy, ...] = ()
    rate_limits: tuple[LocalRateLimit, ...] = ()
    traefik: Mapping[str, TraefikServiceConfig] = field(default_factory=dict)
    acl: tuple[AclRule, ...] | None = None
    # Istio's PeerAuthentications, oldest first (read by the sidecar and ambient meshes).
    peer_authentication: tuple[PeerAuthentication, ...] = ()

    @property
    def empty(self) -> bool:
        return not (
            self.routes
            or self.clusters
            or self.authorization
            or self.peer_authentication
            or self.rate_limits
            or self.traefik
            or self.acl is not None
        )

    def has_policy(self, host: str) -> bool:
        """Whether routing to ``host`` needs more than the plain cluster."""
        return (
            host in self.routes
            or (host, None) in self.clusters
            or host in self.traefik
            or self.acl is not None
        )

    def inbound(self, pod: Any, stats: Counters, env: Any, mixer: Any = None) -> Any:
        """The local responder of ``pod``'s inbound proxy: its authorization policies and
        rate limits, then Mixer's check (``mixer``); None when it has none of them."""
        first: list[Any] = []
        deny: list[AuthorizationPolicy] = []
        allow: list[AuthorizationPolicy] = []
        root = ISTIO["authorization.rootNamespace"]
        namespace = pod.namespace
        labels = pod.labels
        for policy in self.authorization:
            ns = policy.metadata.namespace
            if ns != root and ns != namespace:
                continue
            selector = policy.spec.selector
            if selector is not None and not all(
                labels.get(k) == v for k, v in selector.matchLabels.items()
            ):
                continue
            if policy.spec.action == "DENY":
                deny.append(policy)
            elif policy.spec.action == "ALLOW":
                allow.append(policy)
        if deny or allow:
            first.append(_Authorization(deny, allow, stats))
        for limit in self.rate_limits:
            if limit.metadata.namespace != namespace:
                continue
            wanted = limit.spec.workloadSelector.matchLabels
            if all(labels.get(k) == v for k, v in wanted.items()):
                bucket = limit.spec.token_bucket
                first.append(
                    _LocalRateLimit(
                        TokenBucket(
                            bucket.max_tokens, bucket.tokens_per_fill, bucket.fill_interval, env.now
                        ),
                        stats,
                        env,
                    )
                )
                break  # one filter per listener
        if not first:
            return mixer
        return LocalChain(first, mixer)


EMPTY_POLICIES = PolicySet()


def compile_policies(policies: Sequence[Any], graph: CallGraphSpec) -> PolicySet:
    """Compile validated policy objects (already checked by :func:`check_policies`) and the
    services' Traefik Mesh annotations into a :class:`PolicySet`."""
    groups = {
        (p.metadata.namespace, p.metadata.name): p
        for p in policies
        if isinstance(p, HTTPRouteGroup)
    }
    routes: dict[str, HostRoutes] = {}
    clusters: dict[tuple[str, str | None], ClusterPolicy] = {}
    for policy in policies:
        if isinstance(policy, VirtualService):
            for host in policy.spec.hosts:
                routes[short_host(host)] = _virtual_service_routes(policy)
        elif isinstance(policy, DestinationRule):
            host = short_host(policy.spec.host)
            top = policy.spec.trafficPolicy
            clusters[(host, None)] = _cluster_policy(top, None)
            for subset in policy.spec.subsets:
                clusters[(host, subset.name)] = _cluster_policy(
                    _merge(top, subset.trafficPolicy), dict(subset.labels)
                )
        elif isinstance(policy, TrafficSplit):
            host, split_routes, split_clusters = _traffic_split(policy, graph, groups)
            routes[host] = split_routes
            clusters.update(split_clusters)
    traefik: dict[str, TraefikServiceConfig] = {}
    for host in graph.hosts():
        merged: dict[str, str] = {}
        for svc in graph.workloads_of(host):
            merged.update(getattr(svc, "annotations", {}) or {})
        if merged:
            traefik[host] = parse_annotations(merged)
    targets = [p for p in policies if isinstance(p, TrafficTarget)]
    acl = tuple(_acl_rule(t, groups) for t in targets) if targets else None
    return PolicySet(
        routes=routes,
        clusters=clusters,
        authorization=tuple(p for p in policies if isinstance(p, AuthorizationPolicy)),
        rate_limits=tuple(p for p in policies if isinstance(p, LocalRateLimit)),
        traefik=traefik,
        acl=acl,
        peer_authentication=tuple(p for p in policies if isinstance(p, PeerAuthentication)),
    )


def _percent(p: Any, default: float) -> float:
    return (p.value if p is not None else default) / 100.0


def _virtual_service_routes(vs: VirtualService) -> HostRoutes:
    rules = []
    for http in vs.spec.http:
        matches = tuple(
            Match(
                _string_test(m.uri) if m.uri is not None else None,
                _string_test(m.method) if m.method is not None else None,
                tuple((name, _string_test(test)) for name, test in m.headers.items()),
            )
            for m in http.match
        )
        targets = tuple((short_host(d.destination.host), d.destination.subset) for d in http.route)
        weights = [d.weight if len(http.route) > 1 else 100 for d in http.route]
        cumulative = tuple(float(sum(weights[: i + 1])) for i in range(len(weights)))
        retry = None
        if http.retries is not None:
            r = http.retries
            on = parse_retry_on(r.retryOn) if r.retryOn is not None else _istio_default_on()
            retry = RetryPolicy(r.attempts, on, r.perTryTimeout)
        fault = None
        if http.fault is not None:
            f = http.fault
            fault = Fault(
                delay_s=f.delay.fixedDelay if f.delay is not None else 0.0,
                delay_share=_percent(f.delay.percentage, ISTIO["fault.percentage"])
                if f.delay is not None
                else 0.0,
                abort_status=f.abort.httpStatus if f.abort is not None else 0,
                abort_share=_percent(f.abort.percentage, ISTIO["fault.percentage"])
                if f.abort is not None
                else 0.0,
            )
        mirror = None
        if http.mirror is not None:
            mirror = (short_host(http.mirror.host), http.mirror.subset)
        action = Action(
            targets=targets,
            cumulative=cumulative,
            timeout=http.timeout if http.timeout else None,
            retry=retry,
            fault=fault,
            mirror=mirror,
            mirror_share=_percent(http.mirrorPercentage, ISTIO["mirrorPercentage"])
            if mirror
            else 0.0,
            name=http.name or "",
        )
        rules.append((matches, action))
    return HostRoutes(tuple(rules))


def _istio_default_on() -> RetryOn:
    return parse_retry_on(ISTIO["retries.retryOn"], ISTIO["retries.retriableStatusCodes"])


def _merge(top: TrafficPolicy | None, sub: TrafficPolicy | None) -> TrafficPolicy | None:
    """A subset's traffic policy over its host's: each section given replaces the host's."""
    if sub is None:
        return top
    if top is None:
        return sub
    update = {k: getattr(sub, k) for k in type(sub).model_fields if getattr(sub, k) is not None}
    return top.model_copy(update=update)


def _cluster_policy(policy: TrafficPolicy | None, selector: dict[str, str] | None) -> ClusterPolicy:
    if policy is None:
        return ClusterPolicy(selector=selector)
    lb = None
    hash_on = None
    ring = ISTIO["consistentHash.minimumRingSize"]
    if policy.loadBalancer is not None:
        simple = policy.loadBalancer.simple
        if simple is not None:
            lb = simple.lower()
        else:
            ch = policy.loadBalancer.consistentHash
            assert ch is not None
            ring = ch.minimumRingSize
            if ch.httpHeaderName:
                hash_on = ("header", ch.httpHeaderName.lower())
            elif ch.httpCookie is not None:
                hash_on = ("cookie", ch.httpCookie.name)
            else:
                hash_on = ("source_ip", "")
    pool = policy.connectionPool
    tcp = pool.tcp if pool is not None else None
    http = pool.http if pool is not None else None
    outlier = None
    od = policy.outlierDetection
    panic = float(ISTIO["outlierDetection.minHealthPercent"])
    if od is not None:
        c5 = (
            od.consecutive5xxErrors
            if od.consecutive5xxErrors is not None
            else ISTIO["outlierDetection.consecutive5xxErrors"]
        )
        gateway = od.consecutiveGatewayErrors
        outlier = {
            "consecutive_5xx": c5 or None,
            "consecutive_gateway": gateway or None,
            "interval_s": od.interval or ISTIO["outlierDetection.interval"],
            "base_ejection_s": od.baseEjectionTime or ISTIO["outlierDetection.baseEjectionTime"],
            "max_ejection_s": ISTIO["outlierDetection.maxEjectionTime"],
            "max_ejection_percent": float(
                od.maxEjectionPercent
                if od.maxEjectionPercent is not None
                else ISTIO["outlierDetection.maxEjectionPercent"]
            ),
        }
        if od.minHealthPercent is not None:
            panic = float(od.minHealthPercent)
    budget = None
    if policy.retryBudget is not None:
        budget = (policy.retryBudget.percent, policy.retryBudget.minRetryConcurrency)
    return ClusterPolicy(
        selector=selector,
        lb=lb,
        hash_on=hash_on,
        ring_size=ring,
        max_connections=tcp.maxConnections if tcp is not None else None,
        max_pending=http.http1MaxPendingRequests if http is not None else None,
        max_requests=http.http2MaxRequests if http is not None else None,
        max_requests_per_connection=http.maxRequestsPerConnection if http is not None else None,
        idle_timeout=http.idleTimeout if http is not None else None,
        max_retries=http.maxRetries if http is not None else None,
        connect_timeout=tcp.connectTimeout if tcp is not None else None,
        budget=budget,
        outlier=outlier,
        panic_threshold=panic,
    )


def _group_matches(
    refs: Sequence[Any], groups: Mapping[tuple[str, str], HTTPRouteGroup], namespace: str
) -> tuple[Match, ...]:
    """The matches that SMI route-group references name (all of a group's when the
    reference lists none)."""
    found: list[Match] = []
    for ref in refs:
        group = groups[(namespace, ref.name)]
        for m in group.spec.matches:
            if ref.matches and m.name not in ref.matches:
                continue
            found.append(_smi_match(m))
    return tuple(found)


def _smi_match(m: Any) -> Match:
    uri = None
    if m.pathRegex is not None:
        pattern = re.compile(m.pathRegex)
        uri = lambda s: pattern.fullmatch(s) is not None  # noqa: E731
    method = None
    if m.methods and "*" not in m.methods:
        methods = frozenset(x.upper() for x in m.methods)
        method = lambda s: s in methods  # noqa: E731
    headers = tuple(
        (name, (lambda p: lambda s: p.fullmatch(s) is not None)(re.compile(rx)))
        for name, rx in m.headers.items()
    )
    return Match(uri, method, headers)


def _traffic_split(
    split: TrafficSplit, graph: CallGraphSpec, groups: Mapping[tuple[str, str], HTTPRouteGroup]
) -> tuple[str, HostRoutes, dict[tuple[str, str | None], ClusterPolicy]]:
    """An SMI TrafficSplit as routes: its backends, by relative weight; a backend that names a
    workload is that workload's pods of the root service."""
    host = split.spec.service
    names = {s.name for s in graph.services}
    targets: list[tuple[str, str | None]] = []
    clusters: dict[tuple[str, str | None], ClusterPolicy] = {}
    weights: list[int] = []
    for backend in split.spec.backends:
        if backend.weight == 0:
            continue
        if backend.service in names and backend.service != host:
            subset = f"workload-{backend.service}"
            clusters[(graph.service(backend.service).host_name, subset)] = ClusterPolicy(
                selector={"<workload>": backend.service}
            )
            targets.append((graph.service(backend.service).host_name, subset))
        else:
            targets.append((backend.service, None))
        weights.append(backend.weight)
    cumulative = tuple(float(sum(weights[: i + 1])) for i in range(len(weights)))
    action = Action(targets=tuple(targets), cumulative=cumulative, name=split.metadata.name)
    matches = _group_matches(split.spec.matches, groups, split.metadata.namespace)
    rules: list[tuple[tuple[Match, ...], Action]] = [(matches, action)]
    if matches:  # requests no match selects go to the root service as without the split
        rules.append(((), Action(targets=((host, None),), cumulative=(1.0,))))
    return host, HostRoutes(tuple(rules)), clusters


def _acl_rule(target: TrafficTarget, groups: Mapping[tuple[str, str], HTTPRouteGroup]) -> AclRule:
    dest = target.spec.destination
    return AclRule(
        destination=(dest.namespace, dest.name),
        sources=frozenset((s.namespace, s.name) for s in target.spec.sources),
        matches=_group_matches(target.spec.rules, groups, target.metadata.namespace),
    )
