"""Services that misbehave on their own: injected errors, hangs and extra latency, decided on
each pod's own stream, and nothing at all for a well-behaved pod."""

from __future__ import annotations

import math
from typing import Any

import pytest
from pydantic import ValidationError

from models.messages import Request
from models.no_mesh import NoMeshSpec
from models.simulation import Simulation
from models.workload import ClosedLoopSpec, OpenLoopSpec
from sim.network import NetworkSpec
from topologies import (
    CallGraphSpec,
    ClusterSpec,
    MisbehaviourSpec,
    NodeSpec,
    ServiceSpec,
    StepSpec,
    TopologySpec,
    bookinfo,
)

W = 2.0**-10  # service time (s): binary fractions, so every sum below is exact
D = 2.0**-7  # extra latency (s)
HOP = 2.0**-12  # one-way propagation (s)
SERIALISE = 1024 / 2**30  # a 1 KiB message at 2**30 bytes a second (s)


def _chain(misbehaviour: dict[str, Any] | None, n: int = 3, at: int = -1, workers: int = 4):
    """A chain s0 -> s1 -> ... of constant service times on a network whose delays are
    binary fractions; ``s{at}`` misbehaves as given."""
    at = at % n
    services = [
        ServiceSpec(
            name=f"s{i}",
            service_time=W,
            workers=workers,
            request_size_bytes=1024,
            response_size_bytes=1024,
            steps=[StepSpec(calls=[{"service": f"s{i + 1}"}])] if i + 1 < n else [],
            misbehaviour=misbehaviour if i == at else None,
        )
        for i in range(n)
    ]
    network = NetworkSpec(same_node=HOP, same_zone=HOP, cross_zone=HOP, bandwidth=2**30)
    return TopologySpec(
        name="chain",
        cluster=ClusterSpec(nodes=[NodeSpec(name="node-0")], network=network),
        call_graph=CallGraphSpec(services=services, entry="s0"),
    )


def _sim(topology: TopologySpec, workload: Any, duration_s: float = 2.0, seed: int = 11):
    return Simulation(topology, NoMeshSpec(), workload, seed=seed, duration_s=duration_s)


def _within_binomial(k: int, n: int, p: float) -> bool:
    """``k`` successes of ``n`` tries is within 5 standard deviations of ``n p``."""
    return abs(k - n * p) <= 5 * math.sqrt(n * p * (1 - p))


def test_a_misbehaving_leaf_answers_its_error_status_on_about_error_ratio_of_requests():
    topology = _chain({"error_ratio": 0.2, "error_status": 500})
    out = _sim(topology, OpenLoopSpec(rate_rps=2000), duration_s=3.0).run()
    leaf, entry = out.services["s2"], out.services["s0"]
    assert leaf.count > 4000
    assert _within_binomial(leaf.injected_errors, leaf.count, 0.2), (
        leaf.injected_errors,
        leaf.count,
    )
    assert leaf.errors == leaf.injected_errors and leaf.hangs == 0
    # The callers answer with the leaf's status; nothing else fails.
    assert entry.errors == leaf.injected_errors and entry.injected_errors == 0
    w = out.workload
    assert w.status_codes.get(500, 0) == w.failed == leaf.injected_errors
    assert set(w.status_codes) == {200, 500}
    assert w.sent == w.completed + w.failed + w.in_flight_now


def test_an_injected_error_is_answered_at_once_without_the_downstream_calls():
    # One connection: at most one request in the chain at a time.
    topology = _chain({"error_ratio": 0.5}, at=0)
    out = _sim(topology, ClosedLoopSpec(connections=1, qps=0), duration_s=0.5).run()
    entry, middle = out.services["s0"], out.services["s1"]
    assert entry.injected_errors > 50
    forwarded = entry.count - entry.injected_errors  # the requests that went on
    assert forwarded - 1 <= middle.count <= forwarded  # one may be in s1 at the end
    # The fastest answer is an injected error: the entry's CPU and one round trip only.
    assert out.workload.latency.min == 2 * HOP + W + 2 * SERIALISE


def test_hangs_are_counted_and_never_answered():
    topology = _chain({"hang_ratio": 0.3, "error_ratio": 0.1}, at=1)
    out = _sim(topology, OpenLoopSpec(rate_rps=2000), duration_s=3.0).run()
    middle = out.services["s1"]
    decided = middle.count + middle.hangs  # answered (errors included) or hung
    assert _within_binomial(middle.hangs, decided, 0.3), (middle.hangs, decided)
    assert _within_binomial(middle.injected_errors, decided, 0.1)
    w = out.workload
    assert w.sent == w.completed + w.failed + w.in_flight_now
    assert middle.hangs <= w.in_flight_now <= middle.hangs + 20  # the rest: really in flight


def test_each_hang_holds_a_closed_loop_connection_forever():
    topology = _chain({"hang_ratio": 0.3}, at=2)
    out = _sim(topology, ClosedLoopSpec(connections=5, qps=0), duration_s=2.0).run()
    assert out.services["s2"].hangs == 5
    assert out.workload.in_flight_now == 5
    # The hung requests hold no worker: the leaf's CPU did its work and is idle.
    assert out.services["s2"].count >= 1


def _one_request_latency(topology: TopologySpec) -> float:
    """The latency of one request sent at t = 1 s through an idle chain (the workload's
    single request went at t = 0)."""
    sim = _sim(topology, ClosedLoopSpec(connections=1, qps=0.001), duration_s=2.0)
    env, seen = sim.env, []

    def user():
        yield env.timeout(1.0)
        start = env.now
        response = yield from sim.mesh.call(
            sim.client, "s0", Request("s0", 1024, 1024, "http1", start)
        )
        seen.append((response.status, env.now - start))

    env.process(user())
    sim.run()
    assert len(seen) == 1 and seen[0][0] == 200
    return seen[0][1]


@pytest.mark.parametrize("at", [0, 1, 2])
def test_extra_latency_adds_exactly_the_fixed_delay_on_an_idle_chain(at):
    base = _one_request_latency(_chain(None))
    assert base == 6 * HOP + 3 * W + 6 * SERIALISE  # three round trips, three services
    late = _one_request_latency(_chain({"extra_latency": D}, at=at))
    assert late == base + D


def test_extra_latency_holds_no_worker():
    topology = _chain({"extra_latency": D}, n=1, workers=1)
    sim = _sim(topology, ClosedLoopSpec(connections=1, qps=0.001), duration_s=1.0)
    env, pod, done = sim.env, sim.pods[0], []

    def one(i):
        response = yield from pod.handle(Request("s0", 1, 1, "http1", env.now))
        done.append((i, response.status, env.now - 0.5))

    def both():
        yield env.timeout(0.5)
        env.process(one(0))
        env.process(one(1))

    env.process(both())
    sim.run()
    # One worker: the second request computes after the first; the first's delay does not
    # hold the worker, so the second is answered one service time after the first.
    assert sorted(done) == [(0, 200, W + D), (1, 200, 2 * W + D)]


def test_an_exponential_extra_latency_adds_its_mean():
    base = _sim(_chain(None), ClosedLoopSpec(connections=1, qps=0), duration_s=2.0).run()
    spec = {"extra_latency": {"kind": "exponential", "mean": 0.002}}
    late = _sim(_chain(spec, at=1), ClosedLoopSpec(connections=1, qps=0), duration_s=2.0).run()
    n = late.workload.measured
    added = late.workload.latency.mean - base.workload.latency.mean
    assert n > 300
    assert abs(added - 0.002) < 5 * 0.002 / math.sqrt(n)  # the mean of n exponential draws


def test_a_well_behaved_pod_makes_no_misbehaviour_stream():
    sim = _sim(bookinfo(), OpenLoopSpec(rate_rps=500), duration_s=1.0)
    sim.run()
    assert all(pod._misbehaviour is None for pod in sim.pods)
    assert not [s for s in sim.world.streams.scopes() if s.endswith(".misbehaviour")]


def _with_misbehaviour(topology: TopologySpec, name: str, spec: dict[str, Any]) -> TopologySpec:
    services = [
        s.model_copy(update={"misbehaviour": MisbehaviourSpec(**spec)}) if s.name == name else s
        for s in topology.call_graph.services
    ]
    graph = CallGraphSpec(services=services, entry=topology.call_graph.entry)
    return topology.model_copy(update={"call_graph": graph})


def test_a_misbehaving_pod_draws_on_its_own_stream_only():
    workload = OpenLoopSpec(rate_rps=500)
    base = _sim(bookinfo(), workload, duration_s=1.0)
    base_out = base.run()
    bad = _sim(_with_misbehaviour(bookinfo(), "reviews-v3", {"error_ratio": 0.5}), workload, 1.0)
    bad_out = bad.run()
    added = set(bad.world.streams.scopes()) - set(base.world.streams.scopes())
    assert added == {"reviews-v3-0.misbehaviour"}
    assert set(base.world.streams.scopes()) <= set(bad.world.streams.scopes())
    assert "reviews-v3-0.misbehaviour" in bad.world.streams.seeded_scopes()
    # The arrivals are drawn as before (common random numbers): the same requests are sent.
    assert bad_out.workload.sent == base_out.workload.sent
    assert bad_out.services["reviews-v3"].injected_errors > 0
    assert bad_out.services["ratings"].count < base_out.services["ratings"].count


def test_a_misbehaviour_of_zero_changes_nothing():
    """All ratios 0 and no extra latency: same draws, same events, same latencies."""
    workload = OpenLoopSpec(rate_rps=800)
    runs = []
    for topology in (bookinfo(), _with_misbehaviour(bookinfo(), "details", {})):
        sim = _sim(topology, workload, duration_s=1.0)
        events = [0]
        step = sim.env.step

        def counted(step=step, events=events):
            events[0] += 1
            step()

        sim.env.step = counted  # type: ignore[method-assign]
        out = sim.run()
        runs.append((events[0], out.workload.sent, out.workload.latency.mean))
    assert runs[0] == runs[1]
    assert runs[0][0] > 1000


@pytest.mark.parametrize(
    ("fields", "where", "says"),
    [
        ({"error_ratio": 1.5}, "misbehaviour.error_ratio", "less than or equal to 1"),
        ({"hang_ratio": -0.1}, "misbehaviour.hang_ratio", "greater than or equal to 0"),
        ({"error_ratio": 0.7, "hang_ratio": 0.4}, "misbehaviour", "error_ratio + hang_ratio"),
        ({"error_status": 200}, "misbehaviour.error_status", "greater than or equal to 400"),
        ({"error_status": 600}, "misbehaviour.error_status", "less than or equal to 599"),
        ({"extra_latency": "soon"}, "misbehaviour.extra_latency", ""),
        ({"eror_ratio": 0.1}, "misbehaviour.eror_ratio", "Extra inputs"),
    ],
)
def test_a_bad_misbehaviour_is_a_validation_error_naming_the_field(fields, where, says):
    with pytest.raises(ValidationError) as info:
        ServiceSpec(name="reviews-v3", misbehaviour=fields)
    errors = info.value.errors()
    assert len(errors) == 1
    assert ".".join(str(part) for part in errors[0]["loc"]) == where
    assert says in errors[0]["msg"]
