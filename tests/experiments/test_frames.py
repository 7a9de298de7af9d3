"""Tidy tables of results: a run's and a sweep's figures as pandas DataFrames, CSV and Parquet."""

from __future__ import annotations

import json
import math

import pytest
from typer.testing import CliRunner

from experiments.cli import app
from experiments.runner import run_experiment
from experiments.spec import spec_from_dict
from experiments.store import SweepStore, run_sweep_points

pd = pytest.importorskip("pandas")

SPEC = {
    "name": "frames-test",
    "topology": "bookinfo",
    "mesh": "istio-1.8",
    "workload": {"kind": "open_loop", "rate_rps": 20},
    "duration": "1s",
    "warmup": "0.2s",
}


def test_a_runs_frame_holds_its_figures():
    result = run_experiment(spec_from_dict({**SPEC, "replications": 2}))
    frame = result.to_frame()
    assert list(frame.columns) == ["run", "seed", "replication", "scope", "metric", "value"]
    merged = frame[frame.replication.isna()].set_index(["scope", "metric"]).value
    assert merged["end-to-end", "p99_ms"] == result.end_to_end.latency.p99_ms
    assert merged["end-to-end", "requests"] == result.end_to_end.requests
    assert merged["productpage", "throughput_rps"] == result.services["productpage"].throughput_rps
    assert merged["sidecar", "cpu_cores"] == result.cpu.by_kind["sidecar"]
    assert merged["sidecar", "memory_bytes"] == pytest.approx(
        sum(p.memory_bytes for p in result.proxies.values() if p.kind == "sidecar")
    )
    # Each replication's own end-to-end figures, under its index and seed.
    own = frame[frame.metric.eq("mean_ms") & frame.replication.notna()]
    assert sorted(own.replication) == [0, 1]
    assert list(own.value) == [r.mean_ms for r in result.replications]
    assert list(own.seed) == [r.seed for r in result.replications]


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_a_sweeps_frame_pivots_and_round_trips(tmp_path, suffix):
    if suffix == "parquet":
        pytest.importorskip("pyarrow")
    sweep = {**SPEC, "sweep": {"grid": {"mesh": ["none", "maesh"], "workload.rate_rps": [10, 20]}}}
    spec_path = tmp_path / "sweep.yaml"
    spec_path.write_text(json.dumps(sweep), encoding="utf-8")
    store = tmp_path / "store"
    out = tmp_path / f"points.{suffix}"
    result = CliRunner().invoke(
        app, ["sweep", str(spec_path), "--store", str(store), "--frame", str(out)]
    )
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(out) if suffix == "csv" else pd.read_parquet(out)
    p99 = frame[(frame.metric == "p99_ms") & (frame.scope == "end-to-end")]
    table = p99.pivot_table(index="workload.rate_rps", columns="mesh", values="value")
    points = SweepStore(store).points()
    for point in points:
        mesh, rate = point.assignments["mesh"], point.assignments["workload.rate_rps"]
        assert math.isclose(table.loc[rate, mesh], point.result.end_to_end.latency.p99_ms)


def test_frame_options_are_checked_before_any_run(tmp_path):
    spec_path = tmp_path / "sweep.yaml"
    sweep = {**SPEC, "sweep": {"grid": {"workload.rate_rps": [10]}}}
    spec_path.write_text(json.dumps(sweep), encoding="utf-8")
    runner = CliRunner()
    bad = runner.invoke(app, ["sweep", str(spec_path), "--frame", str(tmp_path / "t.xlsx")])
    assert bad.exit_code == 2 and "--format must be one of csv, parquet" in bad.output
    bad = runner.invoke(app, ["sweep", str(spec_path), "--format", "csv"])
    assert bad.exit_code == 2 and "give --frame FILE too" in bad.output
    bad = runner.invoke(app, ["sweep", str(spec_path), "--frame", str(tmp_path)])
    assert bad.exit_code == 2 and "is a directory" in bad.output


def test_failed_points_are_left_out_of_the_frame():
    from experiments.frames import sweep_frame
    from experiments.sweep import SweepPoint

    spec = spec_from_dict({**SPEC, "sweep": {"grid": {"workload.rate_rps": [10, 20]}}})
    points = run_sweep_points(spec).points
    frame = sweep_frame([points[0], SweepPoint({"workload.rate_rps": 20}, error="boom")])
    assert set(frame["workload.rate_rps"]) == {10}


def test_the_frames_replication_figures_are_the_results_figures():
    from experiments.frames import _FIGURES
    from experiments.results import Figures

    assert tuple(Figures.model_fields) == _FIGURES
