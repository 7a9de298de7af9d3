"""No mesh: the application calls the application, over the network.

The baseline every mesh is measured against. The caller picks an endpoint as kube-proxy
would (a random pod of the service, by default) and the request crosses the network once
each way: ``app -> network -> app``.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any, Literal

import simpy
from pydantic import BaseModel, ConfigDict

from models.loadbalancer import Balancer, LbPolicy, make_balancer
from models.mesh import Mesh, register
from models.messages import Flags, Request, Response
from models.world import PodBase, World

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


@register
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

    def call(
        self, src: PodBase, host: str, request: Request
    ) -> Generator[simpy.Event, Any, Response]:
        env = self.env
        endpoints = self.endpoints.get(host)
        if not endpoints:  # scaled to nothing: kube-proxy has no backend
            return Response(503, 0, Flags.NO_HEALTHY_UPSTREAM)
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
        link = self.world.link(src.node, dst.node)
        sent = env.now
        delay = src.net.delay(link, request.size_bytes)
        if delay > 0.0:
            yield env.timeout(delay)
            src.net_sink.add(sent, env.now, True, request.trace)
        response = yield from dst.handle(request)
        answered = env.now
        delay = dst.net.delay(link, response.size_bytes)
        if delay > 0.0:
            yield env.timeout(delay)
            dst.net_sink.add(answered, env.now, True, request.trace)
        if balancer is not None:
            balancer.finished(dst)
        return response
