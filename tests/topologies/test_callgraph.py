"""Tests of call-graph specs: shorthand, validation messages, helpers and the graph."""

from __future__ import annotations

from typing import Any

import networkx as nx
import pytest
from pydantic import ValidationError

from topologies import CallGraphSpec, ServiceSpec, StepSpec, TopologyError, call_graph


def _graph(services: list[dict[str, Any]], entry: str = "a") -> CallGraphSpec:
    return CallGraphSpec.model_validate({"services": services, "entry": entry})


def test_service_defaults() -> None:
    svc = ServiceSpec(name="reviews-v2", host="reviews")
    assert svc.host_name == "reviews"
    assert ServiceSpec(name="details").host_name == "details"
    assert svc.service_time.mean() == pytest.approx(0.001)
    assert svc.request_size_bytes == 1024
    assert svc.replicas == 1 and svc.workers == 1
    assert svc.protocol == "http1"
    assert svc.steps == []


@pytest.mark.parametrize("name", ["Reviews", "-a", "a-", "a_b", ""])
def test_service_name_must_be_dns_like(name: str) -> None:
    with pytest.raises(ValidationError, match="name"):
        ServiceSpec(name=name)


def test_step_shorthand_string_and_list() -> None:
    single = StepSpec.model_validate("details")
    assert [c.service for c in single.calls] == ["details"]
    assert single.parallel is False
    group = StepSpec.model_validate(["text", {"service": "media", "probability": 0.5}])
    assert group.parallel is True
    assert [c.service for c in group.calls] == ["text", "media"]
    assert group.calls[1].probability == 0.5


def test_unknown_callee_names_service_step_and_host() -> None:
    with pytest.raises(ValidationError) as info:
        _graph(
            [
                {"name": "productpage", "steps": ["details", "detail"]},
                {"name": "details"},
            ],
            entry="productpage",
        )
    assert "service 'productpage' step 2 calls unknown service 'detail'" in str(info.value)


def test_unknown_entry() -> None:
    with pytest.raises(ValidationError, match="entry 'nope'"):
        _graph([{"name": "a"}], entry="nope")


def test_duplicate_service_name() -> None:
    with pytest.raises(ValidationError, match="duplicate service name 'a'"):
        _graph([{"name": "a"}, {"name": "a"}])


def test_self_call_rejected() -> None:
    with pytest.raises(ValidationError, match="calls its own host 'reviews'"):
        _graph(
            [
                {"name": "a", "steps": ["reviews"]},
                {"name": "reviews-v1", "host": "reviews", "steps": ["reviews"]},
            ],
        )


def test_cycle_is_reported_with_its_path() -> None:
    with pytest.raises(ValidationError) as info:
        _graph(
            [
                {"name": "a", "steps": ["b"]},
                {"name": "b", "steps": ["c"]},
                {"name": "c", "steps": ["a"]},
            ]
        )
    assert "call graph has a cycle: a -> b -> c -> a" in str(info.value)


def test_cycle_through_a_version() -> None:
    with pytest.raises(ValidationError, match="cycle: .*reviews-v2.*"):
        _graph(
            [
                {"name": "a", "steps": ["reviews"]},
                {"name": "reviews-v1", "host": "reviews"},
                {"name": "reviews-v2", "host": "reviews", "steps": ["a"]},
            ]
        )


def test_helpers() -> None:
    graph = _graph(
        [
            {"name": "a", "steps": ["reviews"]},
            {"name": "reviews-v2", "host": "reviews"},
            {"name": "reviews-v1", "host": "reviews"},
        ]
    )
    assert graph.hosts() == ["a", "reviews"]
    assert [s.name for s in graph.workloads_of("reviews")] == ["reviews-v1", "reviews-v2"]
    assert graph.service("a").name == "a"
    with pytest.raises(TopologyError, match="unknown service 'zzz'"):
        graph.service("zzz")
    with pytest.raises(TopologyError, match="unknown host 'zzz'"):
        graph.workloads_of("zzz")


def test_lookups_follow_a_copy_with_other_services() -> None:
    graph = _graph([{"name": "a", "steps": ["b"]}, {"name": "b"}])
    assert [s.name for s in graph.workloads_of("b")] == ["b"]  # builds the index
    copied = graph.model_copy(
        update={"services": [*graph.services, ServiceSpec(name="b-v2", host="b")]}
    )
    # The index is kept on the spec; a copy with other services must not reuse it.
    assert [s.name for s in copied.workloads_of("b")] == ["b", "b-v2"]
    assert copied.service("b-v2").host_name == "b"
    assert [s.name for s in graph.workloads_of("b")] == ["b"]
    # The cache is no field: equality, dumps and the schema see only the fields.
    assert graph == _graph([{"name": "a", "steps": ["b"]}, {"name": "b"}])
    assert set(graph.model_dump()) == {"services", "entry", "entry_via_mesh"}


def test_returned_lists_are_copies() -> None:
    graph = _graph([{"name": "a", "steps": ["b"]}, {"name": "b"}])
    graph.workloads_of("b").clear()
    graph.hosts().clear()
    assert [s.name for s in graph.workloads_of("b")] == ["b"]
    assert graph.hosts() == ["a", "b"]


def test_call_graph_attributes() -> None:
    spec = _graph(
        [
            {"name": "a", "protocol": "grpc", "replicas": 2, "steps": ["b", ["c", "d"]]},
            {"name": "b"},
            {"name": "c"},
            {"name": "d", "response_size_bytes": "4KiB"},
        ]
    )
    graph = call_graph(spec)
    assert nx.is_directed_acyclic_graph(graph)
    node = graph.nodes["a"]
    assert node["protocol"] == "grpc" and node["replicas"] == 2 and node["host"] == "a"
    assert set(node) == {
        "host",
        "version",
        "replicas",
        "workers",
        "service_time",
        "protocol",
        "request_size_bytes",
        "response_size_bytes",
    }
    assert graph.nodes["d"]["response_size_bytes"] == 4096
    assert graph.edges["a", "b"] == {"step": 0, "parallel": False, "probability": 1.0, "calls": 1}
    assert graph.edges["a", "c"]["step"] == 1 and graph.edges["a", "c"]["parallel"] is True


def test_probability_bounds() -> None:
    with pytest.raises(ValidationError, match="probability"):
        _graph(
            [
                {"name": "a", "steps": [{"calls": [{"service": "b", "probability": 1.5}]}]},
                {"name": "b"},
            ]
        )
