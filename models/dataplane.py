"""What every proxied architecture shares: carrying a call through a list of proxy hops.

An architecture says, for a call from a pod to a service, which proxies it passes up to the
one that picks the endpoint (:meth:`ProxiedMesh.first_hops`), and which after it, to the
endpoint picked (:meth:`ProxiedMesh.tail_hops`). An :class:`Exchange` carries the call:

    src app -> hop 1 -> hop 2 -> ... -> dst app, and the response back through the same hops.

The exchange is a flat state machine on :mod:`sim.engine` tasks, not a generator per hop: a
network transfer and the CPU visit that follows it are one booking on the receiving proxy's
timeline (one event), and a call's depth never grows the Python stack. At the picking hop
the proxy's :class:`~models.router.Router` runs the destination's traffic policy (its route's
match, split, fault, mirror and timeouts; the cluster's circuit breakers, outlier detection
and endpoint choice) and the retries; any hop may carry a ``local`` responder (an
authorization policy, a rate limit, Mixer's check), which answers the request at that proxy
instead of forwarding it.

Each step between two places is one network transfer (propagation + size / bandwidth, plus
the receiving proxy's io delay). At each hop the proxy runs its listener's request side; on
the way back the response side, then charges its after-response work. A hop whose
``upstream`` is pooled holds a connection of its pool to the next hop for the request, and a
new connection costs a TCP round trip and, with mTLS, a TLS handshake (CPU on both ends and
round trips). A pool that overflows answers 503 ``UO`` from that hop.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field, replace
from types import GeneratorType
from typing import TYPE_CHECKING, Annotated, Any, Literal, Protocol

import simpy
from pydantic import BaseModel, ConfigDict, Field, field_validator

from models.connections import Connection, ConnectionPool
from models.control_plane import ControlPlane, ControlPlaneSpec
from models.defaults import ISTIO, TRAEFIK, Outcome, parse_retry_on
from models.filters import PROTOCOLS, Listener, ListenerCost
from models.loadbalancer import Balancer, LbPolicy, make_balancer
from models.mesh import Mesh, Parent, _Answer
from models.messages import Flags, Request, Response
from models.proxy import IoPath, Proxy, ProxySpec
from models.resilience import envoy_backoff
from models.router import Router
from models.routing import (
    EMPTY_POLICIES,
    NO_RETRY,
    Action,
    Cluster,
    Counters,
    PolicySet,
    RetryPolicy,
)
from models.scoping import ConfigIndex, Scoping
from models.world import Node, PodBase, World
from sim.engine import Task, drive
from sim.network import NEVER, FaultedLink
from sim.recorder import record_hop
from sim.units import Duration

if TYPE_CHECKING:
    from models.service import ClientPod, ServicePod

__all__ = [
    "Hop",
    "RetrySpec",
    "ISTIO_RETRIES",
    "ProxiedSpec",
    "MtlsMode",
    "ProxiedMesh",
    "Exchange",
    "LocalResponder",
    "TelemetryReport",
    "DataPlaneStats",
    "TrafficOutput",
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
    # The proxy's io in this listener's direction.
    io: IoPath = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        proxy = self.proxy
        l4 = proxy.l4
        costs = {p: self.listener.cost(l4 or p, self.mtls) for p in PROTOCOLS}
        object.__setattr__(self, "costs", costs)
        inbound = self.listener.name == "inbound"
        object.__setattr__(self, "io", proxy.io_in if inbound else proxy.io_out)


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
    """The retries of the router that picks the endpoint, for routes without their own
    (Istio's mesh default, ``defaultHttpRetryPolicy``: 2 attempts on connect failures and
    503, 25 ms base back-off, previously tried hosts avoided).

    Attributes:
        attempts: retries after the first try (0 = none).
        retry_on: what is retried, in Envoy's ``retryOn`` words (``connect-failure``,
            ``5xx``, ``gateway-error``, ``retriable-status-codes``, ...).
        retriable_status_codes: the statuses ``retriable-status-codes`` retries.
        backoff_base: Envoy's base back-off interval (the maximum is 10 times it; fully
            jittered).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    attempts: Annotated[int, Field(ge=0, le=1000)] = 0
    retry_on: str = "connect-failure"
    retriable_status_codes: list[Annotated[int, Field(ge=100, le=599)]] = []
    backoff_base: Annotated[Duration, Field(gt=0)] = 0.025

    @field_validator("retry_on")
    @classmethod
    def _words(cls, value: str) -> str:
        parse_retry_on(value)
        return value

    def policy(self) -> RetryPolicy:
        """The router's retry policy these settings make."""
        return RetryPolicy(
            self.attempts,
            parse_retry_on(self.retry_on, tuple(self.retriable_status_codes)),
            None,
            self.backoff_base,
            self.backoff_base * 10,
        )


ISTIO_RETRIES = RetrySpec(
    attempts=ISTIO["retries.attempts"],
    retry_on=ISTIO["retries.retryOn"],
    retriable_status_codes=list(ISTIO["retries.retriableStatusCodes"]),
    backoff_base=ISTIO["retries.backoffBase"],
)
"""Istio's mesh-wide default retry policy."""


MtlsMode = Literal["STRICT", "PERMISSIVE", "DISABLE"]


class ProxiedSpec(BaseModel):
    """The fields every architecture with proxies has; each sets its own defaults.

    Attributes:
        mtls_mode: the mesh-wide PeerAuthentication mode, where no PeerAuthentication
            policy sets one. Meshed clients use mTLS to meshed servers (Istio's auto mTLS)
            unless the server's mode is ``DISABLE``; ``PERMISSIVE`` also accepts plaintext
            from pods outside the mesh, which ``STRICT`` refuses (in a full mesh the two
            behave alike). ``DISABLE`` for none (Traefik Mesh has no mTLS).
        load_balancer: the policy of the proxy that picks the endpoint.
        retries: the picking proxy's retries, for routes without their own.
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
    # Plaintext connections a STRICT server proxy closed (Envoy's listener stat
    # ``downstream_cx_no_filter_chain_match``): calls from pods outside the mesh.
    plaintext_refused: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def _execute(proxy: Proxy, worker: int, work_s: float) -> Generator[simpy.Event, Any, float]:
    """Run ``work_s`` on ``proxy``'s worker ``worker`` (pinned workers), or its first free."""
    if proxy.pinned:
        return (yield from proxy.cpu.execute_on(worker, work_s))  # type: ignore[attr-defined]
    return (yield from proxy.cpu.execute(work_s))


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
    refused: Response  # what the picking proxy answers when a connection fails
    reads_traefik = False  # whether its proxies read mesh.traefik.io annotations and SMI ACLs

    def __init__(self, world: World, spec: ProxiedSpec) -> None:
        super().__init__(world, spec)
        self.retry = spec.retries.policy()
        self.refused = CONNECT_FAILED
        # How long a connection into a black hole waits (Istio's connectTimeout).
        self.connect_timeout: float = ISTIO["connectionPool.tcp.connectTimeout"]
        # The experiment's traffic policies, compiled (set before ``attach``).
        self.policies: PolicySet = EMPTY_POLICIES
        self.control_plane: ControlPlane | None = None
        self.dp_stats = DataPlaneStats()
        # The folded listeners of each proxy spec (the spec is held by self.spec, so its id
        # stays its own for the mesh's life).
        self._listeners: dict[int, tuple[Listener, Listener]] = {}
        # Hop lists, built once per (source, destination) and reused by every request.
        self._routes: dict[Any, list[Hop]] = {}
        # The calls of pods outside the mesh: kube-proxy's choice, per (source, host).
        self._plain_balancers: dict[tuple[str, str], tuple[list, Balancer]] = {}

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
        proxy_class: type[Proxy] = Proxy,
    ) -> tuple[Proxy, frozenset[str] | None]:
        """A proxy of this mesh, with what its scoping makes it know (see ``make_proxies``).

        Proxies of one spec share their listeners: a chain is folded once, not per proxy.
        ``proxy_class``: a subclass for proxies that read their configuration their own way
        (the gateways of ``models.ingress``).
        """
        listeners = self._listeners.get(id(spec))
        if listeners is None:
            listeners = (Listener("outbound", spec.outbound), Listener("inbound", spec.inbound))
            self._listeners[id(spec)] = listeners
        proxy = proxy_class(
            self.world, name, node, kind, spec, self.spec.load_balancer, listeners, self.retry
        )
        proxy.scoping = scoping
        proxy.policies = self.policies
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
        snapshot = self._snapshot()
        for proxy in self.proxies():  # no control plane: the live endpoints, at once
            proxy.apply_config(proxy.config_version + 1, snapshot)

    def _connect(self, proxy: Proxy, hosts: frozenset[str] | None) -> None:
        if self.control_plane is not None:
            self.control_plane.register(proxy, hosts)
        else:
            proxy.apply_config(0, self.endpoints)

    def _snapshot(self) -> dict[str, list]:
        """The configuration to push: every service's endpoints, and the policies."""
        return ConfigSnapshot(
            {host: list(pods) for host, pods in self.endpoints.items()}, self.policies
        )

    def set_fault(self, kind: str, active: bool) -> None:
        if kind == "control_plane_outage" and self.control_plane is not None:
            self.control_plane.set_down(active)
            return
        if kind == "ca_outage" and self.control_plane is not None:
            self.control_plane.ca_down = active
            return
        super().set_fault(kind, active)

    def extras(self) -> dict[str, Any]:
        found: dict[str, Any] = {"data_plane": self.dp_stats.as_dict()}
        if self.control_plane is not None:
            found["control_plane"] = self.control_plane.summary()
        io = self.io_breakdown()
        if io:
            found["io_breakdown"] = io
        return found

    def io_breakdown(self) -> dict[str, dict[str, float]]:
        """The proxies' io by component, for the per-hop breakdown: per io hop kind
        (``sidecar_io``), the seconds of each component's hop kind (``sidecar_io_ipc``,
        ...; the shorthand ``io_delay``'s stay ``sidecar_io``), summed over the proxies
        (see :meth:`Proxy.io_split`). Empty when no proxy has components."""
        found: dict[str, dict[str, float]] = {}
        split = False
        for proxy in self.proxies():
            io_kind = proxy.io_sink.kind
            into = found.setdefault(io_kind, {})
            for name, seconds in proxy.io_split().items():
                kind = io_kind if name == "io" else f"{io_kind}_{name}"
                split = split or name != "io"
                into[kind] = into.get(kind, 0.0) + seconds
        return found if split else {}

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

    # --- partial meshes: pods outside the mesh -----------------------------------------------

    def plain_tail(self, dst: PodBase) -> list[Hop] | None:
        """The hops a plaintext connection from outside the mesh passes on its way to
        ``dst`` (its inbound proxy, receiving plaintext; none when ``dst`` is outside the
        mesh too), or None when ``dst``'s proxy refuses plaintext (PeerAuthentication
        STRICT). Architectures with partial meshes implement it."""
        raise NotImplementedError

    def tls_to(self, hop: Hop, target: Proxy | None, dst: PodBase | None) -> bool:
        """Whether ``hop``'s connection to ``target`` (or to the app ``dst``) is mutual TLS:
        the hop's own setting here; a partial mesh decides per peer (Istio's auto mTLS).
        Asked once per pool, when the pool is made."""
        return hop.mtls

    def send_plain(
        self, src: PodBase, host: str, request: Request, parent: Parent, slot: int = 0
    ) -> None:
        """A call from a pod outside the mesh: it has no proxy, so kube-proxy picks a pod of
        ``host`` at random among its endpoints (the live ones: kube-proxy follows the
        endpoints, not the mesh's pushes) and the request goes to it in plaintext, through
        the pod's inbound proxy if it has one (:meth:`plain_tail`).

        A server proxy whose PeerAuthentication is STRICT has no plaintext filter chain, so
        Envoy closes the connection as it accepts it (``ActiveStreamListenerBase::
        newConnection``: stat ``no_filter_chain_match``, response flag ``NR`` in the server's
        log): the client, with no proxy to turn that into an HTTP status, sees its
        connection reset (``curl: (56) Recv failure: Connection reset by peer``). The apps
        here express a failed call as a status only, so the caller gets
        :data:`CONNECTION_RESET` (503, no flag: no Envoy on its side) one network transfer
        there and one back after it sent the request.
        """
        endpoints = self.endpoints.get(host)
        if not endpoints:  # kube-proxy has no backend
            self.answer_now(parent, slot, NO_UPSTREAM)
            return
        if len(endpoints) == 1:
            dst = endpoints[0]
        else:
            key = (src.name, host)
            found = self._plain_balancers.get(key)
            if found is None or found[0] is not endpoints:  # lists are replaced, not changed
                balancer = make_balancer("random", endpoints, src.uniform(f"{src.name}.lb"))
                found = self._plain_balancers[key] = (endpoints, balancer)
            dst = found[1].pick()
        tail = self.plain_tail(dst)
        if tail is None or (tail and tail[0].proxy.down) or not dst.alive:
            # Refused: reset by a STRICT proxy, or nobody listens (a gone pod, a down proxy).
            now = self.env.now
            link = self.world.link(src.node, dst.node)
            there = src.net.delay(link, request.size_bytes)
            if there == NEVER:
                return
            src.net_sink.add(now, now + there, True, request.trace)
            back = dst.net.delay(link, 0)
            if back == NEVER:
                return
            dst.net_sink.add(now + there, now + there + back, False, request.trace)
            if tail is None:
                self.count("plaintext_refused")
            reset = _Answer(self, parent, slot, CONNECTION_RESET)
            reset.wake_at(now + there + back)
            return
        exchange = _PlainExchange(self, src, host, request, parent, slot)
        exchange.hops = tail
        exchange.picker = -1
        exchange.dst = dst
        exchange.i = -1
        exchange._forward()

    def count(self, name: str) -> None:
        """Count one event of the data plane (after the warm-up only)."""
        if self.env.now >= self.world.warmup_s:
            setattr(self.dp_stats, name, getattr(self.dp_stats, name) + 1)

    def use_policies(self, policies: PolicySet) -> None:
        """Run ``policies`` from now on: at once before the run; during it, each proxy once
        it applies the configuration that carries them (see :meth:`config_changed`). The
        inbound side (authorization, rate limits) changes at once: its hops are rebuilt.
        Traefik Mesh's annotations and SMI access control are read by Traefik Mesh only."""
        if not self.reads_traefik:
            policies = replace(policies, traefik={}, acl=None)
        self.policies = policies
        self._routes = {k: v for k, v in self._routes.items() if not _inbound_key(k)}

    def inbound_local(self, pod: PodBase, proxy: Proxy, mixer: Any = None) -> Any:
        """What may answer at ``pod``'s inbound proxy: its authorization policies, its rate
        limit, then Mixer's check (``mixer``); None when nothing."""
        if self.policies.empty:
            return mixer
        return self.policies.inbound(pod, proxy.counters, self.env, mixer)

    def acl_denied(
        self, proxy: Proxy, src: PodBase, host: str, request: Request
    ) -> Response | None:
        """SMI access control in Traefik Mesh's ACL mode, at the node proxy: a service no
        TrafficTarget names has no router (404); a caller whose service account no
        TrafficTarget of the service's lists, for this request, is refused (403)."""
        acl = proxy.policies.acl  # the rules the proxy was given (pushed, or polled)
        assert acl is not None
        endpoints = self.endpoints.get(host) or []
        accounts = {(p.namespace, p.service_account) for p in endpoints}
        rules = [r for r in acl if r.destination in accounts]
        if not rules:
            proxy.counters.acl_denied += 1
            return ACL_NO_ROUTE
        caller = (src.namespace, src.service_account)
        for rule in rules:
            if caller in rule.sources and (
                not rule.matches or any(m(request) for m in rule.matches)
            ):
                return None
        proxy.counters.acl_denied += 1
        return ACL_FORBIDDEN

    def no_route(self, host: str, proxy: Proxy) -> Response:
        """The picking proxy knows no endpoint of ``host``: 404 ``NR`` for a service it does
        not know, 503 ``UH`` for one with no endpoint."""
        self.count("no_route")
        if host not in proxy.view:
            return Response(404, 0, Flags.NO_ROUTE)
        return Response(503, 0, Flags.NO_HEALTHY_UPSTREAM)

    def pool(
        self,
        hop: Hop,
        target: Proxy | None,
        dst: PodBase | None,
        request: Request,
        cluster: Cluster | None = None,
        worker: int = -1,
    ) -> ConnectionPool:
        """The pool of ``hop``'s proxy towards the next hop, or the app ``dst`` when no proxy
        follows. Once per pooled hop of every request: the lookup comes first, the pool is
        made only the first time. A cluster with connection-pool limits has pools of its own,
        which share its limits (Envoy's circuit breakers count per cluster). A proxy with
        pinned workers has pools per worker (``worker``: the one the request is on)."""
        proxy = hop.proxy
        multiplexed = hop.multiplexed or request.protocol in ("http2", "grpc")
        peer = target if target is not None else dst
        assert peer is not None, "a pool towards the app is held after the endpoint is picked"
        limits = cluster.limits if cluster is not None else None
        key: tuple = (
            (peer.name, multiplexed)
            if limits is None
            else (peer.name, multiplexed, cluster.host, cluster.subset)  # type: ignore[union-attr]
        )
        if proxy.pinned:
            key = (*key, worker)
        found = proxy.pools.get(key)
        if found is not None:
            return found
        peer_node = peer.node
        mtls = self.tls_to(hop, target, dst)

        def opener(trace: list | None, conn: Connection) -> Generator[simpy.Event, Any, bool]:
            return (
                yield from self._handshake(
                    proxy, target, peer_node, mtls, trace, worker, conn.worker
                )
            )

        return proxy.pool(key, multiplexed, opener, target, limits)

    def _handshake(
        self,
        proxy: Proxy,
        peer: Proxy | None,
        peer_node: Any,
        mtls: bool,
        trace: list | None,
        worker: int = -1,
        peer_worker: int = -1,
    ) -> Generator[simpy.Event, Any, bool]:
        """Open a connection: a TCP round trip, then with mTLS the TLS handshake, full or
        resumed (``TlsSpec.session_resumption``). Return False when the TLS handshake fails:
        a certificate, the proxy's or its peer's, has expired by its end (certificates are
        checked here, once per connection, not per request). Its CPU runs on the opening
        proxy's ``worker`` and the peer's accepting ``peer_worker`` when they are pinned."""
        env = self.env
        link = self.world.link(proxy.node, peer_node)
        start = env.now
        yield env.timeout(proxy.net.rtt(link))
        self.world.sink(proxy.scope, "tcp_handshake").add(start, env.now, True, trace)
        if not mtls:
            return True
        tls = proxy.spec.tls
        start = env.now
        resumed = False
        if tls.session_resumption and peer is not None:
            since = proxy.tls_sessions.get(peer.name)
            resumed = since is not None and start - since < tls.session_timeout
        if resumed:
            client_cpu, rounds = tls.resumed_client_cpu, tls.resumed_round_trips
        else:
            client_cpu, rounds = tls.client_cpu, tls.round_trips
        yield from _execute(proxy, worker, client_cpu)
        for _ in range(rounds):
            yield env.timeout(proxy.net.rtt(link))
        if peer is not None:
            peer_tls = peer.spec.tls
            server_cpu = peer_tls.resumed_server_cpu if resumed else peer_tls.server_cpu
            yield from _execute(peer, peer_worker, server_cpu)
        now = env.now
        ok = proxy.cert_expires_s > now and (peer is None or peer.cert_expires_s > now)
        if ok and tls.session_resumption and peer is not None and not resumed:
            proxy.tls_sessions[peer.name] = now
        self.world.sink(proxy.scope, "tls_handshake").add(start, now, ok, trace)
        return ok

    def reset_stats(self) -> None:
        for proxy in self.proxies():
            proxy.reset_stats()

    def traffic(self) -> TrafficOutput | None:
        """Envoy's counters of the run (after the warm-up), by destination, by subset and by
        proxy; outlier ejections in force at the end; Traefik breakers' state changes. None
        when the mesh ran no policy and nothing was counted."""
        out = TrafficOutput()
        for proxy in self.proxies():
            mine = Counters()
            mine.add(proxy.counters)
            for (host, subset), cluster in proxy.clusters.items():
                if subset is not None:
                    _add(out.subsets, f"{host}/{subset}", cluster.stats)
                    _add(out.destinations, host, cluster.stats)
                    mine.add(cluster.stats)
                if cluster.outlier is not None and cluster.outlier.ejections_active:
                    out.ejections_active[host] = (
                        out.ejections_active.get(host, 0) + cluster.outlier.ejections_active
                    )
            for host, counters in proxy.host_counters_items():
                _add(out.destinations, host, counters)
                mine.add(counters)
            for host, service in proxy.traefik_items():
                if service.breaker is not None and service.breaker.transitions:
                    out.breakers[f"{proxy.scope}/{host}"] = [
                        (t, state) for t, state in service.breaker.transitions
                    ]
            found = mine.as_dict()
            if found:
                out.proxies[proxy.scope] = found
        out.destinations = {h: c for h, c in out.destinations.items() if c}
        return out

    def memory_bytes(self) -> dict[str, float]:
        """The memory of the proxies that are still there."""
        return {p.scope: p.memory_bytes() for p in self.proxies() if not p.retired}


class Exchange(Task):
    """One call through a proxied mesh, as a state machine (see the module docstring).

    On the way out, each hop is one booking on its proxy's workers that covers the transfer
    to it (network, then the proxy's io delay) and its listener's request side. At the
    picking hop the router runs: the route (match, split, fault, mirror), the cluster, the
    endpoint; a pooled hop holds a connection. The app's visit follows. On the way back, each
    hop's response side, then the work after the response and the telemetry report; a pooled
    hop releases its connection when the response reaches it. A hop that answers locally
    turns the exchange around there.

    **Tries.** The picking hop sees each try's outcome when the response (or the failure)
    reaches it, and its retry policy decides: another try after Envoy's back-off, on a host
    not tried yet; or the answer goes back. A route with a timeout (the route's or a try's)
    runs each try as a separate exchange (an *attempt*, whose ``owner`` is this one), so
    that a timer can give up on it: the attempt is abandoned (its connection reset), and
    whatever it still does upstream (the app's work) happens but answers nobody. Without a
    timeout, the exchange makes its tries itself: no extra object per request.
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
        "owner",
        "action",
        "cluster",
        "tries",
        "tried",
        "flags",
        "phase",
        "attempt",
        "abandoned",
        "timer",
        "routed",
        "inside",
    )

    def __init__(
        self,
        mesh: ProxiedMesh,
        src: PodBase,
        host: str,
        request: Request,
        parent: Parent | None,
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
        self.held: list[tuple[int, ConnectionPool, Connection | None]] | None = None
        self.response: Response | None = None
        # Where the request (or the response) is: a pod or a proxy (node, net, net_sink); and
        # when the transfer to the next proxy left and reached it (its spans are recorded
        # with the visit; ``sent`` < 0: no transfer, the proxy answered itself).
        self.here: Any = src
        self.sent = -1.0
        self.reached_at = 0.0
        # The exchange this one is an attempt of (None: it is the exchange itself).
        self.owner: Exchange | None = None
        # The deepest hop whose proxy holds the request's stream (entered, response not
        # yet gone back through it): the request is in flight through hops up to it.
        self.inside = -1

    # --- out -------------------------------------------------------------------------------

    def start(self, hops: list[Hop] | None = None) -> None:
        """Send the request on its way: through ``hops`` up to the picking one when the
        caller chose them (a Traefik Mesh client's connection, where kube-proxy chose the
        node proxy), else through the architecture's :meth:`ProxiedMesh.first_hops`."""
        if hops is None:
            hops = self.mesh.first_hops(self.src, self.host)
        self.hops = hops
        if hops[0].proxy.down:  # the app cannot reach its proxy: its call fails at once
            self.mesh.answer_now(self.parent, self.slot, APP_REFUSED)  # type: ignore[arg-type]
            return
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
        path = hop.io  # a pass's io (IoPath, written out: once per pass), counted
        io = path.draw() + path.base + path.per_byte * size
        path.passes += 1
        path.bytes += size
        reached = self.reached_at = now + network
        self.sent = now
        proxy.requests += 1
        proxy.stream_opened(now)
        self.inside = i
        cost = hop.costs[request.protocol]
        self.i = i
        self._next = self._at_hop
        work = cost.request_base + cost.request_per_byte * size
        if proxy.pinned:
            proxy.cpu.visit_on(self._worker(i), self, reached + io, work)  # type: ignore[attr-defined]
        else:
            proxy.cpu.visit(self, reached + io, work)

    def _at_hop(self) -> None:
        res = self.res
        if res[3] > self.env._now:  # type: ignore[attr-defined]
            self.wake_at(res[3])  # an earlier arrival went first: the visit ends later
            return
        if self.owner is not None and self.abandoned:
            self._close_streams()
            return  # a try given up on: its stream was reset, it goes no further
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

    # --- the picking hop: route, cluster, endpoint, tries ------------------------------------

    def _route(self) -> None:
        """At the picking hop, the router runs."""
        proxy = self.hops[self.i].proxy
        router = self.router = proxy.router(self.host)
        if router is None:
            self._answer(self.mesh.no_route(self.host, proxy))
            return
        self.tries = 0
        self.tried = None
        self.flags = ""
        if router.plain:
            self.action = router.action
            self._try(router.default)  # type: ignore[arg-type]
            return
        self._policy_route(router, proxy)

    def _policy_route(self, router: Router, proxy: Proxy) -> None:
        """A host with policies: access control, Traefik's limits, the route's match."""
        request = self.request
        now = self.env._now  # type: ignore[attr-defined]
        if proxy.policies.acl is not None:
            denied = self.mesh.acl_denied(proxy, self.src, self.host, request)
            if denied is not None:
                self._answer(denied)
                return
        traefik = router.traefik
        if traefik is not None:
            wait = traefik.rate_wait(self.src, now)
            if wait is None:
                self._answer(TRAEFIK_RATE_LIMITED)
                return
            if wait > 0.0:  # Traefik's limiter holds a request that a token soon frees
                self._next = self._breaker
                self.wake_at(now + wait)
                return
        self._breaker()

    def _breaker(self) -> None:
        """Traefik's circuit breaker of the service, then the route's match."""
        router = self.router
        assert router is not None
        proxy = router.proxy
        now = self.env._now  # type: ignore[attr-defined]
        self.routed = now  # when the node proxy starts forwarding (the breaker's latency)
        traefik = router.traefik
        if traefik is not None and traefik.breaker is not None and not traefik.breaker.allow(now):
            traefik.stats.circuit_breaker_open += 1
            self._answer(TRAEFIK_BREAKER_OPEN)
            return
        request = self.request
        action = router.action if router.routes is None else router.routes.action(request)
        if action is None:
            router.stats().no_route += 1
            self._answer(Response(404, 0, Flags.NO_ROUTE))
            return
        self.action = action
        fault = action.fault
        if (
            fault is not None
            and fault.delay_share > 0.0
            and (fault.delay_share >= 1.0 or proxy.chance() < fault.delay_share)
        ):
            proxy.counters.fault_delays_injected += 1
            self.flags = Flags.DELAY_INJECTED
            self._next = self._delayed
            self.wake_at(now + fault.delay_s)
            return
        self._delayed()

    def _delayed(self) -> None:
        action = self.action
        proxy = self.hops[self.picker].proxy
        fault = action.fault
        if (
            fault is not None
            and fault.abort_share > 0.0
            and (fault.abort_share >= 1.0 or proxy.chance() < fault.abort_share)
        ):
            proxy.counters.fault_aborts_injected += 1
            self._finish(Response(fault.abort_status, 0, Flags.FAULT_INJECTED), self.flags, False)
            return
        # With a client-side fault on the route, its timeout and retries are off (Istio's
        # note on fault injection).
        self.phase = 0
        self.timer = None
        if fault is None and action.timeout is not None:
            timer = self.timer = _Timer(self, -1)
            timer.wake_at(self.env._now + action.timeout)  # type: ignore[attr-defined]
        if action.mirror is not None and (
            action.mirror_share >= 1.0 or proxy.chance() < action.mirror_share
        ):
            self._mirror(action.mirror, proxy)
        host, subset = action.target(proxy.chance)
        cluster = self.router.cluster(host, subset)  # type: ignore[union-attr]
        if cluster is None:
            self.mesh.count("no_route")
            self._finish(NO_UPSTREAM, self.flags, False)
            return
        self._try(cluster)

    def _timed(self) -> bool:
        """Whether this exchange's tries run as attempts (a timeout may give up on them)."""
        action = self.action
        if action.fault is not None:
            return False
        if action.timeout is not None:
            return True
        retry = action.retry or self.router.retry  # type: ignore[union-attr]
        return retry.per_try_timeout is not None

    def _try(self, cluster: Cluster) -> None:
        """One try: circuit breaker, endpoint, then the way to it."""
        self.cluster = cluster
        stats = cluster.stats
        if cluster.active >= cluster.max_requests:  # http2MaxRequests
            stats.upstream_rq_pending_overflow += 1
            self._no_try(OVERFLOWED)
            return
        pick = cluster.simple_pick
        if pick is not None and self.tried is None:  # a first try: the balancer's choice
            dst = pick()
        else:
            retry = self.action.retry or self.router.retry  # type: ignore[union-attr]
            dst = cluster.pick(self.request, self.src, self.tried, retry.host_attempts)
        if dst is None:
            self.mesh.count("no_route")
            self._no_try(NO_UPSTREAM)
            return
        cluster.started(dst)
        stats.upstream_rq_total += 1
        if self.owner is None and self.action is not self.router.action and self._timed():  # type: ignore[union-attr]
            self._attempt(dst)
            return
        self.dst = dst
        if not dst.alive or self.mesh.world.faults_active:
            fails = self._connect_fails(dst)
            if fails is not None:  # refused (a gone pod, a crashed proxy) or black-holed
                self.sent = self.env._now  # type: ignore[attr-defined]
                self._next = self._refused
                self.wake_at(self.env._now + fails)  # type: ignore[attr-defined]
                return
        self._picked()

    def _connect_fails(self, dst: PodBase) -> float | None:
        """None when a connection to ``dst`` (through the hops after this one) can open;
        else how long the try takes to fail: a round trip when it is refused (the pod is
        gone, a proxy on the way is down), the connect timeout when it goes into a black
        hole (a failed node, a partition) and nobody answers."""
        proxy = self.hops[self.picker].proxy
        world = self.mesh.world
        tail = self.mesh.tail_hops(proxy, dst)
        link = world.link(proxy.node, dst.node)
        if isinstance(link, FaultedLink) and link.cut and not self._connected_to(dst, tail):
            return self.cluster.connect_timeout or self.mesh.connect_timeout
        if not dst.alive:
            return proxy.net.rtt(link)
        for hop in tail:
            hop_link = world.link(proxy.node, hop.proxy.node)
            if (
                isinstance(hop_link, FaultedLink)
                and hop_link.cut
                and not self._connected_to(dst, tail)
            ):
                return self.cluster.connect_timeout or self.mesh.connect_timeout
            if hop.proxy.down:
                return proxy.net.rtt(hop_link)
        return None

    def _connected_to(self, dst: PodBase, tail: list[Hop]) -> bool:
        """Whether the picking hop has a connection towards ``dst`` free for the request: on
        it, the request goes into a black hole as it is (lost there until the heal), where a
        new connection would wait for its connect timeout."""
        hop = self.hops[self.picker]
        if not hop.pooled:
            return False
        target = tail[0].proxy if tail else None
        worker = self._worker(self.picker) if hop.proxy.pinned else -1
        pool = self.mesh.pool(hop, target, dst, self.request, self.cluster, worker)
        return pool.has_free()

    def _no_try(self, response: Response) -> None:
        """The try could not start (the cluster overflowed, or has no endpoint): answer. A
        retry that does not start leaves the retry budget."""
        if self.tries and self.cluster.retries is not None:
            self.cluster.retries.finished()
        self.phase = 0
        self._finish(response, self.flags, False)

    def _attempt(self, dst: PodBase) -> None:
        """Run this try as an attempt that a timer can give up on."""
        attempt = Exchange.__new__(Exchange)
        attempt.env = self.env
        attempt.runner = self.runner
        attempt.mesh = self.mesh
        attempt.src = self.src
        attempt.host = self.host
        attempt.request = self.request
        attempt.parent = self.parent
        attempt.slot = self.slot
        attempt.hops = self.hops[: self.picker + 1]
        attempt.picker = self.picker
        attempt.router = self.router
        attempt.action = self.action
        attempt.cluster = self.cluster
        attempt.dst = dst
        attempt.i = self.picker
        attempt.reached = self.picker + 1
        attempt.answered_at = -1
        attempt.held = None
        attempt.response = None
        attempt.here = self.here
        attempt.sent = -1.0
        attempt.reached_at = 0.0
        attempt.owner = self
        attempt.abandoned = False
        attempt.inside = self.picker  # it holds the streams of the hops after the picker
        attempt.tries = self.tries
        attempt.tried = self.tried
        attempt.flags = ""
        self.attempt = attempt
        self.dst = dst
        self.phase = 1
        retry = self.action.retry or self.router.retry  # type: ignore[union-attr]
        if retry.per_try_timeout is not None:
            # Envoy starts a try's timer when the connection is ready; this starts it when
            # the endpoint is picked (the same unless the pool makes the try wait).
            _Timer(self, self.tries).wake_at(self.env._now + retry.per_try_timeout)  # type: ignore[attr-defined]
        if not dst.alive or self.mesh.world.faults_active:
            fails = self._connect_fails(dst)
            if fails is not None:
                attempt.sent = self.env._now  # type: ignore[attr-defined]
                attempt._next = attempt._refused
                attempt.wake_at(self.env._now + fails)  # type: ignore[attr-defined]
                return
        attempt._picked()

    def _refused(self) -> None:
        """The connection to a pod that is gone was refused (after a round trip)."""
        if self.owner is not None and self.abandoned:
            return
        proxy = self.hops[self.picker].proxy
        if not self.dst.alive:  # type: ignore[union-attr]
            self.mesh.count("stale_connect_failures")
        self.cluster.stats.upstream_cx_connect_fail += 1
        now = self.env._now  # type: ignore[attr-defined]
        # The span of the refused connection (its round trip), as a failed one.
        self.mesh.world.sink(proxy.scope, "connect_failure").add(self.sent, now, False, None)
        self._outcome("connect_failure", 0, self.mesh.refused)

    def _picked(self) -> None:
        hops = self.hops
        picker = self.picker
        assert self.dst is not None
        tail = self.mesh.tail_hops(hops[picker].proxy, self.dst)
        self.hops = hops[: picker + 1] + tail if tail else hops[: picker + 1]
        self.i = picker
        self._next = self._certified
        self._certified()

    def _certified(self) -> None:
        """mTLS needs every proxy's certificate: wait for a first one. An expired one fails
        the TLS handshake of a new connection (``_handshake``), not a request on an
        established one (``_connected``)."""
        for hop in self.hops:
            if hop.mtls:
                proxy = hop.proxy
                if proxy.cert_ready is not None:  # not ready yet: traffic waits
                    self.wait_for(proxy.cert_ready)
                    return
        self._hold()

    def _hold(self) -> None:
        """A pooled hop holds a connection to the next place for the request."""
        i = self.i
        hop = self.hops[i]
        if not hop.pooled:
            self._forward()
            return
        if self.owner is not None and self.abandoned:
            return
        target = self.hops[i + 1].proxy if i + 1 < len(self.hops) else None
        # The picking hop's pool is the cluster's (its limits are the cluster's).
        cluster = self.cluster if i == self.picker else None
        worker = self._worker(i) if hop.proxy.pinned else -1
        pool = self.mesh.pool(hop, target, self.dst, self.request, cluster, worker)
        got = pool.acquire(self.request.trace)
        if got is None:  # the pool overflowed: this proxy answers
            if i == self.picker:
                self.cluster.stats.upstream_rq_pending_overflow += 1
                self._outcome("overflow", 503, OVERFLOWED)
            else:
                self._answer(OVERFLOWED)
            return
        if self.held is None:
            self.held = []
        if type(got) is Connection:
            self.held.append((i, pool, got))
            self._forward()
            return
        self.held.append((i, pool, None))
        self._value = got
        self._next = self._connected
        self.wait_for(got)  # type: ignore[arg-type]

    def _connected(self) -> None:
        assert self.held is not None
        i, pool, _ = self.held[-1]
        if self._value is None:  # its TLS handshake failed: a certificate had expired
            self.held.pop()
            if self.owner is not None and self.abandoned:
                return
            self.mesh.count("tls_failures")
            if i == self.picker:  # the router's try failed: retried as a connect failure
                self._outcome("connect_failure", 0, self.mesh.refused)
            else:  # a hop past the picker (a waypoint's ztunnel): that proxy answers 503 UF
                self._answer(self.mesh.refused)
            return
        if self.owner is not None and self.abandoned:  # given up while it waited
            self.held.pop()
            pool.release(self._value)  # a connection, as the pool hands it over
            return
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
        if network == NEVER:  # a partition or a failed node: the request is lost
            return
        here.net_sink.add(now, now + network, True, request.trace)
        dst.serve(request, self, now + network)  # type: ignore[attr-defined]

    def _mirror(self, target: tuple[str, str | None], proxy: Proxy) -> None:
        """Send a copy of the request to ``target`` from this hop; nobody waits for its
        answer (Envoy's request mirroring)."""
        cluster = self.router.cluster(*target)  # type: ignore[union-attr]
        if cluster is None:
            return
        proxy.counters.rq_mirrored += 1
        copy = replace(self.request, host=target[0], trace=None)
        shadow = Exchange(self.mesh, self.src, target[0], copy, None, 0)
        shadow.hops = self.hops[: self.picker + 1]
        shadow.picker = shadow.i = self.picker
        shadow.reached = self.picker + 1
        shadow.here = self.here
        shadow.router = self.router
        shadow.action = MIRROR_ACTION
        shadow.tries = 0
        shadow.tried = None
        shadow.flags = ""
        shadow._try(cluster)

    # --- back ------------------------------------------------------------------------------

    def on_reply(self, slot: int, response: Response) -> None:
        """The app has answered."""
        if self.owner is not None and self.abandoned:
            self._close_streams()
            return  # the try was given up: its connection was reset, nobody reads this
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
            if network == NEVER:  # the response is lost on the way
                return
            here.net_sink.add(now, now + network, True, request.trace)
            self._next = self._deliver
            if network > 0.0:
                self.wake_at(now + network)
            else:
                self.soon()
            return
        hop = self.hops[i]
        proxy = hop.proxy
        arrival = now
        self.sent = -1.0
        if i != self.answered_at:  # the response comes back from the next place
            link = here.node.links.get(proxy.node) or self.mesh.world.link(here.node, proxy.node)
            network = here.net.delay(link, size)
            reached = self.reached_at = now + network
            self.sent = now
            path = hop.io
            arrival = reached + path.draw() + path.base + path.per_byte * size
            path.passes += 1
            path.bytes += size
            if i == self.picker:
                # The try's outcome is known when the response reaches the picking proxy;
                # its connection is released then.
                self._next = self._at_picker
                if arrival > now:
                    self.wake_at(arrival)
                else:
                    self._at_picker()
                return
            held = self.held
            if held is not None and held[-1][0] == i and arrival > now:
                # Its connection is released when the response reaches the proxy.
                self._next = self._released
                self.wake_at(arrival)
                return
        self._respond(arrival)

    def _released(self) -> None:
        self._respond(self.env._now)  # type: ignore[attr-defined]

    def _at_picker(self) -> None:
        """A try's response has reached the picking proxy."""
        if self.owner is not None and self.abandoned:
            return
        held = self.held
        if held is not None and held and held[-1][0] == self.i:
            _, pool, conn = held.pop()
            pool.release(conn)  # type: ignore[arg-type]  # held, so connected
        response = self.response
        assert response is not None
        cluster = self.cluster
        # A plain router's exchange is never an attempt nor a mirror (both come from routes
        # with policies), so a success of its first try has nobody else to tell.
        if response.status < 400 and self.router.plain and not self.tries:  # type: ignore[union-attr]
            cluster.finished(self.dst)
            self._respond(self.env._now)  # type: ignore[attr-defined]
            return
        self._outcome("response", response.status, response)

    def _outcome(self, outcome: Outcome | str, status: int, response: Response) -> None:
        """A try ended (a response, a connect failure, a pool overflow): on an attempt, its
        owner decides; here, retry or answer."""
        owner = self.owner
        if owner is not None:
            if self.abandoned:
                return
            owner.here = self.here
            owner.sent = self.sent
            owner.reached_at = self.reached_at
            owner.response = response
            owner._ended(outcome, status, response, from_upstream=outcome == "response")
            return
        self._ended(outcome, status, response, from_upstream=outcome == "response")

    def _ended(
        self, outcome: Outcome | str, status: int, response: Response, from_upstream: bool
    ) -> None:
        """The picking proxy's decision after a try: retry, or answer with ``response``."""
        cluster = self.cluster
        dst = self.dst
        cluster.finished(dst)
        self.phase = 0
        stats = cluster.stats
        if self.tries and cluster.retries is not None:
            cluster.retries.finished()
        if cluster.outlier is not None and outcome != "overflow":
            cluster.record(dst, status if outcome in ("response", "timeout") else 0)
        traefik = self.router.traefik  # type: ignore[union-attr]
        if traefik is not None and traefik.breaker is not None:
            now = self.env._now  # type: ignore[attr-defined]
            # What Traefik answered or got: a failed connection is its own 502 (a network
            # error to oxy's metrics), an overflow its 503.
            seen = status if outcome in ("response", "timeout") else response.status
            traefik.breaker.record(now, seen, now - self.routed)
        if from_upstream and status >= 500:
            stats.upstream_rq_5xx += 1
        action = self.action
        retry = action.retry or self.router.retry  # type: ignore[union-attr]
        flags = self.flags
        if (
            outcome != "overflow"
            and self.parent is not None
            and action.fault is None  # a route with a fault has no retries (Istio)
            and retry.on.retries(outcome, status, self.request.protocol == "grpc")  # type: ignore[arg-type]
        ):
            if self.tries < retry.attempts:
                budget = cluster.retries
                if budget is None or budget.allow(cluster.active, _pending(cluster)):
                    self.tries += 1
                    stats.upstream_rq_retry += 1
                    self.mesh.count("retries")
                    windows = self.mesh.world.retry_windows
                    if windows is not None:
                        self._count_retry(windows, 0)
                    if budget is not None:
                        budget.started()
                    if self.tried is None:
                        self.tried = [dst]  # type: ignore[assignment]
                    else:
                        self.tried.append(dst)
                    jitter = self.hops[self.picker].proxy.jitter
                    wait = (
                        envoy_backoff(self.tries, retry.backoff_base, retry.backoff_max, jitter)
                        if retry.backoff_base > 0.0
                        else 0.0
                    )
                    self.phase = 2
                    when = self.env._now + wait  # type: ignore[attr-defined]
                    if self.action is not self.router.action and self._timed():  # type: ignore[union-attr]
                        # A timer may give up during the back-off: wait on a separate task.
                        _Timer(self, -2).wake_at(when)
                    else:
                        self._next = self._retry
                        self.wake_at(when)
                    return
                # Envoy's router marks a retry the circuit breaker refuses as an overflow.
                stats.upstream_rq_retry_overflow += 1
                flags = _join(flags, Flags.UPSTREAM_OVERFLOW)
            elif retry.attempts:
                stats.upstream_rq_retry_limit_exceeded += 1
                flags = _join(flags, Flags.UPSTREAM_RETRY_LIMIT)
        if outcome == "connect_failure" and dst is not None and not dst.alive:
            self.mesh.count("stale_failures")
        if self.tries:
            windows = self.mesh.world.retry_windows
            if windows is not None:  # a retried call's end: saved by its retries, or not
                self._count_retry(windows, 1 if status < 400 and outcome == "response" else 2)
        self._finish(response, flags, from_upstream)

    def _count_retry(self, windows: dict[int, list[int]], which: int) -> None:
        now = self.env._now  # type: ignore[attr-defined]
        i = int(now // self.mesh.world.retry_window_s)
        found = windows.get(i)
        if found is None:
            found = windows[i] = [0, 0, 0]
        found[which] += 1

    def _retry(self) -> None:
        """After the back-off: the next try, on the same cluster (Envoy picks a request's
        cluster once; a retry picks another endpoint of it)."""
        if self.phase != 2:
            return
        self.i = self.picker
        self._try(self.cluster)

    def _finish(self, response: Response, flags: str, from_upstream: bool) -> None:
        """The picking proxy answers the caller with ``response`` (and the flags it adds)."""
        timer = getattr(self, "timer", None) if self.owner is None else None
        if timer is not None:
            self.timer = None
        if self.parent is None:  # a mirrored request: its answer is dropped here
            return
        if flags:
            response = Response(response.status, response.size_bytes, _join(flags, response.flags))
        self.i = self.picker
        if from_upstream:
            self.response = response
            self._respond(self.env._now)  # type: ignore[attr-defined]
        else:
            self._answer(response)

    def _timed_out(self, which: int) -> None:
        """A timer fired: ``which`` is the try number of a per-try timeout, -1 for the
        route's timeout, -2 for the end of a back-off."""
        if which == -2:
            if self.phase == 2:
                self._retry()
            return
        if which == -1:
            if self.timer is None or self.phase == 0:
                return
            self.timer = None
        elif self.phase != 1 or self.tries != which:
            return
        proxy_stats = self.cluster.stats
        if self.phase == 1:
            self.attempt.abandon()
        if which == -1:
            proxy_stats.upstream_rq_timeout += 1
            windows = self.mesh.world.retry_windows
            if self.tries and windows is not None:  # a retried call that timed out
                self._count_retry(windows, 2)
            if self.phase == 1:  # a try in flight
                self.cluster.finished(self.dst)
                if self.cluster.outlier is not None:
                    # Envoy tells outlier detection of a try the route's timeout cut short
                    # (router.cc onResponseTimeout: LOCAL_ORIGIN_TIMEOUT, a 504).
                    self.cluster.record(self.dst, 504)
            # The retry in flight, or the one the back-off waits for, leaves the budget.
            if self.tries and self.cluster.retries is not None:
                self.cluster.retries.finished()
            self.phase = 0
            self._finish(TIMED_OUT, self.flags, False)
            return
        proxy_stats.upstream_rq_per_try_timeout += 1
        self._ended("timeout", 504, TIMED_OUT, from_upstream=False)

    def abandon(self) -> None:
        """This attempt is given up: its stream is reset (an HTTP/1.1 connection closes, an
        HTTP/2 stream ends), a pending request leaves the queue."""
        self.abandoned = True
        self._close_streams()
        held = self.held
        if held and held[-1][0] == self.picker:
            _, pool, conn = held[-1]
            if conn is None:
                if pool.cancel(self._value):
                    held.pop()
                # else: its connection is being opened; _connected gives it back
            else:
                held.pop()
                pool.reset(conn)

    def _close_streams(self) -> None:
        """An attempt given up on: the streams it holds after the picking hop are reset."""
        now = self.env._now  # type: ignore[attr-defined]
        hops = self.hops
        for j in range(self.inside, self.picker, -1):
            hops[j].proxy.stream_closed(now)
        self.inside = self.picker

    def _worker(self, i: int) -> int:
        """The worker of hop ``i``'s proxy that the request is on (pinned workers): the one
        that accepted the connection it came on, held by hop ``i - 1`` (by the exchange when
        this is a try at the picking hop); -1 when it came on no pooled connection (from
        the app: its own connections to its proxy are not modelled)."""
        held = self.held
        if not held:
            owner = self.owner
            if owner is None:
                return -1
            held = owner.held
            if not held:
                return -1
        last = held[-1]
        if last[0] != i - 1:
            return -1
        conn = last[2]
        return conn.worker if conn is not None else -1

    def _respond(self, arrival: float) -> None:
        i = self.i
        held = self.held
        if held is not None and held and held[-1][0] == i:
            _, pool, conn = held.pop()
            pool.release(conn)  # type: ignore[arg-type]  # held, so connected
        hop = self.hops[i]
        proxy = hop.proxy
        cost = hop.costs[self.request.protocol]
        assert self.response is not None
        work = cost.response_base + cost.response_per_byte * self.response.size_bytes
        self._next = self._responded
        if proxy.pinned:
            proxy.cpu.visit_on(self._worker(i), self, arrival, work)  # type: ignore[attr-defined]
        else:
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
        if i <= self.inside:  # not reset already (an attempt given up on the way back)
            proxy.stream_closed(self.env._now)  # type: ignore[attr-defined]
            self.inside = i - 1
        cost = hop.costs[request.protocol]
        after = cost.after_base + cost.after_per_byte * response.size_bytes
        if cost.logs:  # access logs: the line grows with the request (empty when off)
            after += cost.logged(request, response.status)
        if after > 0.0:
            if proxy.pinned:
                proxy.cpu.charge_on(self._worker(i), after)  # type: ignore[attr-defined]
            else:
                proxy.cpu.charge(after)
        if hop.telemetry is not None:
            hop.telemetry.report(proxy, request, response)
        self.here = proxy
        self._back(i - 1)

    def _deliver(self) -> None:
        assert self.response is not None and self.parent is not None
        telemetry = self.mesh.world.telemetry  # Istio's metrics, only when collected
        if telemetry is not None:
            telemetry.delivered(self, self.env._now)  # type: ignore[attr-defined]
        self.parent.on_reply(self.slot, self.response)


class _PlainExchange(Exchange):
    """A call from a pod outside the mesh (see :meth:`ProxiedMesh.send_plain`): no hop
    picks (``picker`` is -1), and no source proxy reports it."""

    __slots__ = ()

    def _deliver(self) -> None:
        assert self.response is not None and self.parent is not None
        self.parent.on_reply(self.slot, self.response)


class _Timer(Task):
    """A timeout of an exchange (a try's, the route's) or the end of a back-off between
    attempts: when it fires, the exchange decides whether it still matters."""

    __slots__ = ("exchange", "which")

    def __init__(self, exchange: Exchange, which: int) -> None:
        self.env = exchange.env
        self.runner = exchange.runner
        self.exchange = exchange
        self.which = which
        self._next = self._fire

    def _fire(self) -> None:
        self.exchange._timed_out(self.which)


class ConfigSnapshot(dict):  # type: ignore[type-arg]
    """A configuration as the control plane pushes it: host -> endpoints, and the traffic
    policies (``policies``) in force when it was taken."""

    def __init__(self, endpoints: dict[str, list], policies: PolicySet) -> None:
        super().__init__(endpoints)
        self.policies = policies


def _inbound_key(key: Any) -> bool:
    return isinstance(key, tuple) and len(key) == 2 and key[0] == "in"


@dataclass
class TrafficOutput:
    """What the routers counted (Envoy's stat names; only counters that are not zero).

    Attributes:
        destinations: per destination host, summed over every proxy that routes to it.
        subsets: per ``host/subset`` cluster, summed over proxies.
        proxies: per proxy, its own answers (denied, rate limited, faults injected, ...)
            and its clusters' counters.
        ejections_active: per host, endpoints ejected by outlier detection at the end.
        breakers: per ``proxy/host``, the Traefik circuit breaker's state changes.
    """

    destinations: dict[str, dict[str, int]] = field(default_factory=dict)
    subsets: dict[str, dict[str, int]] = field(default_factory=dict)
    proxies: dict[str, dict[str, int]] = field(default_factory=dict)
    ejections_active: dict[str, int] = field(default_factory=dict)
    breakers: dict[str, list[tuple[float, str]]] = field(default_factory=dict)


def _add(into: dict[str, dict[str, int]], key: str, counters: Counters) -> None:
    found = into.setdefault(key, {})
    for name, count in counters.as_dict().items():
        found[name] = found.get(name, 0) + count


def _join(first: str, second: str) -> str:
    """Envoy's response flags, comma-joined in the order Envoy writes them (``UF,URX``;
    ``ResponseFlagUtils::toShortString``); ``-`` is none."""
    flags = {f for f in (*first.split(","), *second.split(",")) if f and f != Flags.NONE}
    if not flags:
        return Flags.NONE
    return ",".join(sorted(flags, key=lambda f: _FLAG_ORDER.get(f, len(_FLAG_ORDER))))


_FLAG_ORDER = {
    f: i
    for i, f in enumerate(
        [
            "LH",
            "UH",
            "UT",
            "LR",
            "UR",
            "UF",
            "UC",
            "UO",
            "NR",
            "DI",
            "FI",
            "RL",
            "UAEX",
            "RLSE",
            "DC",
            "URX",
        ]
    )
}


def _pending(cluster: Cluster) -> int:
    limits = cluster.limits
    return limits.pending if limits is not None else 0


CONNECT_FAILED = Response(503, 0, Flags.UPSTREAM_CONNECT_FAILURE)
APP_REFUSED = Response(503, 0)  # the app's own error: its proxy refused the connection
# A plaintext client's call whose connection the server's proxy reset (no proxy of its own to
# write a status or a flag: the app's own error, as for APP_REFUSED).
CONNECTION_RESET = Response(503, 0)
NO_UPSTREAM = Response(503, 0, Flags.NO_HEALTHY_UPSTREAM)
OVERFLOWED = Response(503, 0, Flags.UPSTREAM_OVERFLOW)
TIMED_OUT = Response(504, 24, Flags.UPSTREAM_TIMEOUT)  # "upstream request timeout"
# Traefik's own answers (statuses from the defaults table; bodies as Traefik writes them).
ACL_NO_ROUTE = Response(TRAEFIK["acl.noRouteStatus"], 19)  # "404 page not found": no router
ACL_FORBIDDEN = Response(TRAEFIK["acl.deniedStatus"], 9)  # "Forbidden": the IP allow-list
TRAEFIK_RATE_LIMITED = Response(TRAEFIK["rateLimit.status"], 17)  # "Too Many Requests"
TRAEFIK_BREAKER_OPEN = Response(TRAEFIK["circuitBreaker.status"], 19)  # "Service Unavailable"
MIRROR_ACTION = Action((("", None),), (1.0,), retry=NO_RETRY)
