"""Tests of the expected number of service visits per request (topologies.visits)."""

from __future__ import annotations

from typing import Any

import pytest

from topologies import (
    CallGraphSpec,
    TopologyError,
    bookinfo,
    chain,
    expected_visits,
    fanout,
    random_dag,
)


def _graph(services: list[dict[str, Any]], entry: str = "a") -> CallGraphSpec:
    return CallGraphSpec.model_validate({"services": services, "entry": entry})


def test_chain_visits_every_service_once() -> None:
    assert expected_visits(chain(1).call_graph) == 1.0
    assert expected_visits(chain(7).call_graph) == 7.0
    # From the middle of the chain, only the rest of it.
    assert expected_visits(chain(7).call_graph, "s4") == 3.0


def test_chain_deeper_than_the_recursion_limit() -> None:
    assert expected_visits(chain(3000).call_graph) == 3000.0


def test_fanout_tree() -> None:
    assert expected_visits(fanout(width=3, depth=2).call_graph) == 1 + 3 + 9


def test_diamond_with_probabilities() -> None:
    # a calls b (p = 0.5) then c (p = 0.25); b and c both call d; d calls e with p = 0.5.
    graph = _graph(
        [
            {
                "name": "a",
                "steps": [
                    {"calls": [{"service": "b", "probability": 0.5}]},
                    {"calls": [{"service": "c", "probability": 0.25}]},
                ],
            },
            {"name": "b", "steps": ["d"]},
            {"name": "c", "steps": ["d"]},
            {"name": "d", "steps": [{"calls": [{"service": "e", "probability": 0.5}]}]},
            {"name": "e"},
        ]
    )
    d = 1 + 0.5 * 1
    assert expected_visits(graph, "d") == d
    assert expected_visits(graph) == 1 + 0.5 * (1 + d) + 0.25 * (1 + d)


def test_a_host_called_twice_counts_twice() -> None:
    graph = _graph([{"name": "a", "steps": ["b", ["b", "c"]]}, {"name": "b"}, {"name": "c"}])
    assert expected_visits(graph) == 4.0


def test_bookinfo() -> None:
    # productpage, details, then reviews: v1 (alone) or v2 / v3 (each calls ratings), one
    # replica each, so 1 + 1 + (1 + 2 + 2) / 3.
    assert expected_visits(bookinfo().call_graph) == pytest.approx(11 / 3, rel=1e-15)


def test_versions_are_weighted_by_replicas() -> None:
    graph = _graph(
        [
            {"name": "a", "steps": ["r"]},
            {"name": "r-v1", "host": "r", "replicas": 3},
            {"name": "r-v2", "host": "r", "replicas": 1, "steps": ["z"]},
            {"name": "z"},
        ]
    )
    assert expected_visits(graph, "r") == 0.75 * 1 + 0.25 * 2
    assert expected_visits(graph) == 1 + 1.25


def _doubling(levels: int) -> list[dict[str, Any]]:
    """Levels of two services; each calls both of the next level (2^k paths to level k)."""
    services = []
    for k in range(levels):
        below = [f"x{k + 1}-0", f"x{k + 1}-1"] if k + 1 < levels else []
        steps = [below] if below else []
        services += [{"name": f"x{k}-{i}", "steps": steps} for i in range(2)]
    return services


def test_exponential_growth_is_exact_then_infinite_without_error() -> None:
    small = _graph(_doubling(10), entry="x0-0")
    assert expected_visits(small) == 2.0**10 - 1
    huge = _doubling(1100)  # 2^1100 visits: beyond the float range
    graph = _graph(
        [
            {
                "name": "a",
                "steps": [
                    {"calls": [{"service": "x0-0", "probability": 0.0}]},  # never made
                    "b",
                ],
            },
            {"name": "b"},
            {"name": "c", "steps": ["x0-0"]},
            *huge,
        ]
    )
    assert expected_visits(graph, "x0-0") == float("inf")
    assert expected_visits(graph, "c") == float("inf")
    # A call that is never made adds nothing, not 0 x inf = nan.
    assert expected_visits(graph) == 2.0


def test_unknown_host() -> None:
    with pytest.raises(TopologyError, match="unknown host 'zzz'"):
        expected_visits(chain(2).call_graph, "zzz")


@pytest.mark.parametrize("n", [2, 10, 100, 1000])
def test_random_dag_defaults_are_bounded(n: int) -> None:
    # At most 3 callees, each called with probability 0.3: at most 1 / (1 - 0.9) visits.
    for seed in range(3):
        assert 1.0 <= expected_visits(random_dag(n, seed=seed).call_graph) <= 10.0
