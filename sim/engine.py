"""The fast path on SimPy's engine: tasks that are their own events, and a trampoline.

SimPy stays the engine: its :class:`~simpy.Environment`, clock and event queue. What this
module adds is a cheaper way for the data plane to wait than a generator process per hop:

* A :class:`Task` is an object with a ``callbacks`` list, so SimPy's ``step()`` can process it
  like any event. Scheduling a task pushes the task itself onto the queue (no ``Timeout``
  object, no generator frame); when it comes up, its continuation (``_next``) runs.
* Tasks hand control to each other through the :class:`Runner`'s ready queue, never by
  calling each other's continuations: a chain of 10,000 services that all answer at one
  instant unwinds in a loop, not in 10,000 nested Python frames.
* :func:`drive` runs an ordinary SimPy generator (a Mixer check, a handshake, anything users
  write) and hands its return value to a callback: slow paths keep their readable generator
  form and still plug into the fast path.

``schedule_at`` reads the queue and counter of :class:`simpy.Environment` (``_queue``,
``_eid``), exactly as its public ``schedule`` does, but at an absolute time: ``now + (t -
now)`` is not always ``t`` in floating point, and a booked departure must happen at the
instant it was booked for. ``tests/sim/test_engine.py`` pins this against the installed SimPy.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Generator
from heapq import heappop, heappush
from typing import Any

import simpy

__all__ = ["Task", "Runner", "schedule_at", "drive", "run_until", "NORMAL", "TASK_CALLBACKS"]

NORMAL = 1  # SimPy's priority of ordinary events (``simpy.events.NORMAL``)


def schedule_at(env: simpy.Environment, when: float, event: Any) -> None:
    """Put ``event`` (a SimPy event or a :class:`Task`) on ``env``'s queue at time ``when``."""
    heappush(env._queue, (when, NORMAL, next(env._eid), event))  # type: ignore[attr-defined,misc]


class Runner:
    """The ready queue of one environment's tasks, drained in a loop (the trampoline).

    It also holds the environment's queue and event counter, so that a task schedules
    itself with one ``heappush`` (see ``schedule_at``).
    """

    __slots__ = ("ready", "running", "queue", "eid")

    def __init__(self, env: simpy.Environment) -> None:
        self.ready: deque[Task] = deque()
        self.running = False
        self.queue = env._queue  # type: ignore[attr-defined]
        self.eid = env._eid  # type: ignore[attr-defined]

    def run(self, task: Task) -> None:
        """Run ``task``'s continuation now (or right after the task that is running)."""
        ready = self.ready
        ready.append(task)
        if self.running:
            return
        self.running = True
        try:
            while ready:
                ready.popleft()._next()
        finally:
            self.running = False


def _fire(task: Task) -> None:
    """SimPy's callback of a task that comes up on the queue (when ``env.run`` or ``step``
    processes it; :func:`run_until` runs tasks itself): run it, then what it readied."""
    task.runner.run(task)


# Every task's callbacks: SimPy iterates the list and never changes it. Code that schedules a
# task itself (a server booking a visit) sets ``task.callbacks = TASK_CALLBACKS``.
TASK_CALLBACKS = [_fire]


class Task:
    """A piece of simulated work that waits by scheduling itself (see the module docstring).

    Subclasses set ``_next`` to the bound method to run when the task is woken, then call
    :meth:`wake_at` (a time), :meth:`soon` (through the ready queue, no event) or
    :meth:`wait_for` (a SimPy event). Subclasses that set their attributes themselves may
    skip ``__init__``: only ``env``, ``runner`` (and ``_next`` before a wake) must be set.
    """

    __slots__ = ("callbacks", "_next", "runner", "env", "_value", "res")

    # The reservation of its current CPU visit, [arrival, work, start, end] (sim.servers).
    res: list[float]

    _ok = True  # SimPy's step() reads it after the callbacks: a task never fails as an event

    def __init__(self, env: simpy.Environment, runner: Runner) -> None:
        self.env = env
        self.runner = runner
        self._next: Callable[[], None] = _nothing
        self._value: Any = None

    def wake_at(self, when: float) -> None:
        """Run ``_next`` at simulated time ``when`` (>= now)."""
        self.callbacks = TASK_CALLBACKS
        runner = self.runner
        heappush(runner.queue, (when, NORMAL, next(runner.eid), self))  # type: ignore[misc]

    def soon(self) -> None:
        """Run ``_next`` now, after the task that is running (no event)."""
        self.runner.run(self)

    def wait_for(self, event: simpy.Event) -> None:
        """Run ``_next`` once ``event`` has been processed; its value is in ``_value``."""
        if event.callbacks is None:  # processed already
            self._value = event._value
            self.soon()
            return
        event.callbacks.append(self._event_done)

    def _event_done(self, event: simpy.Event) -> None:
        self._value = event._value
        self.runner.run(self)


class _Stop:
    """The marker that ends :func:`run_until` (SimPy's ``run(until=...)`` uses an event)."""

    __slots__ = ()


def run_until(env: simpy.Environment, runner: Runner, until: float) -> None:
    """Process ``env``'s events up to ``until``, exactly as ``env.run(until=until)`` does.

    It is SimPy's own ``step`` inlined into one loop, over SimPy's queue and clock, with one
    shortcut: a task (its callbacks are :data:`TASK_CALLBACKS`) runs straight from the loop,
    and the tasks it readies after it. Any other event (a user's process, a timeout) has its
    callbacks called as ``step`` calls them. The end is marked as SimPy marks it: an urgent
    entry at ``until``, so that the same events run and ``env.now`` ends at ``until``.

    An environment whose ``step`` was replaced on the instance (instrumentation, say an event
    counter) is run by ``env.run`` instead, so the replacement sees every event.
    """
    if until <= env.now:
        raise ValueError(f"until ({until}) must be greater than the current time ({env.now})")
    if "step" in vars(env):
        env.run(until=until)
        return
    queue = env._queue  # type: ignore[attr-defined]
    stop = _Stop()
    heappush(queue, (until, 0, next(env._eid), stop))  # type: ignore[attr-defined,misc]
    ready = runner.ready
    pop = heappop
    tasks = TASK_CALLBACKS
    event: Any
    try:
        while True:
            now, _, _, event = pop(queue)  # event: a SimPy event or a Task (typed Any)
            env._now = now  # type: ignore[attr-defined]
            if event is stop:
                return
            callbacks = event.callbacks
            event.callbacks = None
            if callbacks is tasks:
                runner.running = True
                event._next()
                while ready:
                    ready.popleft()._next()
                runner.running = False
                continue
            for callback in callbacks:
                callback(event)
            if not event._ok and not hasattr(event, "_defused"):
                error = type(event._value)(*event._value.args)
                error.__cause__ = event._value
                raise error
    finally:
        runner.running = False


def _nothing() -> None:
    raise AssertionError("a task was woken with nothing to do")


def drive(
    env: simpy.Environment,
    generator: Generator[simpy.Event, Any, Any],
    done: Callable[[Any], None],
) -> None:
    """Run a SimPy generator as a process does, without a Process: each event it yields
    resumes it; its return value goes to ``done``. An event that failed is thrown into it."""

    def step(event: simpy.Event | None) -> None:
        while True:
            try:
                if event is None:
                    target = generator.send(None)
                elif event._ok:
                    target = generator.send(event._value)
                else:
                    event._defused = True  # type: ignore[attr-defined]
                    target = generator.throw(event._value)
            except StopIteration as stop:
                done(stop.value)
                return
            if target.callbacks is None:  # processed already: go on at once
                event = target
                continue
            target.callbacks.append(step)
            return

    step(None)
