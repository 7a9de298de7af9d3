"""Progress and Ctrl-C: a run in slices gives the same numbers; a stopped run keeps what it
measured, marked as interrupted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from experiments.runner import RunInterrupted, run_experiment
from experiments.spec import spec_from_dict

SPEC = {
    "name": "interrupt",
    "topology": "bookinfo",
    "mesh": "istio-1.8",
    "workload": {"kind": "open_loop", "rate_rps": 100},
    "duration": "4s",
    "warmup": "1s",
    "seed": 5,
}


def numbers(result) -> dict:
    data = result.model_dump(mode="json")
    data.pop("wall_time_s")
    data["intervals"].pop("wall_time_s", None)
    return data


def test_a_run_in_slices_gives_the_same_numbers():
    seen: list[float] = []

    def progress(replication: int, now_s: float, sent: int) -> bool:
        seen.append(now_s)
        return False

    spec = spec_from_dict({**SPEC, "replications": 2})
    assert numbers(run_experiment(spec, progress)) == numbers(run_experiment(spec))
    assert len(seen) == 2 * 200 and seen[-1] == 4.0  # 200 slices per replication


def test_a_stopped_run_keeps_what_it_measured():
    spec = spec_from_dict(SPEC)
    result = run_experiment(spec, lambda _r, now_s, _sent: now_s >= 2.5)
    assert result.interrupted
    assert result.measured_s == pytest.approx(1.5)
    assert result.warnings[0].startswith("interrupted at 2.5 s of 4 s in replication 1 of 1")
    assert result.end_to_end.requests > 0
    c = result.conservation
    assert c.sent == c.completed + c.failed + c.in_flight
    whole = run_experiment(spec)
    assert not whole.interrupted and result.end_to_end.requests < whole.end_to_end.requests


def test_a_run_stopped_in_a_later_replication_keeps_the_finished_ones():
    spec = spec_from_dict({**SPEC, "replications": 3})
    result = run_experiment(spec, lambda r, now_s, _sent: r == 1 and now_s >= 2.0)
    assert result.interrupted and len(result.replications) == 1
    assert "the 1 finished replication(s) of 3" in result.warnings[0]
    first = run_experiment(spec_from_dict({**SPEC, "replications": 3}))
    assert result.replications[0] == first.replications[0]


def test_a_run_stopped_in_its_warm_up_has_nothing_to_give():
    with pytest.raises(RunInterrupted, match="warm-up"):
        run_experiment(spec_from_dict(SPEC), lambda _r, now_s, _sent: now_s >= 0.5)


def test_ctrl_c_prints_what_was_measured_and_exits_130(tmp_path):
    spec = tmp_path / "long.yaml"
    spec.write_text(
        json.dumps(
            {**SPEC, "duration": "600s", "workload": {"kind": "open_loop", "rate_rps": 300}}
        ),
        encoding="utf-8",
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "experiments.cli",
            "run",
            str(spec),
            "--json",
            "--budget-events",
            "1e9",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(8)  # started, validated, built: running (the run needs minutes)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    result = json.loads(out)
    assert result["interrupted"] is True
    assert result["end_to_end"]["requests"] > 0
    assert "warning: interrupted at" in err
    assert "Traceback" not in err


def test_the_tables_of_an_interrupted_run_say_so_first():
    from experiments.tables import run_tables

    result = run_experiment(spec_from_dict(SPEC), lambda _r, now_s, _sent: now_s >= 2.5)
    assert run_tables(result).startswith("INTERRUPTED: interrupted at 2.5 s of 4 s")
    assert not run_tables(run_experiment(spec_from_dict(SPEC))).startswith("INTERRUPTED")
