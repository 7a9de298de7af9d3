"""Placement: which node each pod of each workload runs on."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from sim.random import stable_hash

from .callgraph import CallGraphSpec
from .cluster import ClusterSpec
from .errors import TopologyError

__all__ = ["Placement", "PlacementSpec", "Pod", "place", "pod_names"]


@dataclass(frozen=True, order=True)
class Pod:
    """One replica of a workload, placed on a node.

    Attributes:
        name: ``<service>-<index>``, unique in the topology.
        service: The workload name (``reviews-v2``).
        host: The host name callers use to reach it (``reviews``).
        index: Replica index, from 0.
        node: The node it runs on.
    """

    name: str
    service: str
    host: str
    index: int
    node: str


class PlacementSpec(BaseModel):
    """How pods are assigned to nodes.

    Strategies:

    - ``spread``: each workload's replicas go round robin over the nodes, starting at a node
      chosen by a stable hash of the workload name, so adding or removing a workload never
      moves another workload's pods.
    - ``pack``: fill the first node with ``pods_per_node`` pods (all pods if ``None``), then the
      next node, in the order of the cluster spec.
    - ``random``: each pod on a node drawn uniformly at random, seeded by ``seed``.
    - ``explicit``: ``assignments`` maps every pod name to its node.

    Attributes:
        strategy: The placement strategy.
        seed: Seed of the ``random`` strategy.
        pods_per_node: Capacity per node of the ``pack`` strategy; ``None`` = unlimited.
        assignments: Pod name to node name, for the ``explicit`` strategy.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    strategy: Literal["spread", "pack", "random", "explicit"] = "spread"
    seed: int = Field(default=0, ge=0)
    pods_per_node: int | None = Field(default=None, ge=1)
    assignments: dict[str, str] = Field(default_factory=dict)


def pod_names(graph: CallGraphSpec) -> list[str]:
    """Return the names of every pod of a call graph, sorted by (service, index)."""
    return [
        f"{svc.name}-{i}"
        for svc in sorted(graph.services, key=lambda s: s.name)
        for i in range(svc.replicas)
    ]


def place(cluster: ClusterSpec, graph: CallGraphSpec, spec: PlacementSpec) -> list[Pod]:
    """Assign every pod of a call graph to a node of a cluster, deterministically.

    Args:
        cluster: The nodes.
        graph: The workloads and their replica counts.
        spec: The strategy and its parameters.

    Returns:
        The pods, sorted by (service, index).

    Raises:
        TopologyError: If the pods do not fit (``pack``) or the assignments are incomplete or
            name an unknown pod or node (``explicit``).
    """
    nodes = cluster.node_names()
    n = len(nodes)
    services = sorted(graph.services, key=lambda s: s.name)
    slots = [(svc.name, svc.host_name, i) for svc in services for i in range(svc.replicas)]

    if spec.strategy == "spread":
        chosen = [nodes[(stable_hash(name) % n + i) % n] for name, _, i in slots]
    elif spec.strategy == "pack":
        capacity = spec.pods_per_node if spec.pods_per_node is not None else len(slots)
        if len(slots) > capacity * n:
            raise TopologyError(
                f"pack placement: {len(slots)} pods do not fit on {n} nodes with "
                f"pods_per_node={capacity}"
            )
        chosen = [nodes[k // capacity] for k in range(len(slots))]
    elif spec.strategy == "random":
        rng = np.random.default_rng(spec.seed)
        chosen = [nodes[int(k)] for k in rng.integers(0, n, size=len(slots))]
    else:
        chosen = _explicit(nodes, [f"{name}-{i}" for name, _, i in slots], spec.assignments)

    return [
        Pod(name=f"{name}-{i}", service=name, host=host, index=i, node=node)
        for (name, host, i), node in zip(slots, chosen, strict=True)
    ]


def _explicit(nodes: list[str], pods: list[str], assignments: Mapping[str, str]) -> list[str]:
    """Check explicit assignments and return the node of each pod, in the order of ``pods``."""
    known_pods = set(pods)
    known_nodes = set(nodes)
    for pod, node in sorted(assignments.items()):
        if pod not in known_pods:
            raise TopologyError(f"placement assigns unknown pod {pod!r}")
        if node not in known_nodes:
            raise TopologyError(
                f"placement assigns pod {pod!r} to unknown node {node!r}; nodes: {', '.join(nodes)}"
            )
    missing = [pod for pod in pods if pod not in assignments]
    if missing:
        raise TopologyError(f"explicit placement does not assign pods: {', '.join(missing)}")
    return [assignments[pod] for pod in pods]


class Placement:
    """The pods of a topology with lookups by name, workload, host and node.

    Args:
        pods: The placed pods (as returned by :func:`place`); names must be unique.
    """

    def __init__(self, pods: list[Pod]) -> None:
        self._pods = tuple(sorted(pods, key=lambda p: (p.service, p.index)))
        by_name: dict[str, Pod] = {}
        for pod in self._pods:
            if pod.name in by_name:
                raise TopologyError(f"duplicate pod name {pod.name!r}")
            by_name[pod.name] = pod
        self._by_name = MappingProxyType(by_name)
        # One pass builds every look-up, so a model that asks for each workload's pods costs
        # linear time in pods, not pods x workloads.
        self._by_service: dict[str, list[Pod]] = {}
        self._by_host: dict[str, list[Pod]] = {}
        self._by_node: dict[str, list[Pod]] = {}
        for pod in self._pods:
            self._by_service.setdefault(pod.service, []).append(pod)
            self._by_host.setdefault(pod.host, []).append(pod)
            self._by_node.setdefault(pod.node, []).append(pod)

    @property
    def pods(self) -> tuple[Pod, ...]:
        """Every pod, sorted by (service, index)."""
        return self._pods

    @property
    def by_name(self) -> Mapping[str, Pod]:
        """Read-only mapping of pod name to pod."""
        return self._by_name

    def pod(self, name: str) -> Pod:
        """Return the pod called ``name``.

        Raises:
            TopologyError: If there is no such pod.
        """
        try:
            return self._by_name[name]
        except KeyError:
            raise TopologyError(f"unknown pod {name!r}") from None

    def pods_of(self, service: str) -> list[Pod]:
        """Return the pods of a workload, by index (empty if the workload is unknown)."""
        return list(self._by_service.get(service, ()))

    def pods_of_host(self, host: str) -> list[Pod]:
        """Return the pods of every workload serving ``host``, by (service, index)."""
        return list(self._by_host.get(host, ()))

    def pods_on(self, node: str) -> list[Pod]:
        """Return the pods on a node, by (service, index) (empty if none)."""
        return list(self._by_node.get(node, ()))

    def nodes(self) -> list[str]:
        """Return the nodes that run at least one pod, sorted."""
        return sorted(self._by_node)

    def __iter__(self) -> Iterator[Pod]:
        return iter(self._pods)

    def __len__(self) -> int:
        return len(self._pods)

    def __getitem__(self, name: str) -> Pod:
        return self.pod(name)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Placement) and self._pods == other._pods

    def __hash__(self) -> int:
        return hash(self._pods)

    def __repr__(self) -> str:
        return f"Placement({len(self._pods)} pods on {len(self.nodes())} nodes)"
