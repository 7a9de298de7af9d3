"""The fast path's engine pieces against SimPy's own behaviour (sim/engine.py)."""

from __future__ import annotations

import pytest
import simpy

from sim.engine import Runner, Task, drive, run_until, schedule_at


class Recorder(Task):
    """A task that logs (name, time) each time it runs, then does what it is told."""

    __slots__ = ("name", "log", "then")

    def __init__(self, env, runner, name, log, then=None):
        super().__init__(env, runner)
        self.name = name
        self.log = log
        self.then = then
        self._next = self._run

    def _run(self):
        self.log.append((self.name, self.env.now))
        if self.then is not None:
            self.then(self)


def processes(env, log):
    """Ordinary SimPy processes, and an urgent event exactly at t = 2."""

    def ticker(name, period):
        while True:
            yield env.timeout(period)
            log.append((name, env.now))

    env.process(ticker("a", 0.5))
    env.process(ticker("b", 0.7))
    urgent = simpy.Event(env)
    urgent._ok = True
    urgent._value = None
    urgent.callbacks.append(lambda _: log.append(("urgent", env.now)))
    env.schedule(urgent, simpy.events.URGENT, 2.0)


@pytest.mark.parametrize("until", [2.0, 3.3])
def test_run_until_processes_what_env_run_processes(until):
    env_a, log_a = simpy.Environment(), []
    processes(env_a, log_a)
    env_a.run(until=until)
    env_b, log_b = simpy.Environment(), []
    processes(env_b, log_b)
    run_until(env_b, Runner(env_b), until)
    assert log_b == log_a
    assert env_b.now == env_a.now == until
    # Runs can be continued, as with env.run.
    env_a.run(until=until + 1)
    run_until(env_b, Runner(env_b), until + 1)
    assert log_b == log_a


def test_tasks_and_processes_share_the_clock_and_queue():
    env = simpy.Environment()
    runner = Runner(env)
    log = []

    def user():
        yield env.timeout(1.5)
        log.append(("user", env.now))

    env.process(user())
    task = Recorder(env, runner, "task", log, then=lambda t: t.wake_at(2.5) if env.now < 2 else 0)
    task.wake_at(1.0)
    run_until(env, runner, 3.0)
    assert log == [("task", 1.0), ("user", 1.5), ("task", 2.5)]


def test_a_failed_event_fails_the_run_as_in_simpy():
    env = simpy.Environment()

    def broken():
        yield env.timeout(1.0)
        raise KeyError("boom")

    env.process(broken())
    with pytest.raises(KeyError):
        run_until(env, Runner(env), 2.0)


def test_an_instrumented_step_sees_every_event():
    env = simpy.Environment()
    runner = Runner(env)
    log = []
    Recorder(env, runner, "t", log).wake_at(0.5)
    seen = []
    step = env.step

    def counting():
        seen.append(env.peek())
        step()

    env.step = counting
    run_until(env, runner, 1.0)
    assert log == [("t", 0.5)]
    assert seen[0] == 0.5


def test_a_long_chain_of_handovers_does_not_recurse():
    env = simpy.Environment()
    runner = Runner(env)
    log = []
    n = 50_000

    def hand_on(task):
        if task.name + 1 < n:
            nxt = Recorder(env, runner, task.name + 1, log, then=hand_on)
            nxt.soon()

    Recorder(env, runner, 0, log, then=hand_on).wake_at(1.0)
    run_until(env, runner, 2.0)
    assert len(log) == n and log[-1] == (n - 1, 1.0)


def test_schedule_at_is_exact_in_absolute_time():
    env = simpy.Environment()
    runner = Runner(env)
    env.run(until=0.3)
    when = 0.9  # 0.3 + (0.9 - 0.3) is not 0.9 in floating point
    assert 0.3 + (when - 0.3) != when
    log = []
    task = Recorder(env, runner, "t", log)
    task.callbacks = [lambda t: t._next()]
    schedule_at(env, when, task)
    run_until(env, runner, 1.0)
    assert log == [("t", when)]


def test_drive_runs_a_generator_and_returns_its_value():
    env = simpy.Environment()
    done = []

    def work():
        yield env.timeout(1.0)
        ready = env.event()
        ready.succeed(41)
        value = yield ready
        failed = env.event()
        failed.fail(ValueError("x"))
        try:
            yield failed
        except ValueError:
            value += 1
        return value

    drive(env, work(), done.append)
    env.run(until=5.0)
    assert done == [42]


def test_drive_of_a_generator_that_never_waits_answers_at_once():
    env = simpy.Environment()
    done = []

    def nothing():
        return "now"
        yield  # a generator

    drive(env, nothing(), done.append)
    assert done == ["now"]
