"""Sidecars (Istio, Linkerd2): a proxy in every pod.

``app -> own sidecar (outbound chain) -> network -> server's sidecar (inbound chain) -> app``,
and back the same way. The client's sidecar picks the endpoint and holds the pooled (m)TLS
connections to the server sidecars; each sidecar holds the configuration its scoping says.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from models.dataplane import Hop, ProxiedMesh
from models.loadbalancer import Balancer, LbPolicy
from models.mesh import register
from models.mixer import Mixer, MixerSpec
from models.proxy import Proxy, ProxySpec
from models.scoping import Scoping, known_config
from models.world import PodBase, World

__all__ = ["SidecarSpec", "SidecarMesh", "MtlsMode"]

MtlsMode = Literal["STRICT", "PERMISSIVE", "DISABLE"]


class SidecarSpec(BaseModel):
    """A sidecar per pod.

    Attributes:
        proxy: the sidecar proxy.
        mtls_mode: PeerAuthentication mode. ``PERMISSIVE`` accepts both, and meshed
            clients use mTLS (Istio's auto mTLS), so it behaves as ``STRICT`` here.
        scoping: what each sidecar knows: ``mesh``, ``namespace`` or ``dependencies``.
        load_balancer: the outbound router's policy.
        mixer: Mixer (Istio 0.x to 1.4): checks and reports; None for telemetry v2.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    architecture: Literal["sidecar"] = "sidecar"
    proxy: ProxySpec = ProxySpec()
    mtls_mode: MtlsMode = "STRICT"
    scoping: Scoping = "mesh"
    load_balancer: LbPolicy = "least_request"
    mixer: MixerSpec | None = None


@register
class SidecarMesh(ProxiedMesh):
    """A sidecar in every pod, the load generator's included (as in Istio's benchmark)."""

    architecture = "sidecar"
    spec: SidecarSpec

    def __init__(self, world: World, spec: SidecarSpec) -> None:
        super().__init__(world, spec)
        self.mtls = spec.mtls_mode != "DISABLE"
        self.sidecars: dict[str, Proxy] = {}
        self.mixer: Mixer | None = None
        self._check_out: Mixer | None = None
        self._check_in: Mixer | None = None

    def attach(self, pods, clients) -> None:  # type: ignore[no-untyped-def]
        super().attach(pods, clients)
        if self.spec.mixer is not None:
            mixer = self.mixer = Mixer(self.world, self.spec.mixer)
            check_on = self.spec.mixer.check_on
            self._check_out = mixer if check_on in ("outbound", "both") else None
            self._check_in = mixer if check_on in ("inbound", "both") else None
        graph = self.world.topology.call_graph
        per_host = {h: len(p) for h, p in self.endpoints.items()}
        entry = graph.entry
        for pod in [*pods, *clients]:
            proxy = Proxy(
                self.world,
                f"{pod.name}.sidecar",
                pod.node,
                "sidecar",
                self.spec.proxy,
                self.spec.load_balancer,
            )
            spec = getattr(pod, "spec", None)
            own = {spec.host_name} if spec is not None else set()
            callees = set(spec.callees()) if spec is not None else {entry}
            namespaces = {spec.namespace} if spec is not None else set()
            proxy.known_clusters, proxy.known_endpoints = known_config(
                graph, per_host, self.spec.scoping, own, callees, namespaces
            )
            self.sidecars[pod.name] = proxy

    def route(self, src: PodBase, host: str) -> tuple[PodBase, list[Hop], Balancer]:
        out = self.sidecars[src.name]
        balancer = out.balancer(host, self.endpoints[host])
        dst = balancer.pick()
        into = self.sidecars[dst.name]
        mtls = self.mtls
        mixer = self.mixer
        hops = [
            Hop(out, out.outbound, mtls, pooled=True, policy=self._check_out, telemetry=mixer),
            Hop(into, into.inbound, mtls, policy=self._check_in, telemetry=mixer),
        ]
        return dst, hops, balancer

    def set_fault(self, kind: str, active: bool) -> None:
        if kind == "mixer_outage" and self.mixer is not None:
            self.mixer.down = active
            return
        super().set_fault(kind, active)

    def extras(self) -> dict[str, Any]:
        return {"mixer": self.mixer.stats.as_dict()} if self.mixer is not None else {}

    def proxies(self) -> list[Proxy]:
        return list(self.sidecars.values())
