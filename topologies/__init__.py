"""Topologies: clusters (nodes, zones, links), call graphs (services, calls), placement of pods
on nodes, a catalog of ready-made topologies, and YAML input and output.

Everything here is a validated, frozen pydantic spec or a pure function of one; nothing runs a
simulation. ``models/`` reads these data types and builds the SimPy components from them.
"""

from .callgraph import (
    CallGraphSpec,
    CallSpec,
    HttpMethod,
    HttpPath,
    MisbehaviourSpec,
    Protocol,
    ServiceSpec,
    StepSpec,
    call_graph,
    principal,
)
from .catalog import (
    CATALOG,
    bookinfo,
    chain,
    fanout,
    get_topology,
    random_dag,
    social_network,
)
from .cluster import ClusterSpec, NodeSpec, cluster_graph, flat_cluster, multi_zone_cluster
from .errors import TopologyError
from .io import load_topology, save_topology, topology_from_dict
from .placement import Placement, PlacementSpec, Pod, place
from .resources import ResourceListSpec, ResourcesSpec
from .spec import NamespaceSpec, TopologySpec
from .visits import expected_visits

__all__ = [
    "CATALOG",
    "CallGraphSpec",
    "CallSpec",
    "ClusterSpec",
    "ResourceListSpec",
    "ResourcesSpec",
    "HttpMethod",
    "HttpPath",
    "MisbehaviourSpec",
    "NamespaceSpec",
    "NodeSpec",
    "Placement",
    "PlacementSpec",
    "Pod",
    "Protocol",
    "ServiceSpec",
    "StepSpec",
    "TopologyError",
    "TopologySpec",
    "bookinfo",
    "call_graph",
    "chain",
    "cluster_graph",
    "expected_visits",
    "fanout",
    "flat_cluster",
    "get_topology",
    "load_topology",
    "multi_zone_cluster",
    "place",
    "principal",
    "random_dag",
    "save_topology",
    "social_network",
    "topology_from_dict",
]
