"""A proxy per node (Maesh / Traefik Mesh): one proxy shared by every pod of its node.

``app -> its node's proxy (outbound, picks the endpoint) -> network -> app``; with
``server_side``, the destination node's proxy is on the path too (``-> node proxy -> app``).
Every pod on a node shares its proxy's workers, and its failure. Traefik Mesh has no mTLS.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Literal

from models.dataplane import Hop, MtlsMode, ProxiedMesh, ProxiedSpec
from models.defaults import TRAEFIK
from models.loadbalancer import LbPolicy
from models.messages import Response
from models.proxy import Proxy, ProxySpec
from models.routing import PolicySet
from models.scoping import ConfigIndex
from models.world import PodBase, World

if TYPE_CHECKING:
    from models.service import ClientPod, ServicePod

__all__ = ["PerNodeSpec", "PerNodeMesh"]


class PerNodeSpec(ProxiedSpec):
    """A proxy per node (and the shared fields of :class:`ProxiedSpec`).

    Attributes:
        proxy: the node proxy (its ``outbound`` chain runs for callers on its node, its
            ``inbound`` chain, with ``server_side``, for destinations on its node).
        server_side: the destination's node proxy is on the path too.
        mtls_mode: ``DISABLE`` for Traefik Mesh (it has no mTLS).
        load_balancer: the node proxy's policy (Traefik: weighted round robin).
        retries: Traefik Mesh's ``retry-attempts`` (network errors only; none by default).
        control_plane: the Maesh controller (``kind: maesh``), or None.
        acl: Traefik Mesh's ACL mode (its Helm value ``acl``): SMI TrafficTargets decide who
            may call whom, and what none allows is denied.
    """

    architecture: Literal["per_node"] = "per_node"
    proxy: ProxySpec = ProxySpec()
    server_side: bool = False
    mtls_mode: MtlsMode = "DISABLE"
    load_balancer: LbPolicy = "round_robin"
    acl: bool = False


class PerNodeMesh(ProxiedMesh):
    """One proxy on each node that has pods; it knows every service of the mesh."""

    architecture = "per_node"
    spec: PerNodeSpec
    reads_traefik = True

    def __init__(self, world: World, spec: PerNodeSpec) -> None:
        super().__init__(world, spec)
        self.mtls = spec.mtls_mode != "DISABLE"
        self.node_proxies: dict[str, Proxy] = {}
        # Traefik answers a failed connection with 502 Bad Gateway (no Envoy flags), after
        # its dial timeout (serversTransport forwardingTimeouts.dialTimeout, 30 s) when
        # nothing answers.
        self.refused = Response(TRAEFIK["connectFailure.status"], 11)
        self.connect_timeout = TRAEFIK["dialTimeout"]

    def use_policies(self, policies: PolicySet) -> None:
        # In ACL mode, what no TrafficTarget allows is denied: with none, everything.
        if self.spec.acl and policies.acl is None:
            policies = replace(policies, acl=())
        super().use_policies(policies)

    def make_proxies(
        self, pods: list[ServicePod], clients: list[ClientPod], index: ConfigIndex
    ) -> list[tuple[Proxy, frozenset[str] | None]]:
        made = []
        for pod in sorted([*pods, *clients], key=lambda p: p.node.name):
            if pod.node.name in self.node_proxies:
                continue
            # Traefik's dynamic configuration holds every service of the mesh.
            proxy, hosts = self.new_proxy(
                f"{pod.node.name}.node-proxy",
                pod.node,
                "node_proxy",
                self.spec.proxy,
                ("mesh", set(), set(), set()),
                index,
            )
            self.node_proxies[pod.node.name] = proxy
            made.append((proxy, hosts))
        return made

    def first_hops(self, src: PodBase, host: str) -> list[Hop]:
        node = src.node.name
        hops = self._routes.get(node)
        if hops is None:
            out = self.node_proxies[node]
            hops = self._routes[node] = [Hop(out, out.outbound, self.mtls, pooled=True)]
        return hops

    def tail_hops(self, picker: Proxy, dst: PodBase) -> list[Hop]:
        if not self.spec.server_side:
            return []
        key = ("in", dst.node.name)
        hops = self._routes.get(key)
        if hops is None:
            into = self.node_proxies[dst.node.name]
            hops = self._routes[key] = [Hop(into, into.inbound, self.mtls)]
        return hops

    def proxies(self) -> list[Proxy]:
        return [self.node_proxies[k] for k in sorted(self.node_proxies)]

    def proxies_of(self, pods: list[PodBase]) -> list[Proxy]:
        return [self.node_proxies[n] for n in sorted({pod.node.name for pod in pods})]
