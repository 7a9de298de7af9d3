"""A run warns about what makes its figures hard to read: an overloaded component (its queue
grows with the run, so there is no steady state) and a run that measured no request."""

from __future__ import annotations

from pathlib import Path

import yaml
from typer.testing import CliRunner

from experiments.cli import app
from experiments.runner import run_experiment
from experiments.spec import spec_from_dict


def one_service(rate_rps: float, duration: str = "3s", warmup: str = "1s") -> dict:
    return {
        "topology": {"catalog": "chain", "params": {"n": 1, "service_time": "1ms"}},
        "mesh": "none",
        "workload": {"kind": "open_loop", "rate_rps": rate_rps},
        "duration": duration,
        "warmup": warmup,
        "seed": 3,
    }


def test_an_overloaded_component_is_named_with_its_utilisation():
    result = run_experiment(spec_from_dict(one_service(1500)))  # utilisation 1.5
    assert len(result.warnings) == 1
    assert "s0-0.app" in result.warnings[0]
    assert "busy 100%" in result.warnings[0]


def test_a_component_at_half_load_gives_no_warning():
    assert run_experiment(spec_from_dict(one_service(500))).warnings == []


def test_a_run_that_measured_nothing_says_so():
    # Requests take about 1 ms, the run measures 0.2 ms after its warm-up.
    data = one_service(100, duration="1.0002s", warmup="1s")
    result = run_experiment(spec_from_dict(data))
    assert result.end_to_end.requests == 0
    assert any(w.startswith("no request was measured") for w in result.warnings)


def test_the_cli_prints_warnings_on_stderr(tmp_path: Path):
    path = tmp_path / "over.yaml"
    path.write_text(yaml.safe_dump(one_service(1500)), encoding="utf-8")
    outcome = CliRunner().invoke(app, ["run", str(path)])
    assert outcome.exit_code == 0
    assert "warning: " in outcome.stderr and "overloaded" in outcome.stderr
    assert "warning" not in outcome.stdout
