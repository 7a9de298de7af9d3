"""The closed loop paces its calls as fortio's periodic runner does (fortio
``periodic/periodic.go``: ``runQPSSetup``, ``runMaxQPSSetup``, ``runOne``, ``getJitter``).

The load generator's mesh is replaced by a scripted one: each call's reply comes back after a
delay the test chooses (per connection and call), so the traces below are exact: the time of
every send, by connection, against the schedule fortio computes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from pydantic import ValidationError

from experiments.profiles import resolve_mesh
from models.messages import Response
from models.no_mesh import NoMeshSpec
from models.simulation import Simulation
from models.workload import ClosedLoopSpec, fortio_plan
from sim.network import NetworkSpec
from topologies import CallGraphSpec, ClusterSpec, NodeSpec, ServiceSpec, TopologySpec

OK = Response(200, 0)

TOPOLOGY = TopologySpec(
    name="one",
    cluster=ClusterSpec(nodes=[NodeSpec(name="node-0")]),
    call_graph=CallGraphSpec(services=[ServiceSpec(name="srv")], entry="srv"),
)


class ScriptedMesh:
    """Answers call ``i`` of connection ``k`` after ``delay(k, i)`` seconds, and records the
    time of every send by connection (connections are numbered in the order they first
    send: all of them send at 0, in order, unless staggered)."""

    def __init__(self, env: Any, delay: Callable[[int, int], float]) -> None:
        self.env = env
        self.delay = delay
        self.sends: dict[int, list[float]] = {}
        self._numbers: dict[int, int] = {}

    def send(self, src: Any, host: str, request: Any, parent: Any, slot: int = 0) -> None:
        k = self._numbers.setdefault(id(parent), len(self._numbers))
        times = self.sends.setdefault(k, [])
        timeout = self.env.timeout(self.delay(k, len(times)))
        times.append(self.env.now)
        timeout.callbacks.append(lambda _: parent.on_reply(slot, OK))


def run(
    spec: ClosedLoopSpec, delay: Callable[[int, int], float], duration_s: float
) -> tuple[ScriptedMesh, Simulation]:
    sim = Simulation(TOPOLOGY, NoMeshSpec(), spec, seed=3, duration_s=duration_s)
    mesh = ScriptedMesh(sim.env, delay)
    sim.client.mesh = mesh  # type: ignore[assignment]
    sim.run()
    return mesh, sim


def test_by_default_every_connection_starts_at_once_and_keeps_its_own_schedule():
    # -c 4 -qps 400: 100 calls a second per connection, call i due at i / 100.
    mesh, _ = run(ClosedLoopSpec(connections=4, qps=400), lambda k, i: 0.001 * (k + 1), 0.1)
    assert sorted(mesh.sends) == [0, 1, 2, 3]
    for k in range(4):
        assert mesh.sends[k] == [i / 100.0 for i in range(10)], k


def test_uniform_staggers_the_connections_over_one_period():
    # fortio: thread k sleeps d - d / c * (c - k) first, d = 1 / perThreadQPS = 10 ms.
    mesh, _ = run(ClosedLoopSpec(connections=4, qps=400, uniform=True), lambda k, i: 0.001, 0.1)
    for k in range(4):
        offset = 0.01 - 0.01 / 4 * (4 - k)
        assert offset == pytest.approx(k * 0.0025, abs=1e-15)
        assert mesh.sends[k] == [offset + i / 100.0 for i in range(10)]


def late_second_reply(k: int, i: int) -> float:
    """Replies take 1 ms, except call 1's: 35 ms, past the due times of calls 2, 3 and 4."""
    return 0.035 if i == 1 else 0.001


def test_a_late_connection_sends_at_once_until_it_is_back_on_its_schedule():
    mesh, _ = run(ClosedLoopSpec(connections=1, qps=100), late_second_reply, 0.075)
    # Call 1 (sent at 10 ms) is answered at 45 ms: calls 2, 3 and 4 (due at 20, 30 and 40
    # ms) go back to back as each reply comes (45, 46, 47 ms); call 5 is due at 50 ms, ahead
    # of the reply at 48 ms: the connection sleeps until then. No call is skipped.
    assert mesh.sends[0] == pytest.approx([0.0, 0.01, 0.045, 0.046, 0.047, 0.05, 0.06, 0.07])


def test_nocatchup_skips_the_calls_whose_time_has_passed():
    spec = ClosedLoopSpec(connections=1, qps=100, nocatchup=True)
    mesh, _ = run(spec, late_second_reply, 0.075)
    # At 45 ms calls 2, 3 and 4 are late: fortio skips them and sleeps until call 5's time.
    assert mesh.sends[0] == pytest.approx([0.0, 0.01, 0.05, 0.06, 0.07])


def test_jitter_moves_each_sleep_within_ten_percent_and_never_the_schedule():
    spec = ClosedLoopSpec(connections=1, qps=100, jitter=True)
    mesh, sim = run(spec, lambda k, i: 0.004, 10.0)
    sends = mesh.sends[0]
    assert sends[0] == 0.0
    ratios = []
    for i in range(1, len(sends)):
        due = i / 100.0  # the schedule does not drift: each sleep aims at call i's time
        sleep = due - (sends[i - 1] + 0.004)  # from the previous reply
        assert sleep > 0
        ratios.append((sends[i] - due) / sleep)
    assert len(ratios) > 990
    assert all(-0.1 - 1e-9 <= r <= 0.1 + 1e-9 for r in ratios)
    # The draws cover the range (fortio's getJitter: uniform on [-sleep/10, +sleep/10]).
    assert min(ratios) < -0.098 and max(ratios) > 0.098
    assert sum(r < 0 for r in ratios) == pytest.approx(len(ratios) / 2, abs=80)
    # Determinism: the same seed, the same draws.
    again, _ = run(spec, lambda k, i: 0.004, 10.0)
    assert again.sends == mesh.sends


def test_jitter_leaves_a_late_call_at_once():
    spec = ClosedLoopSpec(connections=1, qps=100, jitter=True)
    mesh, _ = run(spec, late_second_reply, 0.048)
    # Call 1 went at its (jittered) time; the three calls it made late go at each reply,
    # unmoved (fortio's getJitter of a negative sleep is 0).
    sends = mesh.sends[0]
    assert sends[1] != 0.01
    assert sends[2:5] == [sends[1] + 0.035, sends[1] + 0.035 + 0.001, sends[1] + 0.035 + 0.002]


def test_qps_0_sends_back_to_back():
    mesh, _ = run(ClosedLoopSpec(connections=2, qps=0), lambda k, i: 0.001 * (k + 1), 0.01)
    assert mesh.sends[0] == pytest.approx([0.001 * i for i in range(10)])
    assert mesh.sends[1] == pytest.approx([0.002 * i for i in range(5)])


@pytest.mark.parametrize(
    ("connections", "qps", "exactly", "calls"),
    [
        # qps > 0 (runQPSSetup): each thread exactly // threads, the first the remainder.
        (3, 300, 10, (4, 3, 3)),
        (16, 1000, 100, (10,) + (6,) * 15),
        # fewer than 2 calls per thread: threads lowered to exactly // 2.
        (4, 100, 5, (3, 2)),
        # fewer than 2 calls: 2 calls on 1 thread.
        (4, 100, 1, (2,)),
        # qps 0 (runMaxQPSSetup): exactly // c each, the first exactly % c more.
        (4, 0, 10, (4, 2, 2, 2)),
    ],
)
def test_exactly_is_split_over_the_connections_as_fortio_splits_it(
    connections, qps, exactly, calls
):
    spec = ClosedLoopSpec(connections=connections, qps=qps, exactly=exactly)
    plan = fortio_plan(spec)
    assert plan.calls == calls
    assert plan.threads == len(calls)
    mesh, sim = run(spec, lambda k, i: 0.0001, 1.0)
    assert tuple(len(mesh.sends[k]) for k in sorted(mesh.sends)) == calls
    assert sim.workload.stats.sent == sum(calls)


def test_lowered_threads_share_the_rate():
    # -c 4 -qps 100 -n 5: 2 threads at 50 calls a second each (perThreadQPS = qps / threads).
    mesh, _ = run(ClosedLoopSpec(connections=4, qps=100, exactly=5), lambda k, i: 0.001, 1.0)
    assert mesh.sends == {0: [0.0, 0.02, 0.04], 1: [0.0, 0.02]}


def test_without_exactly_each_connection_runs_until_the_run_ends():
    assert fortio_plan(ClosedLoopSpec(connections=3, qps=30)).calls is None
    mesh, sim = run(ClosedLoopSpec(connections=3, qps=30), lambda k, i: 0.001, 1.0)
    assert [len(mesh.sends[k]) for k in range(3)] == [10, 10, 10]


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"qps": 0, "jitter": True}, "jitter"),
        ({"qps": 0, "uniform": True}, "uniform"),
        ({"qps": 0, "nocatchup": True}, "nocatchup"),
        ({"qps": 0, "connections": 4, "exactly": 3}, "exactly (3) must be at least connections"),
        ({"exactly": 0}, "exactly"),
        ({"qps": -1}, "qps"),
        ({"connections": 0}, "connections"),
        ({"jitter": "sometimes"}, "jitter"),
    ],
)
def test_bad_values_are_refused_naming_the_field(fields, named):
    with pytest.raises(ValidationError) as raised:
        ClosedLoopSpec(**fields)
    assert named in str(raised.value)


# --- -keepalive=false: a new connection per call ------------------------------------------

HOP = 2.0**-12  # one-way propagation (s): binary fractions, so the sums below are exact
W = 2.0**-10  # service time (s)
SERIALISE = 1024 / 2**30  # a 1 KiB message at 2**30 bytes a second (s)


def two_nodes() -> TopologySpec:
    network = NetworkSpec(same_node=HOP / 4, same_zone=HOP, cross_zone=HOP, bandwidth=2**30)
    service = ServiceSpec(
        name="srv", service_time=W, request_size_bytes=1024, response_size_bytes=1024
    )
    return TopologySpec(
        name="two",
        cluster=ClusterSpec(
            nodes=[NodeSpec(name="node-0"), NodeSpec(name="node-1")], network=network
        ),
        call_graph=CallGraphSpec(services=[service], entry="srv"),
        placement={"strategy": "explicit", "assignments": {"srv-0": "node-1"}},
    )


def latencies(sim: Simulation) -> list[tuple[float, float]]:
    """Run ``sim``; (start, latency) of every call, as fortio times it."""
    found: list[tuple[float, float]] = []
    done = sim.workload.done

    def record(request: Any, response: Any) -> None:
        found.append((request.start_s, sim.env.now - request.start_s))
        done(request, response)

    sim.workload.done = record  # type: ignore[method-assign]
    sim.run()
    return found


@pytest.mark.parametrize("keepalive", [True, False])
def test_without_keepalive_each_call_pays_a_handshake_to_the_server(keepalive):
    spec = ClosedLoopSpec(connections=1, qps=100, keepalive=keepalive)
    sim = Simulation(two_nodes(), NoMeshSpec(), spec, seed=1, duration_s=0.1, client_node="node-0")
    found = latencies(sim)
    one_way = HOP + SERIALISE
    handshake = 0.0 if keepalive else 2 * HOP  # node-0 to node-1 and back
    assert [start for start, _ in found] == [i / 100.0 for i in range(10)]  # on schedule
    assert all(latency == 2 * one_way + W + handshake for _, latency in found), found


def test_without_keepalive_the_sidecar_accepts_the_connection_and_keeps_its_upstream_pool():
    spec = ClosedLoopSpec(connections=2, qps=200, keepalive=False)
    mesh = resolve_mesh("istio-1.8", {"proxy": {"io": None, "io_delay": 0.0}})
    sim = Simulation(two_nodes(), mesh, spec, seed=1, duration_s=0.1, client_node="node-0")
    # The client's own sidecar, on its node, accepts each new connection: a same-node round
    # trip, not one to the server's node.
    assert sim.workload.connect_rtt() == 2 * (HOP / 4)
    out = sim.run()
    assert out.workload.sent == 20
    # The sidecar's upstream connections are pooled as ever: two (one per connection in
    # flight at once), not one per call.
    client_sidecar = next(p for p in sim.mesh.proxies() if "loadgen" in p.scope)
    assert sum(pool.size for pool in client_sidecar.pools.values()) == 2
