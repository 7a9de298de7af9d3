"""Determinism: the same spec and seed give the same result; another seed, another result;
and a component's draws do not depend on which other components exist (named streams)."""

from __future__ import annotations

import math
from typing import Any

from experiments.runner import run_experiment
from experiments.spec import spec_from_dict
from tests.conftest import single_node_topology

LATENCY_FIELDS = ("mean_ms", "p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms")


def bookinfo_spec(seed: int = 11, replications: int = 1) -> dict[str, Any]:
    return {
        "topology": "bookinfo",
        "workload": {"kind": "open_loop", "rate_rps": 200},
        "duration": "3s",
        "warmup": "0.5s",
        "seed": seed,
        "replications": replications,
    }


def comparable(data: dict[str, Any]) -> dict[str, Any]:
    """A result as data, without the wall time (the one field that may differ)."""
    dumped = run_experiment(spec_from_dict(data)).model_dump()
    dumped.pop("wall_time_s")
    return dumped


def test_same_spec_and_seed_give_identical_results():
    first = comparable(bookinfo_spec())
    second = comparable(bookinfo_spec())
    assert first["end_to_end"]["requests"] > 0
    assert first == second


def test_replications_are_deterministic_too():
    first = comparable(bookinfo_spec(replications=2))
    second = comparable(bookinfo_spec(replications=2))
    assert len(first["replication_seeds"]) == 2
    assert first == second


def test_another_seed_gives_other_latencies():
    a = run_experiment(spec_from_dict(bookinfo_spec(seed=11)))
    b = run_experiment(spec_from_dict(bookinfo_spec(seed=12)))
    assert a.replication_seeds != b.replication_seeds
    latencies_a = [getattr(a.end_to_end.latency, f) for f in LATENCY_FIELDS]
    latencies_b = [getattr(b.end_to_end.latency, f) for f in LATENCY_FIELDS]
    assert latencies_a != latencies_b
    assert a.latency_histogram != b.latency_histogram


def service(name: str, mean_s: float, steps: list[Any]) -> dict[str, Any]:
    return {
        "name": name,
        "service_time": {"kind": "exponential", "mean": mean_s},
        "steps": steps,
    }


def two_step_spec(with_zz: bool) -> dict[str, Any]:
    """s0 calls s1; in B, s0 then calls zz, in a second sequential step after s1."""
    steps: list[Any] = ["s1", "zz"] if with_zz else ["s1"]
    services = [service("s0", 0.001, steps), service("s1", 0.002, [])]
    if with_zz:
        services.append(service("zz", 0.0015, []))
    return {
        "topology": single_node_topology(services, "s0"),
        "workload": {"kind": "open_loop", "rate_rps": 300},
        "duration": "4s",
        "warmup": "0.5s",
        "seed": 3,
    }


def test_an_unrelated_service_leaves_another_services_draws_unchanged():
    a = run_experiment(spec_from_dict(two_step_spec(with_zz=False)))
    b = run_experiment(spec_from_dict(two_step_spec(with_zz=True)))
    assert "zz" not in a.services and b.services["zz"].requests > 0

    s1_a, s1_b = a.services["s1"], b.services["s1"]
    assert s1_a.requests > 0
    assert s1_a.requests == s1_b.requests
    assert s1_a.latency.count == s1_b.latency.count
    for field in LATENCY_FIELDS:
        assert getattr(s1_a.latency, field) == getattr(s1_b.latency, field), field
    assert s1_a == s1_b
    # s0's own arrivals and work are unchanged too: the same requests reach it.
    assert a.services["s0"].requests == b.services["s0"].requests

    # ... while the end-to-end latency now includes zz.
    e2e_a, e2e_b = a.end_to_end.latency, b.end_to_end.latency
    assert not math.isclose(e2e_a.mean_ms, e2e_b.mean_ms)
    assert e2e_b.mean_ms > e2e_a.mean_ms
