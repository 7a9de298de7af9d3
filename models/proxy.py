"""The proxy: an Envoy-like, event-driven proxy with workers, listeners and pools.

A proxy holds a worker (``concurrency`` of them; Istio's sidecar default is 2) only while it
computes: it runs a listener's filter chain on the request, lets go, and takes a worker again
when the response comes back. Work done after the response is sent (telemetry) is charged to
a worker without anybody waiting for it, so the next request may find the worker busy.

Each pass through a proxy also costs io: time the message spends in sockets, the kernel and
the event loop, which is latency but not the proxy's own user-space CPU. ``ProxySpec.io``
gives it as the components MeshInsight measured (Zhu et al., "Dissecting Overheads of Service
Mesh Sidecars", SoCC 2023; its profiler, ``meshinsight/profiler/offline_profiler.py``, times
each with eBPF and fits it linearly in the message size): **ipc** (the loopback hop between
the app and its proxy, the kernel's ``process_backlog``), **read_write** (the socket reads and
writes, ``vfs_readv``/``vfs_writev``: they copy the message, so they grow with its size) and
**epoll** (the event loop's wake-up, ``ep_send_events_proc``), each per direction: the
outbound listener's pass (what the local app sends, and its response) and the inbound
listener's (what comes to the local app, and its response). MeshInsight's fourth component,
protocol parsing (``http_parser_execute``, ``nghttp2_session_mem_recv``), is user-space CPU
that holds a worker: it is the ``http_connection_manager`` filter's cost here, not io.
``io_delay`` is the older shorthand: one total, the same both ways, whatever the size.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from itertools import repeat
from typing import Annotated, Any, Literal

import numpy as np
import simpy
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PrivateAttr, model_validator

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
from sim.distributions import (
    ConstantDist,
    Distribution,
    DistributionSpec,
    ErlangDist,
    GammaDist,
    UniformDist,
)
from sim.network import NetworkPort
from sim.units import Duration, Size
from topologies.resources import ResourceListSpec, ResourcesSpec

__all__ = [
    "ProxySpec",
    "MemorySpec",
    "TlsSpec",
    "IoPartSpec",
    "IoDirectionSpec",
    "IoSpec",
    "IoPath",
    "IO_COMPONENTS",
    "ResourcesSpec",
    "ResourceListSpec",
    "Proxy",
]


class MemorySpec(BaseModel):
    """Proxy memory: base + per known cluster and endpoint + per open connection + per
    request in flight through it.

    The configuration a proxy holds (clusters, endpoints) depends on what it must know, and
    that is what the mesh's scoping decides. Load enters through what is open at a time:
    connections (socket buffers, TLS state; Envoy's ``per_connection_buffer_limit_bytes``,
    1 MiB by default, is a limit on what a connection may buffer, not what it uses), and
    requests in flight (a stream's state: header maps, filter state; Istio's Performance and
    Scalability pages: "the proxy normally doesn't buffer the data passing through", so no
    body is held). A proxy reports the peak, and the time-weighted mean, of
    ``base + config + connections * per_connection_bytes + in_flight * per_request_bytes``
    over the measured period (:meth:`Proxy.memory_bytes`, :meth:`Proxy.memory_mean_bytes`).

    Attributes:
        base_bytes: memory with no configuration and nothing open (bytes).
        per_cluster_bytes: per known cluster (bytes).
        per_endpoint_bytes: per known endpoint (bytes).
        per_connection_bytes: per open connection, from or to the proxy (bytes).
        per_request_bytes: per request in flight through the proxy, from when it is sent to
            the proxy until its response has left it (bytes).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    base_bytes: Size = 0
    per_cluster_bytes: Size = 0
    per_endpoint_bytes: Size = 0
    per_connection_bytes: Size = 0
    per_request_bytes: Size = 0

    def total(
        self, clusters: int, endpoints: int, connections: float, requests: float = 0
    ) -> float:
        """The memory of a proxy holding ``clusters`` and ``endpoints``, with ``connections``
        open and ``requests`` in flight (bytes)."""
        return float(
            self.base_bytes
            + self.per_cluster_bytes * clusters
            + self.per_endpoint_bytes * endpoints
            + self.per_connection_bytes * connections
            + self.per_request_bytes * requests
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


IO_COMPONENTS = ("ipc", "read_write", "epoll")
"""MeshInsight's io components, in the order the breakdown lists them."""


def _io_part(value: Any) -> Any:
    """A bare distribution (``"40us"``, ``{kind: gamma, ...}``) is a part's ``base``."""
    if isinstance(value, dict) and "kind" in value:
        return {"base": value}
    if isinstance(value, (int, float, str)) and not isinstance(value, bool):
        return {"base": value}
    if isinstance(value, BaseModel) and not isinstance(value, IoPartSpec):
        return {"base": value}  # a distribution spec instance
    return value


class IoPartSpec(BaseModel):
    """One io component of one pass: ``base`` per message, plus ``per_kib`` per KiB of it.

    Written as a distribution alone (``ipc: 40us``) it has no size term.

    Attributes:
        base: the time per message (seconds), a distribution: its spread is the latency's.
        per_kib: the time per KiB of the message (seconds), deterministic.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    base: DistributionSpec = Field(default=0.0, validate_default=True)
    per_kib: Duration = 0.0


IoPart = Annotated[IoPartSpec, BeforeValidator(_io_part)]


class IoDirectionSpec(BaseModel):
    """The io of one listener's pass, request and response alike (each with its own size).

    Attributes:
        ipc: the loopback hop between the app and the proxy (MeshInsight's IPC).
        read_write: the proxy's socket reads and writes; they copy the message, so this is
            the part with a ``per_kib`` term.
        epoll: the event loop's wake-up.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    ipc: IoPart = IoPartSpec()
    read_write: IoPart = IoPartSpec()
    epoll: IoPart = IoPartSpec()


def _io_both_ways(value: Any) -> Any:
    """``io: {ipc: ..., read_write: ..., epoll: ...}`` is the same io both ways.

    Components and directions together (a profile's components with an override's
    ``outbound``, merged): the components hold for both ways, and what a direction gives
    replaces them there, component by component.
    """
    if isinstance(value, dict):
        directions = {"outbound", "inbound"} & value.keys()
        components = set(IO_COMPONENTS) & value.keys()
        if components and directions:
            both = {k: value[k] for k in IO_COMPONENTS if k in value}
            merged = {k: v for k, v in value.items() if k not in components}
            for direction in ("outbound", "inbound"):
                given = value.get(direction, {})
                merged[direction] = {**both, **given} if isinstance(given, dict) else given
            return merged
        if components:
            return {"outbound": value, "inbound": value}
    return value


class IoSpec(BaseModel):
    """A proxy's io per pass, per direction (a direction left out has none).

    Attributes:
        outbound: the outbound listener's pass (traffic the local app sends, its response).
        inbound: the inbound listener's pass (traffic to the local app, its response).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    outbound: IoDirectionSpec = IoDirectionSpec()
    inbound: IoDirectionSpec = IoDirectionSpec()


IoField = Annotated[IoSpec, BeforeValidator(_io_both_ways)]


class _IoPlan:
    """One direction's io, folded at validation for the hot path.

    ``parts`` are ``(component, mean of its random term, its constant, seconds per byte)``
    (seconds), components that cost nothing left out; the constants of every part are summed
    in ``base`` and their size terms in ``per_byte``; the random terms are merged into
    ``random`` (None: none; a distribution; or a tuple of them, summed draw by draw).
    """

    __slots__ = ("parts", "base", "per_byte", "random")

    def __init__(self, parts: list[tuple[str, Distribution, float]]) -> None:
        found = []
        self.base = 0.0
        self.per_byte = 0.0
        randoms: list[Distribution] = []
        for name, dist, per_byte in parts:
            self.per_byte += per_byte
            if isinstance(dist, ConstantDist):
                self.base += dist.value
                random_mean, constant = 0.0, dist.value
            else:
                randoms.append(dist)
                random_mean, constant = dist.mean(), 0.0
            if random_mean > 0.0 or constant > 0.0 or per_byte > 0.0:
                found.append((name, random_mean, constant, per_byte))
        self.parts: tuple[tuple[str, float, float, float], ...] = tuple(found)
        self.random = _merged(randoms)


def _merged(randoms: list[Distribution]) -> Distribution | tuple[Distribution, ...] | None:
    """The sum of independent draws of ``randoms`` as one distribution where that is exact:
    gammas (and Erlangs) of one scale sum to a gamma of that scale, their shapes added. Scales
    count as one when they agree to a part in a million (a profile writes a shape to seven
    digits); otherwise the draws are summed one by one."""
    if not randoms:
        return None
    if len(randoms) == 1:
        return randoms[0]
    shapes = []
    for d in randoms:
        if isinstance(d, GammaDist):
            shapes.append(d.shape)
        elif isinstance(d, ErlangDist):
            shapes.append(float(d.k))
        else:
            return tuple(randoms)
    scales = [d.mean() / k for d, k in zip(randoms, shapes, strict=True)]
    if max(scales) - min(scales) <= 1e-6 * max(scales):
        mean = sum(d.mean() for d in randoms)
        return GammaDist.model_validate({"shape": sum(shapes), "mean": mean})
    return tuple(randoms)


class IoPath:
    """One direction's io through one proxy at run time.

    A pass costs ``draw() + base + per_byte * size_bytes``: ``draw`` returns the random terms
    of every component in one call (components that are gammas of one scale are merged into
    one gamma at validation: one draw, exactly the sum's distribution). The exchange counts
    the passes and their bytes here (after the warm-up), and :meth:`Proxy.io_split` shares
    out the io the proxy's sink recorded: each component gets its deterministic time exactly
    (its constant x passes, its ``per_kib`` x bytes), and what is left, the random terms'
    sum, is shared in proportion to their means. For gammas of one scale that share is the
    exact conditional expectation of each term given their sum (their shares of a gamma sum
    are Dirichlet); in general it is unbiased. The components always add up to the recorded
    io. What the hot path pays: one draw and two counts per pass, never a draw per
    component nor a span per component.

    Attributes:
        draw: the random terms of one pass (seconds).
        base: the constant terms (seconds).
        per_byte: the size terms (seconds per byte).
        passes: passes since the warm-up.
        bytes: their bytes.
        parts: ``(component, its random term's mean, its constant, seconds per byte)``.
    """

    __slots__ = ("draw", "base", "per_byte", "passes", "bytes", "parts")

    def __init__(self, plan: _IoPlan, draw: Callable[[], float]) -> None:
        self.draw = draw
        self.base = plan.base
        self.per_byte = plan.per_byte
        self.parts = plan.parts
        self.passes = 0
        self.bytes = 0

    def counted(self) -> dict[str, tuple[float, float]]:
        """Per component, over the passes counted: its deterministic seconds, and its random
        term's expected seconds."""
        n, size = self.passes, self.bytes
        return {
            name: (n * constant + per_byte * size, n * random_mean)
            for name, random_mean, constant, per_byte in self.parts
        }


def _sampler(
    random: Distribution | tuple[Distribution, ...] | None, rng: np.random.Generator
) -> Callable[[], float]:
    if random is None:
        return repeat(0.0).__next__
    if isinstance(random, tuple):
        samplers = [d.sampler(rng) for d in random]

        def summed() -> float:
            return sum(s() for s in samplers)

        return summed
    return random.sampler(rng)


class ProxySpec(BaseModel):
    """One kind of proxy (sidecar, node proxy, ztunnel, waypoint).

    Attributes:
        concurrency: worker threads (Envoy's ``--concurrency``).
        io: latency per pass through the proxy outside its CPU (sockets, kernel, event
            loop), by MeshInsight's components, per direction, with terms per KiB of the
            message (see the module docstring); none when left out.
        io_delay: the shorthand of ``io``: one distribution per pass, the same both ways,
            whatever the message's size; the breakdown shows it as one io figure. Give
            ``io`` or ``io_delay``, not both (to replace a profile's ``io`` by an
            ``io_delay`` in an override, set ``io`` to null).
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
    io: IoField | None = None
    io_delay: DistributionSpec | None = None
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

    _io_plans: tuple[_IoPlan, _IoPlan] = PrivateAttr()

    @model_validator(mode="after")
    def _fold_io(self) -> ProxySpec:
        if self.io is not None and self.io_delay is not None:
            raise ValueError(
                "give io or io_delay (its shorthand: one total, the same both ways, whatever "
                "the size), not both; to replace a profile's io by io_delay, set io to null"
            )
        if self.io is None:
            delay = ConstantDist(value=0.0) if self.io_delay is None else self.io_delay
            shorthand = _IoPlan([("io", delay, 0.0)])
            self._io_plans = (shorthand, shorthand)
            return self
        plans = []
        for direction in ("outbound", "inbound"):
            spec: IoDirectionSpec = getattr(self.io, direction)
            parts = []
            for name in IO_COMPONENTS:
                part: IoPartSpec = getattr(spec, name)
                if part.base.mean() == float("inf"):
                    raise ValueError(
                        f"io.{direction}.{name}.base: a distribution without a finite mean "
                        "cannot be shared out in the breakdown; use io_delay for it"
                    )
                parts.append((name, part.base, part.per_kib / 1024.0))
            plans.append(_IoPlan(parts))
        self._io_plans = (plans[0], plans[1])
        return self

    def io_paths(self, rng: np.random.Generator) -> tuple[IoPath, IoPath]:
        """The (outbound, inbound) io of one proxy of this spec, drawing from ``rng``.

        Directions whose random terms are alike share one sampler (so ``io_delay``, and a
        symmetric ``io``, draw one stream in the order of the passes); the shorthand's two
        directions are one path.
        """
        out, into = self._io_plans
        if out is into:
            path = IoPath(out, _sampler(out.random, rng))
            return path, path
        draw = _sampler(out.random, rng)
        draw_in = draw if into.random == out.random else _sampler(into.random, rng)
        return IoPath(out, draw), IoPath(into, draw_in)


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
        # Its io per pass, by the direction of the listener (a Hop picks its own).
        self.io_out, self.io_in = spec.io_paths(world.rng(f"{name}.io"))
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
        # For its memory (MemorySpec): requests in flight through it (``streams``, opened and
        # closed by the exchanges, models.dataplane), the peak of what is open in bytes, and
        # the time integrals of connections and streams since the warm-up, kept as
        # sum(-opened + closed) plus what is still open times now (so an update is one add).
        self.streams = 0
        self._per_connection = float(spec.memory.per_connection_bytes)
        self._per_request = float(spec.memory.per_request_bytes)
        self.peak_open_bytes = 0.0
        self._stream_time = 0.0
        self._connection_time = 0.0
        self._since = self.env.now
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
        self._connection_time -= delta * self.env.now
        if delta > 0:
            self._peak_open()

    def stream_opened(self, now: float) -> None:
        """A request was sent to this proxy at ``now``: it is in flight through it."""
        self.streams += 1
        self._stream_time -= now
        level = self.connections * self._per_connection + self.streams * self._per_request
        if level > self.peak_open_bytes:
            self.peak_open_bytes = level

    def stream_closed(self, now: float) -> None:
        """A request's response left this proxy at ``now``, or its stream was reset (a try
        given up on). A request lost on the way (a partition) stays in flight, as its stream
        does in Envoy until a timeout resets it."""
        self.streams -= 1
        self._stream_time += now

    def _peak_open(self) -> None:
        level = self.connections * self._per_connection + self.streams * self._per_request
        if level > self.peak_open_bytes:
            self.peak_open_bytes = level

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
        """Modelled memory, its peak over the measured period: the configuration held, plus
        the most bytes its open connections and requests in flight held at once."""
        config = self.spec.memory.total(self.known_clusters, self.known_endpoints, 0)
        return config + self.peak_open_bytes

    def memory_mean_bytes(self) -> float:
        """Modelled memory, its time-weighted mean over the measured period (bytes)."""
        now = self.env.now
        span = now - self._since
        if span <= 0.0:
            connections: float = self.connections
            streams: float = self.streams
        else:
            connections = (self._connection_time + self.connections * now) / span
            streams = (self._stream_time + self.streams * now) / span
        return self.spec.memory.total(
            self.known_clusters, self.known_endpoints, connections, streams
        )

    def io_split(self) -> dict[str, float]:
        """The io its sink recorded (seconds, after the warm-up) by component (``io`` for
        the shorthand), shared out as :class:`IoPath` says; empty without io."""
        total = self.io_sink.total_s
        paths = [self.io_out] if self.io_in is self.io_out else [self.io_out, self.io_in]
        fixed: dict[str, float] = {}
        random: dict[str, float] = {}
        for path in paths:
            for name, (det, mean) in path.counted().items():
                fixed[name] = fixed.get(name, 0.0) + det
                random[name] = random.get(name, 0.0) + mean
        if len(fixed) <= 1:  # nothing to share out (the shorthand: one figure)
            return {name: total for name in fixed}
        rest = total - sum(fixed.values())
        whole = sum(random.values())
        if whole > 0.0:
            return {name: fixed[name] + rest * random[name] / whole for name in fixed}
        # No random term, or no pass counted since the warm-up (a pass that began before it
        # ended after it): in proportion to what each component costs.
        weights = fixed
        if sum(weights.values()) <= 0.0:
            weights = {}
            for path in paths:
                for name, random_mean, constant, _ in path.parts:
                    weights[name] = weights.get(name, 0.0) + random_mean + constant
        whole = sum(weights.values())
        return {name: total * w / whole for name, w in weights.items()} if whole > 0.0 else {}

    def reset_stats(self) -> None:
        # The measured period starts now: what is open counts from now, and so does its peak.
        now = self.env.now
        self._since = now
        self._connection_time = -self.connections * now
        self._stream_time = -self.streams * now
        self.peak_open_bytes = 0.0
        self._peak_open()
        self.requests = 0
        for path in (self.io_out, self.io_in):
            path.passes = 0
            path.bytes = 0
        self.counters.reset()
        for counters in self._host_counters.values():
            counters.reset()
        for cluster in self.clusters.values():
            if cluster.subset is not None:
                cluster.stats.reset()
