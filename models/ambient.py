"""Istio ambient: a ztunnel per node for L4 and mTLS, and waypoint proxies for L7.

``app -> node ztunnel (L4, mTLS over HBONE) -> [waypoint of the destination service]
-> network -> destination node's ztunnel -> app``. Ztunnels speak HTTP/2 (HBONE) to each
other and to waypoints, so their connections are multiplexed. A waypoint is a full Envoy
with the L7 chain, deployed per service (``waypoint_replicas`` pods placed on the nodes);
it picks the endpoint when it is on the path, the source ztunnel otherwise.

**Partial meshes.** A pod is in the mesh when Istio's CNI agent enrolls it
(:func:`enrolled`: ``istio.io/dataplane-mode``). A pod outside it calls in plaintext,
kube-proxy picking the endpoint, and never through a waypoint; the destination's ztunnel
receives that plaintext (its inbound listener without the ``tls`` filter) unless the pod's
PeerAuthentication is STRICT, which ztunnel enforces as a policy that denies plaintext
(``pilot/pkg/serviceregistry/ambient/policies.go``): the connection is reset. Between
enrolled pods, HBONE is mTLS whatever the mode (ztunnel has no ``DISABLE``). An enrolled
client calling a pod outside the mesh goes through its own ztunnel only, in plaintext.
With ``waypoints: labels``, a service has a waypoint where ``istio.io/use-waypoint`` says
(:func:`use_waypoint`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from models.dataplane import Exchange, Hop, ProxiedMesh, ProxiedSpec, _inbound_key
from models.loadbalancer import Balancer, make_balancer
from models.membership import Membership
from models.messages import Parent, Request
from models.proxy import Proxy, ProxySpec
from models.scoping import ConfigIndex
from models.world import PodBase, World

if TYPE_CHECKING:
    from models.service import ClientPod, ServicePod
from sim.distributions import UniformDist
from sim.random import stable_hash
from topologies import CallGraphSpec

__all__ = ["AmbientSpec", "AmbientMesh", "EnrollmentSpec", "enrolled", "use_waypoint"]

DATAPLANE_MODE = "istio.io/dataplane-mode"  # namespace or pod label: ambient | none
USE_WAYPOINT = "istio.io/use-waypoint"  # namespace or service label: a waypoint's name | none
USE_WAYPOINT_NAMESPACE = "istio.io/use-waypoint-namespace"  # the waypoint's namespace


class EnrollmentSpec(BaseModel):
    """Which pods Istio's CNI agent enrolls in ambient (see :func:`enrolled`).

    Attributes:
        namespaces_by_default: a namespace without an ``istio.io/dataplane-mode`` label counts
            as labelled ``ambient``, so a topology without namespace labels is enrolled whole,
            as in the benchmarks and in every spec written before partial meshes. Istio has
            no such default (a namespace is enrolled only when labelled): set it false for
            Istio's behaviour.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    namespaces_by_default: bool = True


def enrolled(
    spec: EnrollmentSpec, namespace_labels: Mapping[str, str], labels: Mapping[str, str]
) -> bool:
    """Whether a pod is in ambient: the CNI agent's enablement selectors as the istio-cni
    chart sets them (``manifests/charts/istio-cni/values.yaml``, ``ambient.
    enablementSelectors``; matched in ``cni/pkg/util/enablement_selector.go``, ``Matches``):
    the pod is labelled ``istio.io/dataplane-mode: ambient``, or its namespace is and the
    pod is not labelled ``istio.io/dataplane-mode: none``. (A pod with a sidecar, or on the
    host network, is never enrolled; neither exists in an ambient mesh here.)

    Args:
        spec: the enrollment settings.
        namespace_labels: the pod's namespace's labels.
        labels: the pod's labels.
    """
    mode = labels.get(DATAPLANE_MODE)
    if mode == "ambient":
        return True
    space = namespace_labels.get(DATAPLANE_MODE)
    if space is None and spec.namespaces_by_default:
        space = "ambient"
    return space == "ambient" and mode != "none"


def use_waypoint(
    labels: Mapping[str, str], namespace: str, namespace_labels: Mapping[str, str]
) -> tuple[str, str] | None:
    """The waypoint (namespace, name) a service's traffic goes through, or None: the
    service's ``istio.io/use-waypoint`` label (``none`` opts out), else its namespace's, the
    waypoint's namespace being ``istio.io/use-waypoint-namespace`` or the labelled object's
    (Istio's ``fetchWaypointForTarget`` and ``GetUseWaypoint``,
    ``pilot/pkg/serviceregistry/ambient/waypoints.go``). A waypoint's ``allowedRoutes``
    and traffic type are not modelled: every waypoint takes service traffic from anywhere.
    """
    for found in (labels, namespace_labels):
        name = found.get(USE_WAYPOINT)
        if name is not None:
            if name == "none":
                return None
            return (found.get(USE_WAYPOINT_NAMESPACE, namespace), name)
    return None


def service_labels(graph: CallGraphSpec, host: str) -> dict[str, str]:
    """The labels of the Kubernetes Service ``host`` as far as the waypoint binding reads
    them: its workloads' ``istio.io/use-waypoint*`` labels (the workloads' labels stand for
    their Service's here), which must agree."""
    found: dict[str, str] = {}
    owner: dict[str, str] = {}
    for svc in graph.workloads_of(host):
        for key in (USE_WAYPOINT, USE_WAYPOINT_NAMESPACE):
            value = svc.labels.get(key)
            if value is None:
                continue
            if key in found and found[key] != value:
                raise ValueError(
                    f"topology: workloads {owner[key]!r} and {svc.name!r} of service {host!r} "
                    f"give label {key!r} different values (a Service has one set of labels)"
                )
            found[key] = value
            owner[key] = svc.name
    return found


class AmbientSpec(ProxiedSpec):
    """Istio ambient (and the shared fields of :class:`ProxiedSpec`).

    Attributes:
        ztunnel: the per-node L4 proxy.
        waypoint: the L7 proxy of a service.
        waypoints: which services have a waypoint: ``none`` (L4 only), ``all``, a list of
            service hosts (each with a waypoint of its own), or ``labels``: where
            ``istio.io/use-waypoint`` says, on the service or its namespace (services that
            name one waypoint share it).
        waypoint_replicas: waypoint pods per service (per named waypoint with ``labels``).
        enrollment: which pods are in the mesh (every pod by default).

    Its mTLS is HBONE between ztunnels; its control plane is istiod, pushing to ztunnels and
    waypoints.
    """

    architecture: Literal["ambient"] = "ambient"
    ztunnel: ProxySpec = ProxySpec()
    waypoint: ProxySpec = ProxySpec()
    waypoints: Literal["none", "all", "labels"] | list[str] = "none"
    waypoint_replicas: Annotated[int, Field(ge=1)] = 1
    enrollment: EnrollmentSpec = EnrollmentSpec()


class AmbientMesh(ProxiedMesh):
    """Ztunnels on every node with pods (a DaemonSet: there whether its pods are enrolled or
    not); waypoints for the services that ask for L7."""

    architecture = "ambient"
    spec: AmbientSpec

    def __init__(self, world: World, spec: AmbientSpec) -> None:
        super().__init__(world, spec)
        self.mtls = spec.mtls_mode != "DISABLE"
        self.ztunnels: dict[str, Proxy] = {}
        self.waypoints: dict[str, list[Proxy]] = {}
        self._waypoint_balancers: dict[tuple[str, str], Balancer] = {}
        self._waypoints_made = False
        self.members = Membership(spec.mtls_mode)
        self._outside = self.members.outside  # checked per call: pods not enrolled
        self._plain_hosts: set[str] = set()  # hosts an enrolled client reaches in plaintext

    def attach(self, pods: list[ServicePod], clients: list[ClientPod]) -> None:
        super().attach(pods, clients)
        self._refresh_hosts()

    def add_pods(self, pods: list[ServicePod]) -> None:
        super().add_pods(pods)
        self._refresh_hosts()

    def use_policies(self, policies: Any) -> None:
        super().use_policies(policies)
        self.members.use(policies.peer_authentication)  # read by plain_tail: not cached

    def config_changed(self, kind: str, service: str, hosts: set[str]) -> None:
        super().config_changed(kind, service, hosts)
        if self._outside:
            self._refresh_hosts()

    def _refresh_hosts(self) -> None:
        plain = self.members.outside_hosts(self.endpoints) if self._outside else set()
        if plain != self._plain_hosts:
            self._plain_hosts = plain
            self._routes = {k: v for k, v in self._routes.items() if _inbound_key(k)}

    def is_enrolled(self, pod: PodBase) -> bool:
        """Whether ``pod`` is in ambient (see :func:`enrolled`)."""
        return enrolled(
            self.spec.enrollment,
            self.world.topology.namespace_labels(pod.namespace),
            pod.labels,
        )

    def send(
        self, src: PodBase, host: str, request: Request, parent: Parent, slot: int = 0
    ) -> None:
        if self._outside and src.name in self._outside:
            self.send_plain(src, host, request, parent, slot)
            return
        Exchange(self, src, host, request, parent, slot).start()

    def make_proxies(
        self, pods: list[ServicePod], clients: list[ClientPod], index: ConfigIndex
    ) -> list[tuple[Proxy, frozenset[str] | None]]:
        made = []
        for pod in [*pods, *clients]:
            self.members.add(pod, self.is_enrolled(pod))
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
        if wanted == "labels":
            return made + self._labelled_waypoints(index)
        hosts_with = (
            sorted(self.endpoints) if wanted == "all" else [] if wanted == "none" else wanted
        )
        unknown = [h for h in hosts_with if h not in self.endpoints]
        if unknown:
            raise ValueError(f"waypoints: unknown service(s) {', '.join(unknown)}")
        for host in hosts_with:
            proxies, known = self._waypoint(f"{host}-waypoint", {host}, index)
            made.extend(known)
            self.waypoints[host] = proxies
        return made

    def _waypoint(
        self, name: str, hosts: set[str], index: ConfigIndex
    ) -> tuple[list[Proxy], list[tuple[Proxy, frozenset[str] | None]]]:
        """The pods of one waypoint (``<name>-<i>``), placed from a hash of its name."""
        world = self.world
        nodes = sorted(world.nodes)
        offset = stable_hash(name) % len(nodes)
        proxies = []
        made = []
        for i in range(self.spec.waypoint_replicas):
            node = world.nodes[nodes[(offset + i) % len(nodes)]]
            waypoint, known = self.new_proxy(
                f"{name}-{i}",
                node,
                "waypoint",
                self.spec.waypoint,
                ("dependencies", hosts, set(), set()),
                index,
            )
            proxies.append(waypoint)
            made.append((waypoint, known))
        return proxies, made

    def _labelled_waypoints(self, index: ConfigIndex) -> list[tuple[Proxy, frozenset[str] | None]]:
        """One waypoint per (namespace, name) the services' ``istio.io/use-waypoint`` labels
        name, shared by those services (:func:`use_waypoint`)."""
        topology = self.world.topology
        graph = topology.call_graph
        users: dict[tuple[str, str], set[str]] = {}
        for host in sorted(self.endpoints):
            namespace = graph.workloads_of(host)[0].namespace
            found = use_waypoint(
                service_labels(graph, host), namespace, topology.namespace_labels(namespace)
            )
            if found is not None:
                users.setdefault(found, set()).add(host)
        made: list[tuple[Proxy, frozenset[str] | None]] = []
        for (namespace, name), hosts in sorted(users.items()):
            proxies, known = self._waypoint(f"{name}.{namespace}", hosts, index)
            made.extend(known)
            for host in hosts:
                self.waypoints[host] = proxies
        return made

    def first_hops(self, src: PodBase, host: str) -> list[Hop]:
        source = self.ztunnels[src.node.name]
        waypoints = self.waypoints.get(host)
        waypoint = None if waypoints is None else self._pick_waypoint(source, host, waypoints)
        plain = waypoint is None and bool(self._plain_hosts) and host in self._plain_hosts
        key: Any = (source.name, waypoint.name if waypoint is not None else None)
        if plain:  # to pods outside the mesh: plaintext, a connection per connection
            key = (source.name, "plain")
        hops = self._routes.get(key)
        if hops is None:
            mtls = self.mtls
            hops = [
                Hop(source, source.outbound, mtls and not plain, pooled=True, multiplexed=not plain)
            ]
            if waypoint is not None:
                hops.append(Hop(waypoint, waypoint.inbound, mtls, pooled=True, multiplexed=True))
            self._routes[key] = hops
        return hops

    def tail_hops(self, picker: Proxy, dst: PodBase) -> list[Hop]:
        if self._outside and dst.name in self._outside:
            return []  # not enrolled: straight to the app
        key = ("in", dst.node.name)
        hops = self._routes.get(key)
        if hops is None:
            dest = self.ztunnels[dst.node.name]
            hops = self._routes[key] = [Hop(dest, dest.inbound, self.mtls)]
        return hops

    def plain_tail(self, dst: PodBase) -> list[Hop] | None:
        if dst.name in self._outside:
            return []
        if self.members.modes[dst.name] == "STRICT":
            return None  # ztunnel denies plaintext to it: reset
        key = ("in", f"{dst.node.name}|plain")
        hops = self._routes.get(key)
        if hops is None:
            dest = self.ztunnels[dst.node.name]
            hops = self._routes[key] = [Hop(dest, dest.inbound, False)]
        return hops

    def tls_to(self, hop: Hop, target: Proxy | None, dst: PodBase | None) -> bool:
        # HBONE to a ztunnel or a waypoint; plaintext to a pod outside the mesh.
        return hop.mtls and target is not None

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
        inside = [pod for pod in pods if pod.name not in self._outside]
        return [self.ztunnels[n] for n in sorted({pod.node.name for pod in inside})]

    def proxies(self) -> list[Proxy]:
        found = [self.ztunnels[k] for k in sorted(self.ztunnels)]
        for host in sorted(self.waypoints):
            found.extend(self.waypoints[host])
        return found
