"""``meshsim compare`` on a topology file, a spec, or a closed loop, as well as a catalog
name and an open loop; and its options' errors."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from experiments.cli import app
from topologies import get_topology, save_topology

runner = CliRunner()
SHORT = ["--duration", "2s", "--warmup", "0.5s", "-p", "istio-1.8", "--json"]


def test_a_closed_loop_paced_as_fortio():
    result = runner.invoke(app, ["compare", "--connections", "4", "--qps", "100", *SHORT])
    assert result.exit_code == 0, result.output
    runs = json.loads(result.stdout)
    assert set(runs) == {"none", "istio-1.8"}
    for run in runs.values():
        assert run["spec"]["workload"]["kind"] == "closed_loop"
        assert run["spec"]["workload"]["connections"] == 4
        assert run["name"] == "bookinfo@4x100qps"
        assert run["end_to_end"]["throughput_rps"] == pytest.approx(100, rel=0.05)


def test_a_topology_file(tmp_path):
    path = tmp_path / "chain.yaml"
    save_topology(get_topology("chain", n=3), path)
    result = runner.invoke(app, ["compare", "--topology", str(path), "--rps", "50", *SHORT])
    assert result.exit_code == 0, result.output
    runs = json.loads(result.stdout)
    assert runs["istio-1.8"]["name"] == "chain@50rps"
    assert len(runs["istio-1.8"]["services"]) == 3


def test_a_spec_under_each_profile():
    result = runner.invoke(
        app,
        ["compare", "--spec", "experiments/specs/bookinfo-istio.yaml", "-p", "maesh", "--json"],
    )
    assert result.exit_code == 0, result.output
    runs = json.loads(result.stdout)
    assert set(runs) == {"none", "maesh"}
    assert runs["maesh"]["spec"]["mesh"]["profile"] == "maesh"
    assert runs["maesh"]["spec"]["workload"] == runs["none"]["spec"]["workload"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rps", "10", "--connections", "2", "--qps", "5"], "give one"),
        (["--connections", "2"], "needs both --connections and --qps"),
        (["--connections", "0", "--qps", "5"], "--connections must be >= 1"),
        (["--connections", "2", "--qps", "fast"], "--qps"),
        (["--topology", "missing.yaml"], "no such file"),
        (["--topology", "nope"], "unknown topology 'nope'"),
        (["--spec", "experiments/specs/canary.yaml", "--rps", "5"], "drop --rps"),
        (["--spec", "experiments/specs/mixer-cost.yaml"], "without a sweep"),
    ],
)
def test_compare_options_are_checked(args, message):
    result = runner.invoke(app, ["compare", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output


@pytest.mark.parametrize("name", ["partial-mesh", "rate-limit-traefik"])
def test_a_spec_with_policies_or_annotations_keeps_its_baseline(name):
    profile = "maesh" if name.endswith("traefik") else "istio-1.8"
    result = runner.invoke(
        app,
        ["compare", "--spec", f"experiments/specs/{name}.yaml", "-p", profile, "--json"],
    )
    assert result.exit_code == 0, result.output
    runs = json.loads(result.stdout)
    assert set(runs) == {"none", profile}
    assert runs["none"]["spec"]["policies"] == []  # no mesh runs no policy
    assert runs["none"]["end_to_end"]["requests"] > 0
