"""Proxyless gRPC: the client library does the routing, with the app's CPU.

``app (gRPC with xDS: routing, load balancing, TLS, on the app's workers) -> network -> app``.
There is no proxy: the mesh's work is CPU on the calling and the called application (charged
to them), and its memory is the xDS configuration each application holds. Channels are
long-lived, so connection set-up is not modelled.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict

from models.filters import Cost
from models.loadbalancer import Balancer, LbPolicy, make_balancer
from models.mesh import Mesh, Parent
from models.messages import Flags, Request, Response
from models.proxy import MemorySpec
from models.scoping import Scoping, known_config
from models.world import PodBase, World
from sim.distributions import UniformDist
from sim.engine import Task
from sim.network import NEVER
from sim.servers import CpuServer

if TYPE_CHECKING:
    from models.service import ClientPod, ServicePod

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

    def _attach_library(self, pods: list[ServicePod], clients: list[ClientPod]) -> None:
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

    def send(
        self, src: PodBase, host: str, request: Request, parent: Parent, slot: int = 0
    ) -> None:
        endpoints = self.endpoints.get(host)
        if not endpoints:  # the library knows no endpoint of the service
            self.answer_now(parent, slot, Response(503, 0, Flags.NO_HEALTHY_UPSTREAM))
            return
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
        _LibraryCall(self, src, dst, request, parent, slot, balancer).start()

    def attach(self, pods: list[ServicePod], clients: list[ClientPod]) -> None:
        super().attach(pods, clients)
        self._attach_library(pods, clients)

    def add_pods(self, pods: list[ServicePod]) -> None:
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


class _LibraryCall(Task):
    """One proxyless call: the client library's work, the transfer and the server library's
    work (one booking), the app's visit; then the server library, the transfer and the
    client library (one booking)."""

    __slots__ = ("mesh", "src", "dst", "request", "parent", "slot", "balancer", "link")

    def __init__(
        self,
        mesh: ProxylessMesh,
        src: PodBase,
        dst: ServicePod,
        request: Request,
        parent: Parent,
        slot: int,
        balancer: Balancer,
    ) -> None:
        super().__init__(mesh.env, mesh.world.runner)
        self.mesh = mesh
        self.src = src
        self.dst = dst
        self.request = request
        self.parent = parent
        self.slot = slot
        self.balancer = balancer
        self.link = mesh.world.link(src.node, dst.node)

    def _library(self, side: str, arrival_s: float, size_bytes: int) -> None:
        mesh = self.mesh
        name = self.src.name if side == "client" else self.dst.name
        cost = mesh.spec.client_cpu if side == "client" else mesh.spec.server_cpu
        mesh._cpu[name].visit(self, arrival_s, cost.base + cost.per_kib * size_bytes / 1024)

    def _record(self, side: str) -> bool:
        """The library's span; False when the visit ended later than booked (wait more)."""
        res = self.res
        if res[3] > self.env._now:  # type: ignore[attr-defined]
            self.wake_at(res[3])
            return False
        name = self.src.name if side == "client" else self.dst.name
        cpu = self.mesh._cpu[name]
        self.mesh.world.sink(cpu.scope, "grpc_library_cpu").add(
            res[0], res[3], True, self.request.trace
        )
        return True

    def _send(self, sender: PodBase, size_bytes: int) -> float:
        now = self.env._now  # type: ignore[attr-defined]
        delay = sender.net.delay(self.link, size_bytes)
        if delay == NEVER:  # lost on the way: booked nowhere, waited for past the end
            return NEVER
        sender.net_sink.add(now, now + delay, True, self.request.trace)
        return now + delay

    def start(self) -> None:
        self._next = self._client_sent
        self._library("client", self.env._now, self.request.size_bytes)  # type: ignore[attr-defined]

    def _client_sent(self) -> None:
        if not self._record("client"):
            return
        self._next = self._server_received
        self._library(
            "server", self._send(self.src, self.request.size_bytes), self.request.size_bytes
        )

    def _server_received(self) -> None:
        if not self._record("server"):
            return
        self.dst.serve(self.request, self, self.env._now)  # type: ignore[attr-defined]

    def on_reply(self, slot: int, response: Response) -> None:
        self._value = response
        self._next = self._server_sent
        self._library("server", self.env._now, response.size_bytes)  # type: ignore[attr-defined]

    def _server_sent(self) -> None:
        if not self._record("server"):
            return
        size = self._value.size_bytes
        self._next = self._client_received
        self._library("client", self._send(self.dst, size), size)

    def _client_received(self) -> None:
        if not self._record("client"):
            return
        self.balancer.finished(self.dst)
        self.parent.on_reply(self.slot, self._value)
