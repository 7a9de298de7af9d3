"""No mesh: the application calls the application, over the network.

The baseline every mesh is measured against. The caller picks an endpoint as kube-proxy
would (a random pod of the service, by default) and the request crosses the network once
each way: ``app -> network -> app``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from models.loadbalancer import Balancer, LbPolicy, make_balancer
from models.mesh import Mesh, Parent
from models.messages import Flags, Request, Response
from models.service import Visit
from models.world import PodBase, World
from sim.network import NEVER, LinkClass

__all__ = ["NoMeshSpec", "NoMesh"]


class NoMeshSpec(BaseModel):
    """No mesh at all.

    Attributes:
        load_balancer: how a caller picks a pod of a service (kube-proxy's iptables mode
            picks at random).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    architecture: Literal["none"] = "none"
    load_balancer: LbPolicy = "random"


class NoMesh(Mesh):
    """``app -> network -> app``."""

    architecture = "none"
    spec: NoMeshSpec

    def __init__(self, world: World, spec: NoMeshSpec) -> None:
        super().__init__(world, spec)
        self._balancers: dict[tuple[str, str], Balancer] = {}
        self._in_flight: dict[str, dict[int, int]] = {}

    def _balancers_changed(self) -> None:
        self._balancers.clear()

    def send(
        self, src: PodBase, host: str, request: Request, parent: Parent, slot: int = 0
    ) -> None:
        endpoints = self.endpoints.get(host)
        if not endpoints:  # scaled to nothing: kube-proxy has no backend
            self.answer_now(parent, slot, Response(503, 0, Flags.NO_HEALTHY_UPSTREAM))
            return
        balancer = None
        if len(endpoints) == 1:
            dst = endpoints[0]
        else:
            balancer = self._balancers.get((src.name, host))
            if balancer is None:
                balancer = self._balancers[(src.name, host)] = make_balancer(
                    self.spec.load_balancer,
                    endpoints,
                    src.uniform(f"{src.name}.lb"),
                    self._in_flight.setdefault(src.name, {}),
                )
            dst = balancer.pick()
            balancer.started(dst)
        link = src.node.links.get(dst.node) or self.world.link(src.node, dst.node)
        now = self.env._now  # type: ignore[attr-defined]
        delay = src.net.delay(link, request.size_bytes)
        if delay > 0.0:
            if delay == NEVER:  # a partition or a failed node: the request is lost
                return
            src.net_sink.add(now, now + delay, True, request.trace)
        visit = _DirectVisit(dst, request, parent)
        visit.slot = slot
        visit.link = link
        visit.balancer = balancer
        dst.app.visit(visit, now + delay, dst._work())


class _DirectVisit(Visit):
    """A visit whose response crosses the network straight back to the caller."""

    __slots__ = ("slot", "link", "balancer")

    slot: int
    link: LinkClass
    balancer: Balancer | None

    def _reply(self, response: Response) -> None:
        self._value = response
        dst = self.pod
        now = self.env._now  # type: ignore[attr-defined]
        delay = dst.net.delay(self.link, response.size_bytes)
        self._next = self._deliver
        if delay > 0.0:
            if delay == NEVER:  # the response is lost on the way
                return
            dst.net_sink.add(now, now + delay, True, self.request.trace)
            self.wake_at(now + delay)
        else:
            self.runner.ready.append(self)  # inside a task's step: the queue is draining

    def _deliver(self) -> None:
        if self.balancer is not None:
            self.balancer.finished(self.pod)
        self.parent.on_reply(self.slot, self._value)
