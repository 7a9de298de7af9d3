"""The service behaviour: a pod computes, calls its dependencies, then answers.

One :class:`ServicePod` per pod of a workload. A :class:`Visit` models what the
application does with one request: CPU work on one of the pod's workers (queueing when they
are all busy), then the downstream calls of its call-graph steps, in order (a parallel step
fans out and waits for every call), then the response. The workers are held only while the
application computes, as in an asynchronous server.

A workload may misbehave on its own (its spec's ``misbehaviour``): its pods' :class:`Misbehaviour`
decides each request's fate when its CPU work ends. A well-behaved pod has none: its visits
pay one ``is None`` check and draw from no misbehaviour stream.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, cast

import simpy

from models.messages import EventParent, Parent, Request, Response
from models.world import Node, PodBase, World
from sim.distributions import ConstantDist, UniformDist
from sim.engine import Task
from topologies import MisbehaviourSpec, ServiceSpec

__all__ = [
    "LOADGEN_WORKLOAD",
    "ServicePod",
    "ClientPod",
    "Call",
    "Step",
    "Visit",
    "Misbehaviour",
]

LOADGEN_WORKLOAD = "loadgen"
"""The load generator's workload name, namespace ``default`` and service account ``loadgen``."""


@dataclass(frozen=True, slots=True)
class Call:
    """One downstream call of a step, with the sizes and protocol resolved."""

    host: str
    probability: float
    request_size_bytes: int
    response_size_bytes: int
    protocol: str
    method: str = "GET"
    path: str = "/"

    def request(self, now: float, incoming: Request) -> Request:
        """The request this call sends at ``now`` while its pod serves ``incoming``.

        It carries the incoming request's trace and headers (the same mapping, not a copy):
        Bookinfo's services forward ``end-user`` and the tracing headers to the services they
        call, and we forward them all.
        """
        return Request(
            self.host,
            self.request_size_bytes,
            self.response_size_bytes,
            self.protocol,
            now,
            incoming.trace,
            self.method,
            self.path,
            incoming.headers,
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
                    method=call.method,
                    path=call.path,
                )
            )
        steps.append(Step(tuple(calls), step.parallel and len(calls) > 1))
    return tuple(steps)


class Misbehaviour:
    """A workload's misbehaviour, compiled for one pod (see :class:`MisbehaviourSpec`).

    Its draws come from the pod's own stream ``<pod>.misbehaviour``: one uniform per request
    for its fate (none when both ratios are 0), and ``extra_latency`` for a request that goes
    on (none when it is a constant).

    Args:
        spec: the workload's misbehaviour.
        stream: the pod's ``.misbehaviour`` random stream.
    """

    __slots__ = ("error", "error_below", "hang_below", "chance", "delay", "delays")

    def __init__(self, spec: MisbehaviourSpec, stream: Any) -> None:
        # What the app's own error looks like to _answer: a failed "dependency" whose status
        # it answers with (one immutable response, shared).
        self.error = Response(spec.error_status, 0)
        # One uniform u in [0, 1) decides: u < error_ratio an error, then u < error_ratio +
        # hang_ratio a hang, else the request goes on (a ratio of 1 always, 0 never).
        self.error_below = spec.error_ratio
        self.hang_below = spec.error_ratio + spec.hang_ratio
        self.chance: Callable[[], float] | None = (
            UniformDist(low=0.0, high=1.0).sampler(stream) if self.hang_below > 0.0 else None
        )
        self.delay: Callable[[], float] = spec.extra_latency.sampler(stream)
        # Whether a request that goes on may wait (not for a constant 0: no class change).
        self.delays = not (
            isinstance(spec.extra_latency, ConstantDist) and spec.extra_latency.value == 0
        )

    def intercept(self, visit: Visit) -> bool:
        """Decide the fate of ``visit``, whose CPU work has just ended; True if it is
        settled here (an error answered at once, or a hang), False if it goes on."""
        chance = self.chance
        if chance is not None:
            u = chance()
            if u < self.hang_below:
                stats = visit.pod._stats
                counted = visit.res[0] >= stats.warmup_s  # after the warm-up, as _answer counts
                if u < self.error_below:
                    if counted:
                        stats.injected_errors += 1
                    visit.failed = self.error
                    visit._answer()  # at once: no calls, no extra latency
                elif counted:
                    stats.hangs += 1  # never answered: nothing is scheduled
                return True
        if self.delays:
            visit.__class__ = _with_extra_latency(type(visit))
        return False


class ServicePod(PodBase):
    """One pod of a workload at run time.

    Its identity is its workload's: workload name, namespace, service account (the
    ``default`` one when the spec names none) and labels (``app``, ``version`` and the
    spec's, one mapping shared by the workload's pods).
    """

    def __init__(self, world: World, name: str, node: Node, spec: ServiceSpec) -> None:
        super().__init__(
            world,
            name,
            node,
            workload=spec.name,
            namespace=spec.namespace,
            service_account=spec.service_account_name,
            labels=spec.pod_labels(),
        )
        self.spec = spec
        self.host = spec.host_name
        self.app = world.cpu_server(
            spec.workers,
            f"{self.scope}.app",
            "app",
            node,
            spec.resources.limits.cpu,
            request_cores=spec.resources.requests.cpu,
        )
        self._work = spec.service_time.sampler(self.rng)
        self._steps = compile_steps(spec, world)
        # Without a parallel step, the calls in order (the common case, walked by index).
        self._sequence: tuple[Call, ...] | None = (
            None
            if any(step.parallel for step in self._steps)
            else tuple(call for step in self._steps for call in step.calls)
        )
        # Its stream for call decisions, made only when some call is not certain.
        uncertain = any(c.probability < 1.0 for step in self._steps for c in step.calls)
        self._chance: Callable[[], float] = self.uniform() if uncertain else _never
        self._queue_sink = world.sink(self.app.scope, "app_queue")
        self._cpu_sink = world.sink(self.app.scope, "app_cpu")
        self._stats = world.service_stats[spec.name]
        self._ok: dict[int, Response] = {}
        self.runner = world.runner
        # Its misbehaviour and its stream, made only for a misbehaving workload, so that a
        # well-behaved pod's visits neither branch on it nor draw from it.
        self._misbehaviour: Misbehaviour | None = None
        if spec.misbehaviour is not None:
            stream = world.rng(f"{name}.misbehaviour")
            self._misbehaviour = Misbehaviour(spec.misbehaviour, stream)

    def misbehave(self, spec: MisbehaviourSpec) -> Misbehaviour | None:
        """Misbehave as ``spec`` says from now on (a scheduled fault); return the
        misbehaviour it replaces, for :meth:`restore_misbehaviour`."""
        before = self._misbehaviour
        stream = self.world.rng(f"{self.name}.misbehaviour")
        self._misbehaviour = Misbehaviour(spec, stream)
        return before

    def restore_misbehaviour(self, before: Misbehaviour | None) -> None:
        """Behave as before the fault."""
        self._misbehaviour = before

    def serve(self, request: Request, parent: Parent, arrival_s: float) -> None:
        """Take ``request``, which arrives at ``arrival_s`` (>= now); its response goes to
        ``parent.on_reply(0, response)``."""
        visit = Visit(self, request, parent)
        self.app.visit(visit, arrival_s, self._work())

    def handle(self, request: Request) -> Generator[simpy.Event, Any, Response]:
        """Serve one request now, as a generator (for SimPy processes)."""
        event = simpy.Event(self.env)
        self.serve(request, EventParent(event), self.env.now)
        response: Response = yield event
        return response


class Visit(Task):
    """One request at a pod: compute, call the dependencies step by step, answer.

    A flat state machine: each downstream call is an exchange of the mesh whose response comes
    back to :meth:`on_reply`; a parallel step waits for all of its calls.
    """

    __slots__ = ("pod", "request", "parent", "step", "call", "pending", "replies", "failed")

    pending: int  # calls of a parallel step still out
    replies: list[Response | None] | None  # their responses, by slot

    def __init__(self, pod: ServicePod, request: Request, parent: Parent) -> None:
        # Task's attributes set here (no super().__init__): one of these per request and hop.
        self.env = pod.env
        self.runner = pod.runner
        self._next = self._computed
        self.pod = pod
        self.request = request
        self.parent = parent
        self.step = 0
        self.call = 0
        self.failed: Response | None = None

    def _computed(self) -> None:
        res = self.res
        if res[3] > self.env._now:  # type: ignore[attr-defined]
            self.wake_at(res[3])  # an earlier arrival went first: the visit ends later
            return
        pod = self.pod
        pod._queue_sink.add_visit(pod._cpu_sink, res, self.request.trace)
        if pod._misbehaviour is not None and pod._misbehaviour.intercept(self):
            return  # answered with an error, or hung
        if pod._sequence is not None:
            self._call_next()
        else:
            self._steps()

    def _call_next(self) -> None:
        """Without parallel steps: make the next call in order, or answer."""
        pod = self.pod
        calls = pod._sequence
        assert calls is not None
        i = self.call
        n = len(calls)
        while i < n:
            call = calls[i]
            i += 1
            if call.probability < 1.0 and pod._chance() >= call.probability:
                continue
            self.call = i
            mesh = pod.mesh
            assert mesh is not None, "the pod is not connected to a mesh"
            request = call.request(self.env._now, self.request)  # type: ignore[attr-defined]
            mesh.send(pod, call.host, request, self, -1)
            return
        self._answer()

    def _steps(self) -> None:
        """Make the next call (or fan out the next parallel step), or answer."""
        pod = self.pod
        steps = pod._steps
        mesh = pod.mesh
        assert mesh is not None, "the pod is not connected to a mesh"
        chance = pod._chance
        incoming = self.request
        while self.step < len(steps):
            step = steps[self.step]
            if step.parallel:
                calls = [c for c in step.calls if c.probability >= 1.0 or chance() < c.probability]
                self.step += 1
                if not calls:
                    continue
                self.pending = len(calls)
                self.replies = [None for _ in calls]
                now = self.env._now  # type: ignore[attr-defined]
                for slot, call in enumerate(calls):
                    mesh.send(pod, call.host, call.request(now, incoming), self, slot)
                return
            calls_ = step.calls
            while self.call < len(calls_):
                call = calls_[self.call]
                self.call += 1
                if call.probability < 1.0 and chance() >= call.probability:
                    continue
                now = self.env._now  # type: ignore[attr-defined]
                mesh.send(pod, call.host, call.request(now, incoming), self, -1)
                return
            self.step += 1
            self.call = 0
        self._answer()

    def on_reply(self, slot: int, response: Response) -> None:
        """A downstream call is back."""
        if slot < 0:  # a sequential call
            if response.status >= 400:  # Response.ok, inline on the hot path
                self.failed = response
                self._answer()
            elif self.pod._sequence is not None:
                self._call_next()
            else:
                self._steps()
            return
        replies = self.replies
        assert replies is not None
        replies[slot] = response
        self.pending -= 1
        if self.pending:
            return
        self.replies = None
        for reply in replies:  # the first failed call, in the step's order
            assert reply is not None
            if reply.status >= 400:
                self.failed = reply
                self._answer()
                return
        self._steps()

    def _answer(self) -> None:
        pod = self.pod
        request = self.request
        failed = self.failed
        start = self.res[0]
        now = self.env._now  # type: ignore[attr-defined]
        stats = pod._stats
        series = stats.series
        if series is not None:  # the spec's timeseries: every answer, warm-up included
            status = None if failed is None else failed.status
            series.add(now, now - start, failed is None, status, start >= stats.warmup_s)
        if start >= stats.warmup_s:  # after the warm-up only
            stats.count += 1
            stats.latency.add(now - start)
            if failed is not None:  # the failed path only: the success path stays as it was
                stats.errors += 1
                codes = stats.error_codes
                codes[failed.status] = codes.get(failed.status, 0) + 1
        size = request.response_size_bytes
        response: Response | None
        if failed is not None:
            # The application answers with its dependency's error status.
            response = Response(failed.status, size)
        else:
            response = pod._ok.get(size)
            if response is None:  # one immutable 200 per response size, shared
                response = pod._ok[size] = Response(200, size)
        telemetry = pod.world.telemetry  # Istio's metrics, only when collected
        if telemetry is not None:
            telemetry.answered(self, response, now)
        self._reply(response)

    def _reply(self, response: Response) -> None:
        """Hand the response to the parent through the ready queue (never re-entered). A
        visit answers from inside a task's step, while the queue is being drained."""
        self._value = response
        self._next = self._deliver
        self.runner.ready.append(self)

    def _deliver(self) -> None:
        self.parent.on_reply(0, self._value)


class _ExtraLatency:
    """Mixed into a visit's class (see :func:`_with_extra_latency`): the answer waits the
    workload's extra latency first, as one timed wake-up, holding no worker."""

    __slots__ = ()

    def _answer(self) -> None:
        visit = cast(Visit, self)
        misbehaviour = visit.pod._misbehaviour  # None if a scheduled one ended meanwhile
        delay = misbehaviour.delay() if misbehaviour is not None else 0.0
        if delay > 0.0:
            visit._next = self._answer_now
            visit.wake_at(visit.env._now + delay)  # type: ignore[attr-defined]
            return
        self._answer_now()

    def _answer_now(self) -> None:
        super()._answer()  # type: ignore[misc]  # the visit class's own answer


_LATE_CLASSES: dict[type, type] = {}


def _with_extra_latency(cls: type[Visit]) -> type[Visit]:
    """``cls`` with :class:`_ExtraLatency` mixed in (one class per visit class, made once).

    Its instances have ``cls``'s layout (the mixin adds no slot), so a visit of ``cls`` can
    become one by ``__class__`` assignment; this covers every kind of visit (a mesh's own,
    such as the no-mesh direct visit) without each knowing about misbehaviour.
    """
    found = _LATE_CLASSES.get(cls)
    if found is None:
        found = _LATE_CLASSES[cls] = type(
            f"{cls.__name__}WithExtraLatency", (_ExtraLatency, cls), {"__slots__": ()}
        )
    return found


def _never() -> float:
    raise AssertionError("a call decision was drawn for a service whose calls are all certain")


class ClientPod(PodBase):
    """The load generator's pod (fortio's client): it only sends requests.

    Its identity: workload ``loadgen`` in namespace ``default``, service account ``loadgen``,
    labels ``app: loadgen``.
    """

    def __init__(self, world: World, name: str, node: Node) -> None:
        super().__init__(
            world,
            name,
            node,
            workload=LOADGEN_WORKLOAD,
            namespace="default",
            service_account=LOADGEN_WORKLOAD,
            labels=_LOADGEN_LABELS,
        )


_LOADGEN_LABELS = MappingProxyType({"app": LOADGEN_WORKLOAD})
