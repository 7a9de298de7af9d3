"""The edge: an ingress in front of the mesh, where the load generator's requests enter.

Users who compare meshes compare their edges too, since every request from outside pays that
hop. Two kinds:

- ``istio_gateway``: Istio's ingress gateway (``istio-ingressgateway``), a Deployment of
  Envoy pods at the edge, configured by a ``Gateway`` (its ``servers``: ``port``, ``hosts``,
  ``tls``) and the VirtualServices bound to it. The gateway's Envoy is a meshed client: it
  picks the entry service's endpoint itself (EDS) and talks mTLS to the endpoint's sidecar, as
  a sidecar's outbound listener would (Istio's auto mTLS).

  ``client -> gateway (edge listener, picks the endpoint) -> entry's sidecar -> app``

- ``traefik``: Traefik as a separate ingress controller in front of Traefik Mesh, which has
  none of its own (its docs: "use an Ingress Controller such as Traefik"; Traefik's pods are
  not in the mesh). Traefik's Kubernetes provider routes either straight to the entry's pods
  (``via_mesh: false``: it load-balances over the Service's endpoints itself, no mesh proxy on
  the way), or to ``<svc>.<ns>.traefik.mesh`` (``via_mesh: true``): the shadow service, whose
  endpoints are the node proxies, one of which picks the endpoint.

  ``client -> traefik (picks a pod) -> app`` or
  ``client -> traefik -> a node proxy (picks a pod) -> app``

The ingress's one listener is its proxy spec's ``outbound`` chain (an :class:`EdgeListener`):
it receives from outside and sends into the mesh. With ``tls`` on the Gateway server that
admits the entry host, the gateway terminates TLS from outside: the chain's ``tls`` filter
runs for the downstream connection too (its costs added once more, on top of the upstream
mTLS, when the upstream is mTLS). The load generator's own connections to the ingress are
kept alive and their handshakes are not modelled (as the app's connection to its sidecar).

An external load balancer in front of the ingress's replicas spreads requests over them
(uniformly at random, per request, from the stream ``ingress.lb``; one replica: no draw).
Requests from the load generator only enter through the ingress; calls between services stay
as they are. Without ``ingress`` nothing changes (no ingress object, no draw).

The way out, as an option: Istio's egress gateway (:class:`EgressSpec`), between a meshed
pod's sidecar and the services it stands in front of.

The gateways hold the mesh's configuration but not its routes (:class:`EdgeProxy`): a
VirtualService bound to the mesh does not apply at a gateway, and Traefik reads none of
Traefik Mesh's SMI objects and annotations.

Not modelled: the ``Gateway`` and ``ServiceEntry`` objects themselves (their fields are the
ingress's ``servers`` and the egress's ``hosts``), a ``VirtualService`` bound to a gateway
(``gateways``: here the gateway's route to an admitted host is a plain one), authorization
policies and
Istio's metrics seeing the gateway's identity (they see the load generator's, or the
caller's), Traefik's provider throttle (its view of the endpoints follows them at once).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields, replace
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from models.dataplane import Exchange
from models.filters import FilterSpec, Listener, ListenerCost
from models.messages import Flags, Request, Response
from models.proxy import IoPartSpec, IoSpec, Proxy, ProxySpec
from models.routing import PolicySet

if TYPE_CHECKING:
    from models.dataplane import Hop, ProxiedMesh
    from models.mesh import Parent
    from models.scoping import ConfigIndex
    from models.world import PodBase

__all__ = [
    "EdgeSpec",
    "IngressSpec",
    "EgressSpec",
    "Egress",
    "build_egress",
    "check_egress",
    "GatewayServerSpec",
    "GatewayTlsSpec",
    "EdgeListener",
    "EdgeProxy",
    "Ingress",
    "build_ingress",
    "check_ingress",
]

IngressKind = Literal["istio_gateway", "traefik"]


class GatewayTlsSpec(BaseModel):
    """A Gateway server's ``tls`` (networking.istio.io/v1 ``ServerTLSSettings``): the gateway
    terminates TLS from outside.

    Attributes:
        mode: ``SIMPLE`` (server certificate only) or ``MUTUAL`` (client certificates too;
            the same costs here: one more TLS session per request's connection).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Literal["SIMPLE", "MUTUAL"] = "SIMPLE"


class GatewayServerSpec(BaseModel):
    """One of a Gateway's ``servers`` (networking.istio.io/v1 ``Server``); for Traefik, an
    entry point and its routers' ``tls``.

    Attributes:
        port: the port it listens on (``port.number``).
        hosts: the services it admits, by name (``reviews``, ``reviews.default``,
            ``reviews.default.svc.cluster.local``) or ``*`` for any.
        tls: TLS terminated at the edge; None for plaintext HTTP.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    port: Annotated[int, Field(ge=1, le=65535)] = 80
    hosts: Annotated[list[str], Field(min_length=1)] = ["*"]
    tls: GatewayTlsSpec | None = None

    def admits(self, host: str) -> bool:
        """Whether this server admits the service ``host`` (its short name)."""
        return any(h == "*" or h.split(".")[0] == host for h in self.hosts)


class EdgeSpec(BaseModel):
    """What an edge Deployment (an ingress or an egress gateway) has.

    Attributes:
        replicas: its pods (required: the Deployment's ``replicas``).
        nodes: where they run, replica ``k`` on ``nodes[k % len(nodes)]``; empty: the
            cluster's nodes in order.
        proxy: its proxy; None: the mesh's own proxy's costs (Envoy for Istio's gateways,
            Traefik for Traefik Mesh's, without the node proxies' CPU limit), its
            ``outbound`` chain as the edge listener, its io without the loopback hop to an
            app (:func:`edge_proxy`).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    replicas: Annotated[int, Field(ge=1, le=10_000)]
    nodes: list[str] = []
    proxy: ProxySpec | None = None


class IngressSpec(EdgeSpec):
    """The edge the load generator's requests enter through (see the module docstring), and
    the fields of :class:`EdgeSpec`.

    Attributes:
        kind: ``istio_gateway`` (sidecar meshes) or ``traefik`` (in front of Traefik Mesh).
        servers: the Gateway's ``servers`` (Traefik: its entry points); the first that admits
            the entry service decides whether TLS is terminated.
        via_mesh: ``traefik`` only: route to ``<svc>.<ns>.traefik.mesh`` (through a node
            proxy) rather than straight to the entry's pods.
    """

    kind: IngressKind
    servers: Annotated[list[GatewayServerSpec], Field(min_length=1)] = [GatewayServerSpec()]
    via_mesh: bool = False

    @model_validator(mode="after")
    def _via_mesh_is_traefiks(self) -> IngressSpec:
        if self.via_mesh and self.kind != "traefik":
            raise ValueError(
                "via_mesh: only a traefik ingress routes through Traefik Mesh's node proxies "
                "(Istio's gateway is a meshed client itself)"
            )
        return self

    def server_for(self, host: str) -> GatewayServerSpec | None:
        """The first server that admits ``host``, if any."""
        for server in self.servers:
            if server.admits(host):
                return server
        return None


def check_ingress(
    spec: IngressSpec, architecture: str, hosts: set[str], entry: str, nodes: list[str]
) -> None:
    """Check an ingress against its mesh and topology; errors name the field (under
    ``mesh.ingress``).

    Args:
        spec: the ingress.
        architecture: the mesh's architecture.
        hosts: the topology's services.
        entry: the service the load generator calls.
        nodes: the cluster's node names.
    """
    wants = {"istio_gateway": "sidecar", "traefik": "per_node"}[spec.kind]
    if architecture != wants:
        raise ValueError(
            f"mesh.ingress.kind: {spec.kind} fronts a {wants} mesh, not a {architecture} one"
        )
    for i, server in enumerate(spec.servers):
        for j, host in enumerate(server.hosts):
            if host != "*" and host.split(".")[0] not in hosts:
                raise ValueError(
                    f"mesh.ingress.servers.{i}.hosts.{j}: no service {host!r}; services: "
                    f"{', '.join(sorted(hosts))}"
                )
    if spec.server_for(entry) is None:
        raise ValueError(
            f"mesh.ingress.servers: no server admits the entry service {entry!r}, which the "
            "load generator calls through the ingress"
        )
    for k, node in enumerate(spec.nodes):
        if node not in nodes:
            raise ValueError(f"mesh.ingress.nodes.{k}: no node {node!r}; nodes: {', '.join(nodes)}")


class EdgeListener(Listener):
    """The ingress's listener: a chain that also terminates TLS from outside when
    ``terminates_tls`` (its ``tls`` filters' costs added for every protocol, whether or not
    the upstream is mTLS, which adds them once more).

    Args:
        filters: the chain.
        terminates_tls: whether the downstream connection is TLS.
    """

    def __init__(self, filters: list[FilterSpec], terminates_tls: bool) -> None:
        self.terminates_tls = terminates_tls  # read by _fold, which the base class calls
        self._termination = Listener("tls", [f for f in filters if f.kind == "tls"])
        super().__init__("outbound", filters)

    def _fold(self, protocol: str, mtls: bool) -> ListenerCost:
        cost = super()._fold(protocol, mtls)
        if not self.terminates_tls:
            return cost
        extra = self._termination.cost(protocol, True)
        return ListenerCost(
            *(getattr(cost, f.name) + getattr(extra, f.name) for f in fields(ListenerCost))
        )


NO_INGRESS_ROUTE = Response(404, 0, Flags.NO_ROUTE)
"""The ingress admits no such host: Envoy's 404 ``NR`` (Traefik's 404 too)."""
NO_SERVER = Response(503, 0, Flags.NONE)
"""Traefik has no ready server for the service (its 503)."""


class Ingress:
    """The ingress's pods at run time: its proxies, the hops of a request through each, and
    the external load balancer's choice among them.

    Args:
        mesh: the mesh it fronts (it builds the proxies: :meth:`ProxiedMesh.new_proxy`).
        spec: the validated ingress.
        proxies: its proxies, one per replica, in order.
        hops: per replica, the hops up to the one that picks the endpoint (or a function of
            the request's draw that gives them, for Traefik via the mesh).
        hosts: the services it admits.
        draw: the external load balancer's stream (None: one replica).
    """

    def __init__(
        self,
        mesh: ProxiedMesh,
        spec: IngressSpec,
        proxies: list[Proxy],
        hops: list[Callable[[], list[Hop] | None]],
        hosts: Callable[[str], bool],
        draw: Callable[[], float] | None,
    ) -> None:
        self.mesh = mesh
        self.spec = spec
        self.proxies = proxies
        self._hops = hops
        self._admits = hosts
        self._draw = draw

    def first_hops(self) -> list[Hop]:
        """The hops through the first replica (where the load generator's connections are
        accepted, for their handshake's round trip: ``Workload.connect_rtt``)."""
        hops = self._hops[0]()
        return hops if hops is not None else []

    def send(self, src: PodBase, host: str, request: Request, parent: Parent, slot: int) -> None:
        """Carry a request from outside (the load generator) through a replica."""
        mesh = self.mesh
        if not self._admits(host):
            mesh.answer_now(parent, slot, NO_INGRESS_ROUTE)
            return
        draw = self._draw
        k = 0 if draw is None else min(int(draw() * len(self._hops)), len(self._hops) - 1)
        hops = self._hops[k]()
        if hops is None:
            mesh.answer_now(parent, slot, NO_SERVER)
            return
        Exchange(mesh, src, host, request, parent, slot).start(hops)


def replica_nodes(spec: EdgeSpec, nodes: list[str]) -> list[str]:
    """The node of each replica (see :attr:`EdgeSpec.nodes`)."""
    where = spec.nodes or nodes
    return [where[k % len(where)] for k in range(spec.replicas)]


def ingress_name(spec: IngressSpec, k: int) -> str:
    """Replica ``k``'s pod name (the Deployment's, without the hash)."""
    base = "istio-ingressgateway" if spec.kind == "istio_gateway" else "traefik"
    return f"{base}-{k}"


class EdgeProxy(Proxy):
    """A gateway's proxy: it holds the mesh's configuration, but the routes bound to the mesh
    are not its own. In Istio a VirtualService without ``gateways`` applies to sidecars only
    (``mesh``): the gateway routes an admitted host to its service with the route of the
    VirtualService bound to it, here a plain one (DestinationRules, which apply to every
    client, still do). Traefik is not Traefik Mesh: it reads neither the mesh's SMI objects
    nor its ``mesh.traefik.io`` annotations."""

    _source: Any = None
    _edge: Any = None

    def apply_config(self, version: int, view: dict[str, Any]) -> None:
        super().apply_config(version, view)
        self.use_policies(self.policies)

    def use_policies(self, policies: PolicySet) -> None:
        """The mesh's ``policies`` as this gateway runs them."""
        if policies is not self._source:  # the same set is pushed to every proxy
            self._source = policies
            self._edge = replace(policies, routes={}, traefik={}, acl=None)
        self.policies = self._edge
        self._routers.clear()


def edge_proxy(spec: ProxySpec) -> ProxySpec:
    """The mesh's proxy as an edge proxy: the same, but with no loopback hop to an app in its
    io (MeshInsight's ``ipc``: a gateway receives from the network and sends to it). The
    ``io_delay`` shorthand has no components, so it is kept whole."""
    io = spec.io
    if io is None:
        return spec
    zero = IoPartSpec()
    edge_io = IoSpec(
        outbound=io.outbound.model_copy(update={"ipc": zero}),
        inbound=io.inbound.model_copy(update={"ipc": zero}),
    )
    return ProxySpec.model_validate({**spec.model_dump(), "io": edge_io.model_dump()})


def _edge_proxies(
    mesh: ProxiedMesh,
    spec: Any,
    proxy_spec: ProxySpec,
    edge: EdgeListener,
    kind: str,
    name: Callable[[int], str],
    hosts: frozenset[str],
    index: ConfigIndex,
) -> tuple[list[Proxy], list[tuple[Proxy, frozenset[str] | None]]]:
    """A gateway's pods (``spec.replicas`` on ``spec.nodes``): proxies of ``kind`` whose
    outbound listener is ``edge`` and which know ``hosts``; with the hosts each must know."""
    world = mesh.world
    names = [n.name for n in world.topology.cluster.nodes]
    proxies: list[Proxy] = []
    made: list[tuple[Proxy, frozenset[str] | None]] = []
    for k, node in enumerate(replica_nodes(spec, names)):
        proxy, known = mesh.new_proxy(
            name(k),
            world.nodes[node],
            kind,
            proxy_spec,
            ("mesh", set(), set(hosts), set()),
            index,
            proxy_class=EdgeProxy,
        )
        proxy.outbound = edge
        proxy.use_policies(proxy.policies)  # type: ignore[attr-defined]
        proxies.append(proxy)
        made.append((proxy, known))
    return proxies, made


def build_ingress(
    mesh: ProxiedMesh,
    spec: IngressSpec,
    default_proxy: ProxySpec,
    index: ConfigIndex,
    route: Callable[[Proxy, EdgeListener], Callable[[], list[Hop] | None]],
) -> tuple[Ingress, list[tuple[Proxy, frozenset[str] | None]]]:
    """Build the ingress's proxies (kind ``ingress``) and their routes.

    Args:
        mesh: the mesh it fronts.
        spec: the validated ingress.
        default_proxy: the mesh's own proxy, for ``spec.proxy`` None.
        index: the mesh's configuration now (what each proxy knows: every service).
        route: given a replica's proxy and its edge listener, what gives the hops of a
            request through it (None: nowhere to send it).

    Returns:
        The ingress, and its proxies with the hosts each must know (for the control plane).
    """
    world = mesh.world
    graph = world.topology.call_graph
    entry = graph.entry
    server = spec.server_for(entry)
    proxy_spec = spec.proxy if spec.proxy is not None else edge_proxy(default_proxy)
    edge = EdgeListener(proxy_spec.outbound, server is not None and server.tls is not None)
    admitted = frozenset(h for h in graph.hosts() if spec.server_for(h) is not None)
    proxies, made = _edge_proxies(
        mesh, spec, proxy_spec, edge, "ingress", lambda k: ingress_name(spec, k), admitted, index
    )
    hops = [route(proxy, edge) for proxy in proxies]
    draw = world.rng("ingress.lb").random if spec.replicas > 1 else None
    return Ingress(mesh, spec, proxies, hops, admitted.__contains__, draw), made


class EgressSpec(EdgeSpec):
    """Istio's egress gateway (``istio-egressgateway``): calls from meshed pods to the
    services in ``hosts`` leave through it (the fields of :class:`EdgeSpec` too).

    In Istio this is a ServiceEntry for the external host, a Gateway on the egress gateway,
    and a VirtualService bound to ``mesh`` that sends the host to the gateway and one bound
    to the gateway that sends it out. Here: the caller's sidecar sends the request, mTLS,
    to an egress gateway replica (its outbound listener does not pick the endpoint: it
    routes to the gateway's Service); the gateway terminates that mTLS and picks the
    external service's endpoint, to which it talks plaintext when the service's pods have
    no sidecar, as an external service's do not.

    ``client app -> own sidecar -> egress gateway (picks) -> external service``

    Attributes:
        hosts: the services reached through the gateway (services of the topology, standing
            for the external hosts; put their pods outside the mesh, e.g. in a namespace
            labelled ``istio-injection: disabled``). Pods without a sidecar call them
            directly, as in Istio.
    """

    hosts: Annotated[list[str], Field(min_length=1)]


def check_egress(spec: EgressSpec, hosts: set[str], nodes: list[str]) -> None:
    """Check an egress gateway against the topology; errors name the field (under
    ``mesh.egress``)."""
    for j, host in enumerate(spec.hosts):
        if host.split(".")[0] not in hosts:
            raise ValueError(
                f"mesh.egress.hosts.{j}: no service {host!r}; services: {', '.join(sorted(hosts))}"
            )
    for k, node in enumerate(spec.nodes):
        if node not in nodes:
            raise ValueError(f"mesh.egress.nodes.{k}: no node {node!r}; nodes: {', '.join(nodes)}")


class Egress:
    """The egress gateway's pods at run time: the hops of a call from a sidecar through a
    replica (picked per request, uniformly at random from the stream ``egress.lb``: the
    sidecar's balancer over the gateway's endpoints, simplified).

    Args:
        proxies: its proxies, one per replica.
        hosts: the services reached through it (short names).
        edge: the gateways' edge listener.
        draw: the replica choice's stream (None: one replica).
    """

    def __init__(
        self,
        proxies: list[Proxy],
        hosts: frozenset[str],
        edge: EdgeListener,
        draw: Callable[[], float] | None,
    ) -> None:
        self.proxies = proxies
        self.hosts = hosts
        self.edge = edge
        self._draw = draw

    def pick(self) -> Proxy:
        """The replica a request goes to."""
        draw = self._draw
        if draw is None:
            return self.proxies[0]
        n = len(self.proxies)
        return self.proxies[min(int(draw() * n), n - 1)]


def build_egress(
    mesh: ProxiedMesh,
    spec: EgressSpec,
    default_proxy: ProxySpec,
    index: ConfigIndex,
    mtls: bool,
) -> tuple[Egress, list[tuple[Proxy, frozenset[str] | None]]]:
    """Build the egress gateway's proxies (kind ``egress``).

    Args:
        mesh: the mesh.
        spec: the validated egress gateway.
        default_proxy: the mesh's own proxy, for ``spec.proxy`` None.
        index: the mesh's configuration now.
        mtls: whether the sidecars' connections to it are mTLS (it terminates them).

    Returns:
        The egress gateway, and its proxies with the hosts each must know.
    """
    world = mesh.world
    proxy_spec = spec.proxy if spec.proxy is not None else edge_proxy(default_proxy)
    edge = EdgeListener(proxy_spec.outbound, mtls)
    hosts = frozenset(h.split(".")[0] for h in spec.hosts)
    proxies, made = _edge_proxies(
        mesh, spec, proxy_spec, edge, "egress", lambda k: f"istio-egressgateway-{k}", hosts, index
    )
    draw = world.rng("egress.lb").random if spec.replicas > 1 else None
    return Egress(proxies, hosts, edge, draw), made
