"""Clusters: the nodes pods run on, their zones, and the network between them."""

from __future__ import annotations

import string
from typing import Any, Literal, cast

import networkx as nx
from pydantic import BaseModel, ConfigDict, Field, field_validator

from sim.network import LinkClass, NetworkSpec
from sim.units import Duration, Size

from .errors import TopologyError
from .memo import cached_on

__all__ = [
    "ClusterSpec",
    "NodeSpec",
    "cluster_graph",
    "flat_cluster",
    "multi_zone_cluster",
]

_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


class NodeSpec(BaseModel):
    """One machine (a Kubernetes node) of the cluster.

    Attributes:
        name: Unique node name, DNS-like (``node-0``).
        cores: CPU cores (vCPU) shared by every app and proxy on the node; ``None`` means
            unlimited CPU, no contention modelled. Fractional counts are honoured: ``c`` cores
            are ``ceil(c)`` cores that each run at ``c / ceil(c)`` of a full core's speed (a
            0.5-core node runs work at half speed), as a hypervisor's share of each vCPU.
        cpu_discipline: How threads that want more cores than the node has share them:
            ``fifo`` (a thread keeps its core until its work is done) or ``ps`` (processor
            sharing, as Linux's CFS at its fine time-slice limit); ``None`` = the cluster's.
        cfs_period: The CFS bandwidth period in which a container's CPU limit is enforced as a
            quota of ``limit * period`` (kubelet's ``cpuCFSQuotaPeriod``, default 100 ms).
        memory_bytes: Memory of the node, in bytes (accepts ``"16GiB"``).
        zone: Availability zone of the node; links between zones are slower.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    name: str = Field(pattern=_NAME_PATTERN, max_length=253)
    cores: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    cpu_discipline: Literal["fifo", "ps"] | None = None
    cfs_period: Duration = Field(default=0.1, gt=0)
    memory_bytes: Size = Field(default=cast(Any, "16GiB"))
    zone: str = Field(default="zone-a", min_length=1)

    @field_validator("cores", mode="before")
    @classmethod
    def _cores_a_number(cls, cores: Any) -> Any:
        if isinstance(cores, bool):  # YAML's true is not one core
            raise ValueError(f"cores must be a number of cores (0.5, 4), got {cores!r}")
        return cores


class ClusterSpec(BaseModel):
    """The nodes of a cluster and the network delays between them.

    Attributes:
        nodes: The nodes, at least one, with unique names; their order is the stable order
            placement strategies walk.
        network: Latency distributions per link class and bandwidth.
        cpu_discipline: How a node's finite cores are shared, unless the node says
            (``fifo`` or ``ps``; see :class:`NodeSpec`).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    nodes: list[NodeSpec] = Field(min_length=1)
    network: NetworkSpec = Field(default_factory=NetworkSpec)
    cpu_discipline: Literal["fifo", "ps"] = "fifo"

    @field_validator("nodes")
    @classmethod
    def _unique_names(cls, nodes: list[NodeSpec]) -> list[NodeSpec]:
        seen: set[str] = set()
        for node in nodes:
            if node.name in seen:
                raise ValueError(f"duplicate node name {node.name!r}")
            seen.add(node.name)
        return nodes

    def node_names(self) -> list[str]:
        """Return the node names, in the order of the spec."""
        return [node.name for node in self.nodes]

    def node(self, name: str) -> NodeSpec:
        """Return the node called ``name``.

        Raises:
            TopologyError: If there is no such node.
        """
        by_name = cached_on(
            self, "nodes_by_name", (self.nodes,), lambda: {n.name: n for n in self.nodes}
        )
        found = by_name.get(name)
        if found is not None:
            return found
        raise TopologyError(f"unknown node {name!r}; nodes: {', '.join(self.node_names())}")

    def zones(self) -> list[str]:
        """Return the distinct zones of the nodes, sorted."""
        return sorted({node.zone for node in self.nodes})


def flat_cluster(n_nodes: int = 3, cores: float | None = None, zone: str = "zone-a") -> ClusterSpec:
    """Build a cluster of identical nodes in one zone.

    Args:
        n_nodes: Number of nodes (at least 1), named ``node-0``, ``node-1``, ...
        cores: CPU cores per node; ``None`` for unlimited CPU.
        zone: The zone of every node.

    Returns:
        The cluster, with the default network.

    Raises:
        TopologyError: If ``n_nodes`` is less than 1.
    """
    if n_nodes < 1:
        raise TopologyError(f"n_nodes must be >= 1, got {n_nodes}")
    return ClusterSpec(
        nodes=[NodeSpec(name=f"node-{i}", cores=cores, zone=zone) for i in range(n_nodes)]
    )


def multi_zone_cluster(
    zones: int = 3, nodes_per_zone: int = 2, cores: float | None = None
) -> ClusterSpec:
    """Build a cluster spread evenly over several zones.

    Args:
        zones: Number of zones (1 to 26), named ``zone-a``, ``zone-b``, ...
        nodes_per_zone: Nodes in each zone (at least 1), named ``node-a-0``, ``node-a-1``, ...
        cores: CPU cores per node; ``None`` for unlimited CPU.

    Returns:
        The cluster, nodes ordered zone by zone, with the default network.

    Raises:
        TopologyError: If ``zones`` or ``nodes_per_zone`` is out of range.
    """
    letters = string.ascii_lowercase
    if not 1 <= zones <= len(letters):
        raise TopologyError(f"zones must be between 1 and {len(letters)}, got {zones}")
    if nodes_per_zone < 1:
        raise TopologyError(f"nodes_per_zone must be >= 1, got {nodes_per_zone}")
    nodes = [
        NodeSpec(name=f"node-{letter}-{i}", cores=cores, zone=f"zone-{letter}")
        for letter in letters[:zones]
        for i in range(nodes_per_zone)
    ]
    return ClusterSpec(nodes=nodes)


def cluster_graph(spec: ClusterSpec) -> nx.Graph:
    """Build the undirected graph of a cluster's nodes and links.

    Node attributes (one graph node per cluster node, keyed by name, in spec order):

    - ``cores``: ``float | None``, CPU cores (``None`` = unlimited).
    - ``memory_bytes``: ``int``, memory in bytes.
    - ``zone``: ``str``, the availability zone.

    Edge attributes (an edge between every pair of distinct nodes):

    - ``link_class``: ``str``, the value of :class:`sim.network.LinkClass` for the link,
      ``"same_zone"`` or ``"cross_zone"`` (pods on one node use ``"same_node"``, which is no
      edge).

    Args:
        spec: The cluster.

    Returns:
        A complete graph over the nodes.
    """
    graph = nx.Graph()
    for node in spec.nodes:
        graph.add_node(node.name, cores=node.cores, memory_bytes=node.memory_bytes, zone=node.zone)
    for i, a in enumerate(spec.nodes):
        for b in spec.nodes[i + 1 :]:
            link = LinkClass.SAME_ZONE if a.zone == b.zone else LinkClass.CROSS_ZONE
            graph.add_edge(a.name, b.name, link_class=link.value)
    return graph
