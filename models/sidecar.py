"""Sidecars (Istio, Linkerd2): a proxy in every pod that Istio's injector injects.

``app -> own sidecar (outbound chain) -> network -> server's sidecar (inbound chain) -> app``,
and back the same way. The client's sidecar picks the endpoint and holds the pooled (m)TLS
connections to the server sidecars; each sidecar holds the configuration its scoping says.

**Partial meshes.** Which pods get a sidecar follows Istio's injector (:func:`injected`):
namespace labels (``istio-injection``, ``istio.io/rev``, from the topology's ``namespaces``)
and the pod's ``sidecar.istio.io/inject`` label or annotation. A pod without a sidecar calls
in plaintext, kube-proxy picking the endpoint (``ProxiedMesh.send_plain``); a meshed
server's sidecar receives that plaintext on its inbound listener (its cost without the
``tls`` filter) if its PeerAuthentication is PERMISSIVE, and resets the connection if it is
STRICT. A meshed client calling a pod without a sidecar sends plaintext (Istio's auto mTLS:
mTLS only to a peer with a sidecar whose mode is not DISABLE) and its outbound listener is
the only proxy on the path. A plaintext connection opens without a TLS handshake.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from models.dataplane import (
    ISTIO_RETRIES,
    Exchange,
    Hop,
    MtlsMode,
    ProxiedMesh,
    ProxiedSpec,
    RetrySpec,
    _inbound_key,
)
from models.ingress import (
    EdgeListener,
    Egress,
    EgressSpec,
    Ingress,
    IngressSpec,
    build_egress,
    build_ingress,
)
from models.membership import Membership, Plaintext
from models.messages import Parent, Request
from models.mixer import Mixer, MixerSpec
from models.proxy import Proxy, ProxySpec
from models.routing import PolicySet
from models.scoping import ConfigIndex, Scoping
from models.world import PodBase, World

if TYPE_CHECKING:
    from models.service import ClientPod, ServicePod

__all__ = ["SidecarSpec", "SidecarMesh", "MtlsMode", "InjectionSpec", "injected"]

# Namespaces the injector never injects (pkg/kube/inject/initializer.go, IgnoredNamespaces).
IGNORED_NAMESPACES = frozenset(
    {"kube-system", "kube-public", "kube-node-lease", "local-path-storage"}
)

INJECT = "sidecar.istio.io/inject"  # pod label (and, older, annotation)
NAMESPACE_INJECTION = "istio-injection"  # namespace label: enabled | disabled
REVISION = "istio.io/rev"  # namespace or pod label: the control plane revision


class InjectionSpec(BaseModel):
    """Istio's sidecar injector: which pods get a sidecar (see :func:`injected`).

    Attributes:
        enable_namespaces_by_default: inject into namespaces that carry neither
            ``istio-injection`` nor ``istio.io/rev`` (Helm's
            ``sidecarInjectorWebhook.enableNamespacesByDefault``). Istio's default is false;
            here it is true, so that a topology without namespace labels is meshed whole, as
            in Istio's benchmark (whose namespace is labelled ``istio-injection=enabled``) and
            as every spec written before partial meshes meant. Set it false for Istio's own
            behaviour: only labelled namespaces (or pods labelled
            ``sidecar.istio.io/inject: "true"``) are injected.
        policy: the injector's default for pods the webhook sees that say neither ``true``
            nor ``false`` (Helm's ``global.proxy.autoInject``; Istio's default ``enabled``).
            With ``disabled``, only pods labelled or annotated ``"true"`` get a sidecar.
        revision: the control plane's revision (``""``: the default one, which namespaces
            select with ``istio-injection=enabled`` or ``istio.io/rev=default``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    enable_namespaces_by_default: bool = True
    policy: Literal["enabled", "disabled"] = "enabled"
    revision: str = Field(default="", pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?)?$", max_length=63)


def injected(
    spec: InjectionSpec,
    namespace: str,
    namespace_labels: Mapping[str, str],
    labels: Mapping[str, str],
    annotations: Mapping[str, str],
) -> bool:
    """Whether Istio's injector gives a pod a sidecar.

    Two steps, as in Istio. First, whether the API server calls the webhook at all: the
    MutatingWebhookConfiguration's namespace and object selectors
    (``manifests/charts/istio-control/istio-discovery/templates/mutatingwebhook.yaml``):

    - ``rev.namespace``: the namespace's ``istio.io/rev`` is this revision (``default`` for
      the default one) and it has no ``istio-injection`` label; the pod's
      ``sidecar.istio.io/inject`` label is not ``"false"``;
    - ``rev.object``: the namespace has neither label; the pod's ``istio.io/rev`` label is
      this revision and its inject label is not ``"false"``;
    - for the default revision only, ``namespace``: the namespace's ``istio-injection`` is
      ``enabled`` and the pod's inject label is not ``"false"``; ``object``: the namespace
      has neither label, the pod's inject label is ``"true"`` and it has no ``istio.io/rev``;
      and with ``enableNamespacesByDefault``, ``auto``: the namespace has neither label and
      is not a system namespace, the pod has neither label.

    Then the webhook's ``injectRequired`` (``pkg/kube/inject/inject.go``): never in a
    system namespace; the pod's ``sidecar.istio.io/inject`` label (or, without it, the
    annotation) ``"true"`` or ``"false"`` decides; any other value or none falls back to
    the injector's ``policy``. (``neverInjectSelector``/``alwaysInjectSelector`` are empty
    by default and not modelled; pods here never use the host network.)

    Args:
        spec: the injector's settings.
        namespace: the pod's namespace.
        namespace_labels: the namespace's labels.
        labels: the pod's labels.
        annotations: the pod's annotations.
    """
    ns_injection = namespace_labels.get(NAMESPACE_INJECTION)
    ns_revision = namespace_labels.get(REVISION)
    pod_inject = labels.get(INJECT)
    pod_revision = labels.get(REVISION)
    revision = spec.revision or "default"
    unlabelled = ns_injection is None and ns_revision is None
    called = (ns_revision == revision and ns_injection is None and pod_inject != "false") or (
        unlabelled and pod_revision == revision and pod_inject != "false"
    )
    if not called and not spec.revision:
        called = (
            (ns_injection == "enabled" and pod_inject != "false")
            or (unlabelled and pod_inject == "true" and pod_revision is None)
            or (
                spec.enable_namespaces_by_default
                and unlabelled
                and namespace not in IGNORED_NAMESPACES
                and pod_inject is None
                and pod_revision is None
            )
        )
    if not called or namespace in IGNORED_NAMESPACES:
        return False
    selector = pod_inject if pod_inject is not None else annotations.get(INJECT, "")
    if selector == "true":
        return True
    if selector == "false":
        return False
    return spec.policy == "enabled"


class SidecarSpec(ProxiedSpec):
    """A sidecar per pod (and the shared fields of :class:`ProxiedSpec`).

    Attributes:
        proxy: the sidecar proxy.
        scoping: what each sidecar knows: ``mesh``, ``namespace`` or ``dependencies``.
        retries: the outbound router's retries for routes without their own (Istio's mesh
            default: 2 on connect failures and 503).
        mixer: Mixer (Istio 0.x to 1.4): checks and reports; None for telemetry v2.
        injection: which pods get a sidecar (Istio's injector; every pod by default).
        ingress: Istio's ingress gateway, which the load generator's requests enter through
            (``kind: istio_gateway``; see :mod:`models.ingress`); None: the load generator
            calls the entry service from its own pod (with a sidecar, as in Istio's
            benchmark).
        egress: Istio's egress gateway, which meshed pods' calls to its ``hosts`` leave
            through (see :class:`models.ingress.EgressSpec`); None: they call them directly.
    """

    architecture: Literal["sidecar"] = "sidecar"
    proxy: ProxySpec = ProxySpec()
    scoping: Scoping = "mesh"
    retries: RetrySpec = ISTIO_RETRIES
    mixer: MixerSpec | None = None
    injection: InjectionSpec = InjectionSpec()
    ingress: IngressSpec | None = None
    egress: EgressSpec | None = None


class SidecarMesh(ProxiedMesh):
    """A sidecar in every pod the injector injects, the load generator's included (as in
    Istio's benchmark, by default every pod: see :class:`InjectionSpec`)."""

    architecture = "sidecar"
    spec: SidecarSpec

    def __init__(self, world: World, spec: SidecarSpec) -> None:
        super().__init__(world, spec)
        self.mtls = spec.mtls_mode != "DISABLE"
        self.sidecars: dict[str, Proxy] = {}
        self.members = Membership(spec.mtls_mode)
        self._outside = self.members.outside  # checked per call: pods without a sidecar
        self._plain_hosts: set[str] = set()  # hosts a meshed client reaches in plaintext
        self.mixer: Mixer | None = None
        self._check_out: Mixer | None = None
        self._check_in: Mixer | None = None
        # The ingress gateway, and the pod whose requests enter through it (the load
        # generator, outside the mesh: it has no sidecar then).
        self.ingress: Ingress | None = None
        self._edge_client: PodBase | None = None
        self.egress: Egress | None = None
        self._egress_hosts: frozenset[str] = frozenset()  # checked per call: none by default

    def attach(self, pods: list[ServicePod], clients: list[ClientPod]) -> None:
        if self.spec.mixer is not None:
            mixer = self.mixer = Mixer(self.world, self.spec.mixer)
            self._check_out = mixer if self.spec.mixer.checks("outbound") else None
            self._check_in = mixer if self.spec.mixer.checks("inbound") else None
        super().attach(pods, clients)
        self._refresh_hosts()

    def add_pods(self, pods: list[ServicePod]) -> None:
        super().add_pods(pods)
        self._refresh_hosts()

    def use_policies(self, policies: PolicySet) -> None:
        super().use_policies(policies)
        if self.members.use(policies.peer_authentication):
            self._routes = {}  # modes changed: every hop's mTLS is decided again
            self._refresh_hosts()

    def config_changed(self, kind: str, service: str, hosts: set[str]) -> None:
        super().config_changed(kind, service, hosts)
        if self.members.partial:
            self._refresh_hosts()

    def _refresh_hosts(self) -> None:
        plain = self.members.plain_hosts(self.endpoints) if self.mtls else set()
        if plain != self._plain_hosts:
            self._plain_hosts = plain
            self._routes = {k: v for k, v in self._routes.items() if _inbound_key(k)}

    def is_injected(self, pod: PodBase) -> bool:
        """Whether Istio's injector gives ``pod`` a sidecar (see :func:`injected`)."""
        spec = getattr(pod, "spec", None)
        return injected(
            self.spec.injection,
            pod.namespace,
            self.world.topology.namespace_labels(pod.namespace),
            pod.labels,
            spec.annotations if spec is not None else {},
        )

    def send(
        self, src: PodBase, host: str, request: Request, parent: Parent, slot: int = 0
    ) -> None:
        if src is self._edge_client:
            self.ingress.send(src, host, request, parent, slot)  # type: ignore[union-attr]
            return
        if self._outside and src.name in self._outside:
            self.send_plain(src, host, request, parent, slot)
            return
        Exchange(self, src, host, request, parent, slot).start()

    def make_proxies(
        self, pods: list[ServicePod], clients: list[ClientPod], index: ConfigIndex
    ) -> list[tuple[Proxy, frozenset[str] | None]]:
        made = []
        entry = self.world.topology.call_graph.entry
        total = index.total_endpoints
        if self.spec.ingress is not None and clients:
            # The load generator is outside the cluster: it calls the gateway, no sidecar.
            self._edge_client = clients[0]
            clients = clients[1:]
        for pod in [*pods, *clients]:
            inside = self.is_injected(pod)
            self.members.add(pod, inside)
            if not inside:
                continue
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
        if self.spec.ingress is not None and self.ingress is None:
            self.ingress, gateways = build_ingress(
                self, self.spec.ingress, self.spec.proxy, index, self._gateway_route
            )
            made += gateways
        if self.spec.egress is not None and self.egress is None:
            self.egress, gateways = build_egress(
                self, self.spec.egress, self.spec.proxy, index, self.mtls
            )
            self._egress_hosts = self.egress.hosts
            made += gateways
        return made

    def _gateway_route(self, proxy: Proxy, edge: EdgeListener) -> Any:
        """A gateway replica's route: its edge listener picks the endpoint and holds
        pooled connections, mTLS to the endpoint's sidecar (Istio's auto mTLS), as a
        sidecar's outbound listener does; Mixer checks and reports as a sidecar's."""
        hops = [
            Hop(
                proxy,
                edge,
                self.mtls,
                pooled=True,
                local=self._check_out,
                telemetry=self.mixer,
            )
        ]
        return lambda: hops

    def first_hops(self, src: PodBase, host: str) -> list[Hop]:
        egress = self._egress_hosts
        if egress and host in egress:
            return self._egress_hops(src)
        plain = bool(self._plain_hosts) and host in self._plain_hosts
        key: Any = src.name if not plain else (src.name, "plain")
        hops = self._routes.get(key)
        if hops is None and src is self._edge_client:  # asked by the workload: the gateway
            return self.ingress.first_hops()  # type: ignore[union-attr]
        if hops is None:
            out = self.sidecars[src.name]
            hops = self._routes[key] = [
                Hop(
                    out,
                    out.outbound,
                    self.mtls and not plain,
                    pooled=True,
                    local=self._check_out,
                    telemetry=self.mixer,
                )
            ]
        return hops

    def _egress_hops(self, src: PodBase) -> list[Hop]:
        """A call to a host behind the egress gateway: the caller's sidecar sends it to a
        gateway replica (pooled, mTLS as to any meshed peer), whose edge listener terminates
        that mTLS and picks the external endpoint."""
        assert self.egress is not None
        gateway = self.egress.pick()
        key = (src.name, "egress", gateway.name)
        hops = self._routes.get(key)
        if hops is None:
            out = self.sidecars[src.name]
            hops = self._routes[key] = [
                Hop(
                    out,
                    out.outbound,
                    self.mtls,
                    pooled=True,
                    local=self._check_out,
                    telemetry=self.mixer,
                ),
                Hop(gateway, self.egress.edge, False, pooled=True, telemetry=self.mixer),
            ]
        return hops

    def tail_hops(self, picker: Proxy, dst: PodBase) -> list[Hop]:
        key = ("in", dst.name)
        hops = self._routes.get(key)
        if hops is None:
            if dst.name in self._outside:  # no sidecar: the client's connects to the app
                hops = self._routes[key] = []
                return hops
            into = self.sidecars[dst.name]
            local = self.inbound_local(dst, into, self._check_in)
            mtls = self.mtls and self.members.accepts_mtls(dst.name)
            if self.mtls and not mtls and local is not None:
                local = Plaintext(local)  # DISABLE: the caller has no identity
            hops = self._routes[key] = [
                Hop(into, into.inbound, mtls, local=local, telemetry=self.mixer)
            ]
        return hops

    def plain_tail(self, dst: PodBase) -> list[Hop] | None:
        if dst.name in self._outside:
            return []
        if self.members.modes[dst.name] == "STRICT":
            return None  # the sidecar has no plaintext filter chain: it resets
        key = ("in", f"{dst.name}|plain")
        hops = self._routes.get(key)
        if hops is None:
            into = self.sidecars[dst.name]
            local = self.inbound_local(dst, into, self._check_in)
            if self.mtls and local is not None:
                local = Plaintext(local)  # the caller has no identity
            hops = self._routes[key] = [
                Hop(into, into.inbound, False, local=local, telemetry=self.mixer)
            ]
        return hops

    def tls_to(self, hop: Hop, target: Proxy | None, dst: PodBase | None) -> bool:
        # Auto mTLS: to a peer with a sidecar whose mode is not DISABLE. Before the endpoint
        # is picked (a sidecar's connection to the egress gateway), the peer is the gateway.
        if dst is None:
            return hop.mtls and target is not None
        return hop.mtls and self.members.accepts_mtls(dst.name)

    def proxies(self) -> list[Proxy]:
        found = list(self.sidecars.values())
        if self.ingress is not None:  # istiod configures the gateways as it does sidecars
            found += self.ingress.proxies
        if self.egress is not None:
            found += self.egress.proxies
        return found

    def proxies_of(self, pods: list[PodBase]) -> list[Proxy]:
        return [self.sidecars[name] for name in self.members.names(pods)]

    def proxy_is_pods(self, proxies: list[Proxy]) -> bool:
        return bool(proxies)  # a pod without a sidecar has no proxy to crash with it

    def retire_proxies(self, pods: list[ServicePod]) -> list[Proxy]:
        return [self.sidecars[name] for name in self.members.names(pods)]

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
