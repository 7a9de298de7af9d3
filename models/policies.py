"""Traffic policies as users write them: Istio's, Envoy's, SMI's resources, in their own words.

An experiment's ``policies:`` is one list of Kubernetes-style objects, each with ``kind`` and
the real resource's fields, so that a VirtualService pasted from Istio's documentation reads
here as it does in a cluster::

    - apiVersion: networking.istio.io/v1
      kind: VirtualService
      metadata: {name: reviews}
      spec:
        hosts: [reviews]
        http:
        - match: [{headers: {end-user: {exact: jason}}}]
          route: [{destination: {host: reviews, subset: v2}}]
        - route: [{destination: {host: reviews, subset: v1}}]

Kinds: ``VirtualService``, ``DestinationRule``, ``AuthorizationPolicy``, ``PeerAuthentication``
(Istio);
``LocalRateLimit`` (Envoy's local rate limit filter, which Istio users install with an
EnvoyFilter: its fields are the filter's own, in Envoy's snake case); ``TrafficSplit``,
``HTTPRouteGroup``, ``TrafficTarget`` (SMI, as Traefik Mesh reads them). Traefik Mesh's own
settings are annotations on the topology's services (``mesh.traefik.io/...``, see
:mod:`models.traefik`).

``apiVersion`` may be left out; when given it must be one the kind exists in. Fields keep the
real names (camelCase); an unknown field is an error, as ``kubectl apply --validate=strict``
makes it. This module validates each object on its own; :func:`check_policies` checks them
against a topology and an architecture, and :mod:`models.routing` compiles them into what the
data plane runs.
"""

from __future__ import annotations

import re
import re._parser as _re_parser  # the stdlib parser of re (what re.compile parses)
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from models.defaults import parse_retry_on
from sim.units import Duration

__all__ = [
    "Policy",
    "PolicyKind",
    "ObjectMeta",
    "StringMatch",
    "VirtualService",
    "DestinationRule",
    "AuthorizationPolicy",
    "PeerAuthentication",
    "peer_authentication_mode",
    "LocalRateLimit",
    "TrafficSplit",
    "HTTPRouteGroup",
    "TrafficTarget",
    "ISTIO_KINDS",
    "SMI_KINDS",
    "MAX_POLICIES",
    "short_host",
    "policy_host",
    "with_policy",
]

MAX_POLICIES = 1000
"""The most policy objects one experiment may hold (each is compiled into every proxy that
routes to its host; a thousand is far beyond a teaching lab or a sweep point)."""

MAX_ITEMS = 256
"""The most entries of any list inside one object (routes, matches, rules, principals)."""

MAX_REGEX = 1024
"""The longest regular expression a match may hold. Istio compiles them with RE2 (linear
time); Python's ``re`` backtracks, so a pattern is also refused when a repetition applies to
something that can itself match in several ways (a repetition, an optional part or an
alternation inside it: ``(a+)+``, ``(a|a)*``, ``(a?){25}``), the shapes that make
backtracking exponential."""

MAX_DURATION_S = 315_576_000_000.0
"""The longest duration a policy may hold: protobuf's Duration limit (10,000 years)."""

NAME = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"

_REPEATS = {"MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"}


def _ambiguous(parsed: Any) -> bool:
    """Whether a parsed pattern repeats (more than once) a part that can match in several
    ways: a repetition, an alternation, or an optional part inside a repetition."""
    for op, arg in parsed:
        name = str(op)
        if name in _REPEATS:
            low, high, sub = arg
            if high != 1 and _varies(sub):
                return True
            if _ambiguous(sub):
                return True
        elif name == "SUBPATTERN":
            if _ambiguous(arg[-1]):
                return True
        elif name == "BRANCH":
            if any(_ambiguous(branch) for branch in arg[1]):
                return True
        elif name in ("ASSERT", "ASSERT_NOT") and _ambiguous(arg[1]):
            return True
    return False


def _varies(parsed: Any) -> bool:
    """Whether a parsed pattern contains a repetition or an alternation."""
    for op, arg in parsed:
        name = str(op)
        if name in _REPEATS or name == "BRANCH":
            return True
        if name == "SUBPATTERN" and _varies(arg[-1]):
            return True
        if name in ("ASSERT", "ASSERT_NOT") and _varies(arg[1]):
            return True
    return False


NetworkingVersion = Literal[
    "networking.istio.io/v1", "networking.istio.io/v1beta1", "networking.istio.io/v1alpha3"
]
"""The apiVersions of Istio's networking resources (VirtualService, DestinationRule)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class ObjectMeta(_Strict):
    """``metadata``: the object's name and namespace."""

    name: str = Field(pattern=NAME, max_length=253)
    namespace: str = Field(default="default", pattern=NAME, max_length=63)
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}


def _regex(value: str) -> str:
    if len(value) > MAX_REGEX:
        raise ValueError(f"a regex of at most {MAX_REGEX} characters, got {len(value)}")
    try:
        re.compile(value)
        parsed = _re_parser.parse(value)
    except (re.error, RecursionError) as error:
        raise ValueError(f"regex {value!r} does not compile: {error}") from None
    if _ambiguous(parsed):
        raise ValueError(
            f"regex {value!r} repeats a part that can match in several ways (a repetition, "
            "an option or an alternation inside a repetition): Python's backtracking makes "
            "that exponential, where Istio's RE2 is linear; write it without the inner "
            "repetition or alternation"
        )
    return value


class StringMatch(_Strict):
    """Istio's StringMatch: exactly one of ``exact``, ``prefix``, ``regex`` (whole-string)."""

    exact: str | None = Field(default=None, max_length=4096)
    prefix: str | None = Field(default=None, max_length=4096)
    regex: str | None = None

    @field_validator("regex")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        return None if value is None else _regex(value)

    @model_validator(mode="after")
    def _one(self) -> StringMatch:
        given = [k for k in ("exact", "prefix", "regex") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of exact, prefix or regex")
        return self


class Percent(_Strict):
    """Istio's Percent: ``{value: 12.5}``, from 0 to 100."""

    value: float = Field(ge=0.0, le=100.0)


# --- VirtualService ---------------------------------------------------------------------------


class HTTPMatchRequest(_Strict):
    """One ``http[].match[]`` entry: every condition given must hold (AND)."""

    name: str | None = None
    uri: StringMatch | None = None
    method: StringMatch | None = None
    headers: dict[str, StringMatch] = Field(default={}, max_length=64)

    @field_validator("headers")
    @classmethod
    def _lower(cls, value: dict[str, StringMatch]) -> dict[str, StringMatch]:
        return {k.lower(): v for k, v in value.items()}


class PortSelector(_Strict):
    number: int = Field(ge=1, le=65535)


class Destination(_Strict):
    """``destination``: a host and, optionally, a subset a DestinationRule defines."""

    host: str = Field(min_length=1, max_length=253)
    subset: str | None = Field(default=None, pattern=NAME, max_length=63)
    port: PortSelector | None = None


class HTTPRouteDestination(_Strict):
    """``route[]``: a destination and its share; weights of one route add up to 100."""

    destination: Destination
    weight: int = Field(default=0, ge=0, le=100)


_Timeout = Annotated[Duration, Field(le=MAX_DURATION_S)]


class HTTPRetry(_Strict):
    """``retries``: tries after the first, each with an optional timeout, on what ``retryOn``
    names (Envoy's ``x-envoy-retry-on`` and ``x-envoy-retry-grpc-on`` words, and status
    codes)."""

    attempts: int = Field(ge=0, le=1000, strict=True)
    perTryTimeout: _Timeout | None = None
    retryOn: str | None = Field(default=None, max_length=1024)

    @field_validator("perTryTimeout")
    @classmethod
    def _at_least_1ms(cls, value: float | None) -> float | None:
        if value is not None and value < 0.001:
            raise ValueError("a per-try timeout of at least 1ms (Istio's rule)")
        return value

    @field_validator("retryOn")
    @classmethod
    def _words(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parse_retry_on(value)
        return value


class FaultDelay(_Strict):
    fixedDelay: _Timeout
    percentage: Percent | None = None


class FaultAbort(_Strict):
    httpStatus: int = Field(ge=200, le=599)
    percentage: Percent | None = None


class HTTPFaultInjection(_Strict):
    """``fault``: a delay and/or an abort, each on a share of requests, made by the client's
    proxy before it routes (response flags ``DI`` and ``FI``)."""

    delay: FaultDelay | None = None
    abort: FaultAbort | None = None

    @model_validator(mode="after")
    def _something(self) -> HTTPFaultInjection:
        if self.delay is None and self.abort is None:
            raise ValueError("a fault has a delay, an abort, or both")
        return self


class HTTPRoute(_Strict):
    """One ``http[]`` rule: the first whose match holds (or with no match) routes."""

    name: str | None = None
    match: list[HTTPMatchRequest] = Field(default=[], max_length=MAX_ITEMS)
    route: list[HTTPRouteDestination] = Field(min_length=1, max_length=MAX_ITEMS)
    timeout: _Timeout | None = None
    retries: HTTPRetry | None = None
    fault: HTTPFaultInjection | None = None
    mirror: Destination | None = None
    mirrorPercentage: Percent | None = None

    @model_validator(mode="after")
    def _weights(self) -> HTTPRoute:
        if len(self.route) > 1:
            total = sum(d.weight for d in self.route)
            if total != 100:
                raise ValueError(f"route: the weights add up to {total}, not 100")
        if self.mirrorPercentage is not None and self.mirror is None:
            raise ValueError("mirrorPercentage: needs mirror")
        return self


class VirtualServiceSpec(_Strict):
    hosts: list[str] = Field(min_length=1, max_length=MAX_ITEMS)
    http: list[HTTPRoute] = Field(min_length=1, max_length=MAX_ITEMS)
    gateways: list[str] = []
    exportTo: list[str] = []

    @field_validator("gateways")
    @classmethod
    def _mesh_only(cls, value: list[str]) -> list[str]:
        if any(g != "mesh" for g in value):
            raise ValueError("only the 'mesh' gateway is modelled (sidecar-to-sidecar traffic)")
        return value


class VirtualService(_Strict):
    """Istio's VirtualService (networking.istio.io)."""

    apiVersion: NetworkingVersion = "networking.istio.io/v1"
    kind: Literal["VirtualService"] = "VirtualService"
    metadata: ObjectMeta
    spec: VirtualServiceSpec


# --- DestinationRule --------------------------------------------------------------------------


class HttpCookie(_Strict):
    name: str = Field(min_length=1, max_length=256)
    path: str | None = None
    ttl: Duration | None = None


class ConsistentHash(_Strict):
    """``consistentHash``: one of a header, a cookie or the source IP is hashed."""

    httpHeaderName: str | None = Field(default=None, max_length=256)
    httpCookie: HttpCookie | None = None
    useSourceIp: bool | None = None
    minimumRingSize: int = Field(default=1024, ge=1, le=8_388_608)

    @model_validator(mode="after")
    def _one(self) -> ConsistentHash:
        given = [k for k in ("httpHeaderName", "httpCookie", "useSourceIp") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError("give exactly one of httpHeaderName, httpCookie or useSourceIp")
        return self


class LoadBalancerSettings(_Strict):
    simple: Literal["ROUND_ROBIN", "LEAST_REQUEST", "RANDOM", "PASSTHROUGH"] | None = None
    consistentHash: ConsistentHash | None = None

    @model_validator(mode="after")
    def _one(self) -> LoadBalancerSettings:
        if (self.simple is None) == (self.consistentHash is None):
            raise ValueError("give exactly one of simple or consistentHash")
        if self.simple == "PASSTHROUGH":
            raise ValueError("simple: PASSTHROUGH (no load balancing) is not modelled")
        return self


class TcpSettings(_Strict):
    maxConnections: int | None = Field(default=None, ge=1, le=2**32 - 1)
    connectTimeout: Duration | None = None


class HttpSettings(_Strict):
    http1MaxPendingRequests: int | None = Field(default=None, ge=1, le=2**32 - 1)
    http2MaxRequests: int | None = Field(default=None, ge=1, le=2**32 - 1)
    maxRequestsPerConnection: int | None = Field(default=None, ge=0, le=2**32 - 1)
    maxRetries: int | None = Field(default=None, ge=0, le=2**32 - 1)
    idleTimeout: Duration | None = None


class ConnectionPoolSettings(_Strict):
    tcp: TcpSettings | None = None
    http: HttpSettings | None = None


class OutlierDetection(_Strict):
    """``outlierDetection``: Envoy's consecutive-error ejection (Istio's field names)."""

    consecutive5xxErrors: int | None = Field(default=None, ge=0, le=2**32 - 1)
    consecutiveGatewayErrors: int | None = Field(default=None, ge=0, le=2**32 - 1)
    interval: Duration | None = None
    baseEjectionTime: Duration | None = None
    maxEjectionPercent: int | None = Field(default=None, ge=0, le=100)
    minHealthPercent: int | None = Field(default=None, ge=0, le=100)

    @field_validator("interval", "baseEjectionTime")
    @classmethod
    def _positive(cls, value: float | None) -> float | None:
        if value is not None and value <= 0:
            raise ValueError("must be longer than 0 s")
        return value


class RetryBudget(_Strict):
    """``retryBudget`` (Istio 1.26+): retries in flight at most ``percent`` of the requests in
    flight and pending, and at least ``minRetryConcurrency``."""

    percent: float = Field(default=20.0, ge=0.0, le=100.0)
    minRetryConcurrency: int = Field(default=3, ge=0, le=2**32 - 1)


class TrafficPolicy(_Strict):
    loadBalancer: LoadBalancerSettings | None = None
    connectionPool: ConnectionPoolSettings | None = None
    outlierDetection: OutlierDetection | None = None
    retryBudget: RetryBudget | None = None


class Subset(_Strict):
    name: str = Field(pattern=NAME, max_length=63)
    labels: dict[str, str] = Field(min_length=1, max_length=64)
    trafficPolicy: TrafficPolicy | None = None


class DestinationRuleSpec(_Strict):
    host: str = Field(min_length=1, max_length=253)
    trafficPolicy: TrafficPolicy | None = None
    subsets: list[Subset] = Field(default=[], max_length=MAX_ITEMS)
    exportTo: list[str] = []

    @field_validator("subsets")
    @classmethod
    def _unique(cls, value: list[Subset]) -> list[Subset]:
        names = [s.name for s in value]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"subset names repeat: {', '.join(dup)}")
        return value


class DestinationRule(_Strict):
    """Istio's DestinationRule (networking.istio.io)."""

    apiVersion: NetworkingVersion = "networking.istio.io/v1"
    kind: Literal["DestinationRule"] = "DestinationRule"
    metadata: ObjectMeta
    spec: DestinationRuleSpec


# --- AuthorizationPolicy ----------------------------------------------------------------------

_STRINGS = Annotated[list[Annotated[str, Field(max_length=1024)]], Field(max_length=MAX_ITEMS)]


class Source(_Strict):
    principals: _STRINGS = []
    notPrincipals: _STRINGS = []
    namespaces: _STRINGS = []
    notNamespaces: _STRINGS = []


class Operation(_Strict):
    methods: _STRINGS = []
    notMethods: _STRINGS = []
    paths: _STRINGS = []
    notPaths: _STRINGS = []


class RuleFrom(_Strict):
    source: Source


class RuleTo(_Strict):
    operation: Operation


class Rule(_Strict):
    """A rule matches a request when one of its ``from`` and one of its ``to`` entries do
    (an absent list matches anything)."""

    # Written and dumped as ``from`` (the field's real name; ``from_`` is only Python's), so
    # that a dumped spec reads back and satisfies the JSON schema.
    model_config = ConfigDict(
        extra="forbid", frozen=True, populate_by_name=False, serialize_by_alias=True
    )

    from_: list[RuleFrom] = Field(default=[], alias="from", max_length=MAX_ITEMS)
    to: list[RuleTo] = Field(default=[], max_length=MAX_ITEMS)


class WorkloadSelector(_Strict):
    matchLabels: dict[str, str] = Field(default={}, max_length=64)


class AuthorizationPolicySpec(_Strict):
    selector: WorkloadSelector | None = None
    action: Literal["ALLOW", "DENY", "AUDIT", "CUSTOM"] = "ALLOW"
    rules: list[Rule] | None = Field(default=None, max_length=MAX_ITEMS)

    @field_validator("action")
    @classmethod
    def _modelled(cls, value: str) -> str:
        if value == "CUSTOM":
            raise ValueError("CUSTOM (an external authorizer) is not modelled: use ALLOW or DENY")
        return value


class AuthorizationPolicy(_Strict):
    """Istio's AuthorizationPolicy (security.istio.io), enforced by the server's proxy.

    A policy applies to the workloads its ``selector`` matches in its namespace (every
    workload of the namespace without a selector; every workload of the mesh when its
    namespace is the root namespace, ``istio-system``).
    """

    apiVersion: Literal["security.istio.io/v1", "security.istio.io/v1beta1"] = (
        "security.istio.io/v1"
    )
    kind: Literal["AuthorizationPolicy"] = "AuthorizationPolicy"
    metadata: ObjectMeta
    spec: AuthorizationPolicySpec = AuthorizationPolicySpec()


class PeerAuthenticationMtls(_Strict):
    """``mtls``: what the workload's proxy accepts. ``UNSET`` inherits the parent's mode
    (the namespace's, then the mesh's)."""

    mode: Literal["UNSET", "DISABLE", "PERMISSIVE", "STRICT"] = "UNSET"


class PeerAuthenticationSpec(_Strict):
    selector: WorkloadSelector | None = None
    mtls: PeerAuthenticationMtls | None = None
    portLevelMtls: dict[str, Any] | None = None

    @field_validator("portLevelMtls")
    @classmethod
    def _not_modelled(cls, value: Any) -> Any:
        if value is not None:
            raise ValueError(
                "per-port mTLS is not modelled (a service has one port here): use mtls.mode"
            )
        return value


class PeerAuthentication(_Strict):
    """Istio's PeerAuthentication (security.istio.io): whether a workload's proxy accepts
    plaintext (``PERMISSIVE``), only mutual TLS (``STRICT``) or only plaintext (``DISABLE``).

    In the root namespace (``istio-system``) without a selector it is mesh-wide; in another
    namespace without a selector, namespace-wide; with a selector, it applies to the
    workloads of its namespace whose labels match. The most specific one wins (workload, then
    namespace, then mesh), and ``UNSET`` inherits (Istio's "PeerAuthentication" reference:
    "Policy precedence"). Where none applies, the mesh's ``mtls_mode`` is the mode (Istio's
    own default is PERMISSIVE). See :func:`peer_authentication_mode`.
    """

    apiVersion: Literal["security.istio.io/v1", "security.istio.io/v1beta1"] = (
        "security.istio.io/v1"
    )
    kind: Literal["PeerAuthentication"] = "PeerAuthentication"
    metadata: ObjectMeta
    spec: PeerAuthenticationSpec = PeerAuthenticationSpec()


def peer_authentication_mode(
    policies: Sequence[PeerAuthentication],
    namespace: str,
    labels: Mapping[str, str],
    default: str,
    root: str = "istio-system",
) -> str:
    """The mTLS mode of a workload's proxy: ``STRICT``, ``PERMISSIVE`` or ``DISABLE``.

    Args:
        policies: the PeerAuthentications, oldest first (Istio takes the oldest of two at
            one level; ``models.policy_check`` refuses two mesh-wide or namespace-wide ones).
        namespace: the workload's namespace.
        labels: its pods' labels.
        default: the mode where no policy sets one (the mesh's ``mtls_mode``).
        root: the root namespace (``meshConfig.rootNamespace``).
    """
    mesh = space = workload = "UNSET"
    for policy in policies:
        mode: str = policy.spec.mtls.mode if policy.spec.mtls is not None else "UNSET"
        selector = policy.spec.selector
        ns = policy.metadata.namespace
        if selector is not None and selector.matchLabels:
            if (
                ns == namespace
                and workload == "UNSET"
                and all(labels.get(k) == v for k, v in selector.matchLabels.items())
            ):
                workload = mode
        elif ns == root:
            mesh = mode if mesh == "UNSET" else mesh
        elif ns == namespace:
            space = mode if space == "UNSET" else space
    for found in (workload, space, mesh):
        if found != "UNSET":
            return found
    return default


# --- Envoy's local rate limit -----------------------------------------------------------------


class TokenBucketSpec(_Strict):
    """Envoy's ``token_bucket``: ``max_tokens``, ``tokens_per_fill`` every ``fill_interval``."""

    max_tokens: int = Field(ge=1, le=2**32 - 1)
    tokens_per_fill: int = Field(default=1, ge=1, le=2**32 - 1)
    fill_interval: Duration

    @field_validator("fill_interval")
    @classmethod
    def _at_least_50ms(cls, value: float) -> float:
        if value < 0.05:
            raise ValueError(f"Envoy requires a fill_interval of at least 50ms, got {value:g} s")
        return value


class LocalRateLimitSpec(_Strict):
    workloadSelector: WorkloadSelector = WorkloadSelector()
    token_bucket: TokenBucketSpec
    stat_prefix: str = "http_local_rate_limiter"


class LocalRateLimit(_Strict):
    """Envoy's local rate limit filter on the inbound side of the selected workloads' proxies
    (what an Istio EnvoyFilter installs): a token bucket per proxy; a request that finds it
    empty gets 429, flag ``RL``."""

    apiVersion: Literal["meshsim.io/v1"] = "meshsim.io/v1"
    kind: Literal["LocalRateLimit"] = "LocalRateLimit"
    metadata: ObjectMeta
    spec: LocalRateLimitSpec


# --- SMI ------------------------------------------------------------------------------------


class TrafficSplitBackend(_Strict):
    service: str = Field(pattern=NAME, max_length=253)
    weight: int = Field(ge=0, le=2**31 - 1)


class RouteGroupRef(_Strict):
    kind: Literal["HTTPRouteGroup"] = "HTTPRouteGroup"
    name: str = Field(pattern=NAME, max_length=253)
    matches: list[str] = Field(default=[], max_length=MAX_ITEMS)


class TrafficSplitSpec(_Strict):
    service: str = Field(pattern=NAME, max_length=253)
    backends: list[TrafficSplitBackend] = Field(min_length=1, max_length=MAX_ITEMS)
    matches: list[RouteGroupRef] = Field(default=[], max_length=MAX_ITEMS)

    @model_validator(mode="after")
    def _some_weight(self) -> TrafficSplitSpec:
        if sum(b.weight for b in self.backends) <= 0:
            raise ValueError("backends: the weights add up to 0")
        return self


class TrafficSplit(_Strict):
    """SMI TrafficSplit: requests to ``service`` split over backend services by weight
    (weights are relative). A backend names a Kubernetes service; here a workload's name
    (``reviews-v2``: its own service) or a host."""

    apiVersion: Literal[
        "split.smi-spec.io/v1alpha1",
        "split.smi-spec.io/v1alpha2",
        "split.smi-spec.io/v1alpha3",
        "split.smi-spec.io/v1alpha4",
    ] = "split.smi-spec.io/v1alpha4"
    kind: Literal["TrafficSplit"] = "TrafficSplit"
    metadata: ObjectMeta
    spec: TrafficSplitSpec


class HTTPMatch(_Strict):
    name: str = Field(pattern=NAME, max_length=253)
    pathRegex: str | None = None
    methods: list[str] = Field(default=[], max_length=16)
    headers: dict[str, str] = Field(default={}, max_length=64)

    @field_validator("pathRegex")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        return None if value is None else _regex(value)

    @field_validator("headers")
    @classmethod
    def _header_regexes(cls, value: dict[str, str]) -> dict[str, str]:
        return {k.lower(): _regex(v) for k, v in value.items()}


class HTTPRouteGroupSpec(_Strict):
    matches: list[HTTPMatch] = Field(min_length=1, max_length=MAX_ITEMS)


class HTTPRouteGroup(_Strict):
    """SMI HTTPRouteGroup: named request matches (path regex, methods, header regexes)."""

    apiVersion: Literal[
        "specs.smi-spec.io/v1alpha1",
        "specs.smi-spec.io/v1alpha2",
        "specs.smi-spec.io/v1alpha3",
        "specs.smi-spec.io/v1alpha4",
    ] = "specs.smi-spec.io/v1alpha4"
    kind: Literal["HTTPRouteGroup"] = "HTTPRouteGroup"
    metadata: ObjectMeta
    spec: HTTPRouteGroupSpec


class IdentityBinding(_Strict):
    kind: Literal["ServiceAccount"] = "ServiceAccount"
    name: str = Field(pattern=NAME, max_length=253)
    namespace: str = Field(default="default", pattern=NAME, max_length=63)


class TrafficTargetSpec(_Strict):
    destination: IdentityBinding
    sources: list[IdentityBinding] = Field(min_length=1, max_length=MAX_ITEMS)
    rules: list[RouteGroupRef] = Field(default=[], max_length=MAX_ITEMS)


class TrafficTarget(_Strict):
    """SMI TrafficTarget: which service accounts may call the pods of a service account (on
    which routes). Traefik Mesh in ACL mode denies what no TrafficTarget allows."""

    apiVersion: Literal[
        "access.smi-spec.io/v1alpha1",
        "access.smi-spec.io/v1alpha2",
        "access.smi-spec.io/v1alpha3",
    ] = "access.smi-spec.io/v1alpha3"
    kind: Literal["TrafficTarget"] = "TrafficTarget"
    metadata: ObjectMeta
    spec: TrafficTargetSpec


Policy = Annotated[
    Union[  # noqa: UP007
        VirtualService,
        DestinationRule,
        AuthorizationPolicy,
        PeerAuthentication,
        LocalRateLimit,
        TrafficSplit,
        HTTPRouteGroup,
        TrafficTarget,
    ],
    Field(discriminator="kind"),
]
"""One policy object; ``kind`` says which."""

PolicyKind = Literal[
    "VirtualService",
    "DestinationRule",
    "AuthorizationPolicy",
    "PeerAuthentication",
    "LocalRateLimit",
    "TrafficSplit",
    "HTTPRouteGroup",
    "TrafficTarget",
]

ISTIO_KINDS = frozenset(
    {
        "VirtualService",
        "DestinationRule",
        "AuthorizationPolicy",
        "PeerAuthentication",
        "LocalRateLimit",
    }
)
"""Kinds an Envoy-based Istio data plane runs (sidecars, ambient waypoints)."""

SMI_KINDS = frozenset({"TrafficSplit", "HTTPRouteGroup", "TrafficTarget"})
"""Kinds Traefik Mesh runs."""


def short_host(host: str) -> str:
    """A host as the topology names it: ``reviews``, ``reviews.default``,
    ``reviews.default.svc`` and ``reviews.default.svc.cluster.local`` are all ``reviews``
    (the namespace part is checked by :func:`check_policies`)."""
    return host.split(".", 1)[0]


def host_namespace(host: str, default: str) -> str:
    """The namespace a host name gives (``reviews.prod.svc.cluster.local``: ``prod``)."""
    parts = host.split(".")
    return parts[1] if len(parts) > 1 else default


def policy_host(policy: Any) -> str:
    """The service a policy concerns, as far as one object says (for a change's record):
    a VirtualService's first host, a DestinationRule's host, a TrafficSplit's service, a
    TrafficTarget's destination account, a selector's ``app`` label; else ``""``."""
    spec = policy.spec
    if isinstance(policy, VirtualService):
        return short_host(spec.hosts[0])
    if isinstance(policy, DestinationRule):
        return short_host(spec.host)
    if isinstance(policy, TrafficSplit):
        return str(spec.service)
    if isinstance(policy, TrafficTarget):
        return str(spec.destination.name)
    if isinstance(policy, (AuthorizationPolicy, PeerAuthentication)) and spec.selector is not None:
        return spec.selector.matchLabels.get("app", "")
    if isinstance(policy, LocalRateLimit):
        return spec.workloadSelector.matchLabels.get("app", "")
    return ""


def with_policy(policies: list[Any], policy: Any) -> list[Any]:
    """``policies`` with ``policy`` added, or in place of the one of the same kind,
    namespace and name (as ``kubectl apply`` replaces an object)."""
    key = (policy.kind, policy.metadata.namespace, policy.metadata.name)
    out = [p for p in policies if (p.kind, p.metadata.namespace, p.metadata.name) != key]
    if len(out) == len(policies):
        return [*policies, policy]
    return [
        policy if (p.kind, p.metadata.namespace, p.metadata.name) == key else p for p in policies
    ]
