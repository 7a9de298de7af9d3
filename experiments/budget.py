"""How large a run is, before it starts: pods, proxies, memory and simulated events.

A spec that validates can still be far too large to run: ``rate_rps: 1e7`` for 30 s, a
10,000-service topology for an hour, a workload with a million workers per pod, a sweep of
thousands of points. Today such a run ends in a MemoryError after minutes, or never. This
module estimates, from the validated spec alone (nothing is built), what each run will cost,
and :func:`check_budget` refuses what exceeds a :class:`Budget` with a message that gives the
estimate, the budget, the field that drives it and the flag that raises it.

**Events.** The cost of a run in time is the number of events the simulation processes
(about 130,000 per CPU second on the machine the constants were measured on). A run makes

    requests x (EVENTS_PER_REQUEST + visits per request x EVENTS_PER_VISIT[architecture])
    + control-plane events

per replication, where the requests are ``rate_rps x duration`` for an open loop and, for a
closed loop, ``qps x duration`` capped at what its connections can send if every request
took no less than the entry's own service time and the round trip to it; the visits per
request are :func:`topologies.visits.expected_visits`; the control-plane events are, per
proxy, a first certificate, one rotation per ``ttl x rotate_at`` of the run, a push per
configuration change and a signature retry per ``retry_interval`` of a control-plane
outage. An experiment makes that for each replication of each sweep point.

**Memory.** Per replication, a cost per service, pod, node, proxy, worker slot (a pod's or a
proxy's workers are slots of a timeline) and closed-loop connection; the replications of a
point are all held until they are merged (each one's output keeps its servers and recorder:
``mesh_scale`` of 8,000 pods with istio-1.8 peaked at 368 MB resident with one replication
and 1,171 MB with four), so a point's memory is that times its replications, plus the
interpreter's base. Sweep points run one after another, so an
experiment's memory is its largest point's.

The constants are measurements, rounded up (an estimate should err on the large side), each
with how it was taken; ``tests/experiments/test_budget.py`` checks the event estimate against
events counted in real runs of every profile and every shipped spec.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from experiments.spec import ExperimentSpec, SpecError, spec_from_dict
from experiments.sweep import sweep_points
from models.workload import ClosedLoopSpec
from sim.units import parse_size
from topologies import TopologySpec, expected_visits

__all__ = [
    "Budget",
    "BudgetError",
    "ExperimentEstimate",
    "RunEstimate",
    "DEFAULT_EVENTS",
    "DEFAULT_MEMORY_BYTES",
    "check_budget",
    "estimate_experiment",
    "estimate_run",
    "format_bytes",
    "parse_events",
    "parse_memory",
    "total",
]

# --- the budget ------------------------------------------------------------------------------

DEFAULT_EVENTS = 2e8
"""Simulated events a command may process by default: about 25 minutes of one core at the
measured 130,000 events per CPU second (:data:`EVENTS_PER_CPU_SECOND`). Every shipped spec
and the calibration fit in it; an overnight sweep raises it with ``--budget-events``."""

DEFAULT_MEMORY_BYTES = 4 * 2**30
"""Estimated memory a command may use by default (4 GiB): what a laptop can spare. The
largest shipped run (10,000 pods with sidecars) is estimated at 436 MiB; it peaks at 437 MiB resident."""

EVENTS_PER_CPU_SECOND = 130_000.0
"""Events processed per CPU second, to turn an event count into a time for the user:
``python -m benchmarks.chain --quick --repeats 1`` on this project's 2-core machine gave
Bookinfo at 500 rps 4,738 requests per CPU second with istio-1.8 at 26.9 events per request
(127,000 events/s) and 16,230 requests per CPU second without a mesh at 8.4 (136,000)."""

# --- events ----------------------------------------------------------------------------------

EVENTS_PER_VISIT: dict[str, float] = {
    "none": 2.5,
    "sidecar": 7.5,
    "per_node": 7.5,
    "ambient": 7.5,
    "proxyless": 5.5,
}
"""Events per service visit, by architecture. Measured by counting the environment's steps
(as ``benchmarks.chain`` does, ``_count_steps``) in 10 s open-loop runs at 100 rps of
Bookinfo (3.67 visits per request), the social network (7.06) and a chain of 20, for every
profile, and dividing events per request by visits per request. Measured, per visit:
no mesh 2.05 to 2.28; sidecars 7.08 to 7.61 (istio-1.8, linkerd2), with Mixer 7.52 to 8.14
(istio-1.4, istio-1.1); per node (maesh) 5.05 to 5.43; ambient 7.05 to 7.45; proxyless 5.07
to 5.36. ``benchmarks.chain``'s own Bookinfo figures at 500 rps agree (none 8.4 events per
request, istio-1.8 26.9, maesh 19.4). The constants are the largest measured, rounded up;
Mixer's checks and reports add :data:`EVENTS_PER_VISIT_MIXER`. Per node re-measured when
clients reached a random node's proxy through kube-proxy (Traefik Mesh's shadow services,
an extra transfer per visit) and the proxies got the chart's CPU limit: maesh made 1.28 times
the old estimate on Bookinfo at 200 rps (about 7.0 per visit), hence 7.5."""

EVENTS_PER_VISIT_MIXER = 1.0
"""Added per visit when the sidecars call Mixer: istio-1.1 made 0.55 to 0.75 events per visit
more than istio-1.8 in the runs above."""

EVENTS_PER_VISIT_WAYPOINT = 3.0
"""Added per visit to a service with a waypoint (ambient): istio-1.24-ambient (a waypoint for
every service) made 9.9 events per visit of Bookinfo at 200 rps against istio-ambient's 7.5
(no waypoints); rounded up. Scaled by the share of services that have one."""

EVENTS_PER_VISIT_BURST: dict[str, float] = {"sidecar": 2.0}
"""Added per visit, by architecture, when a closed loop's connections send together (fortio's
default pacing: without ``uniform``, every connection's call ``i`` is due at the same time),
so that requests queue at the proxies' workers in bursts. Measured on Istio's benchmark
(``experiments.calibration``, 2 s): istio-1.8 made 10.0 events per request with fortio's
defaults against 8.0 with ``uniform``; linkerd2 10.1; the other architectures stay within their
constants."""

EVENTS_PER_REQUEST = 1.5
"""Events per request besides its visits (its arrival, the answer to the client): fitting
``a + b x visits`` to the chain of 20 and Bookinfo gives ``a`` = 1.1 without a mesh and 0.7
with sidecars."""

CONTROL_PLANE_EVENTS_PER_PROXY = 3.0
"""Events per proxy at the start, when the CA signs its first certificate: 6,004 events for
2,000 istiod sidecars (``mesh_scale`` of 2,000 pods, no requests), 2,001 for 2,000 Maesh node
proxies."""

CONTROL_PLANE_EVENTS_PER_CHANGE = 7.0
"""Events per proxy per configuration change: one change pushed to 2,000 sidecars with
``scoping: mesh`` made 14,000 more events (7 per proxy); Maesh 3 per proxy and change."""

CONTROL_PLANE_EVENTS_PER_ROTATION = 3.0
"""Events per certificate rotation of a proxy: 2,000 sidecars with ``ttl: 20s`` (a rotation
every 10 s) over 400 s made 166,000 more events than with 24 h, 2.1 per rotation."""

CONTROL_PLANE_EVENTS_PER_RETRY = 1.0
"""Events per signature retry (a proxy asks again every ``retry_interval`` while the control
plane is down): one timer each. An upper bound: only proxies that need a certificate during
the outage retry."""

# --- memory (bytes) --------------------------------------------------------------------------

MEMORY_BASE_BYTES = 64 * 2**20
"""The interpreter with numpy, SimPy and pydantic loaded: ``/usr/bin/time -f %M meshsim run``
of Bookinfo without a mesh for 1 s peaked at 62 to 66 MB resident."""

MEMORY_PER_SERVICE_BYTES = 2 * 2**10
"""A workload's spec and statistics: ``tracemalloc`` over validating 4,000 one-replica
services on 3 nodes (2,000 B each) against one service of 4,000 replicas (261 B a pod)."""

MEMORY_PER_POD_BYTES = 4 * 2**10
"""A pod's placement, servers, ports and statistics: ``tracemalloc`` over building a
Simulation of ``mesh_scale`` without a mesh, 2,940 to 3,520 B a pod, plus 260 B of spec."""

MEMORY_PER_NODE_BYTES = 1 * 2**10
"""A node and its links: ``mesh_scale`` of 4,000 pods on 4,000 nodes against 200 nodes,
840 B a node more (``tracemalloc``)."""

MEMORY_PER_PROXY_BYTES = 32 * 2**10
"""A proxy with its listeners, pools and the control plane's state for it: the resident
size (``ru_maxrss``) of ``mesh_scale`` runs with istio-1.8 (a change pushed, 100 s) grows by
36 KB a pod from 2,000 to 8,000 pods, against 5.7 KB without a mesh (30 KB a sidecar); Maesh
node proxies, 8.8 KB each, are counted at the sidecars' cost."""

MEMORY_PER_WORKER_BYTES = 16
"""A worker slot: a FIFO server keeps one float per worker in its timeline, and a copy of
the timeline while visits are booked ahead (two 8-byte references)."""

MEMORY_PER_CONNECTION_BYTES = 1 * 2**10
"""A closed-loop connection: 80,000 connections of the fortio spec for 3 s grew the resident
size by 25 MB against 16 (330 B each), rounded up for its request in flight and the pooled
connections it opens through the proxies."""

# What a field is usually worth, to tell which factor of a large estimate is out of the
# ordinary: the one furthest above its usual value drives it (the shipped specs run 200 to 300
# rps for 20 to 30 s, with 4 to 7 visits per request).
_USUAL_RATE_RPS = 300.0
_USUAL_DURATION_S = 30.0
_USUAL_VISITS = 5.0

# Beyond these, raising the budget is no advice: a year of CPU, a petabyte of memory.
_MOST_CPU_S = 365 * 86400.0
_MOST_MEMORY_BYTES = float(2**50)


class BudgetError(SpecError):
    """A run estimated larger than the budget; the message says by how much and why."""


@dataclass(frozen=True)
class Budget:
    """What one command may spend.

    Attributes:
        events: simulated events, over every replication and sweep point.
        memory_bytes: estimated memory of the largest run (its replications included).
    """

    events: float = DEFAULT_EVENTS
    memory_bytes: float = DEFAULT_MEMORY_BYTES


@dataclass(frozen=True)
class RunEstimate:
    """The estimated size of one spec (one sweep point), all its replications together.

    Attributes:
        label: which run (``""``, a sweep point's assignments, a compared profile).
        architecture: the mesh's architecture.
        services: workloads of the topology.
        pods: pods, the load generator and pods made by configuration changes included.
        nodes: nodes of the cluster.
        proxies: proxies of the mesh (sidecars, node proxies, ztunnels, waypoints).
        worker_slots: workers of every pod, proxy and control-plane replica.
        connections: closed-loop connections (0 for an open loop).
        requests: requests per replication.
        requests_from: the fields the requests come from (``workload.rate_rps x duration``).
        visits_per_request: expected service visits of one request.
        events_per_visit: events of one visit with this mesh.
        events_per_request: events of one request.
        control_plane_events: control-plane events per replication.
        replications: replications of the spec.
        events: events of every replication.
        memory_bytes: memory of every replication (held until they are merged), without the
            interpreter's base.
        memory_terms: the memory of one replication by what takes it, with the field behind
            each (``{"pods": (bytes, "topology: 10,000 pods")}``).
        event_driver: the field that drives the events, and why.
    """

    label: str
    architecture: str
    services: int
    pods: int
    nodes: int
    proxies: int
    worker_slots: int
    connections: int
    requests: float
    requests_from: str
    visits_per_request: float
    events_per_visit: float
    events_per_request: float
    control_plane_events: float
    replications: int
    events: float
    memory_bytes: float
    memory_terms: dict[str, tuple[float, str]] = field(default_factory=dict)
    event_driver: str = ""

    def events_line(self) -> str:
        """How the events add up, in one line."""
        line = (
            f"{_num(self.requests)} requests ({self.requests_from}) x "
            f"{self.events_per_request:.1f} events per request ("
            f"{self.visits_per_request:.3g} service visits x {self.events_per_visit:g} events "
            f"per visit with {_ARCHITECTURE_NAMES.get(self.architecture, self.architecture)}, "
            f"+ {EVENTS_PER_REQUEST:g})"
        )
        if self.control_plane_events:
            line += f" + {_num(self.control_plane_events)} control-plane events"
        if self.replications != 1:
            line += f", x {self.replications:,} replications"
        return line

    def memory_line(self) -> str:
        """What takes the memory, largest first, in one line."""
        terms = sorted(self.memory_terms.items(), key=lambda kv: -kv[1][0])
        parts = [f"{name} {format_bytes(size)} ({why})" for name, (size, why) in terms if size]
        line = " + ".join(parts[:4]) or "nothing"
        if self.replications != 1:
            line = f"({line}) x {self.replications:,} replications"
        return line


@dataclass(frozen=True)
class ExperimentEstimate:
    """The estimated size of a command: every run it makes.

    Attributes:
        runs: one estimate per spec run (per sweep point, per compared profile).
        grid: for a sweep, the grid's field paths (to name it as the driver).
    """

    runs: list[RunEstimate]
    grid: tuple[str, ...] = ()

    @property
    def events(self) -> float:
        """Events of every run."""
        return math.fsum(run.events for run in self.runs)

    @property
    def memory_bytes(self) -> float:
        """Memory of the largest run (runs go one after another), the base included."""
        return MEMORY_BASE_BYTES + max((run.memory_bytes for run in self.runs), default=0.0)

    def summary(self) -> str:
        """One line for ``meshsim validate``: the size and roughly how long it takes."""
        largest = max(self.runs, key=lambda run: run.pods + run.proxies)
        size = f"{largest.pods:,} pods, {largest.proxies:,} proxies"
        runs = f"{len(self.runs)} runs, " if len(self.runs) > 1 else ""
        return (
            f"estimated size: {runs}{size}; about {_num(self.events)} events "
            f"(~{_duration(self.events / EVENTS_PER_CPU_SECOND)} of CPU), "
            f"{format_bytes(self.memory_bytes)} of memory"
        )


# --- estimating --------------------------------------------------------------------------------

_ARCHITECTURE_NAMES = {
    "none": "no mesh",
    "sidecar": "sidecars",
    "per_node": "a proxy per node",
    "ambient": "ambient",
    "proxyless": "proxyless",
}


def estimate_experiment(spec: ExperimentSpec, label: str = "") -> ExperimentEstimate:
    """Estimate every run of ``spec``: one, or one per point of its sweep.

    Sweep points are validated as the runner validates them (they were checked already when
    ``spec`` was, so they do).

    Args:
        spec: a validated experiment.
        label: a name for its run(s) in messages (a compared profile's name).

    Returns:
        The estimate of each run.
    """
    if spec.sweep is None:
        return ExperimentEstimate([estimate_run(spec, label)])
    base = spec.model_dump(mode="json", exclude={"sweep"})
    runs = []
    for i, (assignments, data) in enumerate(sweep_points(base, spec.sweep)):
        where = ", ".join(f"{k}={_short(v)}" for k, v in assignments.items())
        runs.append(estimate_run(spec_from_dict(data), f"sweep point {i} ({where})"))
    return ExperimentEstimate(runs, grid=tuple(spec.sweep.grid))


def estimate_run(spec: ExperimentSpec, label: str = "") -> RunEstimate:
    """Estimate one run of ``spec`` (its sweep, if any, is not looked at).

    Args:
        spec: a validated experiment.
        label: which run, for messages.

    Returns:
        The estimate: counts, requests, events and memory, with what drives them.
    """
    topology = spec.resolve_topology()
    mesh = spec.mesh.resolve()
    architecture: str = mesh.architecture
    graph = topology.call_graph
    services = len(graph.services)
    nodes = len(topology.cluster.nodes)
    from_changes = _pods_from_changes(spec, topology)
    pods = 1 + sum(s.replicas for s in graph.services) + from_changes
    proxies, proxy_slots = _proxies(mesh, topology, pods)
    app_slots = sum(s.replicas * s.workers for s in graph.services)
    control_slots, control_pods = _control_plane_slots(mesh)
    worker_slots = app_slots + proxy_slots + control_slots

    requests, requests_from, request_field = _requests(spec, topology)
    visits = expected_visits(graph)
    per_visit = EVENTS_PER_VISIT.get(architecture, max(EVENTS_PER_VISIT.values()))
    if getattr(mesh, "mixer", None) is not None:
        per_visit += EVENTS_PER_VISIT_MIXER
    if architecture == "ambient":
        per_visit += EVENTS_PER_VISIT_WAYPOINT * _waypoint_share(mesh, services)
    workload = spec.workload
    if isinstance(workload, ClosedLoopSpec) and workload.connections > 1 and not workload.uniform:
        per_visit += EVENTS_PER_VISIT_BURST.get(architecture, 0.0)
    events_per_request = EVENTS_PER_REQUEST + visits * per_visit
    control_events, control_driver = _control_plane_events(spec, mesh, proxies)
    per_replication = requests * events_per_request + control_events
    events = per_replication * spec.most_replications

    connections = spec.workload.connections if isinstance(spec.workload, ClosedLoopSpec) else 0
    busiest = max(graph.services, key=lambda s: s.replicas * s.workers)
    # Pods made by configuration changes ("changes" drives them, not the topology).
    made = f", {from_changes:,} of them made by changes" if from_changes else ""
    per_pod = architecture == "sidecar" and from_changes
    made_proxies = f", {from_changes:,} of them for pods made by changes" if per_pod else ""
    memory_terms = {
        "pods": (
            pods * MEMORY_PER_POD_BYTES + services * MEMORY_PER_SERVICE_BYTES,
            f"topology: {pods:,} pods of {services:,} workloads{made}",
        ),
        "nodes": (nodes * MEMORY_PER_NODE_BYTES, f"topology: {nodes:,} nodes"),
        "proxies": (
            proxies * MEMORY_PER_PROXY_BYTES,
            f"mesh: {proxies:,} proxies ({_ARCHITECTURE_NAMES.get(architecture, architecture)})"
            f"{made_proxies}",
        ),
        "control plane": (
            control_pods * MEMORY_PER_PROXY_BYTES,
            f"mesh: {control_pods:,} control-plane and Mixer replicas",
        ),
        "app workers": (
            app_slots * MEMORY_PER_WORKER_BYTES,
            f"topology: workload {busiest.name!r} has {busiest.replicas:,} replicas x "
            f"{busiest.workers:,} workers",
        ),
        "proxy workers": (
            (proxy_slots + control_slots) * MEMORY_PER_WORKER_BYTES,
            f"mesh: {proxy_slots + control_slots:,} proxy and control-plane workers",
        ),
        "connections": (
            connections * MEMORY_PER_CONNECTION_BYTES,
            f"workload.connections: {connections:,}",
        ),
    }
    memory = math.fsum(size for size, _ in memory_terms.values()) * spec.most_replications

    event_driver = _event_driver(
        spec,
        requests=requests,
        request_field=request_field,
        visits=visits,
        request_events=requests * events_per_request,
        control_events=control_events,
        control_driver=control_driver,
    )
    return RunEstimate(
        label=label,
        architecture=architecture,
        services=services,
        pods=pods,
        nodes=nodes,
        proxies=proxies,
        worker_slots=worker_slots,
        connections=connections,
        requests=requests,
        requests_from=requests_from,
        visits_per_request=visits,
        events_per_visit=per_visit,
        events_per_request=events_per_request,
        control_plane_events=control_events,
        replications=spec.most_replications,
        events=events,
        memory_bytes=memory,
        memory_terms=memory_terms,
        event_driver=event_driver,
    )


def _pods_from_changes(spec: ExperimentSpec, topology: TopologySpec) -> int:
    """Pods that configuration changes add (an upper bound: a scale counts its new total, a
    deploy the whole workload again, as the old pods drain while the new ones start)."""
    by_name = {s.name: s for s in topology.call_graph.services}
    added = 0
    for change in spec.changes:
        if change.kind == "scale":
            added += change.replicas or 0
        elif change.kind == "deploy":
            workload = by_name.get(change.service)
            added += workload.replicas if workload is not None else 0
        elif change.kind == "add_service":
            added += change.replicas if change.replicas is not None else 1
    return added


def _waypoint_share(mesh: Any, services: int) -> float:
    """The share of services with a waypoint in an ambient mesh."""
    waypoints = mesh.waypoints
    if waypoints == "all":
        return 1.0
    if waypoints == "none" or not services:
        return 0.0
    return min(1.0, len(waypoints) / services)


def _proxies(mesh: Any, topology: TopologySpec, pods: int) -> tuple[int, int]:
    """The mesh's proxies and their worker slots."""
    architecture = mesh.architecture
    nodes = len(topology.cluster.nodes)
    if architecture == "sidecar":
        return pods, pods * mesh.proxy.concurrency
    if architecture == "per_node":
        return nodes, nodes * mesh.proxy.concurrency
    if architecture == "ambient":
        waypoints = mesh.waypoints
        if waypoints == "all":
            hosts = len(topology.call_graph.hosts())
        elif waypoints == "none":
            hosts = 0
        else:
            hosts = len(waypoints)
        waypoint_pods = hosts * mesh.waypoint_replicas
        slots = nodes * mesh.ztunnel.concurrency + waypoint_pods * mesh.waypoint.concurrency
        return nodes + waypoint_pods, slots
    return 0, 0  # none, proxyless: no proxies


def _control_plane_slots(mesh: Any) -> tuple[int, int]:
    """Worker slots and pods of the control plane and of Mixer."""
    slots = pods = 0
    control_plane = getattr(mesh, "control_plane", None)
    if control_plane is not None:
        slots += control_plane.replicas * control_plane.cores
        pods += control_plane.replicas
    mixer = getattr(mesh, "mixer", None)
    if mixer is not None:
        for deployment in (mixer.policy, mixer.telemetry):
            slots += deployment.replicas * deployment.workers
            pods += deployment.replicas
    return slots, pods


def _requests(spec: ExperimentSpec, topology: TopologySpec) -> tuple[float, str, str]:
    """Requests per replication, how they were reckoned, and the field that sets them."""
    workload = spec.workload
    duration = spec.duration
    if isinstance(workload, ClosedLoopSpec):
        # A connection sends its next request when the last one is answered: no request takes
        # less than the entry's own work and the round trip to it, which bounds the rate.
        graph = topology.call_graph
        entry_s = min(w.service_time.mean() for w in graph.workloads_of(graph.entry))
        net = topology.cluster.network
        link_s = min(net.same_node.mean(), net.same_zone.mean(), net.cross_zone.mean())
        fastest_s = entry_s + 2 * link_s
        bound = workload.connections / fastest_s if fastest_s > 0 else math.inf
        if not 0 < workload.qps <= bound:
            if math.isinf(bound):
                how = "qps 0 (no pacing) and requests that take no time: the clock never moves"
                return math.inf, how, "workload.qps"
            how = (
                f"{workload.connections:,} connections x {duration:,.6g} s / "
                f"{fastest_s * 1e3:.3g} ms, the fastest a request can be"
            )
            return bound * duration, how, "workload.connections"
        if workload.connections > workload.qps * duration:
            # fortio's connections each send their first call at once, whatever the pacing.
            how = f"{workload.connections:,} connections, each sending at least one call"
            return float(workload.connections), how, "workload.connections"
        rate, rate_field, how = workload.qps, "workload.qps", "qps"
    else:
        rate, rate_field, how = workload.rate_rps, "workload.rate_rps", "rps"
    unusual = rate / _USUAL_RATE_RPS >= duration / _USUAL_DURATION_S
    return (
        rate * duration,
        f"{rate:,.6g} {how} x {duration:,.6g} s",
        rate_field if unusual else "duration",
    )


def _control_plane_events(spec: ExperimentSpec, mesh: Any, proxies: int) -> tuple[float, str]:
    """Control-plane events per replication, and the field that drives them."""
    control_plane = getattr(mesh, "control_plane", None)
    if control_plane is None or proxies == 0:
        return 0.0, ""
    per_proxy = CONTROL_PLANE_EVENTS_PER_PROXY
    per_proxy += CONTROL_PLANE_EVENTS_PER_CHANGE * len(spec.changes)
    driver = "topology (its proxies)"
    certificates = control_plane.certificates
    if certificates is not None:
        period = certificates.ttl * certificates.rotate_at
        rotations = spec.duration / period
        per_proxy += CONTROL_PLANE_EVENTS_PER_ROTATION * rotations
        outages = sum(f.duration for f in spec.faults if f.kind == "control_plane_outage")
        per_proxy += CONTROL_PLANE_EVENTS_PER_RETRY * outages / certificates.retry_interval
        if rotations > 10:
            driver = "mesh.overrides.control_plane.certificates.ttl (rotations) and duration"
    if len(spec.changes) > 10:
        driver = "changes (each is pushed to every proxy)"
    return proxies * per_proxy, driver


def _event_driver(
    spec: ExperimentSpec,
    *,
    requests: float,
    request_field: str,
    visits: float,
    request_events: float,
    control_events: float,
    control_driver: str,
) -> str:
    """The field furthest above its usual value among the factors of the events."""
    candidates = [(float(spec.replications), "replications")]
    if control_events > request_events:
        candidates.append((math.inf, control_driver))
    else:
        usual_requests = _USUAL_RATE_RPS * _USUAL_DURATION_S
        candidates.append((requests / usual_requests, request_field))
        candidates.append((visits / _USUAL_VISITS, "topology (service visits per request)"))
    return max(candidates, key=lambda c: c[0])[1]


# --- checking --------------------------------------------------------------------------------


def check_budget(
    estimate: ExperimentEstimate | ExperimentSpec,
    budget: Budget | None = None,
    *,
    command: str = "meshsim run",
) -> ExperimentEstimate:
    """Refuse a command whose runs exceed ``budget``; return the estimate otherwise.

    Args:
        estimate: the estimate of every run of the command, or a spec to estimate.
        budget: the budget; None for the default one.
        command: the command, to show where the flags go.

    Returns:
        The estimate.

    Raises:
        BudgetError: with the estimate, the budget, the field that drives it and the flag
            that raises it.
    """
    if isinstance(estimate, ExperimentSpec):
        estimate = estimate_experiment(estimate)
    budget = budget or Budget()
    problems = []
    events = estimate.events
    if not events <= budget.events:
        problems.append(_events_problem(estimate, budget, command))
    memory = estimate.memory_bytes
    if not memory <= budget.memory_bytes:
        problems.append(_memory_problem(estimate, budget, command))
    if problems:
        raise BudgetError("\n".join(problems))
    return estimate


def _events_problem(estimate: ExperimentEstimate, budget: Budget, command: str) -> str:
    events = estimate.events
    largest = max(estimate.runs, key=lambda run: run.events)
    lines = [
        f"too large to run: about {_num(events)} simulated events "
        f"(~{_duration(events / EVENTS_PER_CPU_SECOND)} of CPU), over the budget of "
        f"{_num(budget.events)}"
    ]
    if len(estimate.runs) > 1:
        lines.append(
            f"  {len(estimate.runs)} runs; the largest, {largest.label}: {_num(largest.events)}"
        )
    where = f"{largest.label}: " if len(estimate.runs) > 1 else ""
    lines.append(f"  {where}{largest.events_line()}")
    if estimate.grid and largest.events <= budget.events:
        driver = f"sweep.grid ({len(estimate.runs)} points of {', '.join(estimate.grid)})"
    else:
        driver = largest.event_driver
    lines.append(f"  driven by: {driver}")
    if events / EVENTS_PER_CPU_SECOND <= _MOST_CPU_S:
        lines.append(
            f"  make it smaller, or raise the budget: {command} --budget-events {_raise(events)}"
        )
    else:
        lines.append("  make it smaller: no budget would let it finish")
    return "\n".join(lines)


def _memory_problem(estimate: ExperimentEstimate, budget: Budget, command: str) -> str:
    memory = estimate.memory_bytes
    largest = max(estimate.runs, key=lambda run: run.memory_bytes)
    one = largest.memory_bytes / largest.replications + MEMORY_BASE_BYTES
    if largest.replications > 1 and one <= budget.memory_bytes:
        driver = f"replications ({largest.replications:,}, all held until they are merged)"
    else:
        driver = max(largest.memory_terms.values(), key=lambda term: term[0])[1]
    where = f"{largest.label}: " if len(estimate.runs) > 1 else ""
    return "\n".join(
        [
            f"too large to run: about {format_bytes(memory)} of memory, over the budget of "
            f"{format_bytes(budget.memory_bytes)}",
            f"  {where}{largest.memory_line()}",
            f"  driven by: {driver}",
            "  make it smaller, or raise the budget: "
            f"{command} --budget-memory {_raise_bytes(memory)}"
            if memory <= _MOST_MEMORY_BYTES
            else "  make it smaller: no machine has that much memory",
        ]
    )


# --- flags and formatting ----------------------------------------------------------------------


def parse_events(text: str) -> float:
    """``--budget-events``: a positive count (``2e8``, ``500000000``, ``1_000_000``).

    Raises:
        ValueError: if it is not a finite positive number.
    """
    try:
        value = float(str(text).replace("_", "").replace(",", ""))
    except ValueError:
        raise ValueError(f"expected a number of events such as 5e8, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"must be a finite number above 0, got {text!r}")
    return value


def parse_memory(text: str) -> float:
    """``--budget-memory``: a size (``8GiB``, ``16Gi``, ``500MB``, bytes).

    Raises:
        ValueError: if it is not a positive size.
    """
    value = parse_size(text)
    if value <= 0:
        raise ValueError(f"must be above 0, got {text!r}")
    return float(value)


def format_bytes(size: float) -> str:
    """``1.5 GiB``, ``300 MiB``, ``12 KiB``; ``inf`` for an unbounded size."""
    if not math.isfinite(size):
        return "unbounded"
    for unit, scale in (("EiB", 2**60), ("PiB", 2**50), ("TiB", 2**40), ("GiB", 2**30)):
        if size >= scale:
            return f"{size / scale:,.3g} {unit}" if size < 1000 * 2**60 else f"{size:.2e} B"
    if size >= 2**20:
        return f"{size / 2**20:.3g} MiB"
    if size >= 2**10:
        return f"{size / 2**10:.3g} KiB"
    return f"{size:.0f} B"


def _num(value: float) -> str:
    if not math.isfinite(value):
        return "unbounded"
    if value < 1e6:
        return f"{value:,.0f}"
    return f"{value:.2g}"


def _raise(value: float) -> str:
    """A round budget above ``value`` to suggest (two significant figures, rounded up)."""
    exponent = math.floor(math.log10(value)) - 1
    rounded = math.ceil(value / 10**exponent) * 10**exponent
    mantissa, _, power = f"{rounded:.1e}".partition("e")
    return f"{mantissa.removesuffix('.0')}e{int(power)}" if rounded >= 1e6 else f"{rounded:.0f}"


def _raise_bytes(size: float) -> str:
    gib = size / 2**30
    if gib < 1:
        return f"{math.ceil(size / 2**20)}MiB"
    return f"{math.ceil(gib)}GiB"


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "forever"
    for unit, scale in (("years", 365 * 86400), ("days", 86400), ("h", 3600), ("min", 60)):
        if seconds >= scale:
            return f"{seconds / scale:,.3g} {unit}"
    return f"{seconds:.2g} s"


def _short(value: Any) -> str:
    if isinstance(value, dict) and "profile" in value:
        return str(value["profile"])
    text = str(value)
    return text if len(text) <= 30 else text[:27] + "..."


def total(estimates: Iterable[ExperimentEstimate]) -> ExperimentEstimate:
    """Several commands' runs as one (``meshsim compare`` runs one spec per profile)."""
    runs: list[RunEstimate] = []
    for estimate in estimates:
        runs.extend(estimate.runs)
    return ExperimentEstimate(runs)
