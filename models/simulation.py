"""One simulation, from validated specs to raw statistics (desmod's lifecycle).

build (world, pods, mesh, workload) -> connect -> start processes -> run -> collect.
The experiments layer turns the :class:`SimulationOutput` into a user-facing result.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any, cast

import simpy
from pydantic import BaseModel

from models.architectures import mesh_class
from models.control_plane import ConfigChangeSpec
from models.faults import FaultSpec, schedule_faults
from models.mesh import Mesh
from models.policies import with_policy
from models.routing import compile_policies
from models.service import ClientPod, ServicePod
from models.telemetry import IstioTelemetry
from models.workload import (
    ClosedLoopSpec,
    OpenLoopSpec,
    SeriesWorkload,
    Workload,
    WorkloadSeries,
    WorkloadStats,
)
from models.world import ServiceStats, World
from sim.engine import run_until
from sim.recorder import Recorder
from sim.servers import CpuServer
from sim.stats import WindowedSeries
from topologies import ServiceSpec, TopologySpec

__all__ = [
    "Simulation",
    "SimulationOutput",
    "SeriesOutput",
    "ProxyUsage",
    "RolloutStep",
    "simulate",
]

CLIENT_POD = "loadgen-0"

# Istio's sidecar drains this long after SIGTERM (``terminationDrainDuration``; seconds).
ISTIO_TERMINATION_DRAIN_S = 5.0


@dataclass
class RolloutStep:
    """One instant of a rolling update: the pods that started, became ready (joined the
    endpoints) and left the endpoints (to drain, then exit), by name, in order."""

    at_s: float
    service: str
    started: list[str] = field(default_factory=list)
    ready: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ProxyUsage:
    """What one proxy did after the warm-up, and the memory it is modelled to hold: its peak
    (``memory_bytes``) and its time-weighted mean (``memory_mean_bytes``) after the warm-up."""

    scope: str
    kind: str
    node: str
    cpu_s: float
    requests: int
    memory_bytes: float
    memory_mean_bytes: float = 0.0


@dataclass(frozen=True)
class SeriesOutput:
    """The run in fixed windows from its start (0 s) to its end, warm-up included.

    Attributes:
        window_s: the window (seconds); the last window ends at ``end_s`` and may be shorter.
        end_s: the end of the run (seconds).
        warmup_s: the end of the warm-up (seconds).
        workload: end to end (see :class:`models.workload.WorkloadSeries`).
        services: per workload, the requests its pods answered (``ServiceStats.series``).
        in_flight_mean / in_flight_start / in_flight_end: per window, requests in flight:
            time-weighted mean, and the level at the window's start and end.
    """

    window_s: float
    end_s: float
    warmup_s: float
    workload: WorkloadSeries
    services: dict[str, WindowedSeries]
    in_flight_mean: list[float]
    in_flight_start: list[float]
    in_flight_end: list[float]
    # Per window index: [retries made, calls a retry saved, calls failed after retrying].
    retries: dict[int, list[int]] = field(default_factory=dict)

    @property
    def windows(self) -> int:
        """The number of windows."""
        return len(self.in_flight_mean)


@dataclass
class SimulationOutput:
    """Raw statistics of one run (after its warm-up)."""

    measured_s: float
    workload: WorkloadStats
    services: dict[str, ServiceStats]
    recorder: Recorder
    servers: list[CpuServer]
    memory_bytes: dict[str, float]
    proxies: list[ProxyUsage] = field(default_factory=list)
    extras: dict[str, Any] = field(default_factory=dict)
    # What the routers counted (``models.dataplane.TrafficOutput``); None without proxies.
    traffic: Any = None
    # What each fault hit and when (``models.faults.FaultRecord``), in the spec's order.
    faults: list[Any] = field(default_factory=list)
    # Istio's request metrics when collected and the mesh reports them, else None.
    telemetry: IstioTelemetry | None = None
    # The run in windows (the spec's ``timeseries``); None when it is off.
    series: SeriesOutput | None = None
    # Where a run stopped when its progress callback asked it to (simulated seconds).
    interrupted_at_s: float | None = None


PROGRESS_STEPS = 200
"""Slices of a run's duration between two calls of its progress callback."""

Progress = Callable[[float, int], bool]
"""Called between slices of a run with (simulated seconds, requests sent so far); returns
True to stop the run there (a user's Ctrl-C): what was measured until then is kept."""


class Simulation:
    """Builds the world for one run and runs it.

    Args:
        topology: the validated topology.
        mesh: the architecture's validated spec.
        workload: the validated workload spec.
        seed: the root seed.
        duration_s: simulated time, warm-up included.
        warmup_s: statistics start at this time.
        client_node: the node of the load generator's pod (None = the first node).
        trace_every: keep the whole trace of one request in this many (0 = none).
        timeseries_window_s: record the run in windows of this width (seconds; None = off:
            no cost on the hot path but one check per service visit).
        faults: the fault schedule.
        changes: configuration changes during the run (scale, deploy, routes, services).
        policies: traffic policies (``models.policies`` objects, checked against the
            topology and the mesh by ``models.policy_check.check_policies``).
        gc_tuning: pause Python's cyclic garbage collector while building (its full
            collections walk everything built so far: building 10,000 sidecars takes half
            the time without them) and freeze what was built out of its reach while running
            (see :meth:`run`); measured by ``benchmarks/build.py``. The collector's state is
            restored after each.
        telemetry: collect Istio's request metrics into this collector (only when the
            mesh's proxies are Istio's: see ``models.telemetry``); None (the default)
            collects nothing and costs one ``is None`` check where a response is delivered
            and where an app answers.
    """

    def __init__(
        self,
        topology: TopologySpec,
        mesh: BaseModel,
        workload: OpenLoopSpec | ClosedLoopSpec,
        seed: int,
        duration_s: float,
        warmup_s: float = 0.0,
        client_node: str | None = None,
        trace_every: int = 0,
        faults: list[FaultSpec] | None = None,
        changes: list[ConfigChangeSpec] | None = None,
        policies: list[Any] | None = None,
        gc_tuning: bool = True,
        telemetry: IstioTelemetry | None = None,
        timeseries_window_s: float | None = None,
    ) -> None:
        self.gc_tuning = gc_tuning
        self.window_s = timeseries_window_s
        paused = gc_tuning and gc.isenabled()
        if paused:
            gc.disable()
        try:
            self._build(
                topology,
                mesh,
                workload,
                seed,
                duration_s,
                warmup_s,
                client_node,
                trace_every,
                policies or [],
            )
        finally:
            if paused:
                gc.enable()
        self.faults = list(faults or [])
        self.changes = sorted(changes or [], key=lambda c: c.at)
        self.telemetry: IstioTelemetry | None = None
        if telemetry is not None and telemetry.attach(self.world, self.mesh):
            self.telemetry = self.world.telemetry = telemetry

    def _build(
        self,
        topology: TopologySpec,
        mesh: BaseModel,
        workload: OpenLoopSpec | ClosedLoopSpec,
        seed: int,
        duration_s: float,
        warmup_s: float,
        client_node: str | None,
        trace_every: int,
        policies: list[Any],
    ) -> None:
        if warmup_s >= duration_s:
            raise ValueError(
                f"warm-up ({warmup_s} s) must be shorter than the duration ({duration_s} s)"
            )
        self.env = simpy.Environment()
        self.duration_s = duration_s
        self.warmup_s = warmup_s
        world = self.world = World(self.env, topology, seed, warmup_s, trace_every)
        specs = {s.name: s for s in topology.call_graph.services}
        self.pods = [
            ServicePod(world, pod.name, world.nodes[pod.node], specs[pod.service])
            for pod in world.placement.pods
        ]
        node_name = client_node or topology.cluster.nodes[0].name
        if node_name not in world.nodes:
            raise ValueError(f"client node {node_name!r} is not a node of the cluster")
        self.client = ClientPod(world, CLIENT_POD, world.nodes[node_name])
        self.mesh: Mesh = mesh_class(cast(Any, mesh).architecture)(world, mesh)
        self.policies = list(policies)
        self.mesh.use_policies(compile_policies(self.policies, topology.call_graph))
        self.mesh.attach(self.pods, [self.client])
        self._specs = specs
        self._next_index = {name: spec.replicas for name, spec in specs.items()}
        self.rollouts: list[RolloutStep] = []
        entry = topology.call_graph.workloads_of(topology.call_graph.entry)[0]
        args = (
            workload,
            self.client,
            topology.call_graph.entry,
            entry.request_size_bytes,
            entry.response_size_bytes,
            entry.protocol,
            warmup_s,
        )
        window_s = self.window_s
        if window_s is None:
            self.workload = Workload(*args)
        else:
            self.workload = SeriesWorkload(*args, window_s)
            for stats in world.service_stats.values():
                stats.series = WindowedSeries(window_s)
            world.retry_windows = {}
            world.retry_window_s = window_s

    # --- configuration changes -----------------------------------------------------------

    def _change_schedule(self) -> Generator[simpy.Event, Any, None]:
        for change in self.changes:
            if change.at > self.env.now:
                yield self.env.timeout(change.at - self.env.now)
            self.apply_change(change)

    def apply_change(self, change: ConfigChangeSpec) -> None:
        """Make a change now: pods come and go at once (a rolling update starts, see
        :meth:`_rolling_update`); proxies learn of it as the mesh's control plane pushes it
        (or at once, without one)."""
        kind = change.kind
        spec: ServiceSpec | None
        if kind == "route_weights":
            self.mesh.config_changed(kind, change.service, {change.service})
            return
        if kind == "policy":
            assert change.policy is not None
            self.policies = with_policy(self.policies, change.policy)
            graph = self.world.topology.call_graph
            self.mesh.use_policies(compile_policies(self.policies, graph))
            hosts = {change.service} if change.service else set(graph.hosts())
            self.mesh.config_changed(kind, change.service, hosts)
            return
        if kind == "add_service":
            if change.service in self._specs:
                raise ValueError(f"add_service: {change.service!r} exists already")
            spec = self._specs[change.service] = ServiceSpec(name=change.service)
            self._next_index[spec.name] = 0
            self.world.service_stats[spec.name] = ServiceStats(
                spec.name, self.warmup_s, self.window_s
            )
            self.mesh.add_pods(self._new_pods(spec, change.replicas or 1))
            self.mesh.config_changed(kind, change.service, {spec.host_name})
            return
        spec = self._specs.get(change.service)
        if spec is None:
            raise ValueError(f"{kind}: no workload {change.service!r}")
        alive = [p for p in self.pods if p.spec.name == spec.name and p.alive and p.serving]
        if kind == "scale":
            target = len(alive) if change.replicas is None else change.replicas
            if target > len(alive):
                self.mesh.add_pods(self._new_pods(spec, target - len(alive)))
            elif target < len(alive):
                self.mesh.remove_pods(alive[target:], change.grace_period)
        elif change.strategy == "rolling_update":
            self.env.process(self._rolling_update(change, spec, alive))
            return
        else:  # deploy all at once: every pod replaced by a new one, ready at once
            self.mesh.add_pods(self._new_pods(spec, len(alive)))
            self.mesh.remove_pods(alive, self._drain_s(change))
        self.mesh.config_changed(kind, change.service, {spec.host_name})

    def _drain_s(self, change: ConfigChangeSpec) -> float:
        """How long a deploy's old pod accepts connections once out of the endpoints
        (seconds): the change's ``drain``, else the mesh's default (Istio's sidecar drains
        for ``terminationDrainDuration``, 5 s: ``DefaultProxyConfig`` in istio/istio
        pkg/config/mesh/mesh.go; the Linkerd2 profile's sidecars are given the same; no
        sidecar, no drain), capped by the pod's termination grace period, when Kubernetes
        kills it."""
        drain = change.drain
        if drain is None:
            drain = ISTIO_TERMINATION_DRAIN_S if self.mesh.architecture == "sidecar" else 0.0
        return min(drain, change.termination_grace_period)

    def _rolling_update(
        self, change: ConfigChangeSpec, spec: ServiceSpec, old: list[ServicePod]
    ) -> Generator[simpy.Event, Any, None]:
        """A Deployment's RollingUpdate of ``old`` (the workload's serving pods), as
        Kubernetes' deployment controller runs it (``rolloutRolling`` in
        pkg/controller/deployment/rolling.go): new pods start while the pods, old and new,
        number at most ``replicas + surge``; each joins the endpoints ``readiness_delay``
        after it starts; old pods leave the endpoints while the ready pods stay at least
        ``replicas - unavailable`` (``reconcileOldReplicaSets``), each then draining for
        :meth:`_drain_s` before it exits. The controller's own reaction time is taken as 0.

        At one instant the new ready pods join, new pods start, then old pods leave (in the
        order of ``old``), again until nothing more may; the endpoint changes of that instant
        are one configuration change, which the control plane pushes as any other. Each
        instant is a :class:`RolloutStep` in :attr:`rollouts`.
        """
        replicas = len(old)
        surge, unavailable = change.rolling_bounds(replicas)
        drain_s = self._drain_s(change)
        delay_s = change.readiness_delay
        old = list(old)
        starting: list[tuple[float, list[ServicePod]]] = []  # (ready at, pods), in order
        created = ready = 0
        while old or starting:
            step = RolloutStep(self.env.now, spec.name)
            due = [pods for at, pods in starting if at <= self.env.now]
            starting = [(at, pods) for at, pods in starting if at > self.env.now]
            joined = [pod for pods in due for pod in pods]
            while True:
                count = min(replicas + surge - (len(old) + created), replicas - created)
                if count > 0:
                    pods = self._new_pods(spec, count)
                    created += count
                    step.started += [p.name for p in pods]
                    if delay_s > 0.0:
                        starting.append((self.env.now + delay_s, pods))
                    else:
                        joined += pods
                if joined:
                    self.mesh.add_pods(joined)
                    ready += len(joined)
                    step.ready += [p.name for p in joined]
                    joined = []
                gone = min(len(old), len(old) + ready - (replicas - unavailable))
                if gone > 0:
                    leaving, old = old[:gone], old[gone:]
                    self.mesh.remove_pods(leaving, drain_s)
                    step.removed += [p.name for p in leaving]
                if count <= 0 and gone <= 0:
                    break
            if step.ready or step.removed:
                self.mesh.config_changed("deploy", change.service, {spec.host_name})
            if step.started or step.ready or step.removed:
                self.rollouts.append(step)
            if starting:
                yield self.env.timeout(starting[0][0] - self.env.now)

    def _new_pods(self, spec: ServiceSpec, count: int) -> list[ServicePod]:
        """New pods of ``spec``, each on the node with the fewest pods (the scheduler's
        spreading, in short)."""
        made = []
        for _ in range(count):
            load = {name: 0 for name in self.world.nodes}
            for pod in self.pods:
                if pod.alive:
                    load[pod.node.name] += 1
            node = min(sorted(load), key=lambda n: load[n])
            index = self._next_index[spec.name]
            self._next_index[spec.name] = index + 1
            pod = ServicePod(self.world, f"{spec.name}-{index}", self.world.nodes[node], spec)
            self.pods.append(pod)
            made.append(pod)
        return made

    def run(self, progress: Progress | None = None) -> SimulationOutput:
        """Run to the end of the duration and collect.

        With ``progress``, the run goes in :data:`PROGRESS_STEPS` slices of its duration and
        calls it between them; slicing changes no number (each slice ends as SimPy's
        ``run(until)`` does, and the next one goes on with the same queue). When it returns
        True, the run stops there: the output covers the measured time until then, and
        ``interrupted_at_s`` says where.

        With ``gc_tuning``, the objects built so far, which live for the whole run, are
        frozen out of the garbage collector's sweeps while it runs (``gc.freeze``: a run of
        10,000 sidecars about 1.2 times as fast, ``python -m benchmarks.build``) and unfrozen
        after. Nothing is frozen if
        the caller froze objects of its own already: unfreezing would release theirs too.
        """
        freeze = self.gc_tuning and gc.get_freeze_count() == 0
        if freeze:
            gc.freeze()
        try:
            return self._run(progress)
        finally:
            if freeze:
                gc.unfreeze()

    def _advance(self, until: float, progress: Progress | None) -> bool:
        """Run to ``until``; in slices with ``progress``. True if it asked to stop."""
        if progress is None:
            run_until(self.env, self.world.runner, until)
            return False
        step = self.duration_s / PROGRESS_STEPS
        while self.env.now < until:
            run_until(self.env, self.world.runner, min(until, self.env.now + step))
            if progress(self.env.now, self.workload.stats.sent):
                return True
        return False

    def _run(self, progress: Progress | None = None) -> SimulationOutput:
        self.workload.start()
        self.fault_records = schedule_faults(
            self.env, self.mesh, self.faults, self.pods, self.world, self.duration_s
        )
        if self.changes:
            self.env.process(self._change_schedule())
        stopped = False
        if self.warmup_s > 0:
            stopped = self._advance(self.warmup_s, progress)
            # Stopped in the warm-up: nothing is measured (an empty window from here).
            self.world.reset_stats()
            self.mesh.reset_stats()
            self.workload.stats.in_flight.reset(self.env.now)
        if not stopped:
            stopped = self._advance(self.duration_s, progress)
        end = self.env.now
        return SimulationOutput(
            series=self._series(),
            measured_s=max(0.0, end - self.warmup_s),
            interrupted_at_s=end if stopped else None,
            workload=self.workload.stats,
            services=self.world.service_stats,
            recorder=self.world.recorder,
            servers=self.world.servers,
            memory_bytes=self.mesh.memory_bytes(),
            extras=self.mesh.extras(),
            traffic=self.mesh.traffic(),
            faults=self.fault_records,
            telemetry=self.telemetry,
            proxies=[
                ProxyUsage(
                    p.scope,
                    p.kind,
                    p.node.name,
                    p.cpu.cpu_s,
                    p.requests,
                    0.0 if p.retired else p.memory_bytes(),  # its pod is gone: no memory
                    0.0 if p.retired else p.memory_mean_bytes(),
                )
                for p in self.mesh.proxies()
            ],
        )

    def _series(self) -> SeriesOutput | None:
        """The run's windows, closed at its end (None without a time series)."""
        workload = self.workload
        if not isinstance(workload, SeriesWorkload):
            return None
        series = workload.series
        means, starts, ends = series.in_flight.finish(self.duration_s)
        last = len(means) - 1
        # Anything at the very end of the run would open a window of its own: it counts in
        # the last one.
        series.ended.fold_after(last)
        for i in [k for k in series.sent if k > last]:
            series.sent[last] = series.sent.get(last, 0) + series.sent.pop(i)
        folded: dict[tuple[int, int], int] = {}
        for (a, b), n in series.failed_spans.items():
            key = (min(a, last), min(b, last))
            folded[key] = folded.get(key, 0) + n
        series.failed_spans = folded
        services = {}
        for name, stats in self.world.service_stats.items():
            assert stats.series is not None
            stats.series.fold_after(last)
            services[name] = stats.series
        return SeriesOutput(
            window_s=series.window_s,
            end_s=self.duration_s,
            warmup_s=self.warmup_s,
            workload=series,
            services=services,
            in_flight_mean=means,
            in_flight_start=starts,
            in_flight_end=ends,
            retries=dict(self.world.retry_windows or {}),
        )


def simulate(
    topology: TopologySpec,
    mesh: BaseModel,
    workload: OpenLoopSpec | ClosedLoopSpec,
    seed: int,
    duration_s: float,
    warmup_s: float = 0.0,
    **options: Any,
) -> SimulationOutput:
    """Build and run one simulation; see :class:`Simulation`."""
    return Simulation(topology, mesh, workload, seed, duration_s, warmup_s, **options).run()
