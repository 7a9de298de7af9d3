"""Istio ambient: a ztunnel per node for L4 and mTLS, and waypoint proxies for L7.

``app -> node ztunnel (L4, mTLS over HBONE) -> [waypoint of the destination service]
-> network -> destination node's ztunnel -> app``. Ztunnels speak HTTP/2 (HBONE) to each
other and to waypoints, so their connections are multiplexed. A waypoint is a full Envoy
with the L7 chain, deployed per service (``waypoint_replicas`` pods placed on the nodes);
it picks the endpoint when it is on the path, the source ztunnel otherwise.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import Field

from models.dataplane import Hop, ProxiedMesh, ProxiedSpec
from models.loadbalancer import Balancer, make_balancer
from models.proxy import Proxy, ProxySpec
from models.scoping import ConfigIndex
from models.world import PodBase, World

if TYPE_CHECKING:
    from models.service import ClientPod, ServicePod
from sim.distributions import UniformDist
from sim.random import stable_hash

__all__ = ["AmbientSpec", "AmbientMesh"]


class AmbientSpec(ProxiedSpec):
    """Istio ambient (and the shared fields of :class:`ProxiedSpec`).

    Attributes:
        ztunnel: the per-node L4 proxy.
        waypoint: the L7 proxy of a service.
        waypoints: which services have a waypoint: ``none`` (L4 only), ``all``, or a list of
            service hosts.
        waypoint_replicas: waypoint pods per service.

    Its mTLS is HBONE between ztunnels; its control plane is istiod, pushing to ztunnels and
    waypoints.
    """

    architecture: Literal["ambient"] = "ambient"
    ztunnel: ProxySpec = ProxySpec()
    waypoint: ProxySpec = ProxySpec()
    waypoints: Literal["none", "all"] | list[str] = "none"
    waypoint_replicas: Annotated[int, Field(ge=1)] = 1


class AmbientMesh(ProxiedMesh):
    """Ztunnels on every node with pods; waypoints for the services that ask for L7."""

    architecture = "ambient"
    spec: AmbientSpec

    def __init__(self, world: World, spec: AmbientSpec) -> None:
        super().__init__(world, spec)
        self.mtls = spec.mtls_mode != "DISABLE"
        self.ztunnels: dict[str, Proxy] = {}
        self.waypoints: dict[str, list[Proxy]] = {}
        self._waypoint_balancers: dict[tuple[str, str], Balancer] = {}
        self._waypoints_made = False

    def make_proxies(
        self, pods: list[ServicePod], clients: list[ClientPod], index: ConfigIndex
    ) -> list[tuple[Proxy, frozenset[str] | None]]:
        world = self.world
        made = []
        for pod in sorted([*pods, *clients], key=lambda p: p.node.name):
            if pod.node.name in self.ztunnels:
                continue
            # A ztunnel knows every workload of the mesh (L4: endpoints, no L7 clusters).
            ztunnel, hosts = self.new_proxy(
                f"{pod.node.name}.ztunnel",
                pod.node,
                "ztunnel",
                self.spec.ztunnel,
                ("mesh", set(), set(), set()),
                index,
            )
            self.ztunnels[pod.node.name] = ztunnel
            made.append((ztunnel, hosts))
        if self._waypoints_made:
            return made
        self._waypoints_made = True
        wanted = self.spec.waypoints
        hosts_with = (
            sorted(self.endpoints) if wanted == "all" else [] if wanted == "none" else wanted
        )
        unknown = [h for h in hosts_with if h not in self.endpoints]
        if unknown:
            raise ValueError(f"waypoints: unknown service(s) {', '.join(unknown)}")
        nodes = sorted(world.nodes)
        for host in hosts_with:
            offset = stable_hash(f"{host}-waypoint") % len(nodes)
            proxies = []
            for i in range(self.spec.waypoint_replicas):
                node = world.nodes[nodes[(offset + i) % len(nodes)]]
                waypoint, known = self.new_proxy(
                    f"{host}-waypoint-{i}",
                    node,
                    "waypoint",
                    self.spec.waypoint,
                    ("dependencies", {host}, set(), set()),
                    index,
                )
                proxies.append(waypoint)
                made.append((waypoint, known))
            self.waypoints[host] = proxies
        return made

    def first_hops(self, src: PodBase, host: str) -> list[Hop]:
        source = self.ztunnels[src.node.name]
        waypoints = self.waypoints.get(host)
        waypoint = None if waypoints is None else self._pick_waypoint(source, host, waypoints)
        key = (source.name, waypoint.name if waypoint is not None else None)
        hops = self._routes.get(key)
        if hops is None:
            mtls = self.mtls
            hops = [Hop(source, source.outbound, mtls, pooled=True, multiplexed=True)]
            if waypoint is not None:
                hops.append(Hop(waypoint, waypoint.inbound, mtls, pooled=True, multiplexed=True))
            self._routes[key] = hops
        return hops

    def tail_hops(self, picker: Proxy, dst: PodBase) -> list[Hop]:
        key = ("in", dst.node.name)
        hops = self._routes.get(key)
        if hops is None:
            dest = self.ztunnels[dst.node.name]
            hops = self._routes[key] = [Hop(dest, dest.inbound, self.mtls)]
        return hops

    def _pick_waypoint(self, source: Proxy, host: str, waypoints: list[Proxy]) -> Proxy:
        if len(waypoints) == 1:
            return waypoints[0]
        key = (source.name, host)
        balancer = self._waypoint_balancers.get(key)
        if balancer is None:
            uniform = UniformDist(low=0.0, high=1.0).sampler(self.world.rng(f"{source.name}.wp"))
            balancer = self._waypoint_balancers[key] = make_balancer("random", waypoints, uniform)
        return balancer.pick()

    def proxies_of(self, pods: list[PodBase]) -> list[Proxy]:
        return [self.ztunnels[n] for n in sorted({pod.node.name for pod in pods})]

    def proxies(self) -> list[Proxy]:
        found = [self.ztunnels[k] for k in sorted(self.ztunnels)]
        for host in sorted(self.waypoints):
            found.extend(self.waypoints[host])
        return found
