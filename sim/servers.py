"""CPU servers: where simulated work waits for a worker and then takes its time.

Two implementations behind one small interface (``execute``, ``charge``):

* :class:`FifoServer` is exact for a FIFO pool of ``workers`` identical workers whose work is
  known when it arrives. The departure time of a visit is then known at arrival (the later of
  now and the earliest free worker, plus the work), so a visit costs one SimPy timeout instead
  of a request, a grant and a release. This is the common case: a pod or proxy on a node with
  unlimited cores.
* :class:`SharedServer` is a container's pool of threads on :class:`SharedCores`: a node's
  finite cores shared by several containers (FIFO or processor sharing, fractional cores
  honoured), and a container's CFS quota (its Kubernetes CPU limit). A visit's end then
  depends on what the other threads do later, so it is not known at arrival: the cores keep
  each running thread's work left and rate, exactly, and wake up at the next change.

Which one a component gets is decided when it is built (``models.world.World.cpu_server``): a
container with neither shared cores nor a binding limit gets a FifoServer and pays nothing
for the others.

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
import math
from bisect import bisect_right
from collections import deque
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

import simpy

from sim.engine import NORMAL, TASK_CALLBACKS, schedule_at
from sim.network import NEVER
from sim.stats import TimeWeighted

if TYPE_CHECKING:
    from sim.engine import Task

__all__ = ["CpuServer", "FifoServer", "SharedCores", "SharedServer", "PinnedWorkers"]


class CpuServer:
    """What every CPU server offers; see the module docstring.

    Args:
        env: the SimPy environment.
        workers: number of workers (threads) that compute at once.
        scope: dotted component scope, used in results (``node-1.reviews-v1-0.app``).
        kind: the component kind the CPU is charged to (``app``, ``sidecar``, ...).
    """

    exact = False  # True where a visit's end is known when it starts (see FifoServer.book)
    # A CPU limit that can bind (a CFS quota; see SharedServer), and its counters.
    limit_cores: float | None = None
    periods = 0
    throttled_periods = 0
    throttled_s = 0.0

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

    def settle_throttling(self) -> None:
        """Count a throttle still in force up to now (before reading ``throttled_s``)."""

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


EPSILON_S = 1e-9  # work or quota left below this (a nanosecond) is done: float residue


class SharedCores:
    """Cores shared by the threads of several containers, and how they are shared.

    It is a fluid model, exact for work known at arrival: each running thread runs at a rate
    (core-seconds of work per second) that changes only at events (an arrival, a completion,
    a container's quota running out, a CFS period starting), so the time of the next event
    is known from the work left and the rates; one pending wake-up covers it.

    ``cores`` may be fractional. A node of ``c`` cores has ``ceil(c)`` cores that each run at
    the speed ``c / ceil(c)``: a 0.5-core node runs a thread at half speed, a 2.5-core node
    runs three threads at 5/6 of a core each. That is a hypervisor giving a VM a share of
    each of its vCPUs, finely time-sliced (a burstable cloud instance, or a VM capped at a
    share); the total is ``c`` cores, and no thread runs faster than ``c / ceil(c)``.

    Disciplines, for threads that want more cores than there are:

    * ``fifo``: a thread holds a core from the moment it gets one until its work is done;
      threads get cores in the order they became runnable (what SimPy's resources did).
    * ``ps``: processor sharing as Linux's CFS does it with a cgroup per container, at its
      fine time-slice limit: the cores are shared between the containers with runnable
      threads in proportion to their weights (``cpu.shares``: Kubernetes gives a container
      ``1024 * requests.cpu``, and 2 to one without a request), a container's share is split
      equally between its runnable threads, and no thread runs faster than ``speed``: what a
      container cannot use goes to the others (water-filling). With equal weights and one
      thread each, every thread runs at ``min(speed, c / n)``.

    ``cores=None``: unlimited (every runnable thread runs at speed 1); containers with a CFS
    quota on such a node each have a SharedCores of their own.

    Args:
        env: the SimPy environment.
        cores: the node's cores (fractional allowed), None for unlimited.
        discipline: ``fifo`` or ``ps``.
    """

    def __init__(
        self, env: simpy.Environment, cores: float | None, discipline: str = "fifo"
    ) -> None:
        if discipline not in ("fifo", "ps"):
            raise ValueError(f"cpu_discipline must be 'fifo' or 'ps', got {discipline!r}")
        if cores is not None and not cores > 0:
            raise ValueError(f"cores must be > 0, got {cores}")
        self.env = env
        self.cores = cores
        self.discipline = discipline
        if cores is None:
            self.slots = 1 << 62
            self.speed = 1.0
        else:
            self.slots = math.ceil(cores)
            self.speed = cores / self.slots
        self.ps = discipline == "ps" and cores is not None
        self.runnable: list[_Job] = []  # threads that may run, in the order they became so
        self.limited: list[SharedServer] = []  # the containers with a CFS quota
        self._last = env.now  # the time the work left was last brought up to
        self._wakes: list[float] = []  # the times of the wake-ups pending (a heap)

    def _advance(self, now: float) -> None:
        """Bring every running thread's work left (and quotas, and work done) up to ``now``."""
        dt = now - self._last
        if dt > 0.0:
            for job in self.runnable:
                rate = job.rate
                if rate:
                    used = rate * dt
                    job.left -= used
                    server = job.server
                    server.done_s += used
                    if server.quota_s is not None:
                        server.budget_s -= used
                        if server.ran_in != server.period:
                            server.ran_in = server.period
                            server.periods += 1
        self._last = now

    def update(self) -> None:
        """Settle what happened by now, reschedule the next wake-up, then wake the finished."""
        env = self.env
        now = env.now
        self._advance(now)
        runnable = self.runnable
        # CFS periods that started: a throttled container runs again; every quota refills
        # (unused quota does not carry over).
        for server in self.limited:
            if now >= server.period_end_s:
                server.new_period(now)
        finished: list[_Job] = []
        if runnable:
            kept = []
            for job in runnable:
                if job.left <= EPSILON_S:
                    finished.append(job)
                else:
                    kept.append(job)
            if finished:
                runnable[:] = kept
                for job in finished:
                    job.server.release(job)
        # Containers whose quota ran out: every thread of theirs waits for the next period.
        for server in self.limited:
            if not server.throttled and server.budget_s <= EPSILON_S and server.running:
                server.throttle(now)
        # Rates, and the next event.
        if runnable:
            if self.ps:
                self._share(runnable)
            else:
                slots = self.slots
                speed = self.speed
                for k, job in enumerate(runnable):
                    job.rate = speed if k < slots else 0.0
        nxt = NEVER
        for job in runnable:
            if job.rate:
                t = now + job.left / job.rate
                if t < nxt:
                    nxt = t
        for server in self.limited:
            if server.throttled:
                t = server.period_end_s
            elif server.running:
                use = sum(job.rate for job in runnable if job.server is server)
                t = server.period_end_s
                if use > 0.0:
                    t = min(t, now + server.budget_s / use)
            else:
                continue
            if t < nxt:
                nxt = t
        if nxt < NEVER:
            self._wake(nxt)
        for job in finished:
            server = job.server
            server.in_system.add(now, -1.0)
            if job.done is not None:
                job.done(job)

    def _share(self, runnable: list[_Job]) -> None:
        """Processor sharing: each container's share by weight, split over its threads, no
        thread faster than ``speed`` (what one cannot use goes to the others)."""
        speed = self.speed
        groups: dict[Any, list[_Job]] = {}
        for job in runnable:
            groups.setdefault(job.server.group, []).append(job)
        if len(groups) == 1:  # one container: equal shares
            rate = min(speed, self.cores / len(runnable))  # type: ignore[operator]
            for job in runnable:
                job.rate = rate
            return
        left = float(self.cores)  # type: ignore[arg-type]
        todo = list(groups.items())
        while todo:
            weight = sum(jobs[0].server.weight for _, jobs in todo)
            saturated = [
                (group, jobs)
                for group, jobs in todo
                if left * jobs[0].server.weight / weight >= len(jobs) * speed
            ]
            if not saturated:
                for _, jobs in todo:
                    rate = left * jobs[0].server.weight / weight / len(jobs)
                    for job in jobs:
                        job.rate = rate
                return
            full = set()
            for group, jobs in saturated:
                full.add(id(group))
                for job in jobs:
                    job.rate = speed
                left -= len(jobs) * speed
            todo = [(group, jobs) for group, jobs in todo if id(group) not in full]

    def _wake(self, when: float) -> None:
        wakes = self._wakes
        if wakes and wakes[0] <= when:
            return  # an earlier wake-up comes first, and reschedules
        heapq.heappush(wakes, when)
        event = simpy.Event(self.env)
        event._ok = True
        event._value = None
        event.callbacks.append(self._woken)  # type: ignore[union-attr]
        schedule_at(self.env, when, event)

    def _woken(self, _event: Any) -> None:
        wakes = self._wakes
        now = self.env.now
        while wakes and wakes[0] <= now:
            heapq.heappop(wakes)
        self.update()


class _Job:
    """One visit's work on a shared server: its work left and its rate now."""

    __slots__ = ("server", "work", "left", "arrival", "rate", "done", "task")

    def __init__(self, server: SharedServer, work: float, arrival: float) -> None:
        self.server = server
        self.work = work
        self.left = work
        self.arrival = arrival
        self.rate = 0.0
        self.done: Any = None
        self.task: Any = None


class SharedServer(CpuServer):
    """A container's pool of ``workers`` threads on :class:`SharedCores`, optionally with a
    CFS quota (a Kubernetes CPU limit).

    A visit waits (FIFO) for a thread of its own container, then runs on the cores as their
    discipline says. With a quota, the container may use ``limit_cores * period_s`` of CPU
    per period, summed over its threads; once that is used up, every thread of it stops
    until the next period starts (Linux's CFS bandwidth control, ``cpu.cfs_quota_us`` over
    ``cpu.cfs_period_us``; Kubernetes sets the quota from ``limits.cpu``), so work that
    crosses the quota's boundary resumes at the next period's start. Periods are aligned on
    time 0. Not modelled: the kernel hands quota to each CPU in 5 ms slices
    (``sched_cfs_bandwidth_slice_us``), which throttles a little earlier than the exact
    account kept here, and ``cpu.cfs_burst_us``.

    Counters, as cAdvisor exports them: ``periods`` (periods in which the container ran,
    ``container_cpu_cfs_periods_total``), ``throttled_periods`` (periods in which its quota
    ran out, ``container_cpu_cfs_throttled_periods_total``) and ``throttled_s`` (time its
    threads waited for a period to start, wall-clock: the kernel's figure sums it over the
    CPUs whose run queue was throttled, so it can be larger).

    A visit's reservation is ``[arrival, work, end - work, end]``: its CPU span is its work,
    and everything else (waiting for a thread, for a core, a share of one, for the quota) is
    its queueing span.

    Args:
        cores: the cores it runs on.
        limit_cores: its CPU limit in cores (None: no quota).
        period_s: the CFS period (Kubernetes' default ``cpuCFSQuotaPeriod``: 100 ms).
        request_cores: its CPU request: its weight where the cores are shared by processor
            sharing (``cpu.shares`` = 1024 x request, at least 2; None: 2).
    """

    def __init__(
        self,
        env: simpy.Environment,
        workers: int,
        scope: str,
        kind: str,
        cores: SharedCores,
        limit_cores: float | None = None,
        period_s: float = 0.1,
        request_cores: float | None = None,
    ) -> None:
        super().__init__(env, workers, scope, kind)
        if limit_cores is not None and not limit_cores > 0:
            raise ValueError(f"{scope}: limits.cpu must be > 0, got {limit_cores}")
        if not period_s > 0:
            raise ValueError(f"{scope}: cfs_period must be > 0, got {period_s}")
        self.cores = cores
        self.limit_cores = limit_cores
        self.period_s = period_s
        # Its cgroup's weight (the kubelet's cpu.shares) and the group it counts in (itself;
        # the workers of one pinned container share theirs).
        self.weight = max(2.0, 1024.0 * request_cores) if request_cores else 2.0
        self.group: Any = self
        self.quota_s = None if limit_cores is None else limit_cores * period_s
        self.budget_s = self.quota_s if self.quota_s is not None else 0.0
        self.period = int(env.now / period_s)
        self.period_end_s = (self.period + 1) * period_s
        self.ran_in = -1  # the last period in which it ran
        self.throttled = False
        self._throttled_since = 0.0
        self._held: list[_Job] = []  # its threads that hold work while it is throttled
        self.running = 0  # its threads on the cores' runnable list
        self._busy = 0  # its threads that hold a visit (runnable or throttled)
        self._queue: deque[_Job] = deque()  # visits waiting for a thread
        self.done_s = 0.0
        self._done_at_reset = 0.0
        self.in_system = TimeWeighted(env.now, 0.0)
        self.periods = 0
        self.throttled_periods = 0
        self.throttled_s = 0.0
        if self.quota_s is not None:
            cores.limited.append(self)

    # --- the cores' side ---------------------------------------------------------------------

    def new_period(self, now: float) -> None:
        """A CFS period started (at or before ``now``): the quota refills."""
        period_s = self.period_s
        k = int(now / period_s)
        while (k + 1) * period_s <= now:
            k += 1
        while k * period_s > now:
            k -= 1
        self.period = k
        self.period_end_s = (k + 1) * period_s
        self.budget_s = self.quota_s  # type: ignore[assignment]
        if self.throttled:
            self.throttled = False
            self.throttled_s += now - self._throttled_since
            held, self._held = self._held, []
            self.cores.runnable.extend(held)
            self.running += len(held)

    def throttle(self, now: float) -> None:
        """Its quota ran out: its threads leave the cores until the period ends."""
        self.throttled = True
        self._throttled_since = now
        self.throttled_periods += 1
        runnable = self.cores.runnable
        self._held = [job for job in runnable if job.server is self]
        runnable[:] = [job for job in runnable if job.server is not self]
        self.running = 0
        for job in self._held:
            job.rate = 0.0

    def release(self, job: _Job) -> None:
        """``job`` (off the runnable list) is done: its thread takes the next visit."""
        self.running -= 1
        self._busy -= 1
        if self._queue:
            self._start(self._queue.popleft())

    def _start(self, job: _Job) -> None:
        self._busy += 1
        if self.throttled:
            self._held.append(job)
        else:
            self.cores.runnable.append(job)
            self.running += 1

    def _arrive(self, job: _Job) -> None:
        cores = self.cores
        cores._advance(self.env.now)
        self.visits += job.done is not None
        self.in_system.add(self.env.now, 1.0)
        if self._busy < self.workers:
            self._start(job)
        else:
            self._queue.append(job)
        cores.update()

    # --- the interface -----------------------------------------------------------------------

    def visit(self, task: Task, arrival_s: float, work_s: float) -> None:
        if arrival_s == NEVER:  # a message that never arrives
            return
        job = _Job(self, work_s, arrival_s)
        job.task = task
        job.done = _wake_task
        if arrival_s > self.env.now:
            event = simpy.Event(self.env)
            event._ok = True
            event._value = None
            event.callbacks.append(lambda _e: self._arrive(job))  # type: ignore[union-attr]
            schedule_at(self.env, arrival_s, event)
        else:
            self._arrive(job)

    def execute(self, work_s: float) -> Generator[simpy.Event, Any, float]:
        env = self.env
        job = _Job(self, work_s, env.now)
        event = simpy.Event(env)
        job.task = event
        job.done = _succeed
        self._arrive(job)
        end = yield event
        return max(0.0, end - work_s - job.arrival)

    def charge(self, work_s: float) -> None:
        self._arrive(_Job(self, work_s, self.env.now))

    # --- statistics --------------------------------------------------------------------------

    @property
    def cpu_s(self) -> float:
        self.cores._advance(self.env.now)
        return self.done_s - self._done_at_reset

    def mean_in_system(self) -> float:
        return self.in_system.mean(self.env.now)

    def reset_stats(self) -> None:
        self.cores._advance(self.env.now)
        self._done_at_reset = self.done_s
        self.visits = 0
        self.in_system.reset(self.env.now)
        self.periods = 0
        self.throttled_periods = 0
        self.throttled_s = 0.0
        if self.throttled:  # the throttled time from now on
            self._throttled_since = self.env.now
        self.ran_in = -1  # the period it runs in from now on counts

    def settle_throttling(self) -> None:
        if self.throttled:
            now = self.env.now
            self.throttled_s += now - self._throttled_since
            self._throttled_since = now


def _wake_task(job: _Job) -> None:
    end = job.server.env.now
    start = end - job.work
    task = job.task
    task.res = [job.arrival, job.work, start if start > job.arrival else job.arrival, end]
    task.soon()


def _succeed(job: _Job) -> None:
    job.task.succeed(job.server.env.now)


class PinnedWorkers(CpuServer):
    """Workers that each run their own connections, as Envoy's do: a connection accepted by
    a worker spends its life on it (``source/server/worker_impl.cc``: each worker runs its
    own dispatcher and listeners; Envoy's threading model), so its requests queue for that
    worker even when another is idle.

    Each worker is a server of one worker of its own (``parts``). :meth:`visit_on` books on
    a given worker; :meth:`visit` (work that is on no known connection) takes the worker
    that is free first, as a shared pool would.

    Args:
        parts: one single-worker server per worker, all of one class.
    """

    exact = True

    def __init__(self, parts: list[CpuServer], scope: str, kind: str) -> None:
        super().__init__(parts[0].env, len(parts), scope, kind)
        self.parts = parts
        self.exact = all(part.exact for part in parts)
        for part in parts:  # one container: one cgroup where cores are shared
            if isinstance(part, SharedServer):
                part.group = parts[0]
        # Where they are FIFO timelines, the first free is read off each one's timeline.
        self._fifo = all(type(part) is FifoServer for part in parts)

    def _first_free(self) -> CpuServer:
        parts = self.parts
        if self._fifo:
            best = parts[0]
            timeline = best._base if best._ahead else best._free  # type: ignore[attr-defined]
            best_free = timeline[0]
            for part in parts[1:]:
                timeline = part._base if part._ahead else part._free  # type: ignore[attr-defined]
                if timeline[0] < best_free:
                    best, best_free = part, timeline[0]
            return best
        return min(parts, key=_backlog)

    def visit_on(self, worker: int, task: Task, arrival_s: float, work_s: float) -> None:
        """``visit`` on worker ``worker`` (< 0: the first free one)."""
        if worker >= 0:
            self.parts[worker].visit(task, arrival_s, work_s)
        else:
            self._first_free().visit(task, arrival_s, work_s)

    def visit(self, task: Task, arrival_s: float, work_s: float) -> None:
        self._first_free().visit(task, arrival_s, work_s)

    def execute_on(self, worker: int, work_s: float) -> Generator[simpy.Event, Any, float]:
        """``execute`` on worker ``worker`` (< 0: the first free one)."""
        part = self.parts[worker] if worker >= 0 else self._first_free()
        return (yield from part.execute(work_s))

    def execute(self, work_s: float) -> Generator[simpy.Event, Any, float]:
        return (yield from self._first_free().execute(work_s))

    def charge_on(self, worker: int, work_s: float) -> None:
        """``charge`` on worker ``worker`` (< 0: the first free one)."""
        part = self.parts[worker] if worker >= 0 else self._first_free()
        part.charge(work_s)

    def charge(self, work_s: float) -> None:
        self._first_free().charge(work_s)

    @property
    def visits(self) -> int:  # type: ignore[override]
        return sum(part.visits for part in self.parts)

    @visits.setter
    def visits(self, value: int) -> None:
        pass  # the parts count their own

    @property
    def cpu_s(self) -> float:
        return sum(part.cpu_s for part in self.parts)

    def settle(self) -> None:
        for part in self.parts:
            part.settle()

    def mean_in_system(self) -> float:
        return sum(part.mean_in_system() for part in self.parts)

    def reset_stats(self) -> None:
        for part in self.parts:
            part.reset_stats()


def _backlog(server: CpuServer) -> int:
    """Visits in a single-worker shared server (running or waiting): the least is first
    free."""
    assert isinstance(server, SharedServer)
    return server._busy + len(server._queue)
