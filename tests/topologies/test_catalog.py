"""Tests of the shipped topologies and the catalog lookup."""

from __future__ import annotations

import networkx as nx
import pytest

from topologies import (
    CATALOG,
    TopologyError,
    TopologySpec,
    bookinfo,
    call_graph,
    chain,
    fanout,
    flat_cluster,
    get_topology,
    random_dag,
    social_network,
)

# mesh_scale's services exist for the configuration they give the control plane; only two of
# them take traffic (its docstring says so).
CONFIG_ONLY = {"mesh_scale"}


@pytest.mark.parametrize("name", sorted(CATALOG))
def test_every_entry_builds_validates_and_is_acyclic(name: str) -> None:
    spec = get_topology(name)
    assert isinstance(spec, TopologySpec)
    assert TopologySpec.model_validate(spec.model_dump()) == spec
    graph = call_graph(spec.call_graph)
    assert nx.is_directed_acyclic_graph(graph)
    entry_workloads = [s.name for s in spec.call_graph.workloads_of(spec.call_graph.entry)]
    reachable = set(entry_workloads)
    for workload in entry_workloads:
        reachable |= nx.descendants(graph, workload)
    if name in CONFIG_ONLY:
        assert reachable == {"svc-0", "svc-1"}
    else:
        assert reachable == set(graph.nodes)
    assert len(spec.pods()) == sum(s.replicas for s in spec.call_graph.services)


def test_bookinfo_structure() -> None:
    spec = bookinfo()
    graph = spec.call_graph
    assert graph.entry == "productpage"
    steps = graph.service("productpage").steps
    assert [[c.service for c in step.calls] for step in steps] == [["details"], ["reviews"]]
    reviews = graph.workloads_of("reviews")
    assert [(s.name, s.version) for s in reviews] == [
        ("reviews-v1", "v1"),
        ("reviews-v2", "v2"),
        ("reviews-v3", "v3"),
    ]
    callers_of_ratings = sorted(call_graph(graph).predecessors("ratings"))
    assert callers_of_ratings == ["reviews-v2", "reviews-v3"]
    assert all(s.workers == 4 and s.protocol == "http1" for s in graph.services)


def test_chain_shape() -> None:
    graph = call_graph(chain(4, service_time="2ms").call_graph)
    assert list(nx.topological_sort(graph)) == ["s0", "s1", "s2", "s3"]
    assert graph.nodes["s3"]["service_time"].mean() == pytest.approx(0.002)


def test_fanout_shape() -> None:
    spec = fanout(width=3, depth=2)
    graph = call_graph(spec.call_graph)
    assert graph.number_of_nodes() == 1 + 3 + 9
    assert graph.out_degree("t0-0") == 3
    root = spec.call_graph.service("t0-0")
    assert len(root.steps) == 1 and root.steps[0].parallel
    assert fanout(width=2, depth=0).call_graph.services[0].steps == []


def test_random_dag_is_seeded_and_reachable() -> None:
    assert random_dag(15, 0.2, seed=3) == random_dag(15, 0.2, seed=3)
    assert random_dag(15, 0.2, seed=3) != random_dag(15, 0.2, seed=4)
    graph = call_graph(random_dag(30, 0.0, seed=1).call_graph)
    assert nx.descendants(graph, "d0") == set(graph.nodes) - {"d0"}


@pytest.mark.parametrize(("n", "edge_probability", "max_callees"), [(50, 0.5, 2), (500, 0.1, 3)])
def test_random_dag_caps_fan_out_and_keeps_every_service_reachable(
    n: int, edge_probability: float, max_callees: int
) -> None:
    spec = random_dag(n, edge_probability, seed=2, max_callees=max_callees, call_probability=0.4)
    for svc in spec.call_graph.services:
        calls = [c for step in svc.steps for c in step.calls]
        assert len(calls) == len({c.service for c in calls}) <= max_callees
        assert all(c.probability == 0.4 for c in calls)
        assert all(int(c.service[1:]) > int(svc.name[1:]) for c in calls)
    graph = call_graph(spec.call_graph)
    assert nx.descendants(graph, "d0") == set(graph.nodes) - {"d0"}


def test_random_dag_edge_probability_one_calls_every_later_service() -> None:
    spec = random_dag(6, 1.0, max_callees=10, call_probability=1.0)
    for i, svc in enumerate(spec.call_graph.services):
        assert set(svc.callees()) == {f"d{j}" for j in range(i + 1, 6)}


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"n": 0}, "n must be between 1 and 10000"),
        ({"edge_probability": 1.5}, "edge_probability must be in"),
        ({"call_probability": -0.1}, "call_probability must be in"),
        ({"max_callees": 0}, "max_callees must be >= 1"),
        ({"seed": -1}, "seed must be >= 0"),
    ],
)
def test_random_dag_bad_parameters(params: dict[str, float], message: str) -> None:
    with pytest.raises(TopologyError, match=message):
        get_topology("random_dag", **params)


def test_social_network_shape() -> None:
    spec = social_network()
    services = spec.call_graph.services
    assert 20 <= len(services) <= 30
    compose = spec.call_graph.service("compose-post-service")
    assert compose.steps[0].parallel
    assert {c.service for c in compose.steps[0].calls} >= {
        "text-service",
        "user-service",
        "media-service",
        "unique-id-service",
        "url-shorten-service",
        "user-mention-service",
    }
    assert {s.protocol for s in services if "mongodb" in s.name or "redis" in s.name} == {"tcp"}
    storage = spec.call_graph.service("post-storage-service")
    miss = [c for step in storage.steps for c in step.calls if c.service.endswith("mongodb")]
    assert miss[0].probability == pytest.approx(0.2)
    assert len(spec.cluster.zones()) == 3


def test_custom_cluster_is_used() -> None:
    assert bookinfo(cluster=flat_cluster(1)).cluster.node_names() == ["node-0"]


def test_get_topology_errors() -> None:
    with pytest.raises(TopologyError, match="unknown topology 'nope'; known: bookinfo"):
        get_topology("nope")
    with pytest.raises(TopologyError, match="no parameter 'length'"):
        get_topology("chain", length=3)
    with pytest.raises(TopologyError, match="n: Input should be a valid integer"):
        get_topology("chain", n="many")
    with pytest.raises(TopologyError, match="width must be >= 1"):
        get_topology("fanout", width=0)
