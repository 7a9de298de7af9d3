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
from typing import Any, Protocol

import simpy

from models.filters import Listener
from models.loadbalancer import Balancer
from models.mesh import Mesh
from models.messages import Flags, Request, Response
from models.proxy import Proxy
from models.world import PodBase
from sim.network import NetworkPort

__all__ = ["Hop", "ProxiedMesh", "PolicyCheck", "TelemetryReport"]


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


class ProxiedMesh(Mesh):
    """Base of the architectures with proxies; subclasses implement :meth:`route`."""

    def route(self, src: PodBase, host: str) -> tuple[PodBase, list[Hop], Balancer]:
        """The endpoint ``src``'s call to ``host`` goes to, the hops on the way, and the
        balancer that chose it (told when the request starts and ends)."""
        raise NotImplementedError

    def call(
        self, src: PodBase, host: str, request: Request
    ) -> Generator[simpy.Event, Any, Response]:
        dst, hops, balancer = self.route(src, host)
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
            if hop.pooled:
                target = hops[i + 1].proxy if i + 1 < len(hops) else None
                pool = self._pool(hop, target, dst, request)
                conn = yield from pool.acquire(trace)
                if conn is None:  # the pool overflowed: this proxy answers
                    response = Response(503, 0, Flags.UPSTREAM_OVERFLOW)
                    answered_at = i
                    break
                held[i] = (pool, conn)
        if response is None:
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
        balancer.finished(dst)
        return response

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
        """The pool of ``hop``'s proxy towards the next hop (or the app)."""
        proxy = hop.proxy
        key = target.name if target is not None else dst.name
        peer_node = target.node if target is not None else dst.node
        multiplexed = hop.multiplexed or request.protocol in ("http2", "grpc")

        def opener(trace: list | None) -> Generator[simpy.Event, Any, None]:
            yield from self._handshake(proxy, target, peer_node, hop.mtls, trace)

        return proxy.pool(f"{key}/{'h2' if multiplexed else 'h1'}", multiplexed, opener, target)

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
        return {p.scope: p.memory_bytes() for p in self.proxies()}
