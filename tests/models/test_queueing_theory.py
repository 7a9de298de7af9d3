"""meshsim with no mesh against queueing theory: M/M/1, M/M/c, M/D/1, Jackson, Little.

Each case runs enough requests over several replications (seeds fixed) for the estimate of
the mean response time to be well inside the 3 % tolerance the foundation issue asks for.
"""

from __future__ import annotations

import math

import pytest

from experiments.runner import run_experiment
from experiments.spec import spec_from_dict
from tests.conftest import single_node_topology

TOLERANCE = 0.03


def erlang_c(c: int, offered: float) -> float:
    """Probability that an arrival waits in M/M/c, offered load a = lambda / mu."""
    rho = offered / c
    top = offered**c / math.factorial(c) / (1 - rho)
    bottom = sum(offered**k / math.factorial(k) for k in range(c)) + top
    return top / bottom


def run_mean_ms(services, entry, rate_rps, duration="120s", replications=4, seed=7):
    spec = spec_from_dict(
        {
            "topology": single_node_topology(services, entry),
            "workload": {"kind": "open_loop", "rate_rps": rate_rps},
            "duration": duration,
            "warmup": "5s",
            "seed": seed,
            "replications": replications,
        }
    )
    return run_experiment(spec)


def service(name, service_time, workers=1, steps=()):
    return {"name": name, "workers": workers, "service_time": service_time, "steps": list(steps)}


def test_mm1_mean_response_time():
    mu, lam = 1000.0, 600.0
    result = run_mean_ms([service("s0", {"kind": "exponential", "mean": 1 / mu})], "s0", lam)
    expected_ms = 1e3 / (mu - lam)
    assert result.end_to_end.latency.mean_ms == pytest.approx(expected_ms, rel=TOLERANCE)


def test_mmc_mean_response_time_erlang_c():
    c, mu, lam = 4, 500.0, 1600.0
    result = run_mean_ms(
        [service("s0", {"kind": "exponential", "mean": 1 / mu}, workers=c)], "s0", lam
    )
    wait = erlang_c(c, lam / mu) / (c * mu - lam)
    expected_ms = 1e3 * (wait + 1 / mu)
    assert result.end_to_end.latency.mean_ms == pytest.approx(expected_ms, rel=TOLERANCE)


def test_md1_mean_response_time_pollaczek_khinchine():
    mu, lam = 1000.0, 700.0
    rho = lam / mu
    result = run_mean_ms([service("s0", "1ms")], "s0", lam)
    expected_ms = 1e3 * (1 / mu + rho / (2 * mu * (1 - rho)))
    assert result.end_to_end.latency.mean_ms == pytest.approx(expected_ms, rel=TOLERANCE)


def test_tandem_chain_is_the_sum_of_its_mm1_stages_jackson():
    means = [0.0005, 0.001, 0.0008]
    lam = 500.0
    services = [
        service(
            f"s{i}",
            {"kind": "exponential", "mean": m},
            steps=[f"s{i + 1}"] if i + 1 < len(means) else [],
        )
        for i, m in enumerate(means)
    ]
    result = run_mean_ms(services, "s0", lam)
    expected_ms = 1e3 * sum(1 / (1 / m - lam) for m in means)
    assert result.end_to_end.latency.mean_ms == pytest.approx(expected_ms, rel=TOLERANCE)
    for i, _m in enumerate(means):
        # Each stage, seen alone, is an M/M/1 queue (Burke: its departures are Poisson).
        stage = result.services[f"s{i}"]
        own_ms = 1e3 * sum(1 / (1 / mm - lam) for mm in means[i:])
        assert stage.latency.mean_ms == pytest.approx(own_ms, rel=TOLERANCE)


def test_littles_law_from_the_recorded_in_flight_level():
    # With network delays and a fan-out, so the path is more than one queue.
    services = [
        service("front", {"kind": "exponential", "mean": 0.0005}, workers=2, steps=[["a", "b"]]),
        service("a", {"kind": "exponential", "mean": 0.001}, workers=2),
        service("b", {"kind": "lognormal", "mean": 0.002, "p99": 0.01}, workers=4),
    ]
    spec = spec_from_dict(
        {
            "topology": {
                "cluster": {"nodes": [{"name": "n0"}, {"name": "n1"}]},
                "call_graph": {"services": services, "entry": "front"},
            },
            "workload": {"kind": "open_loop", "rate_rps": 800},
            "duration": "60s",
            "warmup": "5s",
            "seed": 3,
            "replications": 2,
        }
    )
    result = run_experiment(spec)
    e2e = result.end_to_end
    little = e2e.throughput_rps * e2e.latency.mean_ms / 1e3
    assert result.in_flight_mean == pytest.approx(little, rel=TOLERANCE)
