"""A spec whose requests would make too many service visits is refused before the run, with a
message that names the topology field, the expected number and why."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from experiments.cli import app
from experiments.runner import run_experiment
from experiments.spec import MAX_VISITS_PER_REQUEST, SpecError, spec_from_dict

# The old random_dag default (each forward pair called with probability 0.3, every call made,
# no cap on fan-out): about 2e11 visits per request at n = 100.
EXPLODING = {
    "catalog": "random_dag",
    "params": {"n": 100, "edge_probability": 0.3, "max_callees": 100, "call_probability": 1.0},
}


def _spec(topology: object, **more: object) -> dict:
    return {
        "topology": topology,
        "workload": {"kind": "open_loop", "rate_rps": 20},
        "duration": "1s",
        "warmup": "0.2s",
        **more,
    }


def test_exploding_random_dag_is_refused_with_the_reason() -> None:
    with pytest.raises(SpecError) as caught:
        spec_from_dict(_spec(EXPLODING))
    message = str(caught.value)
    assert message.startswith("topology: one request to 'd0' would visit ")
    assert "e+11 services on average" in message
    assert f"more than the {MAX_VISITS_PER_REQUEST:,}" in message
    assert "max_callees x call_probability below 1" in message


def test_an_inline_topology_is_checked_too() -> None:
    # Ten levels of ten services, each calling the whole next level: 10^0 + ... + 10^9 visits.
    services = []
    for level in range(10):
        below = [f"l{level + 1}-{i}" for i in range(10)] if level < 9 else []
        services += [
            {"name": f"l{level}-{i}", "steps": [below] if below else []} for i in range(10)
        ]
    inline = {
        "cluster": {"nodes": [{"name": "node-0"}]},
        "call_graph": {"services": services, "entry": "l0-0"},
    }
    with pytest.raises(SpecError, match=r"topology: one request to 'l0-0' would visit 1\.111e\+09"):
        spec_from_dict(_spec(inline))


def test_a_chain_of_10000_services_is_allowed() -> None:
    spec = spec_from_dict(_spec({"catalog": "chain", "params": {"n": MAX_VISITS_PER_REQUEST}}))
    assert len(spec.resolve_topology().call_graph.services) == MAX_VISITS_PER_REQUEST


def test_default_random_dag_of_1000_services_runs() -> None:
    spec = spec_from_dict(_spec({"catalog": "random_dag", "params": {"n": 1000}}))
    result = run_experiment(spec)
    assert result.end_to_end.requests > 0
    assert result.conservation.balanced


def test_sweep_point_that_explodes_is_named() -> None:
    params = {"n": 60, "edge_probability": 0.3, "max_callees": 60}
    data = _spec(
        {"catalog": "random_dag", "params": params},
        sweep={"grid": {"topology.params.call_probability": [0.1, 1.0]}},
    )
    point = r"(?s)sweep point 1 \(topology.params.call_probability=1.0\) is not valid:\n"
    with pytest.raises(SpecError, match=point + "topology: one request to 'd0' would visit"):
        spec_from_dict(data)


@pytest.mark.parametrize("command", ["validate", "run"])
def test_cli_refuses_before_the_run(tmp_path: Path, command: str) -> None:
    path = tmp_path / "dag.yaml"
    path.write_text(yaml.safe_dump(_spec(EXPLODING)))
    result = CliRunner().invoke(app, [command, str(path)])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert result.stdout == ""
    assert f"error: {path}:\ntopology: one request to 'd0' would visit" in result.stderr
    assert "services on average" in result.stderr
