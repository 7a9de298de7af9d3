"""Runs too large for their budget are refused before they start; reasonable ones are not.

Three kinds of check: the hostile inputs of issue 11 (item 5) through the command line, each
ending in exit code 2 with the field at fault and no traceback; every shipped spec and the
calibration within the default budget; and the event estimate against the events counted in
real runs, so that the constants in ``experiments.budget`` stay true as the models change.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from experiments.budget import (
    DEFAULT_EVENTS,
    EVENTS_PER_VISIT,
    Budget,
    BudgetError,
    check_budget,
    estimate_experiment,
    estimate_run,
    parse_events,
    parse_memory,
)
from experiments.calibration import benchmark_spec
from experiments.cli import app
from experiments.compare import DEFAULT_PROFILES, compare
from experiments.profiles import list_profiles
from experiments.runner import build_simulation
from experiments.spec import ExperimentSpec, SpecError, load_spec, spec_from_dict
from experiments.specs import shipped_specs
from models.architectures import ARCHITECTURES

BIG = 2**64

SHORT = {
    "name": "short",
    "topology": "bookinfo",
    "mesh": "istio-1.8",
    "workload": {"kind": "open_loop", "rate_rps": 100},
    "duration": "2s",
    "warmup": "0s",
}

ONE_SERVICE = {
    "cluster": {"nodes": [{"name": "node-0"}, {"name": "node-1"}]},
    "call_graph": {"entry": "app", "services": [{"name": "app", "workers": 4}]},
}


def with_(data: dict[str, Any], **paths: Any) -> dict[str, Any]:
    """``data`` with fields set by path (``workload__rate_rps=5``)."""
    data = copy.deepcopy(data)
    for path, value in paths.items():
        node = data
        keys = path.split("__")
        for key in keys[:-1]:
            node = node[int(key)] if isinstance(node, list) else node.setdefault(key, {})
        node[keys[-1]] = value
    return data


def cli(tmp_path: Path, command: str, data: dict[str, Any], *args: str):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return CliRunner().invoke(app, [command, str(path), *args])


def refused(result) -> str:
    """Exit code 2, a message on stderr, no traceback; the message."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert result.stderr.startswith("error: "), result.output
    return result.stderr


# --- the inputs of issue 11, item 5 ------------------------------------------------------------


@pytest.mark.parametrize(
    ("paths", "field", "why"),
    [
        ({"topology": with_(ONE_SERVICE, call_graph__services__0__workers=10**9)}, "workers",
         "less than or equal to 1000000"),
        ({"topology": with_(ONE_SERVICE, call_graph__services__0__workers=BIG)}, "workers",
         "less than or equal to 1000000"),
        ({"topology": with_(ONE_SERVICE, call_graph__services__0__replicas=10**6)}, "replicas",
         "less than or equal to 150000"),
        ({"topology": with_(ONE_SERVICE, call_graph__services__0__replicas=BIG)}, "replicas",
         "less than or equal to 150000"),
        ({"workload": {"kind": "open_loop", "rate_rps": BIG}}, "workload.rate_rps",
         "less than or equal to 1000000000"),
        ({"workload": {"kind": "closed_loop", "connections": BIG}}, "workload.connections",
         "less than or equal to 1000000"),
        ({"workload": {"kind": "closed_loop", "qps": BIG}}, "workload.qps",
         "less than or equal to 1000000000"),
    ],
)  # fmt: skip
def test_values_absurd_on_their_face_are_refused_by_validation(tmp_path, paths, field, why):
    message = refused(cli(tmp_path, "validate", {**SHORT, **paths}))
    assert field in message
    assert why in message


def test_a_workload_of_a_billion_workers_as_yaml_writes_it_is_refused(tmp_path):
    # YAML reads 1e9 (no dot) as a string: refused as not an integer, naming the field.
    path = tmp_path / "spec.yaml"
    path.write_text(
        "topology:\n  cluster: {nodes: [{name: node-0}]}\n"
        "  call_graph: {entry: app, services: [{name: app, workers: 1e9}]}\n"
        "workload: {kind: open_loop, rate_rps: 10}\nduration: 2s\n",
        encoding="utf-8",
    )
    result = CliRunner().invoke(app, ["run", str(path)])
    assert "call_graph.services.0.workers" in refused(result)


@pytest.mark.parametrize("command", ["validate", "run"])
def test_ten_million_requests_per_second_are_refused_with_the_estimate(tmp_path, command):
    data = with_(SHORT, workload__rate_rps="1e7", duration="30s")
    message = refused(cli(tmp_path, command, data))
    assert "too large to run: about 8.7e+09 simulated events" in message
    assert "over the budget of 2e+08" in message
    assert "3e+08 requests (1e+07 rps x 30 s)" in message
    assert "driven by: workload.rate_rps" in message
    assert f"meshsim {command} --budget-events 8.8e9" in message


@pytest.mark.parametrize(
    ("paths", "driver"),
    [
        ({"duration": "1000000000s"}, "driven by: duration"),
        ({"duration": float(BIG)}, "driven by: duration"),
        ({"replications": 10**6}, "driven by: replications"),
        ({"replications": BIG}, "driven by: replications"),
    ],
)
def test_huge_durations_and_replications_are_refused_by_the_event_budget(tmp_path, paths, driver):
    message = refused(cli(tmp_path, "run", {**SHORT, **paths}))
    assert "simulated events" in message
    assert driver in message


@pytest.mark.parametrize(
    ("paths", "driver"),
    [
        (
            {"topology": with_(ONE_SERVICE, call_graph__services__0__replicas=1000,
                               call_graph__services__0__workers=10**6)},
            "workload 'app' has 1,000 replicas x 1,000,000 workers",
        ),
        ({"mesh": {"profile": "istio-1.8", "overrides": {"proxy": {"concurrency": BIG}}}},
         "proxy and control-plane workers"),
        ({"mesh": {"profile": "istio-1.8", "overrides": {"control_plane": {"replicas": BIG}}}},
         "proxy and control-plane workers"),
        ({"mesh": {"profile": "istio-1.8", "overrides": {"control_plane": {"cores": BIG}}}},
         "proxy and control-plane workers"),
        ({"mesh": {"profile": "istio-ambient", "overrides": {"waypoints": "all",
                                                              "waypoint_replicas": BIG}}},
         "proxies (ambient)"),
        ({"changes": [{"at": "1s", "kind": "scale", "service": "reviews-v1", "replicas": BIG}]},
         "pods of"),
    ],
)  # fmt: skip
def test_what_would_not_fit_in_memory_is_refused_by_the_memory_budget(tmp_path, paths, driver):
    message = refused(cli(tmp_path, "run", {**SHORT, **paths}))
    assert "of memory, over the budget of 4 GiB" in message
    assert driver in message
    assert "--budget-memory" in message or "no machine has that much memory" in message


def test_a_chain_of_3000_runs_when_the_run_is_short(tmp_path):
    data = with_(
        SHORT,
        topology={"catalog": "chain", "params": {"n": 3000}},
        mesh="none",
        workload={"kind": "open_loop", "rate_rps": 5},
        duration="1s",
    )
    result = cli(tmp_path, "run", data)
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output


def test_a_chain_of_3000_with_sidecars_for_long_is_refused_for_its_visits(tmp_path):
    data = with_(SHORT, topology={"catalog": "chain", "params": {"n": 3000}}, duration="30s")
    message = refused(cli(tmp_path, "validate", with_(data, workload__rate_rps=300)))
    assert "3e+03 service visits x 7.5 events per visit with sidecars" in message
    assert "driven by: topology (service visits per request)" in message


def test_a_10000_service_topology_validates_for_a_short_run_and_is_refused_for_a_long_one(
    tmp_path,
):
    topology = {"catalog": "mesh_scale", "params": {"pods": 20_000}}  # 10,000 services
    short = with_(SHORT, topology=topology, workload__rate_rps=10, duration="5s")
    result = cli(tmp_path, "validate", short)
    assert result.exit_code == 0, result.output
    assert "20,001 pods, 20,001 proxies" in result.stdout
    message = refused(cli(tmp_path, "validate", with_(short, duration="1000h")))
    assert "driven by: duration" in message


def test_configuration_changes_pushed_to_every_proxy_drive_the_control_plane_events(tmp_path):
    changes = [{"at": f"{1 + i}s", "kind": "route_weights", "service": "svc-1"} for i in range(50)]
    data = with_(
        SHORT,
        topology={"catalog": "mesh_scale", "params": {"pods": 2000}},
        workload__rate_rps=1,
        changes=changes,
        duration="60s",
    )
    message = refused(cli(tmp_path, "validate", data, "--budget-events", "1e5"))
    assert "+ 706,361 control-plane events" in message  # 2,001 x (3 + 50 x 7 + rotations)
    assert "driven by: changes (each is pushed to every proxy)" in message


def test_a_sweep_grid_beyond_the_cap_is_refused_before_its_points_are_validated(tmp_path):
    grid = {"workload.rate_rps": list(range(1, 1001)), "seed": list(range(1000))}
    message = refused(cli(tmp_path, "validate", {**SHORT, "sweep": {"grid": grid}}))
    assert "sweep.grid: 1,000 (seed) x 1,000 (workload.rate_rps) = 1,000,000 points" in message


def test_a_sweep_whose_points_fit_but_not_together_names_the_grid(tmp_path):
    data = with_(SHORT, duration="30s", sweep={"grid": {"seed": list(range(10))}})
    message = refused(cli(tmp_path, "run", data, "--budget-events", "5e5"))
    assert "10 runs; the largest, sweep point 0 (seed=0)" in message
    assert "driven by: sweep.grid (10 points of seed)" in message
    assert "meshsim run --budget-events 880000" in message


def test_raising_the_budget_lets_the_run_through(tmp_path):
    data = with_(SHORT, duration="30s", sweep={"grid": {"seed": list(range(10))}})
    result = cli(tmp_path, "validate", data, "--budget-events", "880000")
    assert result.exit_code == 0, result.output
    assert "10 runs" in result.stdout
    result = cli(tmp_path, "validate", data, "--budget-memory", "1MiB")
    assert "meshsim validate --budget-memory 65MiB" in refused(result)


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--budget-events", "-1"),
        ("--budget-events", "0"),
        ("--budget-events", "nan"),
        ("--budget-events", "lots"),
        ("--budget-memory", "0"),
        ("--budget-memory", "-1GiB"),
        ("--budget-memory", "4 gigs"),
    ],
)
def test_a_bad_budget_flag_is_a_usage_error(tmp_path, flag, value):
    result = cli(tmp_path, "validate", SHORT, flag, value)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert flag in result.output


def test_compare_checks_its_runs_together_before_the_first(tmp_path):
    result = CliRunner().invoke(
        app, ["compare", "--duration", "3", "--out", str(tmp_path), "--budget-events", "1e4"]
    )
    message = refused(result)
    assert f"{len(DEFAULT_PROFILES)} runs" in message
    assert "meshsim compare --budget-events" in message
    assert not (tmp_path / "comparison.json").exists()  # nothing ran


@pytest.mark.parametrize("nodes", [0, BIG])
def test_compare_refuses_a_cluster_size_out_of_range(nodes):
    with pytest.raises(SpecError, match="nodes must be between 1 and 150,000"):
        compare(nodes=nodes, duration_s=1.0, warmup_s=0.0)


def test_the_budget_error_is_a_spec_error():
    spec = spec_from_dict(with_(SHORT, workload__rate_rps="1e7", duration="30s"))
    with pytest.raises(SpecError):
        check_budget(spec)
    with pytest.raises(BudgetError, match="budget of 2e\\+08"):
        check_budget(spec, Budget())
    assert check_budget(spec, Budget(events=1e10)).events < 1e10


# --- what must pass -------------------------------------------------------------------------------


@pytest.mark.parametrize("path", shipped_specs(), ids=[p.stem for p in shipped_specs()])
def test_every_shipped_spec_fits_the_default_budget(path):
    estimate = check_budget(load_spec(path))
    assert estimate.events <= DEFAULT_EVENTS / 10  # with room to spare


def test_the_calibration_fits_the_default_budget():
    runs = [estimate_run(benchmark_spec(p, duration_s=30.0)) for p in list_profiles()]
    assert sum(run.events for run in runs) <= DEFAULT_EVENTS / 10


def test_every_architecture_has_its_events_per_visit():
    assert set(EVENTS_PER_VISIT) == set(ARCHITECTURES)


@pytest.mark.parametrize(
    ("text", "value"), [("2e8", 2e8), ("500_000_000", 5e8), ("1,000", 1e3), ("7", 7.0)]
)
def test_parse_events(text, value):
    assert parse_events(text) == value


@pytest.mark.parametrize(("text", "value"), [("8GiB", 8 * 2**30), ("500MB", 5e8), ("1024", 1024)])
def test_parse_memory(text, value):
    assert parse_memory(text) == value


# --- the estimate against what runs do --------------------------------------------------------------


def counted_events(spec: ExperimentSpec) -> int:
    """Events one replication processes: the environment's steps, counted as
    ``benchmarks.chain`` counts them (the engine loop honours an instrumented ``step``)."""
    simulation = build_simulation(spec)
    counter = [0]
    step = simulation.env.step

    def counting_step() -> None:
        step()
        counter[0] += 1

    simulation.env.step = counting_step  # type: ignore[method-assign]
    simulation.run()
    return counter[0]


def per_replication(spec: ExperimentSpec) -> float:
    (run,) = estimate_experiment(spec).runs
    return run.events / run.replications


@pytest.mark.parametrize("profile", list_profiles())
def test_events_estimated_for_bookinfo_are_those_counted_or_a_little_more(profile):
    spec = spec_from_dict(with_(SHORT, mesh=profile, workload__rate_rps=200))
    ratio = counted_events(spec) / per_replication(spec)
    assert 0.7 <= ratio <= 1.0, ratio


@pytest.mark.parametrize("profile", ["none", "istio-1.8", "maesh"])
def test_events_estimated_for_the_calibration_are_those_counted_or_a_little_more(profile):
    spec = benchmark_spec(profile, duration_s=2.0)
    ratio = counted_events(spec) / per_replication(spec)
    assert 0.7 <= ratio <= 1.0, ratio


def test_control_plane_events_estimated_are_those_counted_or_a_little_more():
    # 400 sidecars, certificates rotated every 10 s for 60 s, two changes, hardly a request:
    # nearly every event is the control plane's. Every proxy knows every service (scoping:
    # mesh), so each change reaches them all, as the estimate assumes.
    overrides = {"scoping": "mesh", "control_plane": {"certificates": {"ttl": 20}}}
    mesh = {"profile": "istio-1.8", "overrides": overrides}
    spec = spec_from_dict(
        with_(
            SHORT,
            topology={"catalog": "mesh_scale", "params": {"pods": 400}},
            mesh=mesh,
            workload__rate_rps=0.1,
            duration="60s",
            changes=[
                {"at": "5s", "kind": "scale", "service": "svc-1", "replicas": 3},
                {"at": "30s", "kind": "route_weights", "service": "svc-2"},
            ],
        )
    )
    run = estimate_experiment(spec).runs[0]
    assert run.control_plane_events > 0.9 * run.events
    ratio = counted_events(spec) / per_replication(spec)
    assert 0.5 <= ratio <= 1.0, ratio


def test_a_closed_loop_without_pacing_is_bounded_by_its_fastest_request():
    spec = spec_from_dict(
        with_(SHORT, topology=ONE_SERVICE, mesh="none",
              workload={"kind": "closed_loop", "connections": 4, "qps": 0})
    )  # fmt: skip
    (run,) = estimate_experiment(spec).runs
    assert "4 connections x 2 s / 1.04 ms" in run.requests_from  # 1 ms of work, 2 x 20 us
    assert counted_events(spec) <= per_replication(spec)


def test_a_closed_loop_that_takes_no_time_is_refused():
    zero = {"same_node": 0, "same_zone": 0, "cross_zone": 0}
    topology = with_(ONE_SERVICE, cluster__network=zero, call_graph__services__0__service_time=0)
    spec = spec_from_dict(
        with_(SHORT, topology=topology, mesh="none",
              workload={"kind": "closed_loop", "connections": 1, "qps": 0})
    )  # fmt: skip
    with pytest.raises(BudgetError, match="the clock never moves") as error:
        check_budget(spec)
    assert "driven by: workload.qps" in str(error.value)
    assert "no budget would let it finish" in str(error.value)


def test_a_closed_loops_connections_each_send_at_least_one_call():
    data = with_(SHORT, workload={"kind": "closed_loop", "connections": 50_000, "qps": 10})
    (run,) = estimate_experiment(spec_from_dict(data)).runs
    assert run.requests == 50_000
