"""Invariants of every run: no request is lost, and latency is at least its fixed delays.

The first property runs short experiments over random catalog topologies and workloads (open
and closed loop, saturated or not) and checks the conservation of requests: every request
sent is completed, failed, or still in flight, and a closed loop never has more in flight
than it has connections. The second checks the end-to-end latency of a chain against the sum
of its constant service times and network delays.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from experiments.runner import run_experiment
from experiments.spec import spec_from_dict
from tests.conftest import single_node_topology

topologies = st.one_of(
    st.builds(lambda n: {"catalog": "chain", "params": {"n": n}}, st.integers(1, 4)),
    st.builds(
        lambda width, depth: {"catalog": "fanout", "params": {"width": width, "depth": depth}},
        st.integers(1, 3),
        st.integers(1, 2),
    ),
    st.builds(
        lambda n, seed: {"catalog": "random_dag", "params": {"n": n, "seed": seed}},
        st.integers(2, 8),
        st.integers(0, 10_000),
    ),
)

workloads = st.one_of(
    st.builds(
        lambda rate: {"kind": "open_loop", "rate_rps": rate},
        st.floats(10.0, 2000.0),
    ),
    st.builds(
        lambda connections, qps: {"kind": "closed_loop", "connections": connections, "qps": qps},
        st.integers(1, 20),
        st.one_of(st.just(0.0), st.floats(50.0, 2000.0)),
    ),
)


@st.composite
def times(draw: st.DrawFn) -> tuple[float, float]:
    """A duration of 1 to 2 simulated seconds and a warm-up shorter than it."""
    duration = draw(st.floats(1.0, 2.0))
    warmup = draw(st.floats(0.0, 0.9)) * duration
    return duration, warmup


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    topology=topologies,
    workload=workloads,
    seed=st.integers(0, 2**32 - 1),
    run_times=times(),
)
def test_every_request_is_completed_failed_or_in_flight(topology, workload, seed, run_times):
    duration, warmup = run_times
    spec = spec_from_dict(
        {
            "topology": topology,
            "workload": workload,
            "duration": duration,
            "warmup": warmup,
            "seed": seed,
        }
    )
    result = run_experiment(spec)
    c = result.conservation
    assert c.sent == c.completed + c.failed + c.in_flight, c
    assert c.balanced
    assert c.in_flight >= 0, c
    assert min(c.sent, c.completed, c.failed) >= 0, c
    # Measured requests are the finished ones that started after the warm-up.
    assert result.end_to_end.requests <= c.completed + c.failed, (result.end_to_end, c)
    if workload["kind"] == "closed_loop":
        assert c.in_flight <= workload["connections"], c
        assert result.in_flight_mean <= workload["connections"] + 1e-9
    assert result.in_flight_mean >= 0.0


# A chain s0 -> s1 -> s2 on one node, with constant service times and a constant network.
SERVICE_TIMES_S = (0.001, 0.002, 0.003)
SAME_NODE_S = 50e-6
BANDWIDTH_BPS = 1e9  # bits per second: "1Gbps" = 125e6 bytes per second
SIZE_BYTES = 12_500  # every request and response: 100 us to serialise at 1 Gbps
NETWORK = {
    "same_node": f"{SAME_NODE_S * 1e6:g}us",
    "same_zone": "200us",
    "cross_zone": "1ms",
    "bandwidth": "1Gbps",
}


def chain_spec(workload: dict, duration: str = "3s") -> dict:
    services = [
        {
            "name": f"s{i}",
            "service_time": f"{t * 1e3:g}ms",
            "request_size_bytes": SIZE_BYTES,
            "response_size_bytes": SIZE_BYTES,
            "steps": [f"s{i + 1}"] if i + 1 < len(SERVICE_TIMES_S) else [],
        }
        for i, t in enumerate(SERVICE_TIMES_S)
    ]
    return {
        "topology": single_node_topology(services, "s0", network=NETWORK),
        "workload": workload,
        "duration": duration,
        "warmup": "0.5s",
        "seed": 5,
    }


def fixed_delay_s() -> float:
    """Service times, plus, per hop (client -> s0, s0 -> s1, s1 -> s2), a request and a
    response, each with propagation and serialisation."""
    hop = 2 * (SAME_NODE_S + SIZE_BYTES / (BANDWIDTH_BPS / 8))
    return sum(SERVICE_TIMES_S) + len(SERVICE_TIMES_S) * hop


@pytest.mark.parametrize("rate_rps", [50.0, 250.0])
def test_latency_is_at_least_the_sum_of_fixed_delays(rate_rps):
    # 250 rps puts s2 (3 ms) at 75 % utilisation: requests queue, but none is faster than
    # its fixed delays.
    result = run_experiment(spec_from_dict(chain_spec({"kind": "open_loop", "rate_rps": rate_rps})))
    histogram = result.histogram()
    assert histogram.count > 0
    floor_s = fixed_delay_s()
    assert histogram.min >= floor_s * (1 - 1e-9), (histogram.min, floor_s)
    latency = result.end_to_end.latency
    # Quantiles are estimates within 1 % of some recorded value, which is >= the floor.
    for quantile_ms in (latency.p50_ms, latency.p90_ms, latency.p99_ms, latency.max_ms):
        assert quantile_ms >= floor_s * 1e3 * (1 - 0.01)
    if rate_rps > 100:
        assert histogram.max > floor_s * 1.01, "expected some queueing at this rate"


def test_latency_without_queueing_is_the_sum_of_fixed_delays():
    # One closed-loop connection at 20 qps: each request finishes long before the next
    # starts, so no request ever queues.
    result = run_experiment(
        spec_from_dict(chain_spec({"kind": "closed_loop", "connections": 1, "qps": 20}))
    )
    histogram = result.histogram()
    floor_s = fixed_delay_s()
    assert histogram.count > 20
    assert histogram.min == pytest.approx(floor_s, rel=1e-9)
    assert histogram.max == pytest.approx(floor_s, rel=0.01)
    assert result.end_to_end.latency.p50_ms == pytest.approx(floor_s * 1e3, rel=0.01)
    assert result.end_to_end.latency.max_ms == pytest.approx(floor_s * 1e3, rel=0.01)


def test_latency_at_a_very_low_open_loop_rate_is_the_sum_of_fixed_delays():
    # Poisson arrivals at 0.1 rps against a 6.3 ms path: a request queues only when it
    # follows the previous one by less than ~3 ms, which has probability ~0.03 % per gap
    # (~1 % over the ~40 gaps of a run, whatever the seed; none with this one).
    result = run_experiment(
        spec_from_dict(chain_spec({"kind": "open_loop", "rate_rps": 0.1}, duration="400s"))
    )
    floor_s = fixed_delay_s()
    assert result.histogram().count > 10
    assert result.histogram().min == pytest.approx(floor_s, rel=1e-9)
    assert result.end_to_end.latency.max_ms == pytest.approx(floor_s * 1e3, rel=0.01)
