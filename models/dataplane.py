"""What every proxied architecture shares: carrying a call through a list of proxy hops.

An architecture says, for a call from a pod to a service, which proxies it passes up to the
one that picks the endpoint (:meth:`ProxiedMesh.first_hops`), and which after it, to the
endpoint picked (:meth:`ProxiedMesh.tail_hops`). An :class:`Exchange` carries the call:

    src app -> hop 1 -> hop 2 -> ... -> dst app, and the response back through the same hops.

The exchange is a flat state machine on :mod:`sim.engine` tasks, not a generator per hop: a
network transfer and the CPU visit that follows it are one booking on the receiving proxy's
timeline (one event), and a call's depth never grows the Python stack. The picking hop's
:class:`~models.router.Router` chooses the endpoint and owns retries; any hop may carry a
``local`` responder (Mixer's check today; RBAC, rate limits and injected faults later), which
answers the request at that proxy instead of forwarding it.

Each step between two places is one network transfer (propagation + size / bandwidth, plus
the receiving proxy's io delay). At each hop the proxy runs its listener's request side; on
the way back the response side, then charges its after-response work. A hop whose
``upstream`` is pooled holds a connection of its pool to the next hop for the request, and a
new connection costs a TCP round trip and, with mTLS, a TLS handshake (CPU on both ends and
round trips). A pool that overflows answers 503 ``UO`` from that hop.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field
from types import GeneratorType
from typing import TYPE_CHECKING, Annotated, Any, Literal, Protocol

import simpy
from pydantic import BaseModel, ConfigDict, Field

from models.connections import Connection, ConnectionPool
from models.control_plane import ControlPlane, ControlPlaneSpec
from models.filters import PROTOCOLS, Listener, ListenerCost
from models.loadbalancer import LbPolicy
from models.mesh import Mesh, Parent
from models.messages import Flags, Request, Response
from models.proxy import Proxy, ProxySpec
from models.router import Router
from models.scoping import ConfigIndex, Scoping
from models.world import Node, PodBase, World
from sim.engine import Task, drive
from sim.recorder import record_hop
from sim.units import Duration

if TYPE_CHECKING:
    from models.service import ClientPod, ServicePod

__all__ = [
    "Hop",
    "RetrySpec",
    "ProxiedSpec",
    "MtlsMode",
    "ProxiedMesh",
    "Exchange",
    "LocalResponder",
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
        local: what may answer the request at this proxy before it forwards (Mixer's check),
            if anything.
        telemetry: where this hop reports the request after the response (Mixer), if any.
    """

    proxy: Proxy
    listener: Listener
    mtls: bool = False
    pooled: bool = False
    multiplexed: bool = False
    local: LocalResponder | None = None
    telemetry: TelemetryReport | None = None
    # The listener's folded costs by the request's protocol (an L4 proxy's are all TCP's).
    costs: dict[str, ListenerCost] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        l4 = self.proxy.l4
        costs = {p: self.listener.cost(l4 or p, self.mtls) for p in PROTOCOLS}
        object.__setattr__(self, "costs", costs)


class LocalResponder(Protocol):
    """A filter that may answer a request at its proxy instead of forwarding it (an RBAC deny,
    a rate limit, an injected fault, Mixer's check).

    ``local_reply`` returns None to let the request go on, a :class:`Response` to answer with
    at once, or a SimPy generator (for an answer that takes time) whose return value is one
    of those two.
    """

    def local_reply(
        self, proxy: Proxy, src: PodBase, host: str, request: Request
    ) -> Response | None | Generator[simpy.Event, Any, Response | None]: ...


class TelemetryReport(Protocol):
    """A report after the response, off the request's path."""

    def report(self, proxy: Proxy, request: Request, response: Response) -> None: ...


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


MtlsMode = Literal["STRICT", "PERMISSIVE", "DISABLE"]


class ProxiedSpec(BaseModel):
    """The fields every architecture with proxies has; each sets its own defaults.

    Attributes:
        mtls_mode: PeerAuthentication mode. ``PERMISSIVE`` accepts both, and meshed clients
            use mTLS (Istio's auto mTLS), so it behaves as ``STRICT`` here; ``DISABLE`` for
            none (Traefik Mesh has no mTLS).
        load_balancer: the policy of the proxy that picks the endpoint.
        retries: the picking proxy's retries on connect failures.
        control_plane: the control plane that pushes configuration (and signs certificates);
            None for a static configuration (no pushes, no certificates simulated).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    mtls_mode: MtlsMode = "STRICT"
    load_balancer: LbPolicy = "least_request"
    retries: RetrySpec = RetrySpec()
    control_plane: ControlPlaneSpec | None = None


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
    """Base of the architectures with proxies; subclasses implement :meth:`first_hops`,
    :meth:`tail_hops` and :meth:`make_proxies`.

    A proxy routes on its own view of the endpoints (``Proxy.view``): the live endpoints when
    the mesh has no control plane, else the version its control plane last pushed to it. A
    pod that is gone refuses connections: the picking proxy sees a connect failure after a
    round trip, and its router retries another endpoint if its retry policy allows (``UF``
    when it does not, ``URX`` when the retries run out). mTLS to or from a proxy whose
    certificate has expired fails (``UF``).
    """

    spec: ProxiedSpec

    def __init__(self, world: World, spec: ProxiedSpec) -> None:
        super().__init__(world, spec)
        self.retry = spec.retries
        self.control_plane: ControlPlane | None = None
        self.dp_stats = DataPlaneStats()
        # The folded listeners of each proxy spec (the spec is held by self.spec, so its id
        # stays its own for the mesh's life).
        self._listeners: dict[int, tuple[Listener, Listener]] = {}
        # Hop lists, built once per (source, destination) and reused by every request.
        self._routes: dict[Any, list[Hop]] = {}

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
        proxy = Proxy(
            self.world, name, node, kind, spec, self.spec.load_balancer, listeners, self.retry
        )
        proxy.scoping = scoping
        return proxy, proxy.recount(index, total_endpoints)

    def attach(self, pods: list[ServicePod], clients: list[ClientPod]) -> None:
        super().attach(pods, clients)
        made = self.make_proxies(pods, clients, self.config_index())
        spec = self.spec.control_plane
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
            proxy.apply_config(0, self.endpoints)

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

    # --- routes ----------------------------------------------------------------------------

    def first_hops(self, src: PodBase, host: str) -> list[Hop]:
        """The hops of ``src``'s call to ``host`` up to and including the one whose router
        picks the endpoint (a list the caller must not change)."""
        raise NotImplementedError

    def tail_hops(self, picker: Proxy, dst: PodBase) -> list[Hop]:
        """The hops after the picking proxy ``picker`` on the way to the endpoint ``dst``."""
        raise NotImplementedError

    # --- carrying a call -------------------------------------------------------------------

    def send(
        self, src: PodBase, host: str, request: Request, parent: Parent, slot: int = 0
    ) -> None:
        Exchange(self, src, host, request, parent, slot).start()

    def count(self, name: str) -> None:
        """Count one event of the data plane (after the warm-up only)."""
        if self.env.now >= self.world.warmup_s:
            setattr(self.dp_stats, name, getattr(self.dp_stats, name) + 1)

    def no_route(self, host: str, proxy: Proxy) -> Response:
        """The picking proxy knows no endpoint of ``host``: 404 ``NR`` for a service it does
        not know, 503 ``UH`` for one with no endpoint."""
        self.count("no_route")
        if host not in proxy.view:
            return Response(404, 0, Flags.NO_ROUTE)
        return Response(503, 0, Flags.NO_HEALTHY_UPSTREAM)

    def connect_failed(
        self, router: Router, dst: PodBase
    ) -> Generator[simpy.Event, Any, tuple[PodBase, Response | None]]:
        """The endpoint is gone: a refused connection after a round trip, then the router's
        retries (Envoy's back-off, fully jittered; previously tried hosts avoided). Returns
        the endpoint to go on to, or the response that ends the try."""
        env = self.env
        proxy = router.proxy
        retry = router.retry
        tried = [dst]
        for attempt in range(retry.attempts + 1):
            self.count("stale_connect_failures")
            start = env.now
            yield env.timeout(proxy.net.rtt(self.world.link(proxy.node, dst.node)))
            self.world.sink(proxy.scope, "connect_failure").add(start, env.now, False, None)
            if attempt == retry.attempts:
                self.count("stale_failures")
                flag = Flags.UPSTREAM_RETRY_LIMIT if attempt else Flags.UPSTREAM_CONNECT_FAILURE
                return dst, Response(503, 0, flag)
            self.count("retries")
            yield env.timeout(retry.backoff_base * 2**attempt * proxy.jitter())
            router.finished(dst)
            dst = router.pick_untried(tried)
            router.started(dst)
            tried.append(dst)
            if dst.alive:
                return dst, None
        raise AssertionError("unreachable")

    def pool(
        self, hop: Hop, target: Proxy | None, dst: PodBase | None, request: Request
    ) -> ConnectionPool:
        """The pool of ``hop``'s proxy towards the next hop, or the app ``dst`` when no proxy
        follows. Once per pooled hop of every request: the lookup comes first, the pool is
        made only the first time."""
        proxy = hop.proxy
        multiplexed = hop.multiplexed or request.protocol in ("http2", "grpc")
        peer = target if target is not None else dst
        assert peer is not None, "a pool towards the app is held after the endpoint is picked"
        key = (peer.name, multiplexed)
        found = proxy.pools.get(key)
        if found is not None:
            return found
        peer_node = peer.node

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


class Exchange(Task):
    """One call through a proxied mesh, as a state machine (see the module docstring).

    On the way out, each hop is one booking on its proxy's workers that covers the transfer
    to it (network, then the proxy's io delay) and its listener's request side; at the
    picking hop the router chooses the endpoint; a pooled hop holds a connection. The app's
    visit follows. On the way back, each hop's response side, then the work after the
    response and the telemetry report; a pooled hop releases its connection when the
    response reaches it. A hop that answers locally turns the exchange around there.
    """

    __slots__ = (
        "mesh",
        "src",
        "host",
        "request",
        "parent",
        "slot",
        "hops",
        "picker",
        "router",
        "dst",
        "i",
        "reached",
        "answered_at",
        "held",
        "response",
        "here",
        "sent",
        "reached_at",
    )

    def __init__(
        self,
        mesh: ProxiedMesh,
        src: PodBase,
        host: str,
        request: Request,
        parent: Parent,
        slot: int,
    ) -> None:
        super().__init__(mesh.env, mesh.world.runner)
        self.mesh = mesh
        self.src = src
        self.host = host
        self.request = request
        self.parent = parent
        self.slot = slot
        self.router: Router | None = None
        self.dst: PodBase | None = None
        self.reached = 0
        self.answered_at = -1
        self.held: list[tuple[int, ConnectionPool, Connection]] | None = None
        self.response: Response | None = None
        # Where the request (or the response) is: a pod or a proxy (node, net, net_sink); and
        # when the transfer to the next proxy left and reached it (its spans are recorded
        # with the visit; ``sent`` < 0: no transfer, the proxy answered itself).
        self.here: Any = src
        self.sent = -1.0
        self.reached_at = 0.0

    # --- out -------------------------------------------------------------------------------

    def start(self) -> None:
        hops = self.hops = self.mesh.first_hops(self.src, self.host)
        self.picker = len(hops) - 1
        self._to_hop(0)

    def _to_hop(self, i: int) -> None:
        """Send the request to hop ``i``: transfer and request side, one booking."""
        hop = self.hops[i]
        proxy = hop.proxy
        request = self.request
        here = self.here
        now = self.env._now  # type: ignore[attr-defined]
        size = request.size_bytes
        link = here.node.links.get(proxy.node) or self.mesh.world.link(here.node, proxy.node)
        network = here.net.delay(link, size)
        io = proxy.io()
        reached = self.reached_at = now + network
        self.sent = now
        proxy.requests += 1
        cost = hop.costs[request.protocol]
        self.i = i
        self._next = self._at_hop
        proxy.cpu.visit(self, reached + io, cost.request_base + cost.request_per_byte * size)

    def _at_hop(self) -> None:
        res = self.res
        if res[3] > self.env._now:  # type: ignore[attr-defined]
            self.wake_at(res[3])  # an earlier arrival went first: the visit ends later
            return
        i = self.i
        hop = self.hops[i]
        proxy = hop.proxy
        record_hop(
            self.here.net_sink,
            proxy.io_sink,
            proxy.queue_sink,
            proxy.cpu_sink,
            self.sent,
            self.reached_at,
            res,
            self.request.trace,
        )
        self.here = proxy
        self.reached = i + 1
        local = hop.local
        if local is not None:
            answer = local.local_reply(proxy, self.src, self.host, self.request)
            if type(answer) is GeneratorType:
                self._next = self._after_local
                drive(self.env, answer, self._resume)
                return
            if answer is not None:
                self._answer(answer)  # type: ignore[arg-type]
                return
        if i == self.picker:
            self._route()
        elif hop.pooled:
            self._hold()
        elif i + 1 < len(self.hops):
            self._to_hop(i + 1)
        else:
            self._forward()

    def _resume(self, value: Any) -> None:
        self._value = value
        self.soon()

    def _after_local(self) -> None:
        if self._value is not None:
            self._answer(self._value)
        elif self.i == self.picker:
            self._route()
        else:
            self._hold()

    def _route(self) -> None:
        """At the picking hop, the router chooses the endpoint."""
        proxy = self.hops[self.i].proxy
        router = self.router = proxy.router(self.host)
        if router is None:
            self._answer(self.mesh.no_route(self.host, proxy))
            return
        dst = self.dst = router.pick()
        router.started(dst)
        if not dst.alive:
            self._next = self._after_connect
            drive(self.env, self.mesh.connect_failed(router, dst), self._resume)
            return
        self._picked()

    def _after_connect(self) -> None:
        self.dst, response = self._value
        if response is not None:
            self._answer(response)
            return
        self._picked()

    def _picked(self) -> None:
        hops = self.hops
        picker = self.picker
        assert self.dst is not None
        tail = self.mesh.tail_hops(hops[picker].proxy, self.dst)
        if tail:
            self.hops = hops[: picker + 1] + tail
        self._next = self._certified
        self._certified()

    def _certified(self) -> None:
        """mTLS needs every proxy's certificate: wait for a first one, fail on an expired one."""
        now = self.env._now  # type: ignore[attr-defined]
        for hop in self.hops:
            if hop.mtls:
                proxy = hop.proxy
                if proxy.cert_ready is not None:  # not ready yet: traffic waits
                    self.wait_for(proxy.cert_ready)
                    return
                if proxy.cert_expires_s <= now:
                    self.mesh.count("tls_failures")
                    self._answer(Response(503, 0, Flags.UPSTREAM_CONNECT_FAILURE))
                    return
        self._hold()

    def _hold(self) -> None:
        """A pooled hop holds a connection to the next place for the request."""
        i = self.i
        hop = self.hops[i]
        if not hop.pooled:
            self._forward()
            return
        target = self.hops[i + 1].proxy if i + 1 < len(self.hops) else None
        pool = self.mesh.pool(hop, target, self.dst, self.request)
        got = pool.acquire(self.request.trace)
        if got is None:  # the pool overflowed: this proxy answers
            self._answer(Response(503, 0, Flags.UPSTREAM_OVERFLOW))
            return
        if self.held is None:
            self.held = []
        if type(got) is Connection:
            self.held.append((i, pool, got))
            self._forward()
            return
        self.held.append((i, pool, None))  # type: ignore[arg-type]
        self._next = self._connected
        self.wait_for(got)  # type: ignore[arg-type]

    def _connected(self) -> None:
        assert self.held is not None
        i, pool, _ = self.held[-1]
        self.held[-1] = (i, pool, self._value)
        self._forward()

    def _forward(self) -> None:
        i = self.i + 1
        if i < len(self.hops):
            self._to_hop(i)
            return
        # The last hop sends the request to the app.
        dst = self.dst
        assert dst is not None
        here = self.here
        request = self.request
        now = self.env._now  # type: ignore[attr-defined]
        link = here.node.links.get(dst.node) or self.mesh.world.link(here.node, dst.node)
        network = here.net.delay(link, request.size_bytes)
        here.net_sink.add(now, now + network, True, request.trace)
        dst.serve(request, self, now + network)  # type: ignore[attr-defined]

    # --- back ------------------------------------------------------------------------------

    def on_reply(self, slot: int, response: Response) -> None:
        """The app has answered."""
        self.response = response
        self.here = self.dst
        self._back(self.reached - 1)

    def _answer(self, response: Response) -> None:
        """The proxy at hop ``i`` answers: the response goes back from there."""
        self.response = response
        self.answered_at = self.i
        self._back(self.i)

    def _back(self, i: int) -> None:
        """Send the response to hop ``i`` (or, below 0, to the caller)."""
        response = self.response
        assert response is not None
        here = self.here
        now = self.env._now  # type: ignore[attr-defined]
        size = response.size_bytes
        self.i = i
        if i < 0:
            request = self.request
            src = self.src
            link = here.node.links.get(src.node) or self.mesh.world.link(here.node, src.node)
            network = here.net.delay(link, size)
            here.net_sink.add(now, now + network, True, request.trace)
            self._next = self._deliver
            if network > 0.0:
                self.wake_at(now + network)
            else:
                self.soon()
            return
        proxy = self.hops[i].proxy
        arrival = now
        self.sent = -1.0
        if i != self.answered_at:  # the response comes back from the next place
            link = here.node.links.get(proxy.node) or self.mesh.world.link(here.node, proxy.node)
            network = here.net.delay(link, size)
            reached = self.reached_at = now + network
            self.sent = now
            arrival = reached + proxy.io()
            held = self.held
            if held is not None and held[-1][0] == i and arrival > now:
                # Its connection is released when the response reaches the proxy.
                self._next = self._released
                self.wake_at(arrival)
                return
        self._respond(arrival)

    def _released(self) -> None:
        self._respond(self.env._now)  # type: ignore[attr-defined]

    def _respond(self, arrival: float) -> None:
        i = self.i
        held = self.held
        if held is not None and held[-1][0] == i:
            _, pool, conn = held.pop()
            pool.release(conn)
        hop = self.hops[i]
        proxy = hop.proxy
        cost = hop.costs[self.request.protocol]
        assert self.response is not None
        work = cost.response_base + cost.response_per_byte * self.response.size_bytes
        self._next = self._responded
        proxy.cpu.visit(self, arrival, work)

    def _responded(self) -> None:
        res = self.res
        if res[3] > self.env._now:  # type: ignore[attr-defined]
            self.wake_at(res[3])
            return
        i = self.i
        hop = self.hops[i]
        proxy = hop.proxy
        request = self.request
        response = self.response
        assert response is not None
        record_hop(
            self.here.net_sink,
            proxy.io_sink,
            proxy.queue_sink,
            proxy.cpu_sink,
            self.sent,
            self.reached_at,
            res,
            request.trace,
        )
        cost = hop.costs[request.protocol]
        after = cost.after_base + cost.after_per_byte * response.size_bytes
        if after > 0.0:
            proxy.cpu.charge(after)
        if hop.telemetry is not None:
            hop.telemetry.report(proxy, request, response)
        self.here = proxy
        self._back(i - 1)

    def _deliver(self) -> None:
        router = self.router
        if router is not None and self.dst is not None:
            router.finished(self.dst)
        assert self.response is not None
        self.parent.on_reply(self.slot, self.response)
