"""Shared cores and CPU limits: CFS quota throttling, processor sharing against FIFO, and
fractional cores, by exact traces.

Every trace is computed by hand from the rules in :class:`sim.servers.SharedServer` and
:class:`sim.servers.SharedCores`: a container with limit ``L`` may use ``L * period`` of CPU
per period (summed over its threads); work that reaches the quota stops and resumes at the
next period's start. Times are compared to a nanosecond (float residue of the fluid account).
"""

from __future__ import annotations

import pytest
import simpy

from sim.servers import SharedCores, SharedServer

NS = 1e-9


def run_jobs(env, plan):
    """Run ``plan`` [(server, name, at, work)]; return {name: (end, wait)}."""
    log = {}

    def one(server, name, at, work):
        if at > env.now:
            yield env.timeout(at - env.now)
        wait = yield from server.execute(work)
        log[name] = (env.now, wait)

    for server, name, at, work in plan:
        env.process(one(server, name, at, work))
    env.run()
    return log


def approx(value):
    return pytest.approx(value, abs=NS)


def limited(env, workers, limit, period_s=0.1):
    return SharedServer(env, workers, "p", "sidecar", SharedCores(env, None), limit, period_s)


def test_work_crossing_the_quota_resumes_at_the_next_period():
    env = simpy.Environment()
    proxy = limited(env, 1, 0.5)  # quota 50 ms per 100 ms
    log = run_jobs(env, [(proxy, "a", 0.0, 0.08), (proxy, "b", 0.01, 0.01)])
    # a runs [0, 50 ms], is throttled until 100 ms, runs its last 30 ms: ends at 130 ms.
    assert log["a"] == (approx(0.13), approx(0.05))
    # b waits for the only worker, then runs [130, 140 ms] (quota left: 20 ms).
    assert log["b"] == (approx(0.14), approx(0.12))
    assert proxy.throttled_periods == 1
    assert proxy.throttled_s == approx(0.05)
    assert proxy.periods == 2
    assert proxy.cpu_s == approx(0.09)


def test_threads_share_one_quota():
    env = simpy.Environment()
    proxy = limited(env, 2, 0.5)
    log = run_jobs(env, [(proxy, "a", 0.0, 0.04), (proxy, "b", 0.0, 0.04)])
    # Two threads use the 50 ms quota at two cores: out at 25 ms, with 15 ms left each;
    # both resume at 100 ms and end at 115 ms.
    assert log["a"][0] == approx(0.115) and log["b"][0] == approx(0.115)
    assert proxy.throttled_periods == 1
    assert proxy.throttled_s == approx(0.075)


def test_long_work_is_throttled_in_every_period_it_crosses():
    env = simpy.Environment()
    proxy = limited(env, 1, 0.2)  # 20 ms per period
    log = run_jobs(env, [(proxy, "a", 0.05, 0.05)])
    # [50, 70] runs, throttled to 100; [100, 120] runs, throttled to 200; [200, 210] runs.
    assert log["a"] == (approx(0.21), approx(0.11))
    assert proxy.throttled_periods == 2
    assert proxy.throttled_s == approx(0.03 + 0.08)
    assert proxy.periods == 3


def test_quota_refills_each_period_and_does_not_carry_over():
    env = simpy.Environment()
    proxy = limited(env, 1, 0.5)
    # 10 ms in period 0 leaves 40 ms unused; it is lost: a 60 ms job at 100 ms still stops
    # at 150 ms and ends at 210 ms.
    log = run_jobs(env, [(proxy, "a", 0.0, 0.01), (proxy, "b", 0.1, 0.06)])
    assert log["a"] == (approx(0.01), approx(0.0))
    assert log["b"] == (approx(0.21), approx(0.05))
    assert proxy.throttled_periods == 1


def test_cfs_period_is_a_parameter():
    env = simpy.Environment()
    proxy = limited(env, 1, 0.5, period_s=0.01)  # 5 ms per 10 ms
    log = run_jobs(env, [(proxy, "a", 0.0, 0.012)])
    # [0,5] [10,15] [20,22] ms.
    assert log["a"][0] == approx(0.022)
    assert proxy.throttled_periods == 2


def test_work_under_the_quota_is_not_throttled():
    env = simpy.Environment()
    proxy = limited(env, 2, 1.5)
    log = run_jobs(env, [(proxy, "a", 0.0, 0.07), (proxy, "b", 0.0, 0.07)])
    # 140 ms of CPU in period 0 with a quota of 150 ms: no throttling.
    assert log["a"] == (approx(0.07), approx(0.0))
    assert proxy.throttled_periods == 0 and proxy.throttled_s == 0.0


def test_throttled_time_counts_to_now_and_restarts_at_reset():
    env = simpy.Environment()
    proxy = limited(env, 1, 0.5)
    env.process(iter_execute(proxy, 0.08))
    env.run(until=0.07)
    assert proxy.throttled and proxy.throttled_periods == 1
    proxy.settle_throttling()
    assert proxy.throttled_s == approx(0.02)
    proxy.reset_stats()
    env.run()
    proxy.settle_throttling()
    assert proxy.throttled_s == approx(0.03)  # 70 to 100 ms, after the reset
    assert proxy.throttled_periods == 0  # the throttle began before the reset


def iter_execute(server, work):
    yield from server.execute(work)


@pytest.mark.parametrize(
    ("discipline", "ends"),
    [
        # FIFO: the first thread keeps the core: a [0, 2], b [2, 3].
        ("fifo", {"a": 2.0, "b": 3.0}),
        # PS: both at half a core until b is done at 2 (1 s of work each by then); a has 1 s
        # left, alone at full speed: 3.
        ("ps", {"a": 3.0, "b": 2.0}),
    ],
)
def test_ps_and_fifo_on_two_jobs(discipline, ends):
    env = simpy.Environment()
    cores = SharedCores(env, 1, discipline)
    one = SharedServer(env, 1, "one", "app", cores)
    two = SharedServer(env, 1, "two", "app", cores)
    log = run_jobs(env, [(one, "a", 0.0, 2.0), (two, "b", 0.0, 1.0)])
    assert {k: v[0] for k, v in log.items()} == {k: approx(v) for k, v in ends.items()}
    assert one.cpu_s == approx(2.0) and two.cpu_s == approx(1.0)


def test_ps_with_a_late_arrival():
    env = simpy.Environment()
    cores = SharedCores(env, 1, "ps")
    one = SharedServer(env, 2, "one", "app", cores)
    # a alone [0, 1] does 1 s; then a and b share: each at 1/2; b's 1 s takes 2 s: b ends at
    # 3, when a has done 2 of its 3 s; a alone: ends at 4.
    log = run_jobs(env, [(one, "a", 0.0, 3.0), (one, "b", 1.0, 1.0)])
    assert log["b"][0] == approx(3.0) and log["a"][0] == approx(4.0)
    assert log["b"][1] == approx(1.0)  # a visit's wait: its time in the server beyond its work


def test_half_core_node_runs_at_half_speed():
    env = simpy.Environment()
    cores = SharedCores(env, 0.5)
    app = SharedServer(env, 2, "app", "app", cores)
    log = run_jobs(env, [(app, "a", 0.0, 1.0), (app, "b", 0.0, 1.0)])
    # One core at half speed: a [0, 2], b [2, 4] (FIFO).
    assert log["a"][0] == approx(2.0) and log["b"][0] == approx(4.0)
    assert app.cpu_s == approx(2.0)


def test_half_core_node_counts_cpu_as_it_runs():
    env = simpy.Environment()
    app = SharedServer(env, 1, "app", "app", SharedCores(env, 0.5))
    env.process(iter_execute(app, 1.0))
    env.run(until=1.0)
    assert app.cpu_s == approx(0.5)  # half a core for one second


@pytest.mark.parametrize("discipline", ["fifo", "ps"])
def test_fractional_cores_are_ceil_cores_at_a_share_each(discipline):
    env = simpy.Environment()
    cores = SharedCores(env, 2.5, discipline)
    app = SharedServer(env, 3, "app", "app", cores)
    log = run_jobs(env, [(app, name, 0.0, 1.0) for name in "abc"])
    # Three cores at 5/6 of a core each: every job takes 1.2 s (PS: 2.5 / 3 each, the same).
    assert all(end == approx(1.2) for end, _ in log.values())


def test_limit_on_a_node_with_few_cores():
    env = simpy.Environment()
    cores = SharedCores(env, 1, "fifo")
    proxy = SharedServer(env, 2, "p", "sidecar", cores, 0.5, 0.1)
    app = SharedServer(env, 1, "app", "app", cores)
    log = run_jobs(env, [(proxy, "p", 0.0, 0.08), (app, "a", 0.0, 0.03)])
    # The proxy takes the core first, is throttled at 50 ms: the app gets the core [50, 80];
    # the proxy resumes at 100 ms and ends at 130.
    assert log["a"][0] == approx(0.08)
    assert log["p"][0] == approx(0.13)
    assert proxy.throttled_periods == 1


def test_bad_limits_and_disciplines_are_refused():
    env = simpy.Environment()
    with pytest.raises(ValueError, match="cpu_discipline"):
        SharedCores(env, 1, "lifo")
    with pytest.raises(ValueError, match="limits.cpu"):
        SharedServer(env, 1, "p", "sidecar", SharedCores(env, None), 0.0)


def test_ps_shares_by_container_weight():
    # One core, PS: requests 750m and 250m give weights 768 and 256: a runs at 3/4 of the
    # core, b at 1/4, while both are runnable.
    env = simpy.Environment()
    cores = SharedCores(env, 1, "ps")
    a = SharedServer(env, 1, "a", "app", cores, request_cores=0.75)
    b = SharedServer(env, 1, "b", "app", cores, request_cores=0.25)
    log = run_jobs(env, [(a, "a", 0.0, 2.0), (b, "b", 0.0, 2.0)])
    # a: 3/4 until its 2 s are done at 8/3 s (b has done 2/3 s); b alone then: 4/3 s more.
    assert log["a"][0] == approx(8 / 3)
    assert log["b"][0] == approx(8 / 3 + 4 / 3)


def test_ps_splits_a_containers_share_between_its_threads():
    # Equal weights (no requests): the container with two threads gets half the core, a
    # quarter per thread; the other's one thread gets the other half.
    env = simpy.Environment()
    cores = SharedCores(env, 1, "ps")
    two = SharedServer(env, 2, "two", "app", cores)
    one = SharedServer(env, 1, "one", "app", cores)
    log = run_jobs(env, [(two, "x", 0.0, 1.0), (two, "y", 0.0, 1.0), (one, "z", 0.0, 1.0)])
    # z at 1/2 ends at 2 (x, y have done 1/2 each); then x, y at 1/2 each: 1 s more.
    assert log["z"][0] == approx(2.0)
    assert log["x"][0] == approx(3.0) and log["y"][0] == approx(3.0)


def test_ps_gives_what_a_container_cannot_use_to_the_others():
    # Two cores; a (weight 2048) has one thread, capped at one core; b (weight 2) gets the
    # other core although its weight is tiny.
    env = simpy.Environment()
    cores = SharedCores(env, 2, "ps")
    a = SharedServer(env, 1, "a", "app", cores, request_cores=2.0)
    b = SharedServer(env, 1, "b", "app", cores)
    log = run_jobs(env, [(a, "a", 0.0, 1.0), (b, "b", 0.0, 1.0)])
    assert log["a"][0] == approx(1.0) and log["b"][0] == approx(1.0)
