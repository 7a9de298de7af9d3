"""Every shipped experiment validates and runs (briefly) from the CLI."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from experiments.cli import app
from experiments.specs import shipped_specs

SPECS = shipped_specs()


def test_there_are_shipped_specs():
    assert SPECS


@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_shipped_spec_runs_briefly(path):
    runner = CliRunner()
    result = runner.invoke(
        app,
        [
            "run",
            str(path),
            "--set",
            "duration=2s",
            "--set",
            "warmup=0.5s",
            "--set",
            "replications=1",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "end-to-end" in result.output
    assert "p99" in result.output
