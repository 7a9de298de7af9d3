"""The proxy: an Envoy-like, event-driven proxy with workers, listeners and pools.

A proxy holds a worker (``concurrency`` of them; Istio's sidecar default is 2) only while it
computes: it runs a listener's filter chain on the request, lets go, and takes a worker again
when the response comes back. Work done after the response is sent (telemetry) is charged to
a worker without anybody waiting for it, so the next request may find the worker busy.

Each pass through a proxy also costs ``io_delay``: time the request spends in sockets, the
kernel and the event loop (MeshInsight's IPC, read/write and epoll) that is latency but not
the proxy's own user-space CPU.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Annotated, Any, Literal

import simpy
from pydantic import BaseModel, ConfigDict, Field, model_validator

from models.connections import Connection, ConnectionPool, ConnectionPoolSpec, PoolLimits
from models.filters import FilterSpec, Listener
from models.loadbalancer import LbPolicy
from models.router import PLAIN, Router
from models.routing import (
    EMPTY_POLICIES,
    NO_RETRY,
    Cluster,
    Counters,
    PolicySet,
    RetryPolicy,
    TraefikService,
)
from models.scoping import ConfigIndex, Scoping, known_config
from models.world import Node, World
from sim.distributions import DistributionSpec, UniformDist
from sim.network import NetworkPort
from sim.units import Duration, Size
from topologies.resources import ResourceListSpec, ResourcesSpec

__all__ = ["ProxySpec", "MemorySpec", "TlsSpec", "ResourcesSpec", "ResourceListSpec", "Proxy"]


class MemorySpec(BaseModel):
    """Proxy memory: base + per known cluster and endpoint + per open connection.

    The configuration a proxy holds (clusters, endpoints) depends on what it must know, and
    that is what the mesh's scoping decides; the request rate does not enter.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    base_bytes: Size = 0
    per_cluster_bytes: Size = 0
    per_endpoint_bytes: Size = 0
    per_connection_bytes: Size = 0

    def total(self, clusters: int, endpoints: int, connections: int) -> float:
        return float(
            self.base_bytes
            + self.per_cluster_bytes * clusters
            + self.per_endpoint_bytes * endpoints
            + self.per_connection_bytes * connections
        )


class TlsSpec(BaseModel):
    """The TLS handshake of a new mTLS connection.

    Certificates are checked at the handshake only: an established connection outlives its
    certificates, and an expired one shows when a connection is opened (renewed after an
    idle timeout, a request limit or a reset).

    With ``session_resumption``, a proxy that completed a full handshake with a peer less
    than ``session_timeout`` ago resumes the session (a TLS 1.3 PSK handshake, or a TLS 1.2
    session ticket): no certificate is signed or sent, so it costs ``resumed_*`` instead.
    Envoy's upstream TLS context caches one session per cluster by default
    (``UpstreamTlsContext.max_session_keys``, default 1) and its downstream context accepts
    stateless tickets unless ``disable_stateless_session_resumption``; BoringSSL's default
    session lifetime is 2 h (``SSL_DEFAULT_SESSION_TIMEOUT`` in ``include/openssl/ssl.h``).
    Assumption: a resumed handshake still fails when either side's current certificate has
    expired (RFC 8446 section 4.6.1 asks that a session's lifetime take the peer
    certificate's into account).

    Attributes:
        client_cpu: CPU of the side that opens the connection (seconds).
        server_cpu: CPU of the side that accepts it (seconds).
        round_trips: network round trips of the handshake (1 for TLS 1.3).
        session_resumption: whether a proxy resumes its last session with a peer.
        resumed_client_cpu / resumed_server_cpu: CPU of a resumed handshake (seconds).
        resumed_round_trips: its round trips.
        session_timeout: how long a session may be resumed after its full handshake.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    client_cpu: Duration = 0.0
    server_cpu: Duration = 0.0
    round_trips: Annotated[int, Field(ge=0)] = 1
    session_resumption: bool = False
    resumed_client_cpu: Duration = 0.0
    resumed_server_cpu: Duration = 0.0
    resumed_round_trips: Annotated[int, Field(ge=0)] = 1
    session_timeout: Duration = 7200.0


class ProxySpec(BaseModel):
    """One kind of proxy (sidecar, node proxy, ztunnel, waypoint).

    Attributes:
        concurrency: worker threads (Envoy's ``--concurrency``).
        io_delay: latency per pass through the proxy outside its CPU (sockets, kernel,
            event loop); a distribution, ``0`` for none.
        outbound: the filter chain of the outbound listener (traffic the local app sends).
        inbound: the filter chain of the inbound listener (traffic to the local app).
        connection_pool: limits of the pools to upstreams.
        tls: the handshake of a new mTLS connection.
        memory: the memory model.
        layer: ``l4`` for a proxy that never parses HTTP (ztunnel): every request costs as
            TCP, whatever the application speaks.
        resources: its container's CPU requests and limits (a limit is a CFS quota).
        connection_balance: how its workers share connections. ``shared``: any worker takes
            any work (a pool of interchangeable threads; not how Envoy works). ``kernel``:
            Envoy's default: a connection is pinned to the worker that accepted it for its
            life, the kernel spreads accepted connections over the workers (each worker has
            its own listen socket with ``SO_REUSEPORT``; the kernel hashes a connection's
            4-tuple: a uniform draw here), and each worker has its own upstream pools, so
            one HTTP/2 connection puts all its streams on one worker. ``exact``: pinned, and
            a new connection goes to the worker with the fewest (Envoy's listener
            ``connection_balance_config: exact_balance``, ``ExactConnectionBalancerImpl``
            in ``source/server/connection_handler_impl.cc`` / ``source/common/network/
            connection_balancer_impl.cc``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    concurrency: Annotated[int, Field(ge=1)] = 2
    io_delay: DistributionSpec = Field(default=0.0, validate_default=True)
    outbound: list[FilterSpec] = []
    inbound: list[FilterSpec] = []
    connection_pool: ConnectionPoolSpec = ConnectionPoolSpec()
    tls: TlsSpec = TlsSpec()
    memory: MemorySpec = MemorySpec()
    layer: Literal["l4", "l7"] = "l7"
    resources: ResourcesSpec = ResourcesSpec()
    connection_balance: Literal["shared", "kernel", "exact"] = "shared"

    @model_validator(mode="after")
    def _pinned_workers_without_a_binding_limit(self) -> ProxySpec:
        limit = self.resources.limits.cpu
        if (
            self.connection_balance != "shared"
            and self.concurrency > 1
            and limit is not None
            and limit < self.concurrency
        ):
            raise ValueError(
                f"connection_balance {self.connection_balance!r} (pinned workers) with "
                f"resources.limits.cpu {limit:g} below concurrency {self.concurrency} is not "
                "modelled (one CFS quota for all the workers); use 'shared' or a limit of at "
                "least the concurrency"
            )
        return self


class Proxy:
    """One proxy at run time (see the module docstring).

    Args:
        world: the runtime world.
        name: the proxy's name (``reviews-v1-0.sidecar``, ``node-1.ztunnel``).
        node: where it runs.
        kind: the component kind CPU is charged to (``sidecar``, ``node_proxy``, ...).
        spec: the validated proxy spec.
        lb_policy: how its router picks an endpoint.
        retry: its routers' retry policy (a route's own ``retries`` replace it).
        listeners: its (outbound, inbound) listeners, when the mesh has folded them already
            for ``spec`` (every proxy of one spec shares them); None folds them here.
    """

    def __init__(
        self,
        world: World,
        name: str,
        node: Node,
        kind: str,
        spec: ProxySpec,
        lb_policy: LbPolicy,
        listeners: tuple[Listener, Listener] | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.world = world
        self.env = world.env
        self.name = name
        self.node = node
        self.kind = kind
        self.spec = spec
        # Node-level proxies are named after their node already (``node-1.ztunnel``).
        self.scope = name if name.startswith(f"{node.name}.") else f"{node.name}.{name}"
        # Pinned workers (Envoy's threading): each runs the connections it accepted, and has
        # its own upstream pools; ``accepted`` counts each one's open connections.
        self.pinned = spec.connection_balance != "shared" and spec.concurrency > 1
        self.cpu = world.cpu_server(
            spec.concurrency,
            self.scope,
            kind,
            node,
            spec.resources.limits.cpu,
            self.pinned,
            spec.resources.requests.cpu,
        )
        self.accepted = [0] * spec.concurrency
        self._exact = spec.connection_balance == "exact"
        self._spread: Callable[[], float] | None = None
        # An L4 proxy costs every request as TCP ("" for an L7 proxy: the request's protocol).
        self.l4 = "tcp" if spec.layer == "l4" else ""
        if listeners is None:
            listeners = (Listener("outbound", spec.outbound), Listener("inbound", spec.inbound))
        self.outbound, self.inbound = listeners
        self.net = NetworkPort(world.topology.cluster.network, world.rng(f"{name}.net"))
        self.io: Callable[[], float] = spec.io_delay.sampler(world.rng(f"{name}.io"))
        # The router's streams are made when first used: many proxies never pick or retry.
        self._uniform: Callable[[], float] | None = None
        self._jitter: Callable[[], float] | None = None
        self._chance: Callable[[], float] | None = None
        self._lb_policy = lb_policy
        self._retry = retry if retry is not None else NO_RETRY
        self._routers: dict[str, Router] = {}
        self._in_flight: dict[int, int] = {}  # per endpoint, across configurations
        # Traffic policies (set by the mesh), the clusters made from them, which outlive
        # configurations, and the counters of the proxy's own answers.
        self.policies: PolicySet = EMPTY_POLICIES
        self.clusters: dict[tuple[str, str | None], Cluster] = {}
        self.counters = Counters()
        self._host_counters: dict[str, Counters] = {}
        self._traefik: dict[str, TraefikService] = {}
        # The configuration it routes on (host -> endpoints) and its version; the mesh sets
        # the live endpoints, a control plane replaces them as it pushes.
        self.view: dict[str, Any] = {}
        self.config_version = 0
        # Its workload certificate's expiry (seconds); without a CA it never expires. Until
        # its first certificate is signed, ``cert_ready`` is the event that fires then.
        self.cert_expires_s = float("inf")
        self.cert_ready: simpy.Event | None = None
        self.retired = False  # its pod is gone
        self.down = False  # crashed (a proxy_crash fault): connections to it are refused
        self.pools: dict[tuple, ConnectionPool] = {}
        # TLS sessions it may resume, per peer proxy name: when their full handshake was.
        self.tls_sessions: dict[str, float] = {}
        self.connections = 0
        self.peak_connections = 0
        self.requests = 0
        self.known_clusters = 0
        self.known_endpoints = 0
        # (scoping, own hosts, callees, namespaces): what decides what it knows, for
        # recounting when the mesh changes; set by the mesh that builds it. An L4 proxy
        # (ztunnel) holds endpoints but no L7 clusters.
        self.scoping: tuple[Scoping, set[str], set[str], set[str]] | None = None
        self.holds_clusters = spec.layer == "l7"
        self.queue_sink = world.sink(self.scope, f"{kind}_queue")
        self.cpu_sink = world.sink(self.scope, f"{kind}_cpu")
        self.io_sink = world.sink(self.scope, f"{kind}_io")
        self.net_sink = world.sink(self.scope, "network")

    def router(self, host: str) -> Router | None:
        """This proxy's router for ``host`` on its current configuration, made on first use;
        None when it knows no endpoint of ``host``."""
        found = self._routers.get(host)
        if found is None:
            if not self.view.get(host):
                return None
            policies = self.policies
            traefik = self.traefik_service(host)
            retry = traefik.retry if traefik is not None and traefik.retry else self._retry
            found = self._routers[host] = Router(
                self, host, retry, policies.routes.get(host), traefik
            )
        return found

    def cluster(self, host: str, subset: str | None) -> Cluster | None:
        """The cluster of (host, subset) with the endpoints of the current configuration;
        None when there is no such subset or no endpoint."""
        key = (host, subset)
        found = self.clusters.get(key)
        if found is not None and found.version == self.config_version:
            return found
        endpoints = self.view.get(host)
        policy = self.policies.clusters.get(key)
        if policy is None:
            if subset is not None:
                return None  # a subset no DestinationRule defines: no cluster
            policy = PLAIN
        if not endpoints:
            return None
        if found is None or found.policy != policy:  # new, or its DestinationRule changed
            if self._uniform is None:
                self._uniform = self._sampler("lb")
            found = self.clusters[key] = Cluster(
                self,
                host,
                subset,
                policy,
                endpoints,
                self._lb_policy,
                self._uniform,
                self._in_flight,
                self.host_counters(host) if subset is None else Counters(),
            )
        else:
            found.set_endpoints(endpoints)
        found.version = self.config_version
        return found

    def host_counters(self, host: str) -> Counters:
        """The counters of this proxy's cluster of ``host`` (made on first use)."""
        found = self._host_counters.get(host)
        if found is None:
            found = self._host_counters[host] = Counters()
        return found

    def host_counters_items(self) -> list[tuple[str, Counters]]:
        """The counters of its clusters of whole hosts, by host."""
        return sorted(self._host_counters.items())

    def traefik_items(self) -> list[tuple[str, TraefikService]]:
        """Its Traefik Mesh service states, by host."""
        return sorted(self._traefik.items())

    def traefik_service(self, host: str) -> TraefikService | None:
        """The Traefik Mesh state of ``host`` at this proxy (its annotations' breaker and
        rate limiters), kept across configurations; None without annotations."""
        config = self.policies.traefik.get(host)
        if config is None:
            return None
        found = self._traefik.get(host)
        if found is None:
            found = self._traefik[host] = TraefikService(config, self.host_counters(host))
        return found

    def jitter(self) -> float:
        """A uniform draw in [0, 1) for retry back-off."""
        if self._jitter is None:
            self._jitter = self._sampler("retry")
        return self._jitter()

    def chance(self) -> float:
        """A uniform draw in [0, 1) for routing decisions (weighted splits, injected faults,
        mirroring, a breaker's recovery ramp), on a stream of their own: a mesh without
        policies never makes it."""
        if self._chance is None:
            self._chance = self._sampler("route")
        return self._chance()

    def _sampler(self, purpose: str) -> Callable[[], float]:
        return UniformDist(low=0.0, high=1.0).sampler(self.world.rng(f"{self.name}.{purpose}"))

    def apply_config(self, version: int, view: dict[str, Any]) -> None:
        """A new configuration from the control plane: its endpoints, from now on."""
        self.config_version = version
        self.view = view
        policies = getattr(view, "policies", None)  # a snapshot carries the policies too
        if policies is not None:
            self.policies = policies
        self._routers.clear()

    def await_certificate(self) -> None:
        """Its first certificate is being signed: mTLS through it waits until it is."""
        self.cert_expires_s = 0.0
        self.cert_ready = self.env.event()

    def install_certificate(self, expires_s: float) -> None:
        """A certificate signed by the CA, valid until ``expires_s``; traffic waiting for
        the first one goes on."""
        self.cert_expires_s = expires_s
        ready, self.cert_ready = self.cert_ready, None
        if ready is not None:
            ready.succeed()

    def accept(self) -> int:
        """The worker that accepts a new connection (pinned workers only; see
        ``ProxySpec.connection_balance``); -1 when its workers are not pinned."""
        if not self.pinned:
            return -1
        accepted = self.accepted
        if self._exact:
            worker = accepted.index(min(accepted))
        else:
            if self._spread is None:
                self._spread = self._sampler("accept")
            worker = int(self._spread() * len(accepted))
        accepted[worker] += 1
        return worker

    def closed(self, worker: int) -> None:
        """A connection that ``worker`` accepted is closed."""
        if worker >= 0:
            self.accepted[worker] -= 1

    def connection_changed(self, delta: int) -> None:
        """A connection from or to this proxy opened (+1) or closed (-1)."""
        self.connections += delta
        if self.connections > self.peak_connections:
            self.peak_connections = self.connections

    def pool(
        self,
        key: tuple,
        multiplexed: bool,
        opener: Callable[[list | None, Connection], Generator[simpy.Event, Any, bool]],
        peer: Proxy | None,
        limits: PoolLimits | None = None,
    ) -> ConnectionPool:
        """The pool of connections to upstream ``key`` (its name, multiplexed or not, the
        cluster when it has limits of its own: ``limits``, and the worker whose pool it is
        when the workers are pinned), made on first use. A peer proxy with pinned workers
        accepts each connection on one of them."""
        found = self.pools.get(key)
        if found is None:

            def changed(delta: int) -> None:
                self.connection_changed(delta)
                if peer is not None:
                    peer.connection_changed(delta)

            acceptor = peer if peer is not None and peer.pinned else None
            found = self.pools[key] = ConnectionPool(
                self.env, self.spec.connection_pool, multiplexed, opener, changed, limits, acceptor
            )
        return found

    def recount(
        self, index: ConfigIndex, total_endpoints: int | None = None
    ) -> frozenset[str] | None:
        """Count the clusters and endpoints its scoping gives it in the mesh ``index`` (at
        build time, and again whenever the mesh changes); return the hosts it knows (None:
        every service). An L4 proxy holds endpoints but no L7 clusters."""
        assert self.scoping is not None, "the mesh sets a proxy's scoping when it builds it"
        clusters, self.known_endpoints, hosts = known_config(index, *self.scoping, total_endpoints)
        self.known_clusters = clusters if self.holds_clusters else 0
        return hosts

    def memory_bytes(self) -> float:
        """Modelled memory: configuration held plus the peak of open connections."""
        return self.spec.memory.total(
            self.known_clusters, self.known_endpoints, self.peak_connections
        )

    def reset_stats(self) -> None:
        self.requests = 0
        self.counters.reset()
        for counters in self._host_counters.values():
            counters.reset()
        for cluster in self.clusters.values():
            if cluster.subset is not None:
                cluster.stats.reset()
