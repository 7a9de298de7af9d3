"""Call graphs: the services (workloads) of an application and the calls between them."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Annotated, Any, Literal, cast

import networkx as nx
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from sim.distributions import DistributionSpec
from sim.units import Size

from .errors import TopologyError
from .memo import cached_on
from .resources import ResourcesSpec

__all__ = [
    "MAX_ANNOTATIONS",
    "MAX_LABELS",
    "MAX_PODS",
    "MAX_REPLICAS",
    "MAX_WORKERS",
    "CallGraphSpec",
    "CallSpec",
    "HttpMethod",
    "HttpPath",
    "MisbehaviourSpec",
    "Protocol",
    "ServiceSpec",
    "StepSpec",
    "call_graph",
    "principal",
]

Protocol = Literal["http1", "http2", "grpc", "tcp"]
"""The application protocol a service speaks (its server side)."""

NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
"""DNS-label-like names for services and hosts (lower case, digits, inner dashes)."""

MAX_PODS = 150_000
"""The most pods in a topology, and so the most replicas of one workload: Kubernetes' own
limit for one cluster ("Considerations for large clusters": no more than 150,000 pods)."""

MAX_REPLICAS = MAX_PODS
"""The most replicas of one workload (see :data:`MAX_PODS`)."""

MAX_WORKERS = 1_000_000
"""The most workers (app threads) of one pod. Each worker is a slot in its server's timeline
(16 bytes, counted by ``experiments.budget``); a million is far beyond any thread pool."""


HttpMethod = Annotated[str, Field(pattern=r"^[A-Z0-9!#$%&'*+.^_`|~-]+$", max_length=32)]
"""An HTTP method: a token (RFC 9110, section 5.6.2) in upper case, e.g. ``GET``, ``POST``."""

HttpPath = Annotated[str, Field(pattern=r"^/[^\s]*$", max_length=2048)]
"""A request path (with its query, if any): starts with ``/``, no white space, at most 2048
characters (the common limit of browsers and proxies for a URL)."""

MAX_LABELS = 64
"""The most labels of one workload (Kubernetes sets no count limit; this bounds a spec)."""

MAX_ANNOTATIONS = 64
"""The most annotations of one workload (Kubernetes bounds their total size, 256 KiB)."""

_LABEL_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
LabelKey = Annotated[
    str,
    Field(pattern=rf"^([a-z0-9]([-a-z0-9.]{{0,251}}[a-z0-9])?/)?{_LABEL_NAME}$", max_length=317),
]
"""A Kubernetes label key: an optional DNS-subdomain prefix and ``/``, then a name of at most
63 characters (alphanumerics, ``-``, ``_``, ``.``; alphanumeric at both ends)."""

LabelValue = Annotated[str, Field(pattern=rf"^({_LABEL_NAME})?$", max_length=63)]
"""A Kubernetes label value: empty, or a name as in :data:`LabelKey`, at most 63 characters."""

AnnotationValue = Annotated[str, Field(max_length=4096)]
"""An annotation's value: any string, at most 4096 characters here."""

SERVICE_ACCOUNT_PATTERN = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
"""A Kubernetes service account name (a DNS subdomain name)."""

TRUST_DOMAIN = "cluster.local"
"""Istio's default trust domain (``meshConfig.trustDomain``)."""


def principal(namespace: str, service_account: str) -> str:
    """The SPIFFE-style identity of a workload, as Istio's AuthorizationPolicy matches it in
    ``from.source.principals``: ``cluster.local/ns/<namespace>/sa/<service_account>`` (the
    SPIFFE ID ``spiffe://cluster.local/ns/...`` without its scheme)."""
    return f"{TRUST_DOMAIN}/ns/{namespace}/sa/{service_account}"


class MisbehaviourSpec(BaseModel):
    """How a workload's application misbehaves on its own, whatever the mesh does.

    Decided per request when its CPU work ends: with probability ``error_ratio`` the app
    answers ``error_status`` at once, without its downstream calls; with probability
    ``hang_ratio`` it never answers (only a caller's timeout ends the request); otherwise it
    makes its calls and waits ``extra_latency`` before it answers, without holding a worker.

    Attributes:
        error_ratio: Share of requests answered with ``error_status``, in [0, 1].
        error_status: The HTTP status of an injected error, 400 to 599.
        extra_latency: Delay added before a normal answer, in seconds (a distribution; a
            number or ``"50ms"`` is a constant).
        hang_ratio: Share of requests never answered, in [0, 1].
    """

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    error_ratio: float = Field(default=0.0, ge=0.0, le=1.0)
    error_status: int = Field(default=503, ge=400, le=599)
    extra_latency: DistributionSpec = Field(default=cast(Any, 0))
    hang_ratio: float = Field(default=0.0, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _ratios(self) -> MisbehaviourSpec:
        if self.error_ratio + self.hang_ratio > 1.0:
            raise ValueError(
                f"error_ratio + hang_ratio must be at most 1, got {self.error_ratio} + "
                f"{self.hang_ratio}"
            )
        return self


class CallSpec(BaseModel):
    """One downstream call a service makes while it serves a request.

    In YAML a call may be given as a bare host name: ``details`` means ``{service: details}``.

    Attributes:
        service: The callee's host name (the name callers use, e.g. ``reviews``).
        probability: Probability in [0, 1] that the call is made on a given request.
        request_size_bytes: Request body size in bytes; ``None`` uses the callee's default.
        response_size_bytes: Response body size in bytes; ``None`` uses the callee's default.
        method: The HTTP method of the call (upper case).
        path: The path the call asks for, starting with ``/``.
        via_mesh: Traefik Mesh's opt-in: the caller uses the mesh name
            (``<service>.<namespace>.traefik.mesh``), so the call goes through a node proxy;
            ``false``: the plain service name, straight to a pod as without a mesh. Meshes
            that intercept every call (sidecars, ambient) ignore it.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    service: str = Field(pattern=NAME_PATTERN, max_length=63)
    probability: float = Field(default=1.0, ge=0.0, le=1.0)
    request_size_bytes: Size | None = None
    response_size_bytes: Size | None = None
    method: HttpMethod = "GET"
    path: HttpPath = "/"
    via_mesh: bool = True

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        if isinstance(data, str):
            return {"service": data}
        return data


class StepSpec(BaseModel):
    """One step of a service's downstream calls.

    Steps run one after another. Within a step, ``parallel: true`` makes a fan-out group: the
    calls run concurrently and the step ends when all have finished; otherwise the calls run
    one after another.

    YAML shorthand: a step given as a bare string ``details`` means
    ``{calls: [{service: details}]}``, and a bare list ``[text, media]`` means the parallel
    group ``{calls: [{service: text}, {service: media}], parallel: true}`` (list items may also
    be call mappings).

    Attributes:
        calls: The calls of the step, at least one.
        parallel: Whether the calls run concurrently (fan-out) or in sequence.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    calls: list[CallSpec] = Field(min_length=1)
    parallel: bool = False

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        if isinstance(data, str):
            return {"calls": [{"service": data}]}
        if isinstance(data, (list, tuple)):
            return {"calls": list(data), "parallel": True}
        return data


class ServiceSpec(BaseModel):
    """One workload (a Kubernetes deployment): a version of a service, with its replicas.

    A request to the workload first runs its own CPU work (``service_time`` on one of its
    ``workers``), then its downstream ``steps`` in order, then responds.

    Attributes:
        name: Unique workload name, DNS-like (``reviews-v2``); pods are ``<name>-<i>``.
        host: The service name callers use (``reviews``); ``None`` means ``name``.
        version: Version label (``v1``), used by routing rules.
        replicas: Number of pods, at least 1.
        workers: Requests one pod computes at once (app threads), at least 1.
        service_time: CPU work per request on one worker, in seconds (a distribution; a
            number or ``"1ms"`` is a constant).
        request_size_bytes: Default size of a request to this service, in bytes.
        response_size_bytes: Default size of this service's responses, in bytes.
        protocol: The protocol the service speaks.
        steps: Downstream calls, in order, after the service's own CPU work.
        namespace: The Kubernetes namespace (what a mesh's namespace scoping looks at).
        labels: The pods' labels, besides ``app: <host>`` and ``version: <version>``, which
            every pod has unless given here (see :meth:`pod_labels`).
        annotations: Annotations, as on a Kubernetes Service (``mesh.traefik.io/...``).
        service_account: The pods' Kubernetes service account; ``None`` is Kubernetes'
            ``default`` one (see :attr:`service_account_name`).
        misbehaviour: How the application misbehaves on its own; ``None`` = it does not.
        resources: The app container's CPU requests and limits; a limit below ``workers``
            is a CFS quota that throttles it (see :class:`ResourcesSpec`).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    name: str = Field(pattern=NAME_PATTERN, max_length=63)
    host: str | None = Field(default=None, pattern=NAME_PATTERN, max_length=63)
    version: str = Field(default="v1", min_length=1)
    replicas: int = Field(default=1, ge=1, le=MAX_REPLICAS)
    workers: int = Field(default=1, ge=1, le=MAX_WORKERS)
    service_time: DistributionSpec = Field(default=cast(Any, "1ms"))
    request_size_bytes: Size = Field(default=cast(Any, "1KiB"))
    response_size_bytes: Size = Field(default=cast(Any, "1KiB"))
    protocol: Protocol = "http1"
    steps: list[StepSpec] = Field(default_factory=list)
    namespace: str = Field(default="default", pattern=NAME_PATTERN, max_length=63)
    labels: dict[LabelKey, LabelValue] = Field(default_factory=dict, max_length=MAX_LABELS)
    annotations: dict[Annotated[str, Field(min_length=1, max_length=317)], AnnotationValue] = Field(
        default_factory=dict, max_length=MAX_ANNOTATIONS
    )
    service_account: str | None = Field(
        default=None, pattern=SERVICE_ACCOUNT_PATTERN, max_length=253
    )
    misbehaviour: MisbehaviourSpec | None = None
    resources: ResourcesSpec = ResourcesSpec()

    @property
    def host_name(self) -> str:
        """The host callers use to reach this workload: ``host``, or ``name`` if unset."""
        return self.host if self.host is not None else self.name

    @property
    def service_account_name(self) -> str:
        """The pods' service account: ``service_account``, or Kubernetes' ``default``."""
        return self.service_account if self.service_account is not None else "default"

    @property
    def principal(self) -> str:
        """The pods' identity as Istio matches it (see :func:`principal`)."""
        return principal(self.namespace, self.service_account_name)

    def pod_labels(self) -> Mapping[str, str]:
        """The labels of this workload's pods: ``app: <host>``, ``version: <version>`` and
        ``labels`` (which win), as a read-only view of one dict built once per spec (the
        pods of a workload share it)."""
        # The cache is a plain dict: a spec is copied and pickled with its caches, and a
        # mappingproxy can be neither.
        labels = cached_on(
            self,
            "pod_labels",
            (self.labels, self.host, self.version),
            lambda: {"app": self.host_name, "version": self.version, **self.labels},
        )
        return MappingProxyType(labels)

    def callees(self) -> list[str]:
        """Return the distinct hosts this workload calls, sorted."""
        return sorted({call.service for step in self.steps for call in step.calls})


class CallGraphSpec(BaseModel):
    """The services of an application and who calls whom.

    Validation: workload names are unique; the entry and every called host exist; no workload
    calls its own host; the workload-level graph has no cycle.

    Attributes:
        services: The workloads, at least one, with unique names.
        entry: The host the workload (the load generator) calls.
        entry_via_mesh: Traefik Mesh's opt-in for the load generator's calls to the entry
            (as a call's ``via_mesh``): the mesh name, or (``false``) the plain one.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    services: list[ServiceSpec] = Field(min_length=1)
    entry: str = Field(min_length=1)
    entry_via_mesh: bool = True

    @field_validator("services")
    @classmethod
    def _unique_names(cls, services: list[ServiceSpec]) -> list[ServiceSpec]:
        seen: set[str] = set()
        for svc in services:
            if svc.name in seen:
                raise ValueError(f"duplicate service name {svc.name!r}")
            seen.add(svc.name)
        return services

    @model_validator(mode="after")
    def _check_calls(self) -> CallGraphSpec:
        # pydantic runs this again each time the spec is given to another model's field (a
        # TopologySpec, an inline topology of an experiment): check each list of services once.
        cached_on(self, "calls_checked", (self.services, self.entry), self._validate_calls)
        return self

    def _validate_calls(self) -> bool:
        """Check the calls and the cycles (see the class docstring); raise ValueError."""
        hosts = set(self.hosts())
        if self.entry not in hosts:
            raise ValueError(
                f"entry {self.entry!r} is not a service host; hosts: {', '.join(sorted(hosts))}"
            )
        for svc in self.services:
            by_name: dict[str, bool] = {}  # the name (mesh or plain) each callee is called by
            for number, step in enumerate(svc.steps, start=1):
                for call in step.calls:
                    if by_name.setdefault(call.service, call.via_mesh) != call.via_mesh:
                        raise ValueError(
                            f"service {svc.name!r} step {number} calls {call.service!r} with "
                            f"via_mesh: {str(call.via_mesh).lower()}, another of its calls "
                            "with the other: a workload calls a service by one name"
                        )
                    if call.service not in hosts:
                        raise ValueError(
                            f"service {svc.name!r} step {number} calls unknown service "
                            f"{call.service!r}"
                        )
                    if call.service == svc.host_name:
                        raise ValueError(
                            f"service {svc.name!r} step {number} calls its own host "
                            f"{call.service!r}"
                        )
        if self._callees_first() is not None:
            return True
        # Only a cyclic graph gets here: networkx names the cycle for the message.
        cycle = nx.find_cycle(_workload_graph(self))
        names = [edge[0] for edge in cycle] + [cycle[0][0]]
        raise ValueError(f"call graph has a cycle: {' -> '.join(names)}")

    def topological_order(self) -> list[ServiceSpec]:
        """Return the workloads so that each comes before every workload it may call.

        Linear in workloads and calls; the order is deterministic (a depth-first search over
        the workloads sorted by name).
        """
        order = self._callees_first()
        assert order is not None, "a validated call graph has no cycle"
        return order[::-1]

    def _callees_first(self) -> list[ServiceSpec] | None:
        """The workloads, each after every workload it may call; ``None`` if there is a cycle."""
        return cached_on(self, "callees_first", (self.services,), lambda: _callees_first(self))

    def hosts(self) -> list[str]:
        """Return the distinct host names, sorted."""
        return list(self._index().hosts)

    def workloads_of(self, host: str) -> list[ServiceSpec]:
        """Return the workloads serving ``host``, sorted by name (a dictionary look-up).

        Raises:
            TopologyError: If no workload serves ``host``.
        """
        found = self._index().by_host.get(host)
        if found is None:
            raise TopologyError(f"unknown host {host!r}; hosts: {', '.join(self.hosts())}")
        return list(found)

    def service(self, name: str) -> ServiceSpec:
        """Return the workload called ``name`` (a dictionary look-up).

        Raises:
            TopologyError: If there is no such workload.
        """
        found = self._index().by_name.get(name)
        if found is None:
            names = ", ".join(sorted(s.name for s in self.services))
            raise TopologyError(f"unknown service {name!r}; services: {names}")
        return found

    def _index(self) -> _HostIndex:
        """The workloads by host and by name, built once per list of services."""
        return cached_on(self, "host_index", (self.services,), lambda: _HostIndex(self.services))


class _HostIndex:
    """Look-ups over the workloads of a call graph, built in one pass.

    Attributes:
        by_host: Host name to the workloads serving it, sorted by name.
        by_name: Workload name to its spec.
        hosts: The distinct host names, sorted.
    """

    __slots__ = ("by_host", "by_name", "hosts")

    def __init__(self, services: list[ServiceSpec]) -> None:
        by_host: dict[str, list[ServiceSpec]] = {}
        by_name: dict[str, ServiceSpec] = {}
        for svc in sorted(services, key=lambda s: s.name):
            by_host.setdefault(svc.host_name, []).append(svc)
            by_name.setdefault(svc.name, svc)
        self.by_host: dict[str, tuple[ServiceSpec, ...]] = {
            host: tuple(found) for host, found in by_host.items()
        }
        self.by_name = by_name
        self.hosts: tuple[str, ...] = tuple(sorted(by_host))


def _callees_first(spec: CallGraphSpec) -> list[ServiceSpec] | None:
    """Post-order of an iterative depth-first search over the workload graph (an edge from a
    workload to every workload of each host it calls), or ``None`` if the graph has a cycle.

    Iterative, so that a chain of 10,000 services does not exhaust Python's stack.
    """
    by_host = spec._index().by_host

    def callees(svc: ServiceSpec) -> list[ServiceSpec]:
        return [w for host in svc.callees() for w in by_host.get(host, ())]

    on_path, done = 1, 2
    state: dict[str, int] = {}
    order: list[ServiceSpec] = []
    for root in sorted(spec.services, key=lambda s: s.name):
        if root.name in state:
            continue
        state[root.name] = on_path
        stack = [(root, iter(callees(root)))]
        while stack:
            svc, pending = stack[-1]
            for nxt in pending:
                seen = state.get(nxt.name)
                if seen is None:
                    state[nxt.name] = on_path
                    stack.append((nxt, iter(callees(nxt))))
                    break
                if seen == on_path:
                    return None  # nxt is on the path to svc, and svc calls it: a cycle
            else:
                stack.pop()
                state[svc.name] = done
                order.append(svc)
    return order


def _workload_graph(spec: CallGraphSpec) -> nx.DiGraph:
    """Return the bare workload-level graph: an edge to every workload of each callee host."""
    by_host = spec._index().by_host
    graph = nx.DiGraph()
    for svc in sorted(spec.services, key=lambda s: s.name):
        graph.add_node(svc.name)
        for host in svc.callees():
            for callee in by_host.get(host, ()):
                graph.add_edge(svc.name, callee.name)
    return graph


def call_graph(spec: CallGraphSpec) -> nx.DiGraph:
    """Build the directed workload-level call graph.

    Node attributes (one node per workload, keyed by workload name, sorted by name):

    - ``host``: ``str``, the host name callers use.
    - ``version``: ``str``, the version label.
    - ``replicas``: ``int``, number of pods.
    - ``workers``: ``int``, concurrent requests per pod.
    - ``service_time``: the ``DistributionSpec`` of CPU work per request, in seconds.
    - ``protocol``: ``str``, one of :data:`Protocol`.
    - ``request_size_bytes``: ``int``, default request size.
    - ``response_size_bytes``: ``int``, default response size.

    Edge attributes (an edge from a workload to every workload serving a host it calls):

    - ``step``: ``int``, 0-based index of the caller's step that makes the call.
    - ``parallel``: ``bool``, whether that step is a parallel fan-out group.
    - ``probability``: ``float``, probability the call is made per request.
    - ``calls``: ``int``, how many calls to that host one request makes (a host called in
      several places); ``step``, ``parallel`` and ``probability`` describe the first one.

    Args:
        spec: The call graph spec (already validated, so the graph is acyclic).

    Returns:
        The call graph.
    """
    graph = nx.DiGraph()
    for svc in sorted(spec.services, key=lambda s: s.name):
        graph.add_node(
            svc.name,
            host=svc.host_name,
            version=svc.version,
            replicas=svc.replicas,
            workers=svc.workers,
            service_time=svc.service_time,
            protocol=svc.protocol,
            request_size_bytes=svc.request_size_bytes,
            response_size_bytes=svc.response_size_bytes,
        )
    for svc in sorted(spec.services, key=lambda s: s.name):
        for index, step in enumerate(svc.steps):
            for call in step.calls:
                for callee in spec.workloads_of(call.service):
                    if graph.has_edge(svc.name, callee.name):
                        graph.edges[svc.name, callee.name]["calls"] += 1
                        continue
                    graph.add_edge(
                        svc.name,
                        callee.name,
                        step=index,
                        parallel=step.parallel,
                        probability=call.probability,
                        calls=1,
                    )
    return graph
