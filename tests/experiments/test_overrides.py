"""Overrides by dotted path (--set), through shorthand names and into lists."""

from __future__ import annotations

import pytest

from experiments.overrides import apply_overrides
from experiments.spec import SpecError, spec_from_dict

BASE = {
    "topology": "chain",
    "mesh": "istio-1.8",
    "workload": {"kind": "open_loop", "rate_rps": 10},
    "duration": "20s",
    "faults": [{"kind": "control_plane_outage", "start": "5s", "duration": "2s"}],
}


def test_a_path_goes_through_a_profile_given_by_name():
    spec = spec_from_dict(BASE, overrides=["mesh.overrides.proxy.concurrency=4"])
    assert spec.mesh.profile == "istio-1.8"
    assert spec.mesh.resolve().proxy.concurrency == 4


def test_a_path_goes_through_a_catalog_topology_given_by_name():
    spec = spec_from_dict(BASE, overrides=["topology.params.n=5"])
    assert len(spec.resolve_topology().call_graph.services) == 5


def test_a_number_indexes_a_list():
    spec = spec_from_dict(BASE, overrides=["faults.0.duration=4s"])
    assert spec.faults[0].duration == 4.0


def test_an_index_past_the_end_is_an_error_naming_the_path():
    with pytest.raises(SpecError, match=r"faults\.3: no item 3 in a list of 1"):
        spec_from_dict(BASE, overrides=["faults.3.duration=4s"])


def test_overrides_leave_the_input_alone():
    data = {"workload": {"kind": "open_loop", "rate_rps": 10}}
    changed = apply_overrides(data, ["workload.rate_rps=500"])
    assert changed["workload"]["rate_rps"] == 500
    assert data["workload"]["rate_rps"] == 10


def test_a_missing_workload_kind_says_which_kinds_there_are():
    data = {**BASE, "workload": {"rate_rps": 10}}
    with pytest.raises(SpecError, match=r"workload: kind is required: open_loop"):
        spec_from_dict(data)
