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
visits, and the time-weighted number of visits in the server (waiting or in service).
"""

from __future__ import annotations

import heapq
from collections.abc import Generator
from typing import Any

import simpy

from sim.stats import TimeWeighted

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
        self.cpu_s = 0.0
        self.visits = 0

    def execute(self, work_s: float) -> Generator[simpy.Event, Any, float]:
        """Run ``work_s`` seconds of CPU work on one worker; return the time spent waiting."""
        raise NotImplementedError

    def charge(self, work_s: float) -> None:
        """Occupy a worker for ``work_s`` from now (or when one is free) without waiting for it.

        This is work done after a response has gone (Envoy's telemetry after the response is
        sent): nobody waits for it, but the next request finds the worker busy.
        """
        raise NotImplementedError

    def book(self, work_s: float, now: float | None = None) -> tuple[float, float]:
        """Only for exact servers (``exact``): book the work, return (wait, wait + work)."""
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
    """A FIFO pool of identical workers, simulated exactly with one timeout per visit.

    Callers on the hot path use :meth:`book` and yield the timeout themselves (one generator
    frame less per visit); :meth:`execute` does the same for everyone else. The level of
    visits in the server is updated lazily: a visit's departure time is known when it is
    booked, so departures are kept in a heap and applied, in time order, at the next booking
    or when the level is read.
    """

    exact = True

    def __init__(self, env: simpy.Environment, workers: int, scope: str, kind: str) -> None:
        super().__init__(env, workers, scope, kind)
        # Times at which each worker becomes free, as a heap (min first).
        self._free = [env.now] * workers
        # The occupancy level, integrated lazily: pending departure times (a heap), the
        # level n since time t, and the area under it since the last reset.
        self._departures: list[float] = []
        self._n = 0
        self._t = env.now
        self._area = 0.0
        self._area_since = env.now

    def book(self, work_s: float, now: float | None = None) -> tuple[float, float]:
        """Book ``work_s`` on the earliest free worker; return (wait, wait + work) seconds.

        Args:
            work_s: CPU seconds of the visit.
            now: the current time, when the caller has it at hand (saves a lookup).
        """
        if now is None:
            now = self.env.now
        free = self._free
        earliest = free[0]
        start = earliest if earliest > now else now
        end = start + work_s
        heapq.heapreplace(free, end)
        self.cpu_s += work_s
        self.visits += 1
        # Departures up to now leave the level, in time order; then this visit joins it.
        departures = self._departures
        t, n, area = self._t, self._n, self._area
        while departures and departures[0] <= now:
            left = heapq.heappop(departures)
            area += n * (left - t)
            t, n = left, n - 1
        self._area = area + n * (now - t)
        self._t = now
        self._n = n + 1
        heapq.heappush(departures, end)
        return start - now, end - now

    def execute(self, work_s: float) -> Generator[simpy.Event, Any, float]:
        wait, delay = self.book(work_s)
        if delay > 0.0:
            yield self.env.timeout(delay)
        return wait

    def settle(self) -> None:
        """Apply the departures up to now to the level."""
        now = self.env.now
        departures = self._departures
        while departures and departures[0] <= now:
            left = heapq.heappop(departures)
            self._area += self._n * (left - self._t)
            self._t, self._n = left, self._n - 1
        self._area += self._n * (now - self._t)
        self._t = now

    def mean_in_system(self) -> float:
        self.settle()
        elapsed = self.env.now - self._area_since
        return self._area / elapsed if elapsed > 0 else float(self._n)

    def reset_stats(self) -> None:
        self.settle()
        self.cpu_s = 0.0
        self.visits = 0
        self._area = 0.0
        self._area_since = self.env.now

    def charge(self, work_s: float) -> None:
        now = self.env.now
        free = self._free
        earliest = free[0]
        start = earliest if earliest > now else now
        heapq.heapreplace(free, start + work_s)
        self.cpu_s += work_s


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

    def mean_in_system(self) -> float:
        return self.in_system.mean(self.env.now)

    def reset_stats(self) -> None:
        self.cpu_s = 0.0
        self.visits = 0
        self.in_system.reset(self.env.now)

    def execute(self, work_s: float) -> Generator[simpy.Event, Any, float]:
        env = self.env
        arrived = env.now
        self.visits += 1
        self.in_system.add(arrived, 1.0)
        with self._workers.request() as worker:
            yield worker
            with self._cores.request() as core:
                yield core
                started = env.now
                self.cpu_s += work_s
                yield env.timeout(work_s)
        self.in_system.add(env.now, -1.0)
        return started - arrived

    def charge(self, work_s: float) -> None:
        self.env.process(self._background(work_s))

    def _background(self, work_s: float) -> Generator[simpy.Event, Any, None]:
        with self._workers.request() as worker:
            yield worker
            with self._cores.request() as core:
                yield core
                self.cpu_s += work_s
                yield self.env.timeout(work_s)
