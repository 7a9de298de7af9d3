"""The CPU servers: the exact FIFO timeline against hand-computed traces and Little's law."""

from __future__ import annotations

import numpy as np
import pytest
import simpy

from sim.servers import FifoServer, SharedCores, SharedServer


def visit(env, server, log, name, work):
    arrived = env.now
    wait = yield from server.execute(work)
    log.append((name, arrived, wait, env.now))


def arrivals(env, server, log, plan):
    for at, name, work in plan:
        if at > env.now:
            yield env.timeout(at - env.now)
        env.process(visit(env, server, log, name, work))


@pytest.mark.parametrize("kind", ["fifo", "contended", "contended-ps"])
def test_two_workers_fifo_trace(kind):
    env = simpy.Environment()
    if kind == "fifo":
        server = FifoServer(env, 2, "s", "app")
    else:
        discipline = "ps" if kind.endswith("ps") else "fifo"
        server = SharedServer(env, 2, "s", "app", SharedCores(env, 8, discipline))
    log = []
    plan = [(0.0, "a", 3.0), (0.0, "b", 1.0), (0.5, "c", 1.0), (0.5, "d", 2.0), (1.0, "e", 0.5)]
    env.process(arrivals(env, server, log, plan))
    env.run()
    # a on worker 1 [0,3]; b on worker 2 [0,1]; c waits for b [1,2]; d waits for c [2,4]...
    # FIFO: c takes the first free worker (b's, at 1), d the next (c's, at 2), e a's (at 3).
    assert sorted(log) == [
        ("a", 0.0, 0.0, 3.0),
        ("b", 0.0, 0.0, 1.0),
        ("c", 0.5, 0.5, 2.0),
        ("d", 0.5, 1.5, 4.0),
        ("e", 1.0, 2.0, 3.5),
    ]
    assert server.cpu_s == pytest.approx(7.5)
    assert server.visits == 5
    # Little: the area under the number in system is the sum of the sojourn times.
    assert server.mean_in_system() * env.now == pytest.approx(3 + 1 + 1.5 + 3.5 + 2.5)


def test_charged_work_delays_the_next_visit_but_not_the_current_one():
    env = simpy.Environment()
    server = FifoServer(env, 1, "s", "sidecar")
    log = []

    def first():
        yield from visit(env, server, log, "a", 1.0)
        server.charge(0.5)  # telemetry after the response

    env.process(first())
    env.process(arrivals(env, server, log, [(1.2, "b", 1.0)]))
    env.run()
    (a, b) = sorted(log)
    assert a == ("a", 0.0, 0.0, 1.0)
    # b arrives at 1.2 and finds the worker busy with a's telemetry until 1.5.
    assert b[:2] == ("b", 1.2) and b[2:] == pytest.approx((0.3, 2.5))
    assert server.cpu_s == pytest.approx(2.5)


def test_contended_servers_share_a_nodes_cores():
    env = simpy.Environment()
    cores = SharedCores(env, 1)
    one = SharedServer(env, 2, "one", "app", cores)
    two = SharedServer(env, 2, "two", "sidecar", cores)
    log = []
    env.process(visit(env, one, log, "a", 1.0))
    env.process(visit(env, two, log, "b", 1.0))
    env.run()
    # Each has free workers, but one core: the second waits for the first.
    assert sorted(log) == [("a", 0.0, 0.0, 1.0), ("b", 0.0, 1.0, 2.0)]


def test_mm1_mean_in_system_matches_littles_law_after_reset():
    env = simpy.Environment()
    server = FifoServer(env, 1, "s", "app")
    rng = np.random.default_rng(5)
    sojourns = []

    def one(work):
        start = env.now
        yield from server.execute(work)
        if start >= 100.0:
            sojourns.append(env.now - start)

    def source():
        while True:
            yield env.timeout(rng.exponential(1 / 600))
            env.process(one(rng.exponential(1 / 1000)))

    env.process(source())
    env.run(until=100.0)
    server.reset_stats()
    env.run(until=400.0)
    rate = len(sojourns) / 300.0
    assert server.mean_in_system() == pytest.approx(rate * np.mean(sojourns), rel=0.02)
    assert server.mean_in_system() == pytest.approx(0.6 / 0.4, rel=0.05)  # rho / (1 - rho)


def _fifo_by_arrival(bookings, workers):
    """Brute force: FIFO in arrival order (ties: booking order), earliest free worker."""
    import heapq

    free = [0.0] * workers
    out = {}
    for arrival, seq, work in sorted(bookings):
        start = max(arrival, free[0])
        heapq.heapreplace(free, start + work)
        out[seq] = (start, start + work)
    return out


@pytest.mark.parametrize("trial", range(80))
def test_ahead_bookings_are_fifo_by_arrival(trial):
    # Visits booked before they arrive (a network transfer first), some at once, in an order
    # that differs from their arrival order: the timeline must equal FIFO by arrival.
    rng = np.random.default_rng(trial)
    workers = int(rng.integers(1, 4))
    env = simpy.Environment()
    server = FifoServer(env, workers, "s", "app")
    plan, t = [], 0.0
    for seq in range(40):
        t += rng.exponential(0.2)
        now = rng.random() < 0.3
        lag = 0.0 if now else rng.uniform(0.0, 0.5)
        # Short visits booked now (work after a response) often end before the first ahead
        # arrival: the server then skips re-sequencing, which this checks too.
        work = rng.exponential(0.02 if now and rng.random() < 0.5 else 0.3)
        plan.append((t, t + lag, seq, work))
    got = {}

    def book():
        for booked_at, arrival, seq, work in plan:
            yield env.timeout(booked_at - env.now)
            got[seq] = server.reserve(arrival, work)

    env.process(book())
    env.run()
    expected = _fifo_by_arrival([(a, s, w) for _, a, s, w in plan], workers)
    for seq, (start, end) in expected.items():
        assert got[seq][2] == pytest.approx(start, abs=1e-12)
        assert got[seq][3] == pytest.approx(end, abs=1e-12)
    env.run(until=max(end for _, end in expected.values()) + 1.0)  # every visit done
    assert server.cpu_s == pytest.approx(sum(w for *_, w in plan))
