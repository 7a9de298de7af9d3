"""Every shipped experiment validates, and runs from the CLI, shrunk to a short run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from experiments.cli import app
from experiments.spec import load_spec
from experiments.specs import shipped_specs

SPECS = shipped_specs()


def shrink(path: Path, tmp_path: Path) -> Path:
    """The same experiment, short: 2 s after its last change or fault, one replication, and
    for a sweep the first two values of its first axis with the first value of the others
    (the smallest mesh, for instance)."""
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    spec = load_spec(path)
    events = [float(spec.warmup)]
    events += [c.at for c in spec.changes]
    # A fault without a duration (a crash, a node lost for good): its start.
    events += [f.start + (f.duration or 0.0) for f in spec.faults]
    data["duration"] = max(events) + 2.0
    data["replications"] = 1
    if "sweep" in data:
        grid = data["sweep"]["grid"]
        data["sweep"]["grid"] = {
            key: values[:2] if i == 0 else values[:1]
            for i, (key, values) in enumerate(grid.items())
        }
    out = tmp_path / path.name
    out.write_text(yaml.safe_dump(data), encoding="utf-8")
    return out


def test_there_are_shipped_specs():
    assert SPECS


@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_shipped_spec_validates_in_full(path):
    assert load_spec(path).name == path.stem


@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_shipped_spec_runs_from_the_cli(path, tmp_path):
    result = CliRunner().invoke(app, ["run", str(shrink(path, tmp_path))])
    assert result.exit_code == 0, result.output
    assert "p99" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_shipped_spec_windows_sum_to_its_totals(path, tmp_path):
    """Run with a time series (windows of a tenth of the run), every shipped experiment's
    windows add up to its totals, and conservation holds in every window."""
    from experiments.runner import run_experiment
    from experiments.store import run_sweep
    from tests.experiments.test_timeseries import check_sums

    short = shrink(path, tmp_path)
    data = yaml.safe_load(short.read_text(encoding="utf-8"))
    data["timeseries"] = {"window": data["duration"] / 10}
    short.write_text(yaml.safe_dump(data), encoding="utf-8")
    spec = load_spec(short)
    if spec.sweep is None:
        results = [run_experiment(spec)]
    else:
        points = run_sweep(spec)
        assert all(p.result is not None for p in points), [p.error for p in points]
        results = [p.result for p in points if p.result is not None]
    for result in results:
        check_sums(result)
        assert result.timeseries is not None and len(result.timeseries.starts_s) == 10
        assert len(result.faults or []) == len(spec.faults)


POLICY_SPECS = [
    p
    for p in SPECS
    if yaml.safe_load(p.read_text(encoding="utf-8")).get("policies")
    or "annotations" in p.read_text(encoding="utf-8")
]


@pytest.mark.parametrize("path", POLICY_SPECS, ids=[p.stem for p in POLICY_SPECS])
def test_a_policy_spec_json_carries_the_routers_counters(path, tmp_path):
    result = CliRunner().invoke(app, ["run", "--json", str(shrink(path, tmp_path))])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)  # warnings go to stderr
    traffic = data["traffic"]
    assert traffic is not None
    counted = {name for counters in traffic["destinations"].values() for name in counters}
    counted |= {name for counters in traffic["proxies"].values() for name in counters}
    # Envoy's (or Traefik's) counters by their stat names: tries, retries, overflows,
    # timeouts, ejections, denials, rate limits, open breakers...
    assert counted, traffic
