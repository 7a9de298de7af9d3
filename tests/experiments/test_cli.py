"""The ``meshsim`` command line: validate (good and bad specs), run, list and schema.

typer's CliRunner keeps stdout and stderr apart (``result.stdout``, ``result.stderr``) and
mixes them, as a terminal would, in ``result.output``; the checks below read ``output``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from experiments.cli import app
from topologies import CATALOG

runner = CliRunner()

SMALL = {
    "name": "small",
    "topology": {"catalog": "chain", "params": {"n": 2}},
    "workload": {"kind": "open_loop", "rate_rps": 100},
    "duration": "2s",
    "warmup": "0.5s",
    "seed": 4,
}


def write(tmp_path: Path, data: object, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def assert_clean_failure(result) -> str:
    """A user error: non-zero exit, a message, and no Python traceback."""
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output
    # CliRunner catches exceptions; only a clean exit (SystemExit) is acceptable.
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    # The message goes to stderr, so that stdout stays clean for --json.
    assert "error" in result.stderr.lower(), result.output
    return result.output


def spec_with(**changes: object) -> dict:
    data = dict(SMALL)
    data.update(changes)
    return data


def test_validate_a_valid_spec(tmp_path):
    result = invoke("validate", write(tmp_path, SMALL))
    assert result.exit_code == 0, result.output
    assert "valid" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"workload": {"kind": "open_loop", "rate_rps": 10, "burst": 3}}, "workload.burst"),
        ({"durationn": "3s"}, "durationn"),
    ],
)
def test_validate_names_an_unknown_field(tmp_path, changes, field):
    output = assert_clean_failure(invoke("validate", write(tmp_path, spec_with(**changes))))
    assert field in output


def test_validate_names_a_negative_rate(tmp_path):
    spec = spec_with(workload={"kind": "open_loop", "rate_rps": -5})
    output = assert_clean_failure(invoke("validate", write(tmp_path, spec)))
    assert "workload.rate_rps" in output


def test_validate_names_an_unknown_topology_and_lists_the_known_ones(tmp_path):
    output = assert_clean_failure(invoke("validate", write(tmp_path, spec_with(topology="nosuch"))))
    assert "topology" in output
    assert "unknown" in output.lower()
    assert "nosuch" in output
    for name in CATALOG:
        assert name in output


def test_validate_reports_a_cycle_with_its_path(tmp_path):
    topology = {
        "cluster": {"nodes": [{"name": "node-0"}]},
        "call_graph": {
            "entry": "a",
            "services": [{"name": "a", "steps": ["b"]}, {"name": "b", "steps": ["a"]}],
        },
    }
    output = assert_clean_failure(invoke("validate", write(tmp_path, spec_with(topology=topology))))
    assert "cycle" in output
    assert "a -> b -> a" in output or "b -> a -> b" in output


def test_validate_a_missing_file(tmp_path):
    missing = tmp_path / "nope.yaml"
    output = assert_clean_failure(invoke("validate", missing))
    assert "nope.yaml" in output
    assert "cannot read" in output or "No such file" in output


def test_validate_invalid_yaml(tmp_path):
    path = write(tmp_path, "topology: chain\nworkload: {kind: open_loop, rate_rps: 10\n")
    output = assert_clean_failure(invoke("validate", path))
    assert "YAML" in output
    assert "line" in output


def test_run_prints_a_table(tmp_path):
    result = invoke("run", write(tmp_path, SMALL))
    assert result.exit_code == 0, result.output
    assert "p99" in result.stdout


def test_run_json_parses_and_has_end_to_end(tmp_path):
    result = invoke("run", write(tmp_path, SMALL), "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["end_to_end"]["requests"] > 0
    assert data["spec"]["workload"]["rate_rps"] == 100


def test_run_set_overrides_a_field(tmp_path):
    result = invoke("run", write(tmp_path, SMALL), "--json", "--set", "workload.rate_rps=50")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["spec"]["workload"]["rate_rps"] == 50
    # 50 rps over 1.5 measured seconds, not 100 rps.
    assert data["end_to_end"]["requests"] < 120


def test_run_set_with_an_invalid_value_fails_cleanly(tmp_path):
    result = invoke("run", write(tmp_path, SMALL), "--set", "workload.rate_rps=-1")
    output = assert_clean_failure(result)
    assert "workload.rate_rps" in output


def test_list_names_profiles_and_topologies():
    result = invoke("list")
    assert result.exit_code == 0, result.output
    assert "bookinfo" in result.stdout
    assert "none" in result.stdout


def test_schema_is_json():
    result = invoke("schema")
    assert result.exit_code == 0, result.output
    schema = json.loads(result.stdout)
    assert "properties" in schema
    assert "workload" in schema["properties"]
