"""Operational complexity as a number: what an operator writes and runs for a mesh.

Counted from the spec (its topology, its mesh, its policies as given), never from the run:
the same spec always counts the same, whatever the seed.

- **What is written.** Each policy of the spec is one Kubernetes object; its lines are those
  of the object dumped as block-style Kubernetes YAML (``yaml.safe_dump``, keys in their
  order, no blank lines), so two ways of writing one object (flow style, comments) count
  alike. Traefik Mesh's ``mesh.traefik.io/`` annotations are one line each on their Service
  (a workload's annotations stand for its Service's, once per host). An SMI ``TrafficSplit``
  backend names a Kubernetes Service: where it names a workload rather than a host of the
  topology (``reviews-v1`` in Bookinfo, whose Service is ``reviews``), the operator writes
  that Service too (:func:`backend_service`), which Istio's subsets (pod labels in a
  DestinationRule) do not need. Policies the spec's ``changes`` apply later are edits, not
  counted here; the load generator and the install itself (charts, CRDs, namespace labels)
  are not counted either.
- **What runs.** The control plane's pods, their cores (replicas x cores; Galley 1 core,
  Mixer's deployments their workers) and the modelled memory of the control plane's memory
  model for the topology's proxies, services and endpoints.
- **A version roll-out.** The proxies to upgrade and the restarts it takes, per
  architecture: sidecars are containers of the app pods, so each meshed pod restarts
  (a sidecar is injected at pod creation); a per-node proxy is a DaemonSet, one pod per node
  restarted and no app pod; ambient's ztunnels are a DaemonSet (one per node) and its
  waypoints a Deployment per waypoint, and no app pod restarts; proxyless gRPC is a library
  in the app: every meshed app is rebuilt (one image per workload) and its pods restart.
"""

from __future__ import annotations

from typing import Any

import yaml

from experiments.results import OperationsResult, RolloutKind
from models.ambient import AmbientSpec, enrolled, service_labels, use_waypoint
from models.control_plane import ControlPlaneSpec
from models.per_node import PerNodeSpec
from models.proxyless import ProxylessSpec
from models.sidecar import SidecarSpec, injected
from models.traefik import MESH_PREFIX
from topologies import TopologySpec

__all__ = ["operations", "yaml_lines", "backend_service"]


def yaml_lines(obj: Any) -> int:
    """Lines of ``obj`` dumped as block-style Kubernetes YAML (blank lines not counted)."""
    text = yaml.safe_dump(obj, sort_keys=False, default_flow_style=False)
    return sum(1 for line in text.splitlines() if line.strip())


def backend_service(topology: TopologySpec, name: str) -> dict[str, Any] | None:
    """The Service an SMI backend ``name`` needs, when it names a workload that no Service
    of the topology selects alone (its pods by ``app`` and ``version``), else None."""
    graph = topology.call_graph
    if name in graph.hosts():
        return None
    workload = next((w for w in graph.services if w.name == name), None)
    if workload is None:
        return None
    labels = workload.pod_labels()
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {
            "selector": {"app": labels["app"], "version": labels["version"]},
            "ports": [{"port": 80}],
        },
    }


def operations(topology: TopologySpec, mesh: Any, policies: list[Any]) -> OperationsResult:
    """Count what an operator writes and runs (see the module docstring).

    Args:
        topology: the resolved topology.
        mesh: the resolved mesh spec.
        policies: the spec's policies, as validated.
    """
    by_kind: dict[str, int] = {}
    lines = 0
    written: set[str] = set()
    for policy in policies:
        obj = policy.model_dump(mode="json", by_alias=True, exclude_unset=True)
        by_kind[obj["kind"]] = by_kind.get(obj["kind"], 0) + 1
        lines += yaml_lines(obj)
        if obj["kind"] == "TrafficSplit":
            for backend in obj["spec"].get("backends", []):
                service = backend_service(topology, backend["service"])
                if service is not None and backend["service"] not in written:
                    written.add(backend["service"])
                    by_kind["Service"] = by_kind.get("Service", 0) + 1
                    lines += yaml_lines(service)
    annotations = 0
    if isinstance(mesh, PerNodeSpec):
        seen: set[tuple[str, str]] = set()
        for workload in topology.call_graph.services:
            for key in workload.annotations:
                if key.startswith(MESH_PREFIX):
                    seen.add((workload.host_name, key))
        annotations = len(seen)
    pods, cores, memory = _control_plane(topology, mesh)
    rollout = _rollout(topology, mesh)
    return OperationsResult(
        objects=sum(by_kind.values()),
        objects_by_kind=dict(sorted(by_kind.items())),
        yaml_lines=lines + annotations,
        annotations=annotations,
        control_plane_pods=pods,
        control_plane_cores=cores,
        control_plane_memory_bytes=memory,
        rollout=rollout[0],
        proxies=rollout[1],
        proxy_restarts=rollout[2],
        app_restarts=rollout[3],
        app_rebuilds=rollout[4],
    )


def _meshed_pods(topology: TopologySpec, mesh: Any) -> list[tuple[Any, Any]]:
    """The workloads' pods in the mesh, as (workload, pod) pairs."""
    found: list[tuple[Any, Any]] = []
    for workload in topology.call_graph.services:
        ns_labels = topology.namespace_labels(workload.namespace)
        labels = workload.pod_labels()
        if isinstance(mesh, SidecarSpec):
            if not injected(
                mesh.injection, workload.namespace, ns_labels, labels, workload.annotations
            ):
                continue
        elif isinstance(mesh, AmbientSpec) and not enrolled(mesh.enrollment, ns_labels, labels):
            continue
        found.extend((workload, pod) for pod in topology.pods().pods_of(workload.name))
    return found


def _waypoints(topology: TopologySpec, mesh: AmbientSpec) -> int:
    """Waypoint pods: per service with one (``all`` or a list), or per named waypoint
    (``labels``), times ``waypoint_replicas``."""
    graph = topology.call_graph
    wanted = mesh.waypoints
    if wanted == "none":
        return 0
    if wanted == "all":
        return len(graph.hosts()) * mesh.waypoint_replicas
    if wanted == "labels":
        named = set()
        for host in graph.hosts():
            namespace = graph.workloads_of(host)[0].namespace
            found = use_waypoint(
                service_labels(graph, host), namespace, topology.namespace_labels(namespace)
            )
            if found is not None:
                named.add(found)
        return len(named) * mesh.waypoint_replicas
    return len(wanted) * mesh.waypoint_replicas


def _rollout(topology: TopologySpec, mesh: Any) -> tuple[RolloutKind, int, int, int, int]:
    """(kind, proxies, proxy restarts, app restarts, app rebuilds) of a proxy upgrade."""
    nodes = len(topology.cluster.nodes)
    if isinstance(mesh, SidecarSpec):
        meshed = len(_meshed_pods(topology, mesh))
        return "sidecar", meshed, 0, meshed, 0
    if isinstance(mesh, PerNodeSpec):
        return "daemonset", nodes, nodes, 0, 0
    if isinstance(mesh, AmbientSpec):
        waypoints = _waypoints(topology, mesh)
        return "ambient", nodes + waypoints, nodes + waypoints, 0, 0
    if isinstance(mesh, ProxylessSpec):
        pods = _meshed_pods(topology, mesh)
        images = len({workload.name for workload, _ in pods})
        return "library", len(pods), 0, len(pods), images
    return "none", 0, 0, 0, 0


def _control_plane(topology: TopologySpec, mesh: Any) -> tuple[int, float, float]:
    """(pods, cores, modelled memory in bytes) of the control plane and Mixer."""
    spec: ControlPlaneSpec | None = getattr(mesh, "control_plane", None)
    pods = 0
    cores = 0.0
    memory = 0.0
    if spec is not None:
        pods = spec.replicas
        cores = float(spec.replicas * spec.cores)
        if spec.kind == "split":
            # Galley (the model's one-core validator) and Citadel (the CA; its CPU is modelled
            # on Pilot's first replica, but it is a deployment of its own).
            pods += 2
            cores += 1.0
        proxies = _rollout(topology, mesh)[1]
        if isinstance(mesh, ProxylessSpec):
            proxies = 0
        graph = topology.call_graph
        memory = float(
            spec.memory.base_bytes
            + spec.memory.per_proxy_bytes * proxies
            + spec.memory.per_service_bytes * len(graph.hosts())
            + spec.memory.per_endpoint_bytes * len(topology.pods().pods)
        )
    mixer = getattr(mesh, "mixer", None)
    if mixer is not None:
        deployments = [mixer.telemetry]
        if not mixer.disable_policy_checks:
            deployments.append(mixer.policy)
        for deployment in deployments:
            pods += deployment.replicas
            cores += float(deployment.replicas * deployment.workers)
    return pods, cores, memory
