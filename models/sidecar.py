"""Sidecars (Istio, Linkerd2): a proxy in every pod.

``app -> own sidecar (outbound chain) -> network -> server's sidecar (inbound chain) -> app``,
and back the same way. The client's sidecar picks the endpoint and holds the pooled (m)TLS
connections to the server sidecars; each sidecar holds the configuration its scoping says.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from models.dataplane import ISTIO_RETRIES, Hop, MtlsMode, ProxiedMesh, ProxiedSpec, RetrySpec
from models.mixer import Mixer, MixerSpec
from models.proxy import Proxy, ProxySpec
from models.scoping import ConfigIndex, Scoping
from models.world import PodBase, World

if TYPE_CHECKING:
    from models.service import ClientPod, ServicePod

__all__ = ["SidecarSpec", "SidecarMesh", "MtlsMode"]


class SidecarSpec(ProxiedSpec):
    """A sidecar per pod (and the shared fields of :class:`ProxiedSpec`).

    Attributes:
        proxy: the sidecar proxy.
        scoping: what each sidecar knows: ``mesh``, ``namespace`` or ``dependencies``.
        retries: the outbound router's retries for routes without their own (Istio's mesh
            default: 2 on connect failures and 503).
        mixer: Mixer (Istio 0.x to 1.4): checks and reports; None for telemetry v2.
    """

    architecture: Literal["sidecar"] = "sidecar"
    proxy: ProxySpec = ProxySpec()
    scoping: Scoping = "mesh"
    retries: RetrySpec = ISTIO_RETRIES
    mixer: MixerSpec | None = None


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

    def attach(self, pods: list[ServicePod], clients: list[ClientPod]) -> None:
        if self.spec.mixer is not None:
            mixer = self.mixer = Mixer(self.world, self.spec.mixer)
            self._check_out = mixer if self.spec.mixer.checks("outbound") else None
            self._check_in = mixer if self.spec.mixer.checks("inbound") else None
        super().attach(pods, clients)

    def make_proxies(
        self, pods: list[ServicePod], clients: list[ClientPod], index: ConfigIndex
    ) -> list[tuple[Proxy, frozenset[str] | None]]:
        made = []
        entry = self.world.topology.call_graph.entry
        total = index.total_endpoints
        for pod in [*pods, *clients]:
            spec = getattr(pod, "spec", None)
            own = {spec.host_name} if spec is not None else set()
            callees = set(spec.callees()) if spec is not None else {entry}
            namespaces = {spec.namespace} if spec is not None else set()
            proxy, hosts = self.new_proxy(
                f"{pod.name}.sidecar",
                pod.node,
                "sidecar",
                self.spec.proxy,
                (self.spec.scoping, own, callees, namespaces),
                index,
                total,
            )
            self.sidecars[pod.name] = proxy
            made.append((proxy, hosts))
        return made

    def first_hops(self, src: PodBase, host: str) -> list[Hop]:
        hops = self._routes.get(src.name)
        if hops is None:
            out = self.sidecars[src.name]
            hops = self._routes[src.name] = [
                Hop(
                    out,
                    out.outbound,
                    self.mtls,
                    pooled=True,
                    local=self._check_out,
                    telemetry=self.mixer,
                )
            ]
        return hops

    def tail_hops(self, picker: Proxy, dst: PodBase) -> list[Hop]:
        key = ("in", dst.name)
        hops = self._routes.get(key)
        if hops is None:
            into = self.sidecars[dst.name]
            local = self.inbound_local(dst, into, self._check_in)
            hops = self._routes[key] = [
                Hop(into, into.inbound, self.mtls, local=local, telemetry=self.mixer)
            ]
        return hops

    def proxies(self) -> list[Proxy]:
        return list(self.sidecars.values())

    def proxies_of(self, pods: list[PodBase]) -> list[Proxy]:
        return [self.sidecars[pod.name] for pod in pods]

    def proxy_is_pods(self, proxies: list[Proxy]) -> bool:
        return True

    def retire_proxies(self, pods: list[ServicePod]) -> list[Proxy]:
        return [self.sidecars[pod.name] for pod in pods]

    def set_fault(self, kind: str, active: bool) -> None:
        if kind == "mixer_outage" and self.mixer is not None:
            self.mixer.down = active
            return
        super().set_fault(kind, active)

    def extras(self) -> dict[str, Any]:
        found = super().extras()
        if self.mixer is not None:
            found["mixer"] = self.mixer.stats.as_dict()
        return found
