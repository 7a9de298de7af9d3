"""Tests of pod placement strategies and the Placement lookups."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from pydantic import ValidationError

from topologies import (
    CallGraphSpec,
    Placement,
    PlacementSpec,
    TopologyError,
    TopologySpec,
    bookinfo,
    flat_cluster,
    place,
)


def _graph(replicas: dict[str, int]) -> CallGraphSpec:
    names = sorted(replicas)
    services: list[dict[str, Any]] = [{"name": n, "replicas": replicas[n]} for n in names]
    return CallGraphSpec.model_validate({"services": services, "entry": names[0]})


def test_pod_names_and_order() -> None:
    pods = place(flat_cluster(2), _graph({"b": 2, "a": 1}), PlacementSpec())
    assert [p.name for p in pods] == ["a-0", "b-0", "b-1"]
    assert [(p.service, p.index) for p in pods] == [("a", 0), ("b", 0), ("b", 1)]


def test_spread_is_balanced_per_service() -> None:
    cluster = flat_cluster(4)
    pods = place(cluster, _graph({"a": 8, "b": 6, "c": 3}), PlacementSpec())
    for service in ("a", "b", "c"):
        counts = Counter(p.node for p in pods if p.service == service)
        per_node = [counts.get(n, 0) for n in cluster.node_names()]
        assert max(per_node) - min(per_node) <= 1


def test_spread_is_deterministic() -> None:
    cluster, graph = flat_cluster(5), _graph({"a": 3, "b": 2, "c": 4})
    assert place(cluster, graph, PlacementSpec()) == place(cluster, graph, PlacementSpec())


def test_adding_a_service_does_not_move_other_pods() -> None:
    cluster = flat_cluster(5)
    before = place(cluster, _graph({"a": 3, "c": 2}), PlacementSpec())
    after = place(cluster, _graph({"a": 3, "b": 4, "c": 2}), PlacementSpec())
    after_by_name = {p.name: p.node for p in after}
    assert all(after_by_name[p.name] == p.node for p in before)


def test_pack_fills_nodes_in_order() -> None:
    cluster = flat_cluster(3)
    graph = _graph({"a": 3, "b": 2})
    pods = place(cluster, graph, PlacementSpec(strategy="pack"))
    assert {p.node for p in pods} == {"node-0"}
    pods = place(cluster, graph, PlacementSpec(strategy="pack", pods_per_node=2))
    assert [p.node for p in pods] == ["node-0", "node-0", "node-1", "node-1", "node-2"]
    with pytest.raises(TopologyError, match="do not fit"):
        place(cluster, graph, PlacementSpec(strategy="pack", pods_per_node=1))


def test_random_is_seeded() -> None:
    cluster, graph = flat_cluster(4), _graph({"a": 10, "b": 10})
    first = place(cluster, graph, PlacementSpec(strategy="random", seed=1))
    assert first == place(cluster, graph, PlacementSpec(strategy="random", seed=1))
    assert first != place(cluster, graph, PlacementSpec(strategy="random", seed=2))
    assert {p.node for p in first} <= set(cluster.node_names())


def test_explicit_assignments() -> None:
    cluster, graph = flat_cluster(2), _graph({"a": 2})
    spec = PlacementSpec(strategy="explicit", assignments={"a-0": "node-1", "a-1": "node-1"})
    assert [p.node for p in place(cluster, graph, spec)] == ["node-1", "node-1"]


@pytest.mark.parametrize(
    ("assignments", "message"),
    [
        ({"a-0": "node-9", "a-1": "node-0"}, "unknown node 'node-9'"),
        ({"a-0": "node-0", "a-1": "node-0", "zz-0": "node-0"}, "unknown pod 'zz-0'"),
        ({"a-0": "node-0"}, "does not assign pods: a-1"),
    ],
)
def test_explicit_errors(assignments: dict[str, str], message: str) -> None:
    cluster, graph = flat_cluster(2), _graph({"a": 2})
    spec = PlacementSpec(strategy="explicit", assignments=assignments)
    with pytest.raises(TopologyError, match=message):
        place(cluster, graph, spec)
    with pytest.raises(ValidationError, match=message):
        TopologySpec(cluster=cluster, call_graph=graph, placement=spec)


def test_placement_lookups() -> None:
    placement = bookinfo().pods()
    assert isinstance(placement, Placement)
    assert len(placement) == 6
    assert placement.by_name["ratings-0"].service == "ratings"
    assert placement["details-0"].host == "details"
    assert [p.service for p in placement.pods_of_host("reviews")] == [
        "reviews-v1",
        "reviews-v2",
        "reviews-v3",
    ]
    assert [p.name for p in placement.pods_of("reviews-v2")] == ["reviews-v2-0"]
    on_nodes = [p for node in placement.nodes() for p in placement.pods_on(node)]
    assert sorted(p.name for p in on_nodes) == sorted(placement.by_name)
    with pytest.raises(TopologyError, match="unknown pod 'x-0'"):
        placement.pod("x-0")
    assert placement.pods_of("nobody") == []
    assert placement.pods_of_host("nobody") == []
    assert placement.pods_on("node-99") == []


def test_pods_are_placed_once_and_shared() -> None:
    topology = bookinfo()
    assert topology.pods() is topology.pods()
    # A copy with another placement strategy places again.
    packed = topology.model_copy(update={"placement": PlacementSpec(strategy="pack")})
    assert {p.node for p in packed.pods()} == {"node-0"}
    assert packed.pods() != topology.pods()
