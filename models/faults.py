"""The fault schedule of an experiment: what breaks, what it hits, when, and for how long.

A fault has a ``kind``, a ``start``, a ``duration`` (None: until the end of the run) and a
``target`` chosen by selectors (service, workload, version, pod, node, zone, a share of the
pods selected, or a link between two nodes or zones). Kinds:

* ``pod_crash``: the pods' containers exit: connections to them are refused at once. They
  restart after ``restart_delay`` and are ready ``readiness_delay`` later. Kubernetes takes a
  pod out of its service's endpoints once its readiness probe has failed ``failureThreshold``
  times, every ``periodSeconds`` (``detection``, 3 x 10 s by default), and the mesh's control
  plane then pushes the change; back in once ready again.
* ``proxy_crash``: the pods' proxies stop (restarted after ``restart_delay``): a sidecar takes
  its pod's traffic down both ways; a proxy per node, every pod that routes through it; a
  ztunnel, its node's pods.
* ``node_failure``: a black hole. Nothing leaves or reaches the node; a new connection to it
  waits for the connect timeout (``connectTimeout``) unless something else answers first (a
  route's timeout), which differs from a refused connection; a request on a connection
  already open goes in and arrives with TCP's first retransmission after the node is back
  (never, if it is not). Kubernetes takes its pods out of the endpoints after the node
  monitor's grace period (``detection``, 40 s by default).
* ``partition``: the links between two sets of nodes (``target.link``: two nodes or zones)
  lose everything, both ways, as a node failure does; ``link_degradation``: they add
  ``latency`` and lose a share
  ``loss`` of messages, each resent after TCP's retransmission timeout (200 ms, doubling).
* ``misbehaviour``: the pods answer errors, slowly, or not at all (the service
  ``misbehaviour`` of the topology, switched on for the fault's time).
* ``mixer_outage``, ``control_plane_outage``, ``ca_outage``: Mixer, the control plane (pushes
  and signatures), the certificate authority only.

What a fault does and when is recorded (:class:`FaultRecord`), for the results over time.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Literal

import simpy
from pydantic import BaseModel, ConfigDict, Field, model_validator

from models.mesh import Mesh
from sim.network import FaultedLink, link_class
from sim.units import Duration
from topologies import MisbehaviourSpec

if TYPE_CHECKING:
    from models.service import ServicePod
    from models.world import Node, World

__all__ = [
    "FaultSpec",
    "FaultKind",
    "FaultTarget",
    "FaultRecord",
    "schedule_faults",
    "MESH_FAULTS",
    "POD_FAULTS",
    "LINK_FAULTS",
]

FaultKind = Literal[
    "mixer_outage",
    "control_plane_outage",
    "ca_outage",
    "pod_crash",
    "proxy_crash",
    "node_failure",
    "partition",
    "link_degradation",
    "misbehaviour",
]

MESH_FAULTS = frozenset({"mixer_outage", "control_plane_outage", "ca_outage"})
"""Faults of a mesh component as a whole: no target."""

POD_FAULTS = frozenset({"pod_crash", "proxy_crash", "misbehaviour"})
"""Faults that hit pods (selected by service, workload, version, pod, node, zone, share)."""

LINK_FAULTS = frozenset({"partition", "link_degradation"})
"""Faults that hit the links between two sets of nodes."""

READINESS_DETECTION_S = 3 * 10.0
"""Kubernetes' readiness probe: ``failureThreshold`` 3 times ``periodSeconds`` 10."""

NODE_DETECTION_S = 40.0
"""Kubernetes' node monitor grace period: a node that stops reporting is NotReady after it."""


class FaultTarget(BaseModel):
    """What a fault hits: every selector given must hold (AND).

    Attributes:
        service: a service (host) name.
        workload: a workload (deployment) name.
        version: a version label.
        pod: one pod's name (``reviews-v2-0``).
        node: a node's name; for a node failure, the node.
        zone: a zone's name; for a node failure, every node of it.
        share: the share of the selected pods hit (at least one), chosen on the fault's own
            random stream.
        link: two nodes or zones: the links between them (partition, degradation).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    service: str | None = None
    workload: str | None = None
    version: str | None = None
    pod: str | None = None
    node: str | None = None
    zone: str | None = None
    share: Annotated[float, Field(gt=0.0, le=1.0)] = 1.0
    link: Annotated[list[str], Field(min_length=2, max_length=2)] | None = None


class FaultSpec(BaseModel):
    """One fault (see the module docstring).

    Attributes:
        kind: what breaks.
        start: when (seconds of simulated time).
        duration: for how long; None: until the end of the run. Crashes have none: they
            last until the restart (``restart_delay``).
        target: what it hits (pods, nodes, links); mesh-wide outages have none.
        restart_delay: crashes: until the container runs again.
        readiness_delay: crashes and node failures: from running again to ready.
        detection: crashes and node failures: until Kubernetes takes the pods out of the
            endpoints (None: the readiness probe's 30 s for a crash, the node monitor's
            40 s for a node).
        latency: link degradation: added one-way delay.
        loss: link degradation: share of messages lost (each resent).
        misbehaviour: a misbehaviour fault: how the pods misbehave.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: FaultKind
    start: Duration
    duration: Annotated[Duration, Field(gt=0)] | None = None
    target: FaultTarget = FaultTarget()
    restart_delay: Annotated[Duration, Field(gt=0)] = 10.0
    readiness_delay: Duration = 0.0
    detection: Duration | None = None
    latency: Duration = 0.0
    loss: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0
    misbehaviour: MisbehaviourSpec | None = None

    @model_validator(mode="after")
    def _fields_of_kind(self) -> FaultSpec:
        kind = self.kind
        if kind in ("pod_crash", "proxy_crash") and self.duration is not None:
            raise ValueError(
                f"duration: a {kind} has none; it lasts until the restart (restart_delay)"
            )
        if kind in MESH_FAULTS and self.duration is None:
            raise ValueError(f"duration: a {kind} needs one")
        if kind in MESH_FAULTS and self.target != FaultTarget():
            raise ValueError(f"target: a {kind} hits the whole mesh; it has no target")
        if kind in LINK_FAULTS and self.target.link is None:
            raise ValueError(f"target.link: a {kind} needs two nodes or zones, link: [a, b]")
        if kind not in LINK_FAULTS and self.target.link is not None:
            raise ValueError("target.link: only a partition or a link degradation has one")
        if kind == "node_failure" and self.target.node is None and self.target.zone is None:
            raise ValueError("target: a node_failure names a node or a zone")
        if kind == "misbehaviour" and self.misbehaviour is None:
            raise ValueError("misbehaviour: a misbehaviour fault says how (error_ratio, ...)")
        if kind != "misbehaviour" and self.misbehaviour is not None:
            raise ValueError(f"misbehaviour: only a misbehaviour fault has one, not {kind!r}")
        if kind == "link_degradation" and self.latency == 0.0 and self.loss == 0.0:
            raise ValueError("latency / loss: a link degradation adds latency, loss, or both")
        for name in ("latency", "loss"):
            if getattr(self, name) and kind != "link_degradation":
                raise ValueError(f"{name}: only a link_degradation has one")
        return self

    def end_s(self, run_end_s: float) -> float:
        """When the fault ends (a crash: when its pods run again)."""
        if self.kind in ("pod_crash", "proxy_crash"):
            return min(self.start + self.restart_delay, run_end_s)
        return run_end_s if self.duration is None else min(self.start + self.duration, run_end_s)


@dataclass
class FaultRecord:
    """What one fault hit, and when (for the results over time).

    Attributes:
        kind: the fault's kind.
        start_s / end_s: when it began and ended (the end of the run at most).
        targets: what it hit: pod, proxy, node or link names.
        events: (time, what happened): endpoints removed and back, restarts, ready.
    """

    kind: str
    start_s: float
    end_s: float
    targets: list[str] = field(default_factory=list)
    events: list[tuple[float, str]] = field(default_factory=list)


def schedule_faults(
    env: simpy.Environment,
    mesh: Mesh,
    faults: list[FaultSpec],
    pods: list[ServicePod] | None = None,
    world: World | None = None,
    run_end_s: float = float("inf"),
) -> list[FaultRecord]:
    """Start a process per fault; return the records they fill in as they go."""
    records = []
    for i, fault in enumerate(faults):
        record = FaultRecord(fault.kind, fault.start, fault.end_s(run_end_s))
        records.append(record)
        env.process(_fault(env, mesh, fault, i, pods or [], world, record))
    return records


def select_pods(
    pods: list[ServicePod], target: FaultTarget, world: World | None, index: int
) -> list[ServicePod]:
    """The pods ``target`` selects (every selector must hold), then its share of them."""
    chosen = [p for p in pods if _selected(p, target)]
    if target.share < 1.0 and chosen:
        count = max(1, round(target.share * len(chosen)))
        if world is not None:
            order = world.rng(f"faults.{index}").permutation(len(chosen))
            chosen = [chosen[int(i)] for i in sorted(order[:count])]
        else:
            chosen = chosen[:count]
    return chosen


def _selected(pod: ServicePod, target: FaultTarget) -> bool:
    spec = pod.spec
    return (
        (target.service is None or pod.host == target.service)
        and (target.workload is None or spec.name == target.workload)
        and (target.version is None or spec.version == target.version)
        and (target.pod is None or pod.name == target.pod)
        and (target.node is None or pod.node.name == target.node)
        and (target.zone is None or pod.node.zone == target.zone)
    )


def _nodes(world: World, name: str) -> list[Node]:
    """The nodes a name stands for: a node, or every node of a zone."""
    if name in world.nodes:
        return [world.nodes[name]]
    return [n for n in world.nodes.values() if n.zone == name]


def _fault(
    env: simpy.Environment,
    mesh: Mesh,
    fault: FaultSpec,
    index: int,
    pods: list[ServicePod],
    world: World | None,
    record: FaultRecord,
) -> Generator[simpy.Event, Any, None]:
    if fault.start > env.now:
        yield env.timeout(fault.start - env.now)
    kind = fault.kind
    if kind in MESH_FAULTS:
        mesh.set_fault(kind, True)
        assert fault.duration is not None
        yield env.timeout(fault.duration)
        mesh.set_fault(kind, False)
        return
    assert world is not None, "faults with targets need the world"
    if kind in ("pod_crash", "proxy_crash"):
        yield from _crash(
            env, mesh, fault, select_pods(pods, fault.target, world, index), record, world
        )
    elif kind == "misbehaviour":
        yield from _misbehave(env, fault, select_pods(pods, fault.target, world, index), record)
    elif kind == "node_failure":
        yield from _node_failure(env, mesh, fault, world, record)
    else:
        yield from _links(env, fault, world, record)


def _wait(env: simpy.Environment, fault: FaultSpec) -> Generator[simpy.Event, Any, None]:
    """Until the fault's end (forever, for one without a duration)."""
    if fault.duration is None:
        yield env.event()  # never fires: the run ends first
    else:
        yield env.timeout(fault.duration)


def _crash(
    env: simpy.Environment,
    mesh: Mesh,
    fault: FaultSpec,
    hit: list[ServicePod],
    record: FaultRecord,
    world: World,
) -> Generator[simpy.Event, Any, None]:
    proxies: list[Any] = []
    if fault.kind == "proxy_crash":
        proxies = mesh.proxies_of(hit)
        target = fault.target
        where = target.node or target.zone
        if where is not None:  # and every proxy on those nodes (the load generator's too)
            nodes = _nodes(world, where)
            proxies += [p for p in mesh.proxies() if p.node in nodes and p not in proxies]
    record.targets = [p.name for p in proxies] if proxies else [p.name for p in hit]
    # A sidecar's crash takes its pod down too; a shared proxy's takes the pods that route
    # through it (its own checks), not the pods' own containers.
    down = hit if fault.kind == "pod_crash" or mesh.proxy_is_pods(proxies) else []
    for proxy in proxies:
        proxy.down = True
    for pod in down:
        pod.alive = False
    mesh.world.faults_active += 1
    if proxies and not mesh.proxy_is_pods(proxies):
        env.process(_proxies_unready(env, mesh, fault, proxies, record))
    detection = READINESS_DETECTION_S if fault.detection is None else fault.detection
    restart = fault.restart_delay
    removed: list[ServicePod] = []
    if down and detection < restart:
        yield env.timeout(detection)
        removed = [p for p in down if not p.alive]
        if removed:
            mesh.set_ready(removed, False)
            record.events.append(
                (env.now, "endpoints removed: " + ", ".join(p.name for p in removed))
            )
        yield env.timeout(restart - detection)
    else:
        yield env.timeout(restart)
    for proxy in proxies:
        proxy.down = False
    for pod in down:
        pod.alive = True
    mesh.world.faults_active -= 1
    record.events.append((env.now, "restarted"))
    yield from _ready_again(env, mesh, fault, removed, record)


def _proxies_unready(
    env: simpy.Environment, mesh: Mesh, fault: FaultSpec, proxies: list[Any], record: FaultRecord
) -> Generator[simpy.Event, Any, None]:
    """Crashed shared proxies leave the endpoints clients reach them by once their readiness
    probe has failed (the mesh's ``PROXY_DETECTION_S``, or the fault's ``detection``), and
    rejoin them ``readiness_delay`` after their restart."""
    detection = getattr(mesh, "PROXY_DETECTION_S", READINESS_DETECTION_S)
    if fault.detection is not None:
        detection = fault.detection
    if detection >= fault.restart_delay:
        return
    yield env.timeout(detection)
    mesh.set_proxies_ready(proxies, False)
    record.events.append((env.now, "proxies unready: " + ", ".join(p.name for p in proxies)))
    yield env.timeout(fault.restart_delay - detection + fault.readiness_delay)
    mesh.set_proxies_ready(proxies, True)
    record.events.append((env.now, "proxies ready"))


def _misbehave(
    env: simpy.Environment, fault: FaultSpec, hit: list[ServicePod], record: FaultRecord
) -> Generator[simpy.Event, Any, None]:
    record.targets = [p.name for p in hit]
    assert fault.misbehaviour is not None
    before = [p.misbehave(fault.misbehaviour) for p in hit]
    yield from _wait(env, fault)
    for pod, old in zip(hit, before, strict=True):
        pod.restore_misbehaviour(old)


def _node_failure(
    env: simpy.Environment, mesh: Mesh, fault: FaultSpec, world: World, record: FaultRecord
) -> Generator[simpy.Event, Any, None]:
    name = fault.target.node or fault.target.zone
    assert name is not None
    failed = _nodes(world, name)
    others = [n for n in world.nodes.values() if n not in failed]
    record.targets = [n.name for n in failed]
    undo = _cut(world, failed, others, _cut_until_heal(env, fault))
    detection = NODE_DETECTION_S if fault.detection is None else fault.detection
    end = env.now + (fault.duration if fault.duration is not None else float("inf"))
    on_nodes = [p for p in mesh.all_pods() if p.node in failed and p.serving]
    proxies = [p for p in mesh.proxies() if p.node in failed]  # shared ones: node proxies
    if proxies and mesh.proxy_is_pods(proxies):
        proxies = []
    removed: list[Any] = []
    if (on_nodes or proxies) and env.now + detection < end:
        yield env.timeout(detection)
        removed = on_nodes
        if removed:
            mesh.set_ready(removed, False)
            record.events.append((env.now, f"endpoints removed: {len(removed)} pods"))
        if proxies:
            mesh.set_proxies_ready(proxies, False)
        if fault.duration is None:
            yield env.event()
            return
        yield env.timeout(end - env.now)
    else:
        yield from _wait(env, fault)
    undo()
    record.events.append((env.now, "node back"))
    if proxies and fault.readiness_delay <= 0:
        mesh.set_proxies_ready(proxies, True)
    elif proxies:
        env.process(_ready_later(env, mesh, fault.readiness_delay, proxies))
    yield from _ready_again(env, mesh, fault, removed, record)


def _ready_later(
    env: simpy.Environment, mesh: Mesh, delay_s: float, proxies: list[Any]
) -> Generator[simpy.Event, Any, None]:
    yield env.timeout(delay_s)
    mesh.set_proxies_ready(proxies, True)


def _ready_again(
    env: simpy.Environment, mesh: Mesh, fault: FaultSpec, removed: list[Any], record: FaultRecord
) -> Generator[simpy.Event, Any, None]:
    """Pods taken out of the endpoints rejoin them once ready (``readiness_delay``)."""
    if not removed:
        return
    if fault.readiness_delay > 0:
        yield env.timeout(fault.readiness_delay)
    mesh.set_ready(removed, True)
    record.events.append((env.now, "endpoints back"))


def _links(
    env: simpy.Environment, fault: FaultSpec, world: World, record: FaultRecord
) -> Generator[simpy.Event, Any, None]:
    assert fault.target.link is not None
    a, b = fault.target.link
    side_a, side_b = _nodes(world, a), _nodes(world, b)
    record.targets = [f"{a}<->{b}"]
    if fault.kind == "partition":
        undo = _cut(world, side_a, side_b, _cut_until_heal(env, fault))
    else:
        undo = _cut(
            world,
            side_a,
            side_b,
            lambda base: FaultedLink(base, extra=fault.latency, loss=fault.loss),
        )
    yield from _wait(env, fault)
    undo()


def _cut_until_heal(env: simpy.Environment, fault: FaultSpec) -> Any:
    """How a fault that starts now cuts a link of class ``base``: everything lost until it
    ends (its messages then arrive with TCP's next retransmission), for good without an end."""
    heals = env.now + fault.duration if fault.duration is not None else float("inf")
    return lambda base: FaultedLink(base, cut=True, heals_at=heals, clock=lambda: env.now)


def _cut(world: World, side_a: list[Node], side_b: list[Node], make: Any) -> Any:
    """Put a faulted link (``make(base class)``) between every node of ``side_a`` and every
    node of ``side_b``, both ways; return the function that puts the plain links back."""
    changed = []
    for x in side_a:
        for y in side_b:
            if x is y:
                continue
            base = link_class(x.name, x.zone, y.name, y.zone)
            faulted = make(base)
            x.links[y] = faulted
            y.links[x] = faulted
            changed.append((x, y, base))
    world.faults_active += 1

    def undo() -> None:
        for x, y, base in changed:
            x.links[y] = base
            y.links[x] = base
        world.faults_active -= 1

    return undo
