"""Tests of YAML loading and saving of topologies, and their error messages."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from topologies import (
    CATALOG,
    TopologyError,
    chain,
    fanout,
    get_topology,
    load_topology,
    save_topology,
    topology_from_dict,
)

GOOD_YAML = """\
name: tiny
cluster:
  nodes:
    - name: node-0
      cores: 2
    - {name: node-1, memory_bytes: 8GiB}
call_graph:
  entry: front
  services:
    - name: front
      service_time: {kind: exponential, mean: 2ms}
      steps:
        - back
        - [db, cache]
    - {name: back, service_time: 500us}
    - {name: db, protocol: tcp}
    - {name: cache, protocol: tcp}
placement:
  strategy: pack
"""


@pytest.mark.parametrize("name", sorted(CATALOG))
def test_catalog_round_trips(name: str, tmp_path: Path) -> None:
    spec = get_topology(name)
    path = tmp_path / f"{name}.yaml"
    save_topology(spec, path)
    assert load_topology(path) == spec


def test_load_with_shorthand(tmp_path: Path) -> None:
    path = tmp_path / "tiny.yaml"
    path.write_text(GOOD_YAML)
    spec = load_topology(path)
    assert spec.name == "tiny"
    assert spec.cluster.nodes[1].memory_bytes == 8 * 1024**3
    front = spec.call_graph.service("front")
    assert front.service_time.mean() == pytest.approx(0.002)
    assert front.steps[1].parallel and len(front.steps[1].calls) == 2
    assert spec.call_graph.service("back").service_time.mean() == pytest.approx(0.0005)
    assert {p.node for p in spec.pods()} == {"node-0"}


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(TopologyError, match="not found"):
        load_topology(tmp_path / "absent.yaml")


def test_yaml_syntax_error_gives_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\ncluster: [unclosed\n")
    with pytest.raises(TopologyError) as info:
        load_topology(path)
    message = str(info.value)
    assert "broken.yaml" in message
    assert "invalid YAML at line 3" in message


def test_unknown_field_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "typo.yaml"
    path.write_text(GOOD_YAML.replace("protocol: tcp}", "protocl: tcp}", 1))
    with pytest.raises(TopologyError) as info:
        load_topology(path)
    message = str(info.value)
    assert "typo.yaml" in message
    assert "call_graph.services.2.protocl: Extra inputs are not permitted" in message


def test_bad_value_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(GOOD_YAML.replace("cores: 2", "cores: -1"))
    with pytest.raises(TopologyError, match=r"cluster\.nodes\.0\.cores: Input should be greater"):
        load_topology(path)


def test_validator_message_survives(tmp_path: Path) -> None:
    path = tmp_path / "unknown.yaml"
    path.write_text(GOOD_YAML.replace("- back\n", "- bak\n"))
    with pytest.raises(TopologyError, match="service 'front' step 1 calls unknown service 'bak'"):
        load_topology(path)


def test_not_a_mapping() -> None:
    with pytest.raises(TopologyError, match="must be a mapping"):
        topology_from_dict(["a"], source="list.yaml")


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    kind=st.sampled_from(["chain", "fanout"]),
    size=st.integers(min_value=1, max_value=6),
    depth=st.integers(min_value=0, max_value=2),
    workers=st.integers(min_value=1, max_value=8),
    mean_ms=st.floats(min_value=0.01, max_value=100, allow_nan=False),
)
def test_round_trip_property(
    kind: str, size: int, depth: int, workers: int, mean_ms: float, tmp_path: Path
) -> None:
    service_time = {"kind": "exponential", "mean": mean_ms / 1000}
    if kind == "chain":
        spec = chain(size, service_time=service_time, workers=workers)
    else:
        spec = fanout(width=size, depth=depth, service_time=service_time, workers=workers)
    path = tmp_path / "spec.yaml"
    save_topology(spec, path)
    assert load_topology(path) == spec


def test_cycle_message_in_file(tmp_path: Path) -> None:
    path = tmp_path / "cycle.yaml"
    path.write_text(
        GOOD_YAML.replace("{name: back, service_time: 500us}", "{name: back, steps: [front]}")
    )
    with pytest.raises(TopologyError) as info:
        load_topology(path)
    assert "  call_graph: call graph has a cycle: back -> front -> back" in str(info.value)
