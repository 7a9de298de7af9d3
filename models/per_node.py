"""A proxy per node (Maesh / Traefik Mesh): a DaemonSet of proxies, one on every node.

``app -> a node proxy (outbound, picks the endpoint) -> network -> app``; with
``server_side``, the destination node's proxy is on the path too (``-> node proxy -> app``).

**Which node proxy.** A client opts in by calling ``<svc>.<ns>.traefik.mesh``, which resolves
to the service's *shadow service*: a Service in the mesh's namespace whose selector is the
proxies' label (``component: maesh-mesh``) and whose target port is the one the controller
assigned to the service. Its endpoints are the node proxies of every node, and Traefik Mesh
sets neither ``internalTrafficPolicy: Local`` nor topology hints on it (traefik/mesh,
pkg/controller/service.go, ``ShadowServiceManager.CreateOrUpdate``: a spec of ports and
selector only), so kube-proxy picks one of them as for any ClusterIP service: in iptables
mode, uniformly at random over the ready endpoints (a chain of ``-m statistic --mode random
--probability 1/(n-i)`` rules: kubernetes pkg/proxy/iptables/proxier.go,
``writeServiceToEndpointRules``), once per *connection*, when it is opened (conntrack keeps the choice for the
connection's life). So a client's keep-alive connection sticks to one proxy, usually on
another node (``(n - 1) / n`` of them on ``n`` nodes): a network hop to that node, and back.

Each client pod keeps, per service it calls, a pool of such connections (an HTTP/1.1 one
carries one request at a time; the most recently freed is reused first, as Go's
``http.Transport`` does; HTTP/2 and gRPC share one connection). A proxy that is down hurts
every connection through it, wherever its client is: a request on it fails (the connection
is reset, or a new one refused) and the connection is dropped, so the next request opens a
new one and kube-proxy picks again, among the proxies still in the shadow service's
endpoints (a crashed proxy leaves them once its readiness probe has failed: every 1 s, 3
times, in the Helm chart's DaemonSet; a failed node's, after the node monitor's grace
period).

**Opt-in.** A call by the plain service name (a call's ``via_mesh: false``, the call
graph's ``entry_via_mesh: false``) does not touch the mesh: it goes to a pod as with no mesh
(:class:`~models.no_mesh.NoMesh`). Traefik Mesh has no mTLS.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field

from models.dataplane import APP_REFUSED, Exchange, Hop, MtlsMode, ProxiedMesh, ProxiedSpec
from models.defaults import TRAEFIK
from models.ingress import EdgeListener, Ingress, IngressSpec, build_ingress
from models.loadbalancer import LbPolicy
from models.mesh import Parent
from models.messages import Flags, Request, Response
from models.no_mesh import NoMesh, NoMeshSpec
from models.proxy import Proxy, ProxySpec
from models.routing import PolicySet
from models.scoping import ConfigIndex
from models.service import LOADGEN_WORKLOAD
from models.world import PodBase, World

if TYPE_CHECKING:
    from models.service import ClientPod, ServicePod

__all__ = ["PerNodeSpec", "PerNodeMesh"]


class PerNodeSpec(ProxiedSpec):
    """A proxy per node (and the shared fields of :class:`ProxiedSpec`).

    Attributes:
        proxy: the node proxy (its ``outbound`` chain runs for the connections kube-proxy
            sends to it, from any node; its ``inbound`` chain, with ``server_side``, for
            destinations on its node).
        server_side: the destination's node proxy is on the path too.
        mtls_mode: ``DISABLE`` for Traefik Mesh (it has no mTLS).
        load_balancer: the node proxy's policy (Traefik: weighted round robin).
        retries: Traefik Mesh's ``retry-attempts`` (network errors only; none by default).
        control_plane: the Maesh controller (``kind: maesh``), or None.
        acl: Traefik Mesh's ACL mode (its Helm value ``acl``): SMI TrafficTargets decide who
            may call whom, and what none allows is denied.
        limit_http_ports: the controller's ``--limitHTTPPort`` (Helm ``limits.http``, 10):
            the HTTP entry points of each proxy, one per port index of a service (a
            service's port ``i`` gets port ``5000 + i``); here every service has one port.
        limit_tcp_ports: ``--limitTCPPort`` (Helm ``limits.tcp``, 25): the TCP entry points,
            one per port of each service whose ``mesh.traefik.io/traffic-type`` is ``tcp``,
            for the whole mesh. The services beyond it (by name: the controller's order is
            the informer's) get no port on their shadow service: a call by the mesh name
            fails at once (pkg/controller/service.go, ``getMappedPort``: "unable to find an
            available port", the port skipped).
        ingress: Traefik as the ingress controller in front of the mesh (``kind: traefik``;
            see :mod:`models.ingress`), which the load generator's requests enter through;
            None: the load generator calls the entry service from its pod.
    """

    architecture: Literal["per_node"] = "per_node"
    proxy: ProxySpec = ProxySpec()
    server_side: bool = False
    mtls_mode: MtlsMode = "DISABLE"
    load_balancer: LbPolicy = "round_robin"
    acl: bool = False
    limit_http_ports: Annotated[int, Field(ge=0, le=65535)] = TRAEFIK["limits.http"]
    limit_tcp_ports: Annotated[int, Field(ge=0, le=65535)] = TRAEFIK["limits.tcp"]
    ingress: IngressSpec | None = None


class PerNodeMesh(ProxiedMesh):
    """A node proxy on every node (a DaemonSet); it knows every service of the mesh, and a
    client's connection reaches one of them as kube-proxy picks it (see the module
    docstring)."""

    architecture = "per_node"
    spec: PerNodeSpec
    reads_traefik = True

    PROXY_DETECTION_S = 3 * 1.0
    """How long a crashed node proxy stays in the shadow services' endpoints: the Helm
    chart's readiness probe (``/ping`` every ``periodSeconds: 1``, Kubernetes'
    ``failureThreshold`` 3; traefik/mesh-helm-chart, mesh/templates/proxy/proxy-daemonset.yaml)."""

    def __init__(self, world: World, spec: PerNodeSpec) -> None:
        super().__init__(world, spec)
        self.mtls = spec.mtls_mode != "DISABLE"
        self.node_proxies: dict[str, Proxy] = {}
        # Traefik answers a failed connection with 502 Bad Gateway (no Envoy flags), after
        # its dial timeout (serversTransport forwardingTimeouts.dialTimeout, 30 s) when
        # nothing answers.
        self.refused = Response(TRAEFIK["connectFailure.status"], 11)
        self.connect_timeout = TRAEFIK["dialTimeout"]
        # The shadow services' endpoints: the node proxies whose readiness holds, by node name.
        self.ready: list[Proxy] = []
        self._unready: set[str] = set()
        # Clients' connections to the shadow services: free HTTP/1.1 ones (a stack each) and
        # the one HTTP/2 connection, by (client pod, service); kube-proxy's draw per client.
        self._free: dict[tuple[str, str], list[AppConnection]] = {}
        self._streams: dict[tuple[str, str], AppConnection] = {}
        self._draws: dict[str, Callable[[], float]] = {}
        # Calls by the plain service name, (calling workload, host): straight to a pod.
        self._plain: frozenset[tuple[str, str]] = frozenset()
        # Services with no port on their shadow service (beyond the port limits).
        self._no_port: frozenset[str] = frozenset()
        self._direct = NoMesh(world, NoMeshSpec())
        self._direct.endpoints = self.endpoints  # the same endpoints, not a copy
        # Connections to the shadow services opened, and those to another node's proxy.
        self.connections_opened = 0
        self.connections_crossing = 0
        # Traefik in front of the mesh, and the pod whose requests enter through it.
        self.ingress: Ingress | None = None
        self._edge_client: PodBase | None = None
        self._ingress_names: frozenset[str] = frozenset()

    def use_policies(self, policies: PolicySet) -> None:
        # In ACL mode, what no TrafficTarget allows is denied: with none, everything.
        if self.spec.acl and policies.acl is None:
            policies = replace(policies, acl=())
        super().use_policies(policies)
        self._allocate_ports()

    def _allocate_ports(self) -> None:
        """The services that get no port on their shadow service (``limit_http_ports``,
        ``limit_tcp_ports``): calls to them by the mesh name fail."""
        hosts = sorted(self.world.topology.call_graph.hosts())
        traefik = self.policies.traefik
        tcp = [h for h in hosts if h in traefik and traefik[h].traffic_type == "tcp"]
        http = [h for h in hosts if h not in traefik or traefik[h].traffic_type == "http"]
        no_port = set(tcp[self.spec.limit_tcp_ports :])
        if self.spec.limit_http_ports < 1:  # a service's one port is its port index 0
            no_port.update(http)
        self._no_port = frozenset(no_port)

    def attach(self, pods: list[ServicePod], clients: list[ClientPod]) -> None:
        graph = self.world.topology.call_graph
        plain = {
            (svc.name, call.service)
            for svc in graph.services
            for step in svc.steps
            for call in step.calls
            if not call.via_mesh
        }
        if not graph.entry_via_mesh:
            plain.add((LOADGEN_WORKLOAD, graph.entry))
        self._plain = frozenset(plain)
        super().attach(pods, clients)

    def make_proxies(
        self, pods: list[ServicePod], clients: list[ClientPod], index: ConfigIndex
    ) -> list[tuple[Proxy, frozenset[str] | None]]:
        made = []
        # A DaemonSet: a proxy on every node, whether or not it runs pods of the mesh.
        for name in sorted(self.world.nodes):
            if name in self.node_proxies:
                continue
            # Traefik's dynamic configuration holds every service of the mesh.
            proxy, hosts = self.new_proxy(
                f"{name}.node-proxy",
                self.world.nodes[name],
                "node_proxy",
                self.spec.proxy,
                ("mesh", set(), set(), set()),
                index,
            )
            self.node_proxies[name] = proxy
            made.append((proxy, hosts))
        if made:
            self._ready_changed()
        if self.spec.ingress is not None and self.ingress is None:
            self._edge_client = clients[0] if clients else None
            self.ingress, edges = build_ingress(
                self, self.spec.ingress, self.spec.proxy, index, self._ingress_route
            )
            for proxy, _ in edges:
                # Not Traefik Mesh's: Traefik's own Kubernetes provider watches the
                # endpoints (the live ones; its throttle is not modelled).
                proxy.apply_config(0, self.endpoints)
            self._ingress_names = frozenset(p.name for p in self.ingress.proxies)
        return made

    def _ingress_route(self, proxy: Proxy, edge: EdgeListener) -> Callable[[], list[Hop] | None]:
        """A Traefik ingress replica's route. Straight to the entry's pods: it picks the
        endpoint (its own load balancer over the Service's endpoints). Via the mesh: its
        router's service is ``<svc>.<ns>.traefik.mesh``, the shadow service, whose
        connections kube-proxy spreads over the ready node proxies (uniformly at random,
        here per request, from the stream ``ingress.kube-proxy``); that node proxy picks."""
        own = [Hop(proxy, edge, False, pooled=True)]
        if not self.spec.ingress.via_mesh:  # type: ignore[union-attr]
            return lambda: own
        draw = self.world.rng("ingress.kube-proxy").random

        def via_mesh() -> list[Hop] | None:
            ready = self.ready
            if not ready:
                return None
            node_proxy = ready[min(int(draw() * len(ready)), len(ready) - 1)]
            key = ("ingress", proxy.name, node_proxy.name)
            hops = self._routes.get(key)
            if hops is None:
                hops = self._routes[key] = [own[0], *self._hops_via(node_proxy)]
            return hops

        return via_mesh

    # --- a client's connection -------------------------------------------------------------

    def send(
        self, src: PodBase, host: str, request: Request, parent: Parent, slot: int = 0
    ) -> None:
        if src is self._edge_client:
            self.ingress.send(src, host, request, parent, slot)  # type: ignore[union-attr]
            return
        plain = self._plain
        if plain and (src.workload, host) in plain:  # the plain name: no mesh on the way
            self._direct.send(src, host, request, parent, slot)
            return
        if self._no_port and host in self._no_port:  # no port: nothing to connect to
            self.answer_now(parent, slot, APP_REFUSED)
            return
        key = (src.name, host)
        if request.protocol in ("http2", "grpc"):  # one connection, its requests as streams
            conn = self._streams.get(key)
            if conn is None:
                conn = self._open(src)
                if conn is None:
                    self.answer_now(parent, slot, NO_SHADOW_ENDPOINT)
                    return
                self._streams[key] = conn
            if conn.proxy.down:  # reset: this request fails, the next one reconnects
                del self._streams[key]
                self.answer_now(parent, slot, APP_REFUSED)
                return
            Exchange(self, src, host, request, parent, slot).start(conn.hops)
            return
        free = self._free.get(key)
        if free is None:
            free = self._free[key] = []
        if free:
            conn = free.pop()
        else:
            conn = self._open(src, free)
            if conn is None:
                self.answer_now(parent, slot, NO_SHADOW_ENDPOINT)
                return
        if conn.proxy.down:  # reset, or refused: dropped, the next request reconnects
            self.answer_now(parent, slot, APP_REFUSED)
            return
        conn.parent = parent
        conn.slot = slot
        Exchange(self, src, host, request, conn, 0).start(conn.hops)

    def _open(self, src: PodBase, free: list[AppConnection] | None = None) -> AppConnection | None:
        """A new connection from ``src`` to a shadow service: kube-proxy picks a ready node
        proxy, uniformly at random (None: the shadow service has no ready endpoint)."""
        ready = self.ready
        if not ready:
            return None
        if len(ready) == 1:
            proxy = ready[0]
        else:
            draw = self._draws.get(src.name)
            if draw is None:
                draw = self._draws[src.name] = src.uniform(f"{src.name}.kube-proxy")
            proxy = ready[min(int(draw() * len(ready)), len(ready) - 1)]
        self.connections_opened += 1
        if proxy.node is not src.node:
            self.connections_crossing += 1
        return AppConnection(proxy, self._hops_via(proxy), free)

    def _hops_via(self, proxy: Proxy) -> list[Hop]:
        key = ("via", proxy.name)
        hops = self._routes.get(key)
        if hops is None:
            hops = self._routes[key] = [Hop(proxy, proxy.outbound, self.mtls, pooled=True)]
        return hops

    def set_proxies_ready(self, proxies: list[Proxy], ready: bool) -> None:
        """Node proxies leave (or rejoin) the shadow services' endpoints: kube-proxy sends
        new connections to them no more (or again)."""
        for proxy in proxies:
            if ready:
                self._unready.discard(proxy.name)
            else:
                self._unready.add(proxy.name)
        self._ready_changed()

    def _ready_changed(self) -> None:
        found = [self.node_proxies[k] for k in sorted(self.node_proxies)]
        self.ready = [p for p in found if p.name not in self._unready]

    def config_changed(self, kind: str, service: str, hosts: set[str]) -> None:
        self._direct.config_changed(kind, service, hosts)  # plain names: kube-proxy's view
        super().config_changed(kind, service, hosts)
        if self.ingress is not None and self.control_plane is not None:
            # Traefik's provider, not the mesh's controller: the live endpoints, at once.
            snapshot = self._snapshot()
            for proxy in self.ingress.proxies:
                proxy.apply_config(proxy.config_version + 1, snapshot)

    def extras(self) -> dict[str, Any]:
        found = super().extras()
        found["shadow_service_connections"] = {
            "opened": self.connections_opened,
            "crossing_nodes": self.connections_crossing,
        }
        return found

    # --- routes ----------------------------------------------------------------------------

    def first_hops(self, src: PodBase, host: str) -> list[Hop]:
        """The client's own node's proxy (what a caller that is not a client's connection,
        such as a test, goes through); the ingress for requests that enter through it."""
        if src is self._edge_client:
            return self.ingress.first_hops()  # type: ignore[union-attr]
        return self._hops_via(self.node_proxies[src.node.name])

    def tail_hops(self, picker: Proxy, dst: PodBase) -> list[Hop]:
        if not self.spec.server_side or picker.name in self._ingress_names:
            return []  # (Traefik straight to the pod: no mesh proxy on its way in)
        key = ("in", dst.node.name)
        hops = self._routes.get(key)
        if hops is None:
            into = self.node_proxies[dst.node.name]
            hops = self._routes[key] = [Hop(into, into.inbound, self.mtls)]
        return hops

    def proxies(self) -> list[Proxy]:
        found = [self.node_proxies[k] for k in sorted(self.node_proxies)]
        if self.ingress is not None:
            found += self.ingress.proxies
        return found

    def proxies_of(self, pods: list[PodBase]) -> list[Proxy]:
        return [self.node_proxies[n] for n in sorted({pod.node.name for pod in pods})]


class AppConnection:
    """A client's connection to a shadow service, through the node proxy kube-proxy chose
    when it was opened; for HTTP/1.1, also the request it carries now (its ``parent`` and
    ``slot``), and the pool it goes back to when the response is in."""

    __slots__ = ("proxy", "hops", "free", "parent", "slot")

    def __init__(self, proxy: Proxy, hops: list[Hop], free: list[AppConnection] | None) -> None:
        self.proxy = proxy
        self.hops = hops
        self.free = free
        self.parent: Parent | None = None
        self.slot = 0

    def on_reply(self, slot: int, response: Response) -> None:
        """The response is back at the client: the connection is free again (for the
        next request, which may be sent from inside ``parent.on_reply``)."""
        parent = self.parent
        assert parent is not None and self.free is not None
        self.parent = None
        self.free.append(self)
        parent.on_reply(self.slot, response)


NO_SHADOW_ENDPOINT = Response(503, 0, Flags.NONE)
"""The shadow service has no ready endpoint: kube-proxy rejects the connection."""
