"""CPU servers: where simulated work waits for a worker and then takes its time.

Two implementations behind one small interface (``execute``, ``charge``):

* :class:`FifoServer` is exact for a FIFO pool of ``workers`` identical workers whose work is
  known when it arrives. The departure time of a visit is then known at arrival (the later of
  now and the earliest free worker, plus the work), so a visit costs one SimPy timeout instead
  of a request, a grant and a release. This is the common case: a pod or proxy on a node with
  unlimited cores.
* :class:`ContendedServer` is for work that also needs a core of a node whose cores are
  finite and shared by several servers. The start of a visit then depends on what every other
  server on the node does later, so it is not known at arrival: it uses SimPy resources
  (a worker of its own pool, then a core of the node).

Both keep salabim-style statistics: the CPU time they did (core-seconds), the number of
visits, and the time-weighted number of visits in the server (waiting or in service). CPU
is counted as it runs, not when it is booked: a server never shows more busy cores over a
window than it has workers, however much work is queued at the window's end.

The data plane's fast path visits a server with :meth:`CpuServer.visit`: the task (see
:mod:`sim.engine`) arrives at ``arrival_s`` (now, or later when a network transfer comes
first) and is woken when its work is done. On a :class:`FifoServer` that is one scheduled
event for the transfer and the visit together.
"""

from __future__ import annotations

import heapq
from bisect import bisect_right
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

import simpy

from sim.engine import NORMAL, TASK_CALLBACKS, drive, schedule_at
from sim.network import NEVER
from sim.stats import TimeWeighted

if TYPE_CHECKING:
    from sim.engine import Task

__all__ = ["CpuServer", "FifoServer", "ContendedServer"]


class CpuServer:
    """What every CPU server offers; see the module docstring.

    Args:
        env: the SimPy environment.
        workers: number of workers (threads) that compute at once.
        scope: dotted component scope, used in results (``node-1.reviews-v1-0.app``).
        kind: the component kind the CPU is charged to (``app``, ``sidecar``, ...).
    """

    exact = False  # True where a visit's end is known when it starts (see FifoServer.book)

    def __init__(self, env: simpy.Environment, workers: int, scope: str, kind: str) -> None:
        if workers < 1:
            raise ValueError(f"{scope}: workers must be >= 1, got {workers}")
        self.env = env
        self.workers = workers
        self.scope = scope
        self.kind = kind
        self.visits = 0

    @property
    def cpu_s(self) -> float:
        """Core-seconds of work done since the last reset, up to now (not work booked)."""
        raise NotImplementedError

    def visit(self, task: Task, arrival_s: float, work_s: float) -> None:
        """``task`` arrives at ``arrival_s`` (>= now) with ``work_s`` of CPU work; it is woken
        when the work is done, with ``task.res = [arrival, work, start, end]``."""
        raise NotImplementedError

    def execute(self, work_s: float) -> Generator[simpy.Event, Any, float]:
        """Run ``work_s`` seconds of CPU work on one worker; return the time spent waiting."""
        raise NotImplementedError

    def charge(self, work_s: float) -> None:
        """Occupy a worker for ``work_s`` from now (or when one is free) without waiting for it.

        This is work done after a response has gone (Envoy's telemetry after the response is
        sent): nobody waits for it, but the next request finds the worker busy.
        """
        raise NotImplementedError

    def settle(self) -> None:
        """Bring lazily kept statistics up to now (before reading them)."""

    def mean_in_system(self) -> float:
        """Time-averaged visits in the server (waiting or in service) since the warm-up."""
        raise NotImplementedError

    def reset_stats(self) -> None:
        """Start counting afresh (end of warm-up); the work in progress is kept."""
        raise NotImplementedError


class FifoServer(CpuServer):
    """A FIFO pool of identical workers, simulated exactly with one event per visit.

    A visit's departure is known when it is booked, so the server keeps a timeline: a heap of
    the times at which each worker is next free. A visit may be booked *ahead*, before it
    arrives (when the network transfer that brings it is known to end at ``arrival_s``): one
    event then covers the transfer and the visit. FIFO order is arrival order, so a later
    booking with an earlier arrival goes before the ahead bookings that arrive after it; they
    are re-sequenced (their ends can only move later) and a task woken before its end, which
    moved, waits for the rest. Bookings whose arrival has passed are final: nothing that
    arrives later can go before them.

    Statistics: the work done is the work booked minus the work still ahead of each worker
    (which, from now, is one busy stretch per worker), so it is exact at any instant. The
    time-weighted level of visits in the server is estimated by Little's law, as the sum of
    the sojourns of the visits that arrived since the reset over the time since the reset:
    exact once the visits have left; read while some are still in the server, it counts
    their whole stay (and not the rest of the stay of those that were in it at the reset).
    """

    exact = True

    def __init__(self, env: simpy.Environment, workers: int, scope: str, kind: str) -> None:
        super().__init__(env, workers, scope, kind)
        # Times at which each worker becomes free after every booking (a min-heap).
        self._free = [env.now] * workers
        # Bookings that have not arrived yet, in arrival order, and the timeline of the final
        # bookings only (None while there is no booking ahead: it is then ``_free``).
        self._ahead: list[list[float]] = []
        self._base: list[float] | None = None
        # Work booked (final bookings only) and the work done at the last reset.
        self._booked = 0.0
        self._done_at_reset = 0.0
        # Sum of sojourns of the visits since the reset (Little's law).
        self._area = 0.0
        self._since = env.now

    # --- booking ---------------------------------------------------------------------------

    def _fix_arrived(self, now: float) -> None:
        """Make final the ahead bookings that have arrived by ``now``."""
        ahead = self._ahead
        base = self._base
        assert base is not None
        n = 0
        for res in ahead:
            if res[0] > now:
                break
            heapq.heapreplace(base, res[3])
            self._booked += res[1]
            self.visits += 1
            self._area += res[3] - res[0]
            n += 1
        del ahead[:n]
        if not ahead:
            # The timeline of final bookings is the whole timeline again (the projection may
            # differ from it in a worker free before every arrival it was built for; see book).
            self._free = base
            self._base = None

    def book(self, work_s: float, now: float | None = None) -> tuple[float, float]:
        """Book ``work_s`` now on the earliest free worker; return (wait, wait + work) seconds.

        Args:
            work_s: CPU seconds of the visit.
            now: the current time, when the caller has it at hand (saves a lookup).
        """
        if now is None:
            now = self.env.now
        ahead = self._ahead
        if ahead and ahead[0][0] <= now:
            self._fix_arrived(now)
        timeline = self._base if ahead else self._free
        assert timeline is not None
        earliest = timeline[0]
        start = earliest if earliest > now else now
        end = start + work_s
        heapq.heapreplace(timeline, end)
        self._booked += work_s
        self.visits += 1
        self._area += end - now
        if ahead and end > ahead[0][0]:
            # The ahead bookings arrive after now: this one goes before them all. Ending by
            # the first ahead arrival, it changes none of their starts (each starts at its
            # arrival or after a visit that is ahead too), and the projected timeline then
            # differs only in one worker free before every ahead arrival: the same for any
            # booking appended later. Otherwise the ahead bookings are re-sequenced.
            self._resequence()
        return start - now, end - now

    def visit(self, task: Task, arrival_s: float, work_s: float) -> None:
        # The data plane's booking: every step inline (it runs once per hop of every request).
        now = self.env._now  # type: ignore[attr-defined]
        ahead = self._ahead
        if ahead and ahead[0][0] <= now:
            self._fix_arrived(now)
        if arrival_s <= now:
            if ahead:  # it goes before the ahead bookings
                wait, total = self.book(work_s, now)
                res = task.res = [now, work_s, now + wait, now + total]
            else:
                free = self._free
                earliest = free[0]
                start = earliest if earliest > now else now
                end = start + work_s
                heapq.heapreplace(free, end)
                self._booked += work_s
                self.visits += 1
                self._area += end - now
                res = task.res = [now, work_s, start, end]
        else:
            if arrival_s == NEVER:  # a message that never arrives: nothing to book
                return
            res = task.res = [arrival_s, work_s, 0.0, 0.0]
            if not ahead:
                self._base = self._free.copy()
            elif arrival_s < ahead[-1][0]:
                ahead.insert(bisect_right(ahead, arrival_s, key=_arrival), res)
                self._resequence()
                task.wake_at(res[3])
                return
            free = self._free
            earliest = free[0]
            start = earliest if earliest > arrival_s else arrival_s
            end = start + work_s
            res[2] = start
            res[3] = end
            heapq.heapreplace(free, end)
            ahead.append(res)
        task.callbacks = TASK_CALLBACKS
        runner = task.runner
        heapq.heappush(runner.queue, (res[3], NORMAL, next(runner.eid), task))  # type: ignore[misc]

    def reserve(self, arrival_s: float, work_s: float) -> list[float]:
        """Book a visit that arrives at ``arrival_s`` (>= now) without a task; return its
        reservation ``[arrival, work, start, end]``, whose end a later booking may still move
        later (tests and tools use it; the data plane calls :meth:`visit`)."""
        holder = _Holder()
        self.visit(holder, arrival_s, work_s)  # type: ignore[arg-type]
        return holder.res

    def _resequence(self) -> None:
        """Rebuild the timeline: final bookings, then every ahead booking in arrival order."""
        base = self._base
        assert base is not None
        free = base.copy()
        for res in self._ahead:
            earliest = free[0]
            arrival = res[0]
            start = earliest if earliest > arrival else arrival
            res[2] = start
            res[3] = start + res[1]
            heapq.heapreplace(free, res[3])
        self._free = free

    def execute(self, work_s: float) -> Generator[simpy.Event, Any, float]:
        wait, delay = self.book(work_s)
        if delay > 0.0:
            yield self.env.timeout(delay)
        return wait

    def charge(self, work_s: float) -> None:
        self.book(work_s)
        self.visits -= 1  # work after a response, not a visit of its own

    # --- statistics --------------------------------------------------------------------------

    def _done(self, now: float) -> float:
        """Work done by ``now`` (every booking made final first)."""
        if self._ahead:
            self._fix_arrived(now)
        timeline = self._base if self._base is not None else self._free
        remaining = sum(t - now for t in timeline if t > now)
        return self._booked - remaining

    @property
    def cpu_s(self) -> float:
        return self._done(self.env.now) - self._done_at_reset

    def settle(self) -> None:
        """Make final the bookings that have arrived (before reading statistics)."""
        if self._ahead:
            self._fix_arrived(self.env.now)

    def mean_in_system(self) -> float:
        self.settle()
        elapsed = self.env.now - self._since
        return self._area / elapsed if elapsed > 0 else 0.0

    def reset_stats(self) -> None:
        self.settle()
        now = self.env.now
        self._done_at_reset = self._done(now)
        self.visits = 0
        self._since = now
        self._area = 0.0


class _Holder:
    """What :meth:`FifoServer.reserve` books for: a reservation, and a queue of its own where
    its wake-up goes (nobody runs it)."""

    res: list[float]
    callbacks: Any

    def __init__(self) -> None:
        self.runner = self
        self.queue: list[Any] = []
        self.eid = iter(range(1 << 62))

    def wake_at(self, when: float) -> None:
        """Nobody to wake."""


def _arrival(res: list[float]) -> float:
    return res[0]


class ContendedServer(CpuServer):
    """A worker pool whose work also needs one of a node's shared cores (SimPy resources).

    Args:
        cores: the node's cores, shared with every other server on that node.
    """

    def __init__(
        self,
        env: simpy.Environment,
        workers: int,
        scope: str,
        kind: str,
        cores: simpy.Resource,
    ) -> None:
        super().__init__(env, workers, scope, kind)
        self._workers = simpy.Resource(env, capacity=workers)
        self._cores = cores
        self.in_system = TimeWeighted(env.now, 0.0)
        # Work finished, and the work of visits on a core now: {id: (start, work)}.
        self._finished = 0.0
        self._running: dict[int, tuple[float, float]] = {}
        self._done_at_reset = 0.0

    def _done(self, now: float) -> float:
        partial = sum(min(now - start, work) for start, work in self._running.values())
        return self._finished + partial

    @property
    def cpu_s(self) -> float:
        return self._done(self.env.now) - self._done_at_reset

    def mean_in_system(self) -> float:
        return self.in_system.mean(self.env.now)

    def reset_stats(self) -> None:
        self._done_at_reset = self._done(self.env.now)
        self.visits = 0
        self.in_system.reset(self.env.now)

    def _run(self, work_s: float) -> Generator[simpy.Event, Any, float]:
        """Hold a worker, then a core, for ``work_s``; return the time waited."""
        env = self.env
        arrived = env.now
        with self._workers.request() as worker:
            yield worker
            with self._cores.request() as core:
                yield core
                started = env.now
                key = id(core)
                self._running[key] = (started, work_s)
                yield env.timeout(work_s)
                del self._running[key]
                self._finished += work_s
        return started - arrived

    def execute(self, work_s: float) -> Generator[simpy.Event, Any, float]:
        env = self.env
        self.visits += 1
        self.in_system.add(env.now, 1.0)
        wait = yield from self._run(work_s)
        self.in_system.add(env.now, -1.0)
        return wait

    def visit(self, task: Task, arrival_s: float, work_s: float) -> None:
        env = self.env

        def arrive(_event: Any = None) -> None:
            def done(wait: float) -> None:
                now = env.now
                task.res = [arrival_s, work_s, now - work_s, now]
                task.soon()

            drive(env, self.execute(work_s), done)

        if arrival_s == NEVER:  # a message that never arrives
            return
        if arrival_s > env.now:
            event = simpy.Event(env)
            event._ok = True
            event._value = None
            event.callbacks.append(arrive)  # type: ignore[union-attr]
            schedule_at(env, arrival_s, event)
        else:
            arrive()

    def charge(self, work_s: float) -> None:
        drive(self.env, self._run(work_s), _ignore)


def _ignore(_value: Any) -> None:
    pass
