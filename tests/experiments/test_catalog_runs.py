"""Every shipped topology runs, briefly, and every shipped profile validates (Mesa's smoke test
of every example)."""

from __future__ import annotations

import pytest

from experiments.profiles import list_profiles, load_profile, resolve_mesh
from experiments.runner import run_experiment
from experiments.spec import spec_from_dict
from topologies import CATALOG

# A request makes a few visits per service at most (random_dag's defaults: 2.4 visits per
# request in all, topologies.visits), on single-worker services of up to ~3 ms; 20 rps keeps
# every catalog topology far from saturation.
RATE_RPS = 20


@pytest.mark.parametrize("name", sorted(CATALOG))
def test_catalog_topology_runs_without_a_mesh(name):
    spec = spec_from_dict(
        {
            "name": f"smoke-{name}",
            "topology": name,
            "mesh": "none",
            "workload": {"kind": "open_loop", "rate_rps": RATE_RPS},
            "duration": "2s",
            "warmup": "0.2s",
            "seed": 1,
        }
    )
    result = run_experiment(spec)
    e2e = result.end_to_end
    assert e2e.requests > 0
    assert e2e.error_rate == 0.0
    assert result.conservation.failed == 0
    assert result.conservation.balanced
    assert result.services, "no per-service results"
    assert e2e.latency.p99_ms > 0


def test_there_are_profiles():
    assert "none" in list_profiles()


@pytest.mark.parametrize("name", list_profiles())
def test_profile_validates(name):
    profile = load_profile(name)
    assert profile.name == name
    assert profile.description
    mesh = resolve_mesh(name)
    assert mesh is not None
    # And it is accepted where users name it, in a spec.
    spec = spec_from_dict(
        {
            "topology": "chain",
            "mesh": name,
            "workload": {"kind": "open_loop", "rate_rps": 10},
            "duration": "1s",
            "warmup": "0s",
        }
    )
    assert spec.mesh.profile == name
