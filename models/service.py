"""The service behaviour: a pod computes, calls its dependencies, then answers.

One :class:`ServicePod` per pod of a workload. Its ``handle`` process models what the
application does with one request: CPU work on one of the pod's workers (queueing when they
are all busy), then the downstream calls of its call-graph steps, in order (a parallel step
fans out and waits for every call), then the response. The workers are held only while the
application computes, as in an asynchronous server.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, cast

import simpy

from models.messages import Request, Response
from models.world import Node, PodBase, World
from topologies import ServiceSpec

__all__ = ["ServicePod", "ClientPod", "Call", "Step"]


@dataclass(frozen=True, slots=True)
class Call:
    """One downstream call of a step, with the sizes and protocol resolved."""

    host: str
    probability: float
    request_size_bytes: int
    response_size_bytes: int
    protocol: str

    def request(self, now: float, trace: list | None) -> Request:
        """The request this call sends at ``now``."""
        return Request(
            self.host,
            self.request_size_bytes,
            self.response_size_bytes,
            self.protocol,
            now,
            trace,
        )


@dataclass(frozen=True, slots=True)
class Step:
    """Calls made one after another, or, when ``parallel``, all at once."""

    calls: tuple[Call, ...]
    parallel: bool


def compile_steps(spec: ServiceSpec, world: World) -> tuple[Step, ...]:
    """Resolve a workload's steps against the callees' defaults, once, before the run."""
    graph = world.topology.call_graph
    steps = []
    for step in spec.steps:
        calls = []
        for call in step.calls:
            callee = graph.workloads_of(call.service)[0]
            calls.append(
                Call(
                    host=call.service,
                    probability=call.probability,
                    request_size_bytes=call.request_size_bytes or callee.request_size_bytes,
                    response_size_bytes=call.response_size_bytes or callee.response_size_bytes,
                    protocol=callee.protocol,
                )
            )
        steps.append(Step(tuple(calls), step.parallel and len(calls) > 1))
    return tuple(steps)


class ServicePod(PodBase):
    """One pod of a workload at run time."""

    def __init__(self, world: World, name: str, node: Node, spec: ServiceSpec) -> None:
        super().__init__(world, name, node)
        self.spec = spec
        self.host = spec.host_name
        self.app = world.cpu_server(spec.workers, f"{self.scope}.app", "app", node)
        self._work = spec.service_time.sampler(self.rng)
        self._steps = compile_steps(spec, world)
        # Its stream for call decisions, made only when some call is not certain.
        uncertain = any(c.probability < 1.0 for step in self._steps for c in step.calls)
        self._chance: Callable[[], float] = self.uniform() if uncertain else _never
        self._queue_sink = world.sink(self.app.scope, "app_queue")
        self._cpu_sink = world.sink(self.app.scope, "app_cpu")
        self._stats = world.service_stats[spec.name]
        self._ok: dict[int, Response] = {}

    def handle(self, request: Request) -> Generator[simpy.Event, Any, Response]:
        """Serve one request: compute, call the dependencies, answer."""
        env = self.env
        start = env.now
        trace = request.trace
        app = self.app
        if app.exact:
            wait, delay = app.book(self._work(), start)
            if delay > 0.0:
                yield env.timeout(delay)
        else:
            wait = yield from app.execute(self._work())
        computed = env.now
        self._queue_sink.add_pair(self._cpu_sink, start, start + wait, computed, trace)
        failed: Response | None = None
        mesh = self.mesh
        assert mesh is not None, "the pod is not connected to a mesh"
        for step in self._steps:
            if step.parallel:
                failed = yield from self._fan_out(step, trace)
            else:
                for call in step.calls:
                    if call.probability < 1.0 and self._chance() >= call.probability:
                        continue
                    response = yield from mesh.call(self, call.host, call.request(env.now, trace))
                    if response.status >= 400:  # Response.ok, inline on the hot path
                        failed = response
                        break
            if failed is not None:
                break
        stats = self._stats
        if start >= stats.warmup_s:  # after the warm-up only
            stats.count += 1
            stats.latency.add(env.now - start)
            if failed is not None:
                stats.errors += 1
        if failed is not None:
            # The application answers with its dependency's error status.
            return Response(failed.status, request.response_size_bytes)
        ok = self._ok.get(request.response_size_bytes)
        if ok is None:  # one immutable 200 per response size, shared
            ok = self._ok[request.response_size_bytes] = Response(200, request.response_size_bytes)
        return ok

    def _fan_out(
        self, step: Step, trace: list | None
    ) -> Generator[simpy.Event, Any, Response | None]:
        """Make a parallel step's calls at once; return the first failed response, or None."""
        mesh = self.mesh
        assert mesh is not None
        env = self.env
        processes = [
            env.process(mesh.call(self, call.host, call.request(env.now, trace)))
            for call in step.calls
            if call.probability >= 1.0 or self._chance() < call.probability
        ]
        if processes:
            yield env.all_of(processes)
            for process in processes:
                if not cast(Response, process.value).ok:
                    return process.value
        return None


def _never() -> float:
    raise AssertionError("a call decision was drawn for a service whose calls are all certain")


class ClientPod(PodBase):
    """The load generator's pod (fortio's client): it only sends requests."""
