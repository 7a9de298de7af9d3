"""Policies checked against a topology and a mesh, before a run.

Each policy object is valid on its own once pydantic has read it (:mod:`models.policies`);
here it is checked against what it names: hosts and subsets that exist, one VirtualService,
DestinationRule or TrafficSplit per host, route groups that exist, and a mesh that runs its
kind (Istio's resources need Envoy: sidecars, or an ambient waypoint; SMI's need Traefik
Mesh). Traefik Mesh's annotations on the topology's services are parsed here too, so that a
bad ``circuit-breaker-expression`` is an error that names the service, the annotation and the
column. Every problem is a ``ValueError`` whose message starts with the path of the field.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from models.ambient import service_labels, use_waypoint
from models.defaults import ISTIO
from models.policies import (
    ISTIO_KINDS,
    SMI_KINDS,
    AuthorizationPolicy,
    DestinationRule,
    HTTPRouteGroup,
    LocalRateLimit,
    PeerAuthentication,
    TrafficSplit,
    TrafficTarget,
    VirtualService,
    host_namespace,
    short_host,
)
from models.traefik import AnnotationError, parse_annotations
from topologies import CallGraphSpec

__all__ = ["check_policies", "check_annotations"]


def check_annotations(graph: CallGraphSpec) -> None:
    """Parse every service's Traefik Mesh annotations (raises ValueError naming the workload,
    the annotation and, for an expression, the column); the workloads of a service agree on
    its ``istio.io/use-waypoint`` labels (a Service has one set)."""
    for host in graph.hosts():
        service_labels(graph, host)
        merged: dict[str, str] = {}
        owner: dict[str, str] = {}
        for svc in graph.workloads_of(host):
            for key, value in (getattr(svc, "annotations", {}) or {}).items():
                if key in merged and merged[key] != value:
                    raise ValueError(
                        f"topology: workloads {owner[key]!r} and {svc.name!r} of service "
                        f"{host!r} give annotation {key!r} different values (a Kubernetes "
                        "Service has one set of annotations)"
                    )
                merged[key] = value
                owner[key] = svc.name
        if not merged:
            continue
        try:
            parse_annotations(merged)
        except AnnotationError as error:
            raise ValueError(
                f"topology: service {host!r} (workload {owner.get(error.key, '?')!r}): {error}"
            ) from None


def check_policies(
    policies: Sequence[Any],
    graph: CallGraphSpec,
    mesh: Any,
    namespace_labels: Callable[[str], Mapping[str, str]] = lambda namespace: {},
) -> None:
    """Check ``policies`` against the topology's ``graph`` and the resolved ``mesh`` spec
    (``namespace_labels``: the topology's labels of a namespace, for ambient's waypoint
    labels)."""
    architecture = getattr(mesh, "architecture", "none")
    hosts = set(graph.hosts())
    namespaces = {h: graph.workloads_of(h)[0].namespace for h in hosts}
    workload_names = {s.name for s in graph.services}
    seen: dict[tuple[str, str], int] = {}
    subsets: dict[str, dict[str, dict[str, str]]] = {}
    groups: dict[tuple[str, str], HTTPRouteGroup] = {}
    # The PeerAuthentication without a selector of each namespace (the root's is mesh-wide).
    peer_wide: dict[str, int] = {}

    def where(i: int, path: str = "") -> str:
        return f"policies.{i}{'.' + path if path else ''}"

    def known_host(i: int, path: str, name: str, namespace: str) -> str:
        host = short_host(name)
        if host not in hosts:
            raise ValueError(
                f"{where(i, path)}: no service {name!r}; services: {', '.join(sorted(hosts))}"
            )
        ns = host_namespace(name, namespaces[host])
        if ns != namespaces[host]:
            raise ValueError(
                f"{where(i, path)}: service {host!r} is in namespace {namespaces[host]!r}, "
                f"not {ns!r}"
            )
        return host

    for i, policy in enumerate(policies):
        kind = policy.kind
        if architecture in ("none", "proxyless"):
            raise ValueError(
                f"{where(i, 'kind')}: the {architecture!r} mesh has no proxy to run a {kind} "
                "(use a sidecar, ambient or per_node mesh)"
            )
        if architecture == "per_node" and kind in ISTIO_KINDS:
            raise ValueError(
                f"{where(i, 'kind')}: {kind} is Istio's; Traefik Mesh reads SMI "
                "(TrafficSplit, HTTPRouteGroup, TrafficTarget) and service annotations"
            )
        if architecture in ("sidecar", "ambient") and kind in SMI_KINDS:
            raise ValueError(
                f"{where(i, 'kind')}: {kind} is SMI, which Traefik Mesh reads; Istio "
                "expresses it with a VirtualService, DestinationRule or AuthorizationPolicy"
            )
        if architecture == "ambient" and kind in ("AuthorizationPolicy", "LocalRateLimit"):
            raise ValueError(
                f"{where(i, 'kind')}: {kind} is not modelled for ambient yet (it runs in "
                "ztunnel and waypoints): use the sidecar architecture"
            )
        key = (kind, policy.metadata.namespace + "/" + policy.metadata.name)
        if key in seen:
            raise ValueError(
                f"{where(i, 'metadata.name')}: a {kind} named {policy.metadata.name!r} is "
                f"policies.{seen[key]} already"
            )
        seen[key] = i
        if isinstance(policy, HTTPRouteGroup):
            groups[(policy.metadata.namespace, policy.metadata.name)] = policy
        if isinstance(policy, DestinationRule):
            host = known_host(i, "spec.host", policy.spec.host, policy.metadata.namespace)
            if host in subsets:
                raise ValueError(f"{where(i, 'spec.host')}: a DestinationRule for {host!r} exists")
            subsets[host] = {s.name: dict(s.labels) for s in policy.spec.subsets}
            pods = graph.workloads_of(host)
            for j, subset in enumerate(policy.spec.subsets):
                if not any(_selects(subset.labels, svc) for svc in pods):
                    raise ValueError(
                        f"{where(i, f'spec.subsets.{j}.labels')}: no workload of {host!r} has "
                        f"labels {dict(subset.labels)}; its workloads' labels: "
                        + "; ".join(f"{s.name} {dict(s.pod_labels())}" for s in pods)
                    )
    routed: dict[str, int] = {}
    with_waypoint = _waypoint_hosts(graph, mesh, namespace_labels)
    for i, policy in enumerate(policies):
        if isinstance(policy, VirtualService):
            _check_virtual_service(i, policy, known_host, subsets, routed, where, with_waypoint)
        elif isinstance(policy, TrafficSplit):
            host = known_host(i, "spec.service", policy.spec.service, policy.metadata.namespace)
            if host in routed:
                raise ValueError(
                    f"{where(i, 'spec.service')}: policies.{routed[host]} routes {host!r} already"
                )
            routed[host] = i
            for j, backend in enumerate(policy.spec.backends):
                name = backend.service
                if name in workload_names:
                    if graph.service(name).host_name != host:
                        raise ValueError(
                            f"{where(i, f'spec.backends.{j}.service')}: workload {name!r} "
                            f"does not serve {host!r}"
                        )
                elif name not in hosts:
                    raise ValueError(
                        f"{where(i, f'spec.backends.{j}.service')}: no workload or service {name!r}"
                    )
            _check_group_refs(i, "spec.matches", policy.spec.matches, groups, policy, where)
        elif isinstance(policy, TrafficTarget):
            if not getattr(mesh, "acl", False):
                raise ValueError(
                    f"{where(i, 'kind')}: Traefik Mesh reads TrafficTargets only in ACL mode: "
                    "set the mesh's acl: true (mesh.overrides.acl)"
                )
            _check_group_refs(i, "spec.rules", policy.spec.rules, groups, policy, where)
        elif isinstance(policy, PeerAuthentication):
            _check_peer_authentication(i, policy, peer_wide, where, mesh)
        elif isinstance(policy, (AuthorizationPolicy, LocalRateLimit)):
            pass  # selectors that match nothing are allowed, as in Kubernetes


def _check_peer_authentication(
    i: int, policy: PeerAuthentication, wide: dict[str, int], where: Any, mesh: Any
) -> None:
    """One mesh-wide PeerAuthentication (root namespace, no selector) and one per namespace
    (Istio takes the oldest of several and warns; here the second is an error); a mode that
    needs mTLS in a mesh whose ``mtls_mode`` is DISABLE has no certificates to use."""
    selector = policy.spec.selector
    ns = policy.metadata.namespace
    if selector is None or not selector.matchLabels:
        if ns in wide:
            scope = "mesh-wide" if ns == ISTIO["authorization.rootNamespace"] else f"for {ns!r}"
            raise ValueError(
                f"{where(i, 'metadata.namespace')}: policies.{wide[ns]} is the {scope} "
                "PeerAuthentication already (one without a selector per namespace)"
            )
        wide[ns] = i
    mode = policy.spec.mtls.mode if policy.spec.mtls is not None else "UNSET"
    if mode in ("STRICT", "PERMISSIVE") and getattr(mesh, "mtls_mode", "") == "DISABLE":
        raise ValueError(
            f"{where(i, 'spec.mtls.mode')}: {mode} needs mTLS, and the mesh's mtls_mode is "
            "DISABLE (no certificates): set mesh.overrides.mtls_mode to STRICT or PERMISSIVE"
        )


def _check_virtual_service(
    i: int,
    vs: VirtualService,
    known_host: Any,
    subsets: dict[str, dict[str, dict[str, str]]],
    routed: dict[str, int],
    where: Any,
    with_waypoint: set[str] | None,
) -> None:
    ns = vs.metadata.namespace
    for j, name in enumerate(vs.spec.hosts):
        host = known_host(i, f"spec.hosts.{j}", name, ns)
        if host in routed:
            raise ValueError(
                f"{where(i, f'spec.hosts.{j}')}: policies.{routed[host]} routes {host!r} already"
            )
        routed[host] = i
        if with_waypoint is not None and host not in with_waypoint:
            raise ValueError(
                f"{where(i, f'spec.hosts.{j}')}: in ambient, L7 routing runs in a waypoint, and "
                f"{host!r} has none (mesh.waypoints, or its istio.io/use-waypoint label)"
            )
    for r, http in enumerate(vs.spec.http):
        targets = [
            (f"spec.http.{r}.route.{d}.destination", dest.destination)
            for d, dest in enumerate(http.route)
        ]
        if http.mirror is not None:
            targets.append((f"spec.http.{r}.mirror", http.mirror))
        for path, dest in targets:
            host = known_host(i, f"{path}.host", dest.host, ns)
            if dest.subset is not None and dest.subset not in subsets.get(host, {}):
                defined = ", ".join(sorted(subsets.get(host, {}))) or "none"
                raise ValueError(
                    f"{where(i, f'{path}.subset')}: no DestinationRule of {host!r} defines "
                    f"subset {dest.subset!r} (defined: {defined})"
                )


def _waypoint_hosts(
    graph: CallGraphSpec, mesh: Any, namespace_labels: Callable[[str], Mapping[str, str]]
) -> set[str] | None:
    """The hosts with a waypoint in an ambient mesh (None: not ambient)."""
    if getattr(mesh, "architecture", "") != "ambient":
        return None
    waypoints = mesh.waypoints
    if waypoints == "all":
        return set(graph.hosts())
    if isinstance(waypoints, list):
        return set(waypoints)
    if waypoints != "labels":
        return set()
    found = set()
    for host in graph.hosts():
        namespace = graph.workloads_of(host)[0].namespace
        labels = service_labels(graph, host)
        if use_waypoint(labels, namespace, namespace_labels(namespace)) is not None:
            found.add(host)
    return found


def _check_group_refs(
    i: int,
    path: str,
    refs: Sequence[Any],
    groups: dict[tuple[str, str], HTTPRouteGroup],
    policy: Any,
    where: Any,
) -> None:
    for j, ref in enumerate(refs):
        group = groups.get((policy.metadata.namespace, ref.name))
        if group is None:
            raise ValueError(
                f"{where(i, f'{path}.{j}.name')}: no HTTPRouteGroup {ref.name!r} in namespace "
                f"{policy.metadata.namespace!r}"
            )
        names = {m.name for m in group.spec.matches}
        for name in ref.matches:
            if name not in names:
                raise ValueError(
                    f"{where(i, f'{path}.{j}.matches')}: HTTPRouteGroup {ref.name!r} has no "
                    f"match {name!r} (it has {', '.join(sorted(names))})"
                )


def _selects(selector: Any, svc: Any) -> bool:
    labels = svc.pod_labels()
    return all(labels.get(k) == v for k, v in selector.items())
