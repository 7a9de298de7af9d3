"""Sweeps in processes and on Dask, and the store that lets a killed sweep resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from experiments.cli import app
from experiments.spec import spec_from_dict
from experiments.store import SweepStore, point_key, run_sweep_points

SPEC = {
    "name": "store-test",
    "topology": "bookinfo",
    "mesh": "istio-1.8",
    "workload": {"kind": "open_loop", "rate_rps": 20},
    "duration": "1s",
    "warmup": "0.2s",
    "sweep": {"grid": {"mesh": ["none", "istio-1.8"], "workload.rate_rps": [10, 20]}},
}


def without_wall_time(result: dict) -> dict:
    """A result's data without what differs between identical runs: the wall time."""
    result = dict(result)
    result.pop("wall_time_s")
    if result.get("intervals"):
        result["intervals"] = {k: v for k, v in result["intervals"].items() if k != "wall_time_s"}
    return result


def figures(points) -> list[dict]:
    return [without_wall_time(p.result.model_dump(mode="json")) for p in points]


def test_a_points_key_is_its_effective_spec():
    spec = spec_from_dict({k: v for k, v in SPEC.items() if k != "sweep"})
    again = spec_from_dict({k: v for k, v in SPEC.items() if k != "sweep"})
    assert point_key(spec) == point_key(again)
    # The same profile name with a changed field is another point.
    changed = {**SPEC, "mesh": {"profile": "istio-1.8", "overrides": {"proxy": {"concurrency": 4}}}}
    changed.pop("sweep")
    assert point_key(spec_from_dict(changed)) != point_key(spec)


def test_serial_process_and_dask_give_the_same_numbers(tmp_path):
    pytest.importorskip("distributed")
    spec = spec_from_dict(SPEC)
    serial = run_sweep_points(spec)
    process = run_sweep_points(spec, backend="process", workers=2)
    dask = run_sweep_points(spec, backend="dask", workers=2)
    assert [p.assignments for p in serial.points] == [p.assignments for p in dask.points]
    assert figures(serial.points) == figures(process.points) == figures(dask.points)
    assert all(p.result is not None for p in serial.points)


def test_a_rerun_computes_only_the_missing_points(tmp_path):
    spec = spec_from_dict(SPEC)
    store = SweepStore(tmp_path / "store")
    first = run_sweep_points(spec, store=store)
    assert (first.reused, first.ran) == (0, 4)
    # Lose one point: only it is computed again, and the numbers are the same.
    lost = sorted(store.points_dir.glob("*.json"))[0]
    lost.unlink()
    again = run_sweep_points(spec, store=store)
    assert (again.reused, again.ran) == (3, 1)
    assert figures(again.points) == figures(first.points)
    assert figures(store.points()) == figures(first.points)


def test_a_sweep_killed_midway_loses_nothing_finished(tmp_path):
    """SIGKILL after the first point is stored; the rerun computes only what is missing, and
    the store ends equal to that of an uninterrupted run."""
    spec_path = tmp_path / "sweep.yaml"
    slow = {**SPEC, "duration": "4s"}
    spec_path.write_text(json.dumps(slow), encoding="utf-8")  # JSON is YAML
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    command = [sys.executable, "-m", "experiments.cli", "sweep", str(spec_path), "--store"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.Popen([*command, str(killed)], env=env, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list((killed / "points").glob("*.json")) and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    stored = len(list((killed / "points").glob("*.json")))
    assert 1 <= stored < 4, "the kill must land midway for this test to mean anything"
    rerun = subprocess.run(
        [*command, str(killed)], env=env, capture_output=True, text=True, check=True
    )
    assert f"{stored} of 4 points were in the store; {4 - stored} computed" in rerun.stderr
    subprocess.run([*command, str(whole)], env=env, capture_output=True, check=True)
    assert figures(SweepStore(killed).points()) == figures(SweepStore(whole).points())
    assert not list((killed / "points").glob(".*.tmp"))


def test_report_rebuilds_the_table_from_a_partial_store(tmp_path):
    spec = spec_from_dict(SPEC)
    store = SweepStore(tmp_path / "store")
    run_sweep_points(spec, store=store)
    sorted(store.points_dir.glob("*.json"))[0].unlink()
    result = CliRunner().invoke(app, ["report", str(store.root)])
    assert result.exit_code == 0, result.output
    assert result.output.count("not run yet") == 1
    assert "1 of 4 points are not in the store yet" in result.output
    html = (store.root / "report.html").read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>") and "store-test" in html


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--backend", "threads"], "--backend must be one of serial, process, dask"),
        (["--workers", "0"], "--workers must be >= 1"),
        (["--scheduler", "tcp://127.0.0.1:1"], "--scheduler is for --backend dask"),
    ],
)
def test_sweep_options_are_checked(tmp_path, args, message):
    spec_path = tmp_path / "sweep.yaml"
    spec_path.write_text(json.dumps(SPEC), encoding="utf-8")
    result = CliRunner().invoke(app, ["sweep", str(spec_path), *args])
    assert result.exit_code == 2
    assert message in result.output


def test_sweep_needs_a_sweep_and_report_needs_a_store(tmp_path):
    spec_path = tmp_path / "one.yaml"
    spec_path.write_text(json.dumps({k: v for k, v in SPEC.items() if k != "sweep"}))
    result = CliRunner().invoke(app, ["sweep", str(spec_path)])
    assert result.exit_code == 2 and "has no sweep" in result.output
    result = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 2 and "not a sweep store" in result.output
    (tmp_path / "sweep.json").write_text('{"format": 1, "base": {}, "grid": "x", "keys": []}')
    result = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 2 and "not a sweep's description" in result.output


def test_swept_meshes_are_labelled_apart():
    from experiments.overrides import value_label

    assert value_label("maesh") == "maesh"
    assert value_label({"profile": "istio-1.8"}) == "istio-1.8"
    short = {"profile": "istio-1.8", "overrides": {"scoping": "mesh", "mixer": None}}
    assert value_label(short) == "istio-1.8 scoping=mesh mixer=null"
    a = {"profile": "istio-1.4", "overrides": {"proxy": {"outbound": [{"kind": "router"}] * 3}}}
    b = {"profile": "istio-1.4", "overrides": {"proxy": {"outbound": [{"kind": "tls"}] * 3}}}
    assert value_label(a).startswith("istio-1.4#") and value_label(a) != value_label(b)
    assert value_label(a) == value_label(json.loads(json.dumps(a)))


def test_a_damaged_point_is_computed_again(tmp_path):
    spec = spec_from_dict(SPEC)
    store = SweepStore(tmp_path / "store")
    first = run_sweep_points(spec, store=store)
    files = sorted(store.points_dir.glob("*.json"))
    files[0].write_text(files[0].read_text(encoding="utf-8")[:100], encoding="utf-8")
    again = run_sweep_points(spec, store=store)
    assert (again.reused, again.ran) == (3, 1)
    assert figures(again.points) == figures(first.points)
    # A point whose file became a directory: a clear error, not a traceback.
    files[1].unlink()
    files[1].mkdir()
    spec_path = tmp_path / "sweep.yaml"
    spec_path.write_text(json.dumps(SPEC), encoding="utf-8")
    result = CliRunner().invoke(app, ["sweep", str(spec_path), "--store", str(store.root)])
    assert result.exit_code == 2 and "is not a file" in result.output


def test_workers_exit_when_the_sweep_is_killed(tmp_path):
    psutil = pytest.importorskip("psutil")
    spec_path = tmp_path / "sweep.yaml"
    spec_path.write_text(json.dumps({**SPEC, "duration": "30s"}), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    command = [sys.executable, "-m", "experiments.cli", "sweep", str(spec_path), "-q"]
    proc = subprocess.Popen(
        [*command, "--backend", "process", "--workers", "2"], env=env, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 60
    children: list = []
    while time.monotonic() < deadline and len(children) < 2:
        time.sleep(0.2)
        children = [c for c in psutil.Process(proc.pid).children() if "python" in c.name()]
    assert children, "the workers never started"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    gone, alive = psutil.wait_procs(children, timeout=15)
    assert not alive, f"workers left behind: {[c.pid for c in alive]}"
