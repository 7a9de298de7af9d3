"""What every proxied architecture shares: carrying a call through a list of proxy hops.

An architecture says, for a call from a pod to a service, which endpoint it goes to and which
proxies it passes on the way (:meth:`ProxiedMesh.route`). This module carries it:

    src app -> hop 1 -> hop 2 -> ... -> dst app, and the response back through the same hops.

Each step between two places is one network transfer (propagation + size / bandwidth, plus
the receiving proxy's io delay). At each hop the proxy runs its listener's request side; on
the way back the response side, then charges its after-response work. A hop whose
``upstream`` is pooled holds a connection of its pool to the next hop for the request, and a
new connection costs a TCP round trip and, with mTLS, a TLS handshake (CPU on both ends and
round trips). A pool that overflows answers 503 ``UO`` from that hop.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, NamedTuple, Protocol

import simpy
from pydantic import BaseModel, ConfigDict, Field

from models.control_plane import ControlPlane
from models.filters import Listener
from models.loadbalancer import Balancer
from models.mesh import Mesh
from models.messages import Flags, Request, Response
from models.proxy import Proxy, ProxySpec
from models.scoping import ConfigIndex, Scoping
from models.world import Node, PodBase
from sim.network import NetworkPort
from sim.units import Duration

if TYPE_CHECKING:
    from models.service import ClientPod, ServicePod

__all__ = [
    "Hop",
    "Route",
    "RetrySpec",
    "ProxiedMesh",
    "PolicyCheck",
    "TelemetryReport",
    "DataPlaneStats",
]


@dataclass(frozen=True, slots=True)
class Hop:
    """One proxy on a call's path.

    Attributes:
        proxy: the proxy.
        listener: the listener whose chain runs (outbound or inbound).
        mtls: whether the connection this hop receives on, or sends on, is mutual TLS
            (selects the ``tls`` filter's cost).
        pooled: the hop holds a pooled connection to the next place (next hop or app).
        multiplexed: that connection is HTTP/2 (streams) rather than one request at a time.
        policy: a policy check this hop makes before it forwards (Mixer's check), if any.
        telemetry: where this hop reports the request after the response (Mixer), if any.
    """

    proxy: Proxy
    listener: Listener
    mtls: bool = False
    pooled: bool = False
    multiplexed: bool = False
    policy: PolicyCheck | None = None
    telemetry: TelemetryReport | None = None


class PolicyCheck(Protocol):
    """A check before forwarding; it returns None to go on, or the response to answer with."""

    def check(
        self, proxy: Proxy, src: PodBase, host: str, request: Request
    ) -> Generator[simpy.Event, Any, Response | None]: ...


class TelemetryReport(Protocol):
    """A report after the response, off the request's path."""

    def report(self, proxy: Proxy, request: Request, response: Response) -> None: ...


class Route(NamedTuple):
    """Where a call goes: the endpoint (None when there is none), the hops, the balancer that
    chose it, and ``picker``, the index of the hop whose router chose it."""

    dst: PodBase | None
    hops: list[Hop]
    balancer: Balancer | None
    picker: int


class RetrySpec(BaseModel):
    """Retries of the router that picks the endpoint (Istio's mesh default: 2 attempts on
    connect failures, 25 ms base back-off, previously tried hosts avoided).

    Attributes:
        attempts: retries after the first try (0 = none).
        backoff_base: the first back-off's upper bound; each next one doubles (fully
            jittered, as Envoy does).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    attempts: Annotated[int, Field(ge=0)] = 0
    backoff_base: Duration = 0.025


@dataclass
class DataPlaneStats:
    """Counts after the warm-up: what stale configuration and certificates cost."""

    stale_connect_failures: int = 0
    stale_failures: int = 0
    retries: int = 0
    tls_failures: int = 0
    no_route: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


class ProxiedMesh(Mesh):
    """Base of the architectures with proxies; subclasses implement :meth:`route`.

    A proxy routes on its own view of the endpoints (``Proxy.view``): the live endpoints when
    the mesh has no control plane, else the version its control plane last pushed to it. A
    pod that is gone refuses connections: the picking proxy sees a connect failure after a
    round trip, and its router retries another endpoint if its retry policy allows (``UF``
    when it does not, ``URX`` when the retries run out). mTLS to or from a proxy whose
    certificate has expired fails (``UF``).
    """

    retry: RetrySpec = RetrySpec()

    def __init__(self, world: Any, spec: BaseModel) -> None:
        super().__init__(world, spec)
        self.retry = getattr(spec, "retries", RetrySpec())
        self.control_plane: ControlPlane | None = None
        self.dp_stats = DataPlaneStats()
        # The folded listeners of each proxy spec (the spec is held by self.spec, so its id
        # stays its own for the mesh's life).
        self._listeners: dict[int, tuple[Listener, Listener]] = {}

    # --- building and changing -----------------------------------------------------------

    def make_proxies(
        self, pods: list[ServicePod], clients: list[ClientPod], index: ConfigIndex
    ) -> list[tuple[Proxy, frozenset[str] | None]]:
        """The proxies these pods need that do not exist yet, with the hosts each must know
        (None: every service). Subclasses build them."""
        raise NotImplementedError

    def new_proxy(
        self,
        name: str,
        node: Node,
        kind: str,
        spec: ProxySpec,
        scoping: tuple[Scoping, set[str], set[str], set[str]],
        index: ConfigIndex,
        total_endpoints: int | None = None,
    ) -> tuple[Proxy, frozenset[str] | None]:
        """A proxy of this mesh, with what its scoping makes it know (see ``make_proxies``).

        Proxies of one spec share their listeners: a chain is folded once, not per proxy.
        """
        listeners = self._listeners.get(id(spec))
        if listeners is None:
            listeners = (Listener("outbound", spec.outbound), Listener("inbound", spec.inbound))
            self._listeners[id(spec)] = listeners
        lb_policy = self.spec.load_balancer  # type: ignore[attr-defined]
        proxy = Proxy(self.world, name, node, kind, spec, lb_policy, listeners)
        proxy.scoping = scoping
        return proxy, proxy.recount(index, total_endpoints)

    def attach(self, pods: list[ServicePod], clients: list[ClientPod]) -> None:
        super().attach(pods, clients)
        made = self.make_proxies(pods, clients, self.config_index())
        spec = getattr(self.spec, "control_plane", None)
        if spec is not None:
            self.control_plane = ControlPlane(self.world, spec, self._snapshot())
        for proxy, hosts in made:
            self._connect(proxy, hosts)

    def add_pods(self, pods: list[ServicePod]) -> None:
        super().add_pods(pods)
        for proxy, hosts in self.make_proxies(pods, [], self.config_index()):
            self._connect(proxy, hosts)

    def _stop(self, pods: list[ServicePod]) -> None:
        super()._stop(pods)
        for proxy in self.retire_proxies(pods):
            proxy.retired = True
            if self.control_plane is not None:
                self.control_plane.unregister(proxy)

    def retire_proxies(self, pods: list[ServicePod]) -> list[Proxy]:
        """The proxies that go away with these pods (their sidecars; none for shared ones)."""
        return []

    def config_changed(self, kind: str, service: str, hosts: set[str]) -> None:
        # What each proxy's configuration holds grows or shrinks with the mesh (its memory,
        # the cost of its next push).
        index = self.config_index()
        total = index.total_endpoints
        proxy: Proxy
        for proxy in self.proxies():
            proxy.recount(index, total)
        if self.control_plane is not None:
            self.control_plane.change(kind, service, hosts, self._snapshot())
            return
        for proxy in self.proxies():  # no control plane: the live endpoints, at once
            proxy.apply_config(proxy.config_version + 1, self.endpoints)

    def _connect(self, proxy: Proxy, hosts: frozenset[str] | None) -> None:
        if self.control_plane is not None:
            self.control_plane.register(proxy, hosts)
        else:
            proxy.view = self.endpoints

    def _snapshot(self) -> dict[str, list]:
        return {host: list(pods) for host, pods in self.endpoints.items()}

    def set_fault(self, kind: str, active: bool) -> None:
        if kind == "control_plane_outage" and self.control_plane is not None:
            self.control_plane.set_down(active)
            return
        super().set_fault(kind, active)

    def extras(self) -> dict[str, Any]:
        found: dict[str, Any] = {"data_plane": self.dp_stats.as_dict()}
        if self.control_plane is not None:
            found["control_plane"] = self.control_plane.summary()
        return found

    # --- carrying a call -----------------------------------------------------------------

    def route(self, src: PodBase, host: str, dst: PodBase | None = None) -> Route:
        """The route of ``src``'s call to ``host``; with ``dst``, the route to that endpoint
        (a retry: only the hops after the picker are used)."""
        raise NotImplementedError

    def call(
        self, src: PodBase, host: str, request: Request
    ) -> Generator[simpy.Event, Any, Response]:
        dst, hops, balancer, picker = self.route(src, host)
        if balancer is not None and dst is not None:
            balancer.started(dst)
        trace = request.trace
        size = request.size_bytes
        here_node, here_net, here_sink = src.node, src.net, src.net_sink
        held: dict[int, tuple[Any, Any]] = {}  # hop index -> (pool, connection)
        reached = 0
        response: Response | None = None
        answered_at = -1  # the hop that answered locally, if one did
        for i, hop in enumerate(hops):
            proxy = hop.proxy
            yield from self._transfer(here_net, here_sink, here_node, proxy, size, trace)
            yield from proxy.on_request(hop.listener, request, hop.mtls)
            reached = i + 1
            here_node, here_net, here_sink = proxy.node, proxy.net, proxy.net_sink
            if hop.policy is not None:
                denied = yield from hop.policy.check(proxy, src, host, request)
                if denied is not None:  # the policy said no: this proxy answers
                    response = denied
                    answered_at = i
                    break
            if i == picker:
                if dst is None:
                    response = self._no_route(host, proxy)
                elif not dst.alive:
                    dst, hops, response = yield from self._connect_failed(
                        src, host, dst, hops, balancer, i
                    )
                if response is None:
                    for other in hops:  # a proxy with no certificate yet is not ready: wait
                        if other.mtls and other.proxy.cert_ready is not None:
                            yield other.proxy.cert_ready
                    if not self._certificates_valid(hops):
                        self._count("tls_failures")
                        response = Response(503, 0, Flags.UPSTREAM_CONNECT_FAILURE)
                if response is not None:
                    answered_at = i
                    break
            if hop.pooled:
                target = hops[i + 1].proxy if i + 1 < len(hops) else None
                pool = self._pool(hop, target, dst, request)  # type: ignore[arg-type]
                conn = yield from pool.acquire(trace)
                if conn is None:  # the pool overflowed: this proxy answers
                    response = Response(503, 0, Flags.UPSTREAM_OVERFLOW)
                    answered_at = i
                    break
                held[i] = (pool, conn)
        if response is None:
            assert dst is not None
            yield from self._transfer(here_net, here_sink, here_node, None, size, trace, dst)
            response = yield from dst.handle(request)  # type: ignore[attr-defined]
            here_node, here_net, here_sink = dst.node, dst.net, dst.net_sink
        out = response.size_bytes
        for i in range(reached - 1, -1, -1):
            hop = hops[i]
            proxy = hop.proxy
            if i != answered_at:  # the response comes back from the next place
                yield from self._transfer(here_net, here_sink, here_node, proxy, out, trace)
            if i in held:
                pool, conn = held.pop(i)
                pool.release(conn)
            yield from proxy.on_response(hop.listener, request, out, hop.mtls)
            if hop.telemetry is not None:
                hop.telemetry.report(proxy, request, response)
            here_node, here_net, here_sink = proxy.node, proxy.net, proxy.net_sink
        yield from self._transfer(here_net, here_sink, here_node, None, out, trace, src)
        if balancer is not None and dst is not None:
            balancer.finished(dst)
        return response

    def _count(self, name: str) -> None:
        if self.env.now >= self.world.warmup_s:
            setattr(self.dp_stats, name, getattr(self.dp_stats, name) + 1)

    def _no_route(self, host: str, proxy: Proxy) -> Response:
        """The picking proxy knows no endpoint of ``host``: 404 ``NR`` for a service it does
        not know, 503 ``UH`` for one with no endpoint."""
        self._count("no_route")
        if host not in proxy.view:
            return Response(404, 0, Flags.NO_ROUTE)
        return Response(503, 0, Flags.NO_HEALTHY_UPSTREAM)

    def _certificates_valid(self, hops: list[Hop]) -> bool:
        now = self.env.now
        return all(hop.proxy.cert_expires_s > now for hop in hops if hop.mtls)

    def _connect_failed(
        self,
        src: PodBase,
        host: str,
        dst: PodBase,
        hops: list[Hop],
        balancer: Balancer | None,
        i: int,
    ) -> Generator[simpy.Event, Any, tuple[PodBase, list[Hop], Response | None]]:
        """The endpoint is gone: a refused connection, then the router's retries."""
        env = self.env
        proxy = hops[i].proxy
        tried = [dst]
        for attempt in range(self.retry.attempts + 1):
            self._count("stale_connect_failures")
            start = env.now
            yield env.timeout(proxy.net.rtt(self.world.link(proxy.node, dst.node)))
            self.world.sink(proxy.scope, "connect_failure").add(start, env.now, False, None)
            if attempt == self.retry.attempts or balancer is None:
                self._count("stale_failures")
                flag = Flags.UPSTREAM_RETRY_LIMIT if attempt else Flags.UPSTREAM_CONNECT_FAILURE
                return dst, hops, Response(503, 0, flag)
            self._count("retries")
            yield env.timeout(self.retry.backoff_base * 2**attempt * proxy.jitter())
            balancer.finished(dst)
            dst = self._pick_untried(balancer, tried)
            balancer.started(dst)
            tried.append(dst)
            if dst.alive:
                hops = hops[: i + 1] + self.route(src, host, dst).hops[i + 1 :]
                return dst, hops, None
        raise AssertionError("unreachable")

    @staticmethod
    def _pick_untried(balancer: Balancer, tried: list[PodBase]) -> PodBase:
        """Envoy's previous-hosts predicate: a few picks to find a host not tried yet."""
        for _ in range(3):
            candidate = balancer.pick()
            if candidate not in tried:
                return candidate
        return candidate

    def _transfer(
        self,
        net: NetworkPort,
        sink: Any,
        node: Any,
        proxy: Proxy | None,
        size: int,
        trace: list | None,
        pod: PodBase | None = None,
    ) -> Generator[simpy.Event, Any, None]:
        """Move ``size`` bytes from ``node`` to ``proxy`` (plus its io delay) or to ``pod``."""
        env = self.env
        to_node = proxy.node if proxy is not None else pod.node  # type: ignore[union-attr]
        start = env.now
        network = net.delay(self.world.link(node, to_node), size)
        io = proxy.io() if proxy is not None else 0.0
        total = network + io
        if total > 0.0:
            yield env.timeout(total)
        sink.add(start, start + network, True, trace)
        if proxy is not None and io > 0.0:
            proxy.io_sink.add(start + network, start + total, True, trace)

    def _pool(self, hop: Hop, target: Proxy | None, dst: PodBase, request: Request) -> Any:
        """The pool of ``hop``'s proxy towards the next hop (or the app). Once per pooled hop
        of every request: the lookup comes first, the pool is made only the first time."""
        proxy = hop.proxy
        multiplexed = hop.multiplexed or request.protocol in ("http2", "grpc")
        key = (target.name if target is not None else dst.name, multiplexed)
        found = proxy.pools.get(key)
        if found is not None:
            return found
        peer_node = target.node if target is not None else dst.node

        def opener(trace: list | None) -> Generator[simpy.Event, Any, None]:
            yield from self._handshake(proxy, target, peer_node, hop.mtls, trace)

        return proxy.pool(key, multiplexed, opener, target)

    def _handshake(
        self, proxy: Proxy, peer: Proxy | None, peer_node: Any, mtls: bool, trace: list | None
    ) -> Generator[simpy.Event, Any, None]:
        """Open a connection: a TCP round trip, then with mTLS the TLS handshake."""
        env = self.env
        link = self.world.link(proxy.node, peer_node)
        start = env.now
        yield env.timeout(proxy.net.rtt(link))
        self.world.sink(proxy.scope, "tcp_handshake").add(start, env.now, True, trace)
        if not mtls:
            return
        tls = proxy.spec.tls
        start = env.now
        yield from proxy.cpu.execute(tls.client_cpu)
        for _ in range(tls.round_trips):
            yield env.timeout(proxy.net.rtt(link))
        if peer is not None:
            yield from peer.cpu.execute(peer.spec.tls.server_cpu)
        self.world.sink(proxy.scope, "tls_handshake").add(start, env.now, True, trace)

    def reset_stats(self) -> None:
        for proxy in self.proxies():
            proxy.reset_stats()

    def memory_bytes(self) -> dict[str, float]:
        """The memory of the proxies that are still there."""
        return {p.scope: p.memory_bytes() for p in self.proxies() if not p.retired}
