"""Proxyless gRPC: the client library does the routing, with the app's CPU.

``app (gRPC with xDS: routing, load balancing, TLS, on the app's workers) -> network -> app``.
There is no proxy: the mesh's work is CPU on the calling and the called application (charged
to them), and its memory is the xDS configuration each application holds. Channels are
long-lived, so connection set-up is not modelled.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any, Literal

import simpy
from pydantic import BaseModel, ConfigDict

from models.filters import Cost
from models.loadbalancer import Balancer, LbPolicy, make_balancer
from models.mesh import Mesh, register
from models.messages import Flags, Request, Response
from models.proxy import MemorySpec
from models.scoping import Scoping, known_config
from models.world import PodBase, World
from sim.distributions import UniformDist
from sim.servers import CpuServer

__all__ = ["ProxylessSpec", "ProxylessMesh"]


class ProxylessSpec(BaseModel):
    """gRPC with xDS in the application.

    Attributes:
        client_cpu: the client library's CPU per call, on each side of it (routing, load
            balancing, TLS), on the caller's workers.
        server_cpu: the server library's CPU per call (TLS, authorization), on the callee's.
        memory: the xDS configuration each application holds.
        scoping: what each application's xDS client knows.
        load_balancer: gRPC's policy.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    architecture: Literal["proxyless"] = "proxyless"
    client_cpu: Cost = Cost()
    server_cpu: Cost = Cost()
    memory: MemorySpec = MemorySpec()
    scoping: Scoping = "mesh"
    load_balancer: LbPolicy = "round_robin"


@register
class ProxylessMesh(Mesh):
    """No proxies; library CPU on both applications."""

    architecture = "proxyless"
    spec: ProxylessSpec

    def __init__(self, world: World, spec: ProxylessSpec) -> None:
        super().__init__(world, spec)
        self._balancers: dict[tuple[str, str], Balancer] = {}
        self._cpu: dict[str, CpuServer] = {}
        self._memory: dict[str, float] = {}
        self._in_flight: dict[str, dict[int, int]] = {}

    def _attach_library(self, pods, clients) -> None:  # type: ignore[no-untyped-def]
        """Each application's xDS client (its memory), and a CPU server for the load
        generator's library work."""
        for pod in pods:
            self._cpu[pod.name] = pod.app
        self._recount_memory()
        for client in clients:
            # The load generator's own library work runs on its own (unbounded) threads.
            self._cpu[client.name] = self.world.cpu_server(
                1024, f"{client.scope}.app", "loadgen", client.node
            )

    def call(
        self, src: PodBase, host: str, request: Request
    ) -> Generator[simpy.Event, Any, Response]:
        endpoints = self.endpoints.get(host)
        if not endpoints:  # the library knows no endpoint of the service
            return Response(503, 0, Flags.NO_HEALTHY_UPSTREAM)
        key = (src.name, host)
        balancer = self._balancers.get(key)
        if balancer is None:
            uniform = UniformDist(low=0.0, high=1.0).sampler(self.world.rng(f"{src.name}.lb"))
            balancer = self._balancers[key] = make_balancer(
                self.spec.load_balancer,
                endpoints,
                uniform,
                self._in_flight.setdefault(src.name, {}),
            )
        dst = balancer.pick()
        balancer.started(dst)
        client, server = self._cpu[src.name], self._cpu[dst.name]
        spec = self.spec
        trace = request.trace
        link = self.world.link(src.node, dst.node)
        yield from self._library(client, spec.client_cpu, request.size_bytes, trace)
        yield from self._send(src, link, request.size_bytes, trace)
        yield from self._library(server, spec.server_cpu, request.size_bytes, trace)
        response = yield from dst.handle(request)  # type: ignore[attr-defined]
        yield from self._library(server, spec.server_cpu, response.size_bytes, trace)
        yield from self._send(dst, link, response.size_bytes, trace)
        yield from self._library(client, spec.client_cpu, response.size_bytes, trace)
        balancer.finished(dst)
        return response

    def _library(
        self, cpu: CpuServer, cost: Cost, size_bytes: int, trace: list | None
    ) -> Generator[simpy.Event, Any, None]:
        """The gRPC library's work on one side of a call, on the application's workers."""
        start = self.env.now
        yield from cpu.execute(cost.base + cost.per_kib * size_bytes / 1024)
        self.world.sink(cpu.scope, "grpc_library_cpu").add(start, self.env.now, True, trace)

    def _send(
        self, sender: PodBase, link: Any, size_bytes: int, trace: list | None
    ) -> Generator[simpy.Event, Any, None]:
        """A message over the network from ``sender``."""
        start = self.env.now
        delay = sender.net.delay(link, size_bytes)
        if delay > 0.0:
            yield self.env.timeout(delay)
        sender.net_sink.add(start, self.env.now, True, trace)

    def attach(self, pods, clients) -> None:  # type: ignore[no-untyped-def]
        super().attach(pods, clients)
        self._attach_library(pods, clients)

    def add_pods(self, pods) -> None:  # type: ignore[no-untyped-def]
        super().add_pods(pods)
        self._attach_library(pods, [])

    def config_changed(self, kind: str, service: str, hosts: set[str]) -> None:
        self._balancers.clear()
        self._recount_memory()

    def _recount_memory(self) -> None:
        """What each serving application's xDS client holds now."""
        index = self.config_index()
        self._memory = {}
        for pods in self.endpoints.values():
            for pod in pods:
                clusters, endpoints, _ = known_config(
                    index,
                    self.spec.scoping,
                    {pod.host},
                    set(pod.spec.callees()),
                    {pod.spec.namespace},
                )
                self._memory[f"{pod.scope}.xds"] = self.spec.memory.total(clusters, endpoints, 0)

    def memory_bytes(self) -> dict[str, float]:
        return dict(sorted(self._memory.items()))
