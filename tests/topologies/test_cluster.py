"""Tests of cluster specs, generators and the cluster graph."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from topologies import (
    ClusterSpec,
    NodeSpec,
    TopologyError,
    cluster_graph,
    flat_cluster,
    multi_zone_cluster,
)


def test_node_defaults_are_parsed() -> None:
    node = NodeSpec(name="node-0")
    assert node.cores is None
    assert node.memory_bytes == 16 * 1024**3
    assert node.zone == "zone-a"


def test_flat_cluster_names_and_zone() -> None:
    cluster = flat_cluster(4, cores=2.0, zone="zone-x")
    assert cluster.node_names() == ["node-0", "node-1", "node-2", "node-3"]
    assert {n.zone for n in cluster.nodes} == {"zone-x"}
    assert {n.cores for n in cluster.nodes} == {2.0}


def test_multi_zone_cluster_names() -> None:
    cluster = multi_zone_cluster(zones=2, nodes_per_zone=2)
    assert cluster.node_names() == ["node-a-0", "node-a-1", "node-b-0", "node-b-1"]
    assert cluster.zones() == ["zone-a", "zone-b"]


def test_duplicate_node_name_is_named() -> None:
    with pytest.raises(ValidationError, match="duplicate node name 'node-1'"):
        ClusterSpec(nodes=[{"name": "node-1"}, {"name": "node-1"}])


def test_empty_cluster_rejected() -> None:
    with pytest.raises(ValidationError):
        ClusterSpec(nodes=[])


@pytest.mark.parametrize("bad", [{"n_nodes": 0}])
def test_flat_cluster_bad_size(bad: dict[str, int]) -> None:
    with pytest.raises(TopologyError, match="n_nodes"):
        flat_cluster(**bad)


def test_cluster_graph_attributes_and_link_classes() -> None:
    graph = cluster_graph(multi_zone_cluster(zones=2, nodes_per_zone=2, cores=4))
    assert graph.number_of_nodes() == 4
    assert graph.number_of_edges() == 6
    assert graph.nodes["node-a-0"] == {
        "cores": 4.0,
        "memory_bytes": 16 * 1024**3,
        "zone": "zone-a",
    }
    assert graph.edges["node-a-0", "node-a-1"]["link_class"] == "same_zone"
    assert graph.edges["node-a-0", "node-b-1"]["link_class"] == "cross_zone"
