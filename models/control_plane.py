"""The control plane: configuration changes become pushes (or pulls), and certificates.

A configuration change (scale a workload, deploy a new version, change route weights, add a
service) reaches the proxies as follows, for each variant:

* ``istiod``: the change is debounced (a quiet period of ``debounce_quiet`` with no newer
  change, at most ``debounce_max`` after the first; changes meanwhile merge into one push
  request), then pushed to every proxy whose configuration includes the changed service (its
  scoping decides): at most ``max_concurrent_pushes`` at once per replica (Istio:
  ``min(15 + 5 x CPUs, 100)``), each push costing the replica ``push_base_cpu`` plus a cost
  per cluster and endpoint it sends, then the network, then the proxy's time to apply.
  Proxies are shared among the replicas.
* ``split`` (before Istio 1.5): Galley validates the change (``galley_cpu``) and hands it to
  Pilot after ``galley_handoff``; Pilot debounces and pushes as istiod does; Citadel signs
  the certificates.
* ``maesh``: the controller builds the configuration once per change; every proxy pulls on
  its own schedule, every ``poll_interval``, and applies what is new. A poll that finds
  nothing new costs no event: a proxy is woken only at its first poll instant at or after a
  newer configuration is built (and the controller is up), and the polls it made meanwhile
  are counted in closed form (``polls`` and ``empty_polls`` in the summary).

What an Istio push sends, and how pushes are scheduled, follow the release (read in
istio/istio at each release's tag; the profiles say which release has which):

* **Incremental EDS** (``incremental_eds``): a change of endpoints only (``scale``,
  ``deploy``, a readiness change) is a push request that is not ``Full``: istiod sends the
  changed services' ClusterLoadAssignments and nothing else, with no new push context and no
  CDS, LDS or RDS (1.1: ``DiscoveryServer.Push(full=false)`` -> ``edsIncremental`` in
  pilot/pkg/proxy/envoy/v2/discovery.go and ads.go; 1.4 to today: ``Push`` skips
  ``InitContext`` for a request that is not ``Full``, and ``EdsGenerator.buildEndpoints``
  in pilot/pkg/xds/eds.go skips the clusters whose service did not change). Without it
  every change regenerates every proxy's whole configuration. Any other change (a route,
  a policy, a new service) is a full push: a new push context (``push_context_cpu`` plus
  ``push_context_per_service_cpu`` per service), then each proxy's configuration.
* **Delta xDS** (``xds: delta``, ``ISTIO_DELTA_XDS``, the default from 1.22;
  pilot/pkg/xds/delta.go ``pushDeltaXds``): a full push sends only the resources that
  changed, for the changes Istio's delta generators handle: a new service
  (``CdsGenerator.GenerateDeltas`` in pilot/pkg/xds/cds.go "only builds deltas when services
  change") and endpoints. A route or policy change is still generated whole (CDS for a
  DestinationRule is a "todo" there; RDS and LDS have no ``GenerateDeltas``). The model
  charges a delta push for the changed clusters and their endpoints only, a lower bound for
  a new service, whose listener and route configuration Istio still resends whole.
* **The push queue** (``push_queue``, Istio 1.3 on: ``PushQueue`` in pilot/pkg/xds/
  pushqueue.go): each replica keeps one pending push request per proxy; a request for a
  proxy already queued is merged into it (``Enqueue``: ``CopyMerge``, ``Full`` if either
  was, the changed services added together), and one for a proxy being pushed to waits
  and is queued again when that push is done (``MarkDone``). ``max_concurrent_pushes``
  workers take proxies from the queue in order (``doSendPushes``). Without it (Istio 1.1,
  ``startPush`` in pilot/pkg/proxy/envoy/v2/ads.go), every push request is sent to each
  proxy on its own, and a full push still waiting for a slot is dropped once a newer full
  push has started ("PushAll abort").
* **The debouncer waits for the last push** (``debounce_waits_for_push``, Istio 1.3 on:
  ``debounce`` in pilot/pkg/xds/discovery.go, its ``free`` flag and ``freeCh``): a debounced
  push does not start while the previous one is still building its push context and
  queueing the proxies; it starts when that one is done, if the debounce still allows it
  then. Before (1.1, ``handleUpdates``), a new push started at once, beside the last.

Each proxy holds a configuration version and the endpoints of that version; traffic routed on
an old version can go to a pod that no longer exists. The convergence of a change is the time
from the change until a proxy has applied it, over the proxies it concerns (Istio's
``pilot_proxy_convergence_time``).

Certificates: the certificate authority (istiod, or Citadel) signs one for each proxy at the
start and again at every rotation (``sign_cpu`` each, in a queue); during a control-plane
outage signatures fail and are retried, and once a proxy's certificate has expired, mTLS to
and from it fails.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np
import simpy
from pydantic import BaseModel, ConfigDict, Field, model_validator

from models.policies import Policy, policy_host
from models.world import Node, World
from sim.distributions import DistributionSpec, UniformDist
from sim.network import NetworkPort
from sim.random import stable_hash
from sim.servers import CpuServer
from sim.units import Duration, Size

if TYPE_CHECKING:
    from models.proxy import Proxy

__all__ = [
    "ControlPlaneSpec",
    "CertificateSpec",
    "ConfigChangeSpec",
    "ControlPlane",
    "ChangeRecord",
    "PushRequest",
]


class CertificateSpec(BaseModel):
    """Workload certificates.

    Attributes:
        ttl: a certificate's lifetime (Istio: 24 h).
        rotate_at: the share of the lifetime after which the proxy asks for a new one
            (Istio's grace ratio 0.5).
        jitter: rotation times are spread by up to this share, so proxies do not all ask at
            once.
        sign_cpu: the CA's CPU per signature.
        retry_interval: a failed signature request is retried after this.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    ttl: Annotated[Duration, Field(gt=0)] = 86400.0
    rotate_at: Annotated[float, Field(gt=0.0, le=1.0)] = 0.5
    jitter: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.1
    sign_cpu: Duration = 0.002
    retry_interval: Annotated[Duration, Field(gt=0)] = 1.0


class ControlPlaneMemorySpec(BaseModel):
    """Control-plane memory: base + per connected proxy + per service and endpoint."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base_bytes: Size = 0
    per_proxy_bytes: Size = 0
    per_service_bytes: Size = 0
    per_endpoint_bytes: Size = 0


class ControlPlaneSpec(BaseModel):
    """A control plane (see the module docstring for the variants).

    Attributes:
        kind: ``istiod``, ``split`` (Galley, Pilot, Citadel) or ``maesh``.
        replicas: istiod (or Pilot) replicas; proxies are spread over them.
        cores: CPUs per replica (its workers, and Istio's push limit).
        debounce_quiet: PILOT_DEBOUNCE_AFTER (seconds).
        debounce_max: PILOT_DEBOUNCE_MAX (seconds).
        max_concurrent_pushes: per replica; None = ``min(15 + 5 x cores, 100)``.
        push_base_cpu: CPU to generate one proxy's push (seconds).
        push_per_cluster_cpu: and per cluster that proxy knows.
        push_per_endpoint_cpu: and per endpoint.
        push_bytes_per_cluster: size of a push on the wire, per cluster it sends.
        push_context_cpu: CPU to build a new push context, once per full push and replica
            (``initPushContext``; a push of endpoints only reuses the last one).
        push_context_per_service_cpu: and per service of the mesh.
        incremental_eds: a change of endpoints only sends the changed services' endpoints
            (EDS), not the whole configuration.
        xds: ``sotw`` (state of the world: a full push sends the proxy's whole
            configuration) or ``delta`` (Incremental xDS: only the changed resources, for
            the changes Istio's delta generators handle; ``ISTIO_DELTA_XDS``).
        push_queue: one pending push request per proxy, merged (Istio's ``PushQueue``);
            False: each request pushed on its own, an older full push dropped when a newer
            one starts (Istio 1.1).
        debounce_waits_for_push: a debounced push waits until the last one has built its
            push context and queued its proxies (the ``free`` channel of Istio's debouncer).
        apply_delay: the proxy's time to apply a push (a distribution).
        galley_cpu: ``split``: Galley's validation CPU per change.
        galley_handoff: ``split``: from Galley to Pilot (seconds).
        poll_interval: ``maesh``: how often each proxy pulls.
        poll_base_cpu: ``maesh``: the controller's CPU to answer one poll, whatever the
            proxy already has (it encodes its whole configuration for every poll).
        poll_per_cluster_cpu: and per service of that configuration.
        poll_per_endpoint_cpu: and per endpoint.
        certificates: workload certificates, or None (no CA: Maesh has no mTLS).
        memory: the control plane's memory model.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["istiod", "split", "maesh"] = "istiod"
    replicas: Annotated[int, Field(ge=1)] = 1
    cores: Annotated[int, Field(ge=1)] = 4
    debounce_quiet: Duration = 0.1
    debounce_max: Duration = 10.0
    max_concurrent_pushes: Annotated[int, Field(ge=1)] | None = None
    push_base_cpu: Duration = 0.001
    push_per_cluster_cpu: Duration = 0.00001
    push_per_endpoint_cpu: Duration = 0.000001
    push_bytes_per_cluster: Size = 2048
    push_context_cpu: Annotated[Duration, Field(ge=0)] = 0.001
    push_context_per_service_cpu: Annotated[Duration, Field(ge=0)] = 0.00002
    incremental_eds: bool = True
    xds: Literal["sotw", "delta"] = "sotw"
    push_queue: bool = True
    debounce_waits_for_push: bool = True
    apply_delay: DistributionSpec = Field(default=0.005, validate_default=True)
    galley_cpu: Duration = 0.02
    galley_handoff: Duration = 0.1
    poll_interval: Annotated[Duration, Field(gt=0)] = 2.0
    poll_base_cpu: Annotated[Duration, Field(ge=0)] = 0.0
    poll_per_cluster_cpu: Annotated[Duration, Field(ge=0)] = 0.0
    poll_per_endpoint_cpu: Annotated[Duration, Field(ge=0)] = 0.0
    certificates: CertificateSpec | None = CertificateSpec()
    memory: ControlPlaneMemorySpec = ControlPlaneMemorySpec()

    @property
    def push_limit(self) -> int:
        if self.max_concurrent_pushes is not None:
            return self.max_concurrent_pushes
        return min(15 + 5 * self.cores, 100)


class ConfigChangeSpec(BaseModel):
    """One configuration change during an experiment.

    Attributes:
        at: when it happens (seconds).
        kind: ``scale`` (a workload's replicas), ``deploy`` (every pod of a workload replaced
            by a new one, as ``strategy`` says), ``route_weights`` (routing of a service; configuration only),
            ``add_service`` (a new service, with ``replicas`` pods, that nobody calls yet) or
            ``policy`` (a traffic policy added, or replacing the one of the same kind, namespace
            and name: ``policy`` holds it; the control plane pushes it like any change).
        service: the workload (scale, deploy, add_service) or service host (route_weights;
            for a policy, the host it concerns, filled in when left out).
        policy: the policy object of a ``policy`` change (``models.policies``).
        replicas: scale: the new count; add_service: its pods (default 1).
        grace_period: scale down: how long a removed pod still accepts connections after it
            has left the endpoints. 0, the default, is a pod that exits at once: callers
            whose configuration still lists it see refused connections until they converge.
            (A deploy's old pods use ``drain`` and ``termination_grace_period`` instead.)
        strategy: deploy: ``rolling_update`` (the default, a Deployment's RollingUpdate:
            new pods surge, and old ones leave as the new ones become ready, within
            ``max_surge`` and ``max_unavailable``) or ``all_at_once`` (every new pod ready
            and every old pod out of the endpoints at the change: what meshsim did before;
            not Kubernetes' ``Recreate``, which stops the old pods before starting new ones).
        max_surge: rolling_update: pods above ``replicas`` during the roll, a count or a
            percentage of the replicas (``"25%"``, Kubernetes' default), rounded up.
        max_unavailable: rolling_update: ready pods below ``replicas`` allowed during the
            roll, a count or a percentage (``"25%"``, the default), rounded down; not both 0.
        readiness_delay: rolling_update: a new pod is ready (joins the endpoints) this long
            after it starts (seconds).
        drain: deploy: how long an old pod still accepts connections once it has left the
            endpoints, then it exits and refuses them (seconds). None = the mesh's default:
            Istio's sidecar drains for ``terminationDrainDuration``, 5 s; a mesh without
            sidecars, 0. Capped by ``termination_grace_period``.
        termination_grace_period: deploy: the pod's ``terminationGracePeriodSeconds``
            (Kubernetes' default 30 s): the pod is killed then, drained or not.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    at: Duration
    kind: Literal["scale", "deploy", "route_weights", "add_service", "policy"]
    service: str = ""
    replicas: Annotated[int, Field(ge=0)] | None = None
    grace_period: Annotated[Duration, Field(ge=0)] = 0.0
    policy: Policy | None = None
    strategy: Literal["rolling_update", "all_at_once"] = "rolling_update"
    max_surge: Annotated[int, Field(ge=0)] | Annotated[str, Field(pattern=r"^\d+%$")] = "25%"
    max_unavailable: Annotated[int, Field(ge=0)] | Annotated[str, Field(pattern=r"^\d+%$")] = "25%"
    readiness_delay: Annotated[Duration, Field(ge=0)] = 0.0
    drain: Annotated[Duration, Field(ge=0)] | None = None
    termination_grace_period: Annotated[Duration, Field(ge=0)] = 30.0

    @model_validator(mode="after")
    def _fields_of_kind(self) -> ConfigChangeSpec:
        if self.kind == "policy":
            if self.policy is None:
                raise ValueError("a policy change needs the policy object (policy: {kind: ...})")
            if not self.service:
                object.__setattr__(self, "service", policy_host(self.policy))
        elif self.policy is not None:
            raise ValueError(f"policy: only a policy change has one, not {self.kind!r}")
        elif not self.service:
            raise ValueError(f"service: a {self.kind} change names its service")
        # Fields away from their defaults (not model_fields_set: a spec dumped and validated
        # again, as sweeps do, sets every field).
        given = {
            name
            for name, info in type(self).model_fields.items()
            if name in _DEPLOY_FIELDS and getattr(self, name) != info.default
        }
        deploy_only = {"strategy", "drain", "termination_grace_period", *_ROLLING_FIELDS}
        if self.kind != "deploy" and given & deploy_only:
            names = ", ".join(sorted(given & deploy_only))
            raise ValueError(f"{names}: only a deploy change has these, not {self.kind!r}")
        if self.kind == "deploy":
            if "grace_period" in given:
                raise ValueError(
                    "grace_period: a deploy's old pods drain for `drain` (None = the mesh's "
                    "default), capped by `termination_grace_period`"
                )
            if self.strategy == "all_at_once" and given & _ROLLING_FIELDS:
                names = ", ".join(sorted(given & _ROLLING_FIELDS))
                raise ValueError(f"{names}: only a rolling_update deploy has these")
            if _is_zero(self.max_surge) and _is_zero(self.max_unavailable):
                raise ValueError("max_surge, max_unavailable: may not both be 0")
        return self

    def rolling_bounds(self, replicas: int) -> tuple[int, int]:
        """A rolling update's (surge, unavailable) for ``replicas`` pods: percentages of the
        replicas, the surge rounded up and the unavailable down; if both come to 0, one pod
        may be unavailable (Kubernetes' ``ResolveFenceposts``,
        pkg/controller/deployment/util/deployment_util.go)."""
        surge = _resolve(self.max_surge, replicas, math.ceil)
        unavailable = _resolve(self.max_unavailable, replicas, math.floor)
        if surge == 0 and unavailable == 0:
            unavailable = 1
        return surge, unavailable


_ROLLING_FIELDS = frozenset({"max_surge", "max_unavailable", "readiness_delay"})
_DEPLOY_FIELDS = _ROLLING_FIELDS | {"grace_period", "strategy", "drain", "termination_grace_period"}


def _is_zero(value: int | str) -> bool:
    """A count or a percentage that is 0 whatever the replicas."""
    return (value.rstrip("%") if isinstance(value, str) else str(value)).strip("0") == ""


def _resolve(value: int | str, replicas: int, rounding: Any) -> int:
    """A count, or a percentage of ``replicas`` rounded by ``rounding``."""
    if isinstance(value, int):
        return value
    return int(rounding(int(value[:-1]) * replicas / 100))


@dataclass
class ChangeRecord:
    """One change and how long each proxy it concerns took to apply it."""

    at_s: float
    kind: str
    service: str
    version: int
    hosts: frozenset[str]
    affected: int = 0
    convergence_s: list[float] = field(default_factory=list)


# Changes of endpoints only: an incremental EDS push (pilot/pkg/xds/eds.go, the
# ``kind.Endpoints`` configs); every other kind is a full push.
ENDPOINT_CHANGES = frozenset({"scale", "deploy", "readiness"})
# Changes Istio's delta generators do not make a delta of: routes and policies regenerate the
# proxy's listeners, routes (and clusters, for a DestinationRule) whole (pilot/pkg/xds/cds.go
# ``GenerateDeltas``; RDS and LDS have none).
WHOLE_CHANGES = frozenset({"route_weights", "policy"})


@dataclass(frozen=True)
class PushRequest:
    """What a push carries (Istio's ``model.PushRequest``, as far as its cost goes).

    Attributes:
        full: not endpoints only: a new push context, and configuration beyond EDS.
        whole: a change delta xDS cannot send as a delta (a route, a policy).
        hosts: the changed services.
        version: the configuration version it brings.
        view: that version's endpoints (and policies).
    """

    full: bool
    whole: bool
    hosts: frozenset[str]
    version: int
    view: dict = field(compare=False, repr=False)

    def merge(self, other: PushRequest) -> PushRequest:
        """Two requests as one (``PushRequest.Merge``/``CopyMerge``, pilot/pkg/model/
        push_context.go): full if either is, the changed services added together, the newer
        version."""
        newer = other if other.version >= self.version else self
        return PushRequest(
            self.full or other.full,
            self.whole or other.whole,
            self.hosts | other.hosts,
            newer.version,
            newer.view,
        )


@dataclass(eq=False)
class _Client:
    """A proxy as the control plane sees it (hashed by identity: the push queue's key)."""

    proxy: Proxy
    known_hosts: frozenset[str] | None  # None: every service of the mesh
    replica: int
    version: int = 0
    gone: bool = False
    # Maesh: the next poll instant not yet counted (inf: none yet, or a fetch in flight), and
    # the polls made before it.
    next_poll_s: float = math.inf
    polls: int = 0


class _PushQueue:
    """A replica's push queue: one pending request per proxy, merged (Istio's ``PushQueue``,
    pilot/pkg/xds/pushqueue.go: ``Enqueue``, ``Dequeue``, ``MarkDone``)."""

    def __init__(self) -> None:
        self.pending: dict[_Client, PushRequest] = {}
        self.order: deque[_Client] = deque()
        # Proxies being pushed to, and the request that came for them meanwhile (None: none).
        self.processing: dict[_Client, PushRequest | None] = {}
        self.idle: deque[simpy.Event] = deque()  # workers waiting for a proxy
        self.merged = 0

    def enqueue(self, client: _Client, request: PushRequest) -> None:
        """Queue a push for ``client``, or merge it into the one it has pending."""
        if client in self.processing:
            waiting = self.processing[client]
            self.processing[client] = request if waiting is None else waiting.merge(request)
            self.merged += waiting is not None
            return
        pending = self.pending.get(client)
        if pending is not None:
            self.pending[client] = pending.merge(request)
            self.merged += 1
            return
        self.pending[client] = request
        self.order.append(client)
        if self.idle:
            self.idle.popleft().succeed()

    def dequeue(self) -> tuple[_Client, PushRequest]:
        client = self.order.popleft()
        self.processing[client] = None
        return client, self.pending.pop(client)

    def mark_done(self, client: _Client) -> None:
        """The push to ``client`` is sent: a request that came meanwhile is queued again."""
        waiting = self.processing.pop(client)
        if waiting is not None and not client.gone:
            self.pending[client] = waiting
            self.order.append(client)


class _Replica:
    def __init__(self, world: World, name: str, node: Node, kind: str, spec: ControlPlaneSpec):
        self.name = name
        self.node = node
        self.cpu: CpuServer = world.cpu_server(spec.cores, f"{node.name}.{name}", kind, node)
        self.slots = simpy.Resource(world.env, capacity=spec.push_limit)
        self.queue = _PushQueue()
        self.net = NetworkPort(world.topology.cluster.network, world.rng(f"{name}.net"))


class ControlPlane:
    """The control plane of one mesh at run time (see the module docstring).

    Args:
        world: the runtime world.
        spec: the validated spec.
        view: the endpoints of every service now (host -> pods), version 0.
    """

    def __init__(self, world: World, spec: ControlPlaneSpec, view: dict[str, list]) -> None:
        self.world = world
        self.env = world.env
        self.spec = spec
        self.version = 0
        self.view = view
        self.down = False
        self.ca_down = False  # the CA alone is down (a ca_outage): pushes go on
        self._recovered = self.env.event()
        nodes = sorted(world.nodes)
        offset = stable_hash(f"control-plane-{spec.kind}") % len(nodes)
        names = {
            "istiod": ("istiod", "istiod"),
            "split": ("pilot", "pilot"),
            "maesh": ("maesh-controller", "maesh_controller"),
        }
        name, kind = names[spec.kind]
        self.replicas = [
            _Replica(
                world, f"{name}-{i}", world.nodes[nodes[(offset + i) % len(nodes)]], kind, spec
            )
            for i in range(spec.replicas)
        ]
        self.galley: CpuServer | None = None
        self.ca: CpuServer | None = None
        if spec.kind == "split":
            node = world.nodes[nodes[(offset + spec.replicas) % len(nodes)]]
            self.galley = world.cpu_server(1, f"{node.name}.galley", "galley", node)
            node = world.nodes[nodes[(offset + spec.replicas + 1) % len(nodes)]]
            self.ca = world.cpu_server(1, f"{node.name}.citadel", "citadel", node)
        elif spec.certificates is not None:
            self.ca = self.replicas[0].cpu
        self._apply = spec.apply_delay.sampler(world.rng("control-plane.apply"))
        self._clients: list[_Client] = []
        self.changes: list[ChangeRecord] = []
        self._pending: PushRequest | None = None  # the debounced changes, merged
        self._debouncing = False
        self._free = True  # no push is building its context and queueing its proxies
        self._freed = self.env.event()  # succeeds when that push is done
        self._full_started = 0  # the newest full push started (1.1 drops older ones)
        self.push_counts = {"full": 0, "eds": 0, "delta": 0}
        self.push_cpu_s = 0.0  # CPU of the pushes to proxies
        self.push_bytes = 0.0
        self.push_contexts = 0
        self.push_context_cpu_s = 0.0
        self.aborted_pushes = 0  # without a queue: full pushes dropped for a newer one
        self._first_change = 0.0
        self._last_change = 0.0
        self.pushes = 0
        self.signatures = 0
        self.signature_failures = 0
        self.services = len(view)
        self._built_version = 0  # maesh: the newest configuration the controller has built
        self._built_view = view
        self._built = self.env.event()  # maesh: succeeds when a newer one is built
        self._fetches = 0  # maesh: polls that fetched a configuration
        self._retired_polls = 0  # maesh: polls made by proxies now gone
        if spec.kind != "maesh" and spec.push_queue:
            for replica in self.replicas:  # ``doSendPushes``: push_limit pushes at once
                for _ in range(spec.push_limit):
                    self.env.process(self._push_worker(replica))
        if spec.kind == "maesh" and (
            spec.poll_base_cpu or spec.poll_per_cluster_cpu or spec.poll_per_endpoint_cpu
        ):
            self.env.process(self._serve_polls())

    # --- proxies -------------------------------------------------------------------------

    def register(self, proxy: Proxy, known_hosts: frozenset[str] | None) -> None:
        """A proxy connects: it starts on the current version; with a CA, it gets its
        certificate signed, and rotated for as long as the run lasts."""
        client = _Client(proxy, known_hosts, len(self._clients) % len(self.replicas), self.version)
        self._clients.append(client)
        proxy.apply_config(self.version, self.view)
        if self.spec.kind == "maesh":
            self.env.process(self._poll(client))
        if self.spec.certificates is not None:
            # Not ready until the CA has signed its first certificate: traffic through it
            # waits for that, as Kubernetes holds traffic from a pod that is not ready.
            proxy.await_certificate()
            self.env.process(self._certificates(client))

    def unregister(self, proxy: Proxy) -> None:
        """A proxy's pod is gone: no more pushes, polls or certificates for it."""
        for client in self._clients:
            if client.proxy is proxy:
                client.gone = True
                self._retired_polls += self._polls_of(client)
        self._clients = [c for c in self._clients if not c.gone]

    # --- changes -------------------------------------------------------------------------

    def change(self, kind: str, service: str, hosts: set[str], view: dict[str, list]) -> None:
        """A configuration change now; ``view`` is the new endpoints of every service."""
        self.version += 1
        self.view = view
        self.services = len(view)
        record = ChangeRecord(self.env.now, kind, service, self.version, frozenset(hosts))
        record.affected = sum(1 for c in self._clients if self._concerns(c, record.hosts))
        self.changes.append(record)
        if self.spec.kind == "maesh":
            self.env.process(self._build(self.version, view))
            return
        request = PushRequest(
            full=not (self.spec.incremental_eds and kind in ENDPOINT_CHANGES),
            whole=kind in WHOLE_CHANGES,
            hosts=record.hosts,
            version=self.version,
            view=view,
        )
        if self.spec.kind == "split":
            self.env.process(self._galley(request))
        else:
            self._debounce(request)

    @staticmethod
    def _concerns(client: _Client, hosts: frozenset[str]) -> bool:
        return client.known_hosts is None or not client.known_hosts.isdisjoint(hosts)

    def _galley(self, request: PushRequest) -> Generator[simpy.Event, Any, None]:
        """Galley validates, then hands the change to Pilot over MCP."""
        assert self.galley is not None
        yield from self._wait_up()
        yield from self.galley.execute(self.spec.galley_cpu)
        yield self.env.timeout(self.spec.galley_handoff)
        self._debounce(request)

    def _debounce(self, request: PushRequest) -> None:
        now = self.env.now
        self._pending = request if self._pending is None else self._pending.merge(request)
        self._last_change = now
        if not self._debouncing:
            self._debouncing = True
            self._first_change = now
            self.env.process(self._debouncer())

    def _debouncer(self) -> Generator[simpy.Event, Any, None]:
        """Wait for a quiet period (or the maximum delay), and for the last push to be done
        (``debounce_waits_for_push``), then push.

        As ``debounce`` in pilot/pkg/xds/discovery.go: when the timer fires while a push is
        still in progress (not ``free``), nothing happens; when that push is done
        (``freeCh``), the quiet period and the maximum delay are checked again, and the push
        waits further if a change came meanwhile.
        """
        spec = self.spec
        while True:
            due = min(
                self._last_change + spec.debounce_quiet, self._first_change + spec.debounce_max
            )
            if due > self.env.now:
                yield self.env.timeout(due - self.env.now)
                continue
            if spec.debounce_waits_for_push and not self._free:
                yield self._freed
                continue
            break
        request = self._pending
        assert request is not None
        self._pending = None
        self._debouncing = False
        self._free = False
        self.env.process(self._push_all(request))

    def _push_all(self, request: PushRequest) -> Generator[simpy.Event, Any, None]:
        """One debounced push: each replica builds a new push context (a full push only),
        then queues a push to each of its proxies the change concerns (``Push`` and
        ``AdsPushAll`` in pilot/pkg/xds/discovery.go). Done, it frees the debouncer."""
        spec = self.spec
        if request.full:
            self._full_started = max(self._full_started, request.version)
            cost = spec.push_context_cpu + spec.push_context_per_service_cpu * self.services
            if cost > 0.0:
                yield self.env.all_of(
                    [self.env.process(self._push_context(r, cost)) for r in self.replicas]
                )
        clients = [c for c in self._clients if self._concerns(c, request.hosts)]
        for client in clients:
            if spec.push_queue:
                self.replicas[client.replica].queue.enqueue(client, request)
            else:
                self.env.process(self._push(client, request))
        self._free = True
        freed, self._freed = self._freed, self.env.event()
        freed.succeed()

    def _push_context(self, replica: _Replica, cost: float) -> Generator[simpy.Event, Any, None]:
        """A replica builds its push context (``initPushContext``)."""
        yield from self._wait_up()
        yield from replica.cpu.execute(cost)
        self.push_contexts += 1
        self.push_context_cpu_s += cost

    def _sent(self, client: _Client, request: PushRequest) -> tuple[str, float, int]:
        """What a push of ``request`` to ``client`` is: its kind (``full``, ``eds`` or
        ``delta``), its CPU (seconds) and its size (bytes).

        A full push regenerates the proxy's whole configuration (every cluster and endpoint
        it knows). An EDS push, or a delta one, sends the changed services the proxy knows:
        a cluster each (none for a proxy without L7 clusters) and their endpoints.
        """
        spec = self.spec
        proxy = client.proxy
        if request.full and (spec.xds == "sotw" or request.whole):
            kind, clusters, endpoints = "full", proxy.known_clusters, proxy.known_endpoints
        else:
            kind = "delta" if request.full else "eds"
            changed = request.hosts
            if client.known_hosts is not None:
                changed = changed & client.known_hosts
            view = request.view
            endpoints = sum(len(view.get(host, ())) for host in changed)
            clusters = len(changed) if proxy.holds_clusters else 0
        cost = (
            spec.push_base_cpu
            + spec.push_per_cluster_cpu * clusters
            + spec.push_per_endpoint_cpu * endpoints
        )
        return kind, cost, int(spec.push_bytes_per_cluster * max(1, clusters))

    def _push_worker(self, replica: _Replica) -> Generator[simpy.Event, Any, None]:
        """One of a replica's ``max_concurrent_pushes`` pushers: it takes the next proxy from
        the push queue, sends it its request, marks it done (``doSendPushes``)."""
        queue = replica.queue
        while True:
            while not queue.order:
                wake = self.env.event()
                queue.idle.append(wake)
                yield wake
            client, request = queue.dequeue()
            if not client.gone:
                yield from self._send(replica, client, request)
            queue.mark_done(client)

    def _push(self, client: _Client, request: PushRequest) -> Generator[simpy.Event, Any, None]:
        """Without a push queue (Istio 1.1's ``startPush``): one push on its own, in a slot;
        a full push older than the newest full push started is dropped ("PushAll abort")."""
        replica = self.replicas[client.replica]
        with replica.slots.request() as slot:
            yield slot
            if request.full and request.version < self._full_started:
                self.aborted_pushes += 1
                return
            if not client.gone:
                yield from self._send(replica, client, request)

    def _send(
        self, replica: _Replica, client: _Client, request: PushRequest
    ) -> Generator[simpy.Event, Any, None]:
        """The generation and the network; then the proxy applies it (while the pusher goes
        on to the next)."""
        yield from self._wait_up()
        kind, cost, size = self._sent(client, request)
        yield from replica.cpu.execute(cost)
        self.pushes += 1
        self.push_counts[kind] += 1
        self.push_cpu_s += cost
        self.push_bytes += size
        link = self.world.link(replica.node, client.proxy.node)
        yield self.env.timeout(replica.net.delay(link, size))
        applied = self.env.timeout(self._apply())
        version, view = request.version, request.view
        applied.callbacks.append(lambda _: self._applied(client, version, view))

    def _build(self, version: int, view: dict) -> Generator[simpy.Event, Any, None]:
        """Maesh: the controller builds the new configuration once; proxies pull it after."""
        yield from self._wait_up()
        replica = self.replicas[0]
        yield from replica.cpu.execute(
            self.spec.push_base_cpu + self.spec.push_per_cluster_cpu * len(view)
        )
        if version > self._built_version:
            self._built_version, self._built_view = version, view
            built, self._built = self._built, self.env.event()
            built.succeed()  # wakes the proxies that wait for something new

    def _poll(self, client: _Client) -> Generator[simpy.Event, Any, None]:
        """Maesh: the proxy pulls every ``poll_interval``, at its own phase.

        Its poll instants are the phase, then each previous instant plus the interval (after
        a fetch: the end of the fetch plus the interval), as a timeout per poll would give
        them. Only a poll that can fetch something is an event: the proxy sleeps until a
        newer configuration is built, then wakes at its first poll instant at or after that;
        a poll there that finds the controller down fetches nothing, and the next one is the
        first instant at or after the controller is back. The polls skipped meanwhile found
        nothing new; they are counted, not simulated.
        """
        env = self.env
        interval = self.spec.poll_interval
        rng = self.world.rng(f"{client.proxy.name}.poll")
        client.next_poll_s = env.now + float(rng.uniform(0.0, interval))
        replica = self.replicas[0]
        while True:
            while client.version >= self._built_version and not client.gone:
                yield self._built  # nothing new to fetch: its polls find nothing
            if client.gone:
                return
            yield from self._wait_up()  # a poll while the controller is down fetches nothing
            at, skipped = next_poll(client.next_poll_s, interval, env.now)
            client.next_poll_s, client.polls = at, client.polls + skipped
            if at > env.now:
                yield env.timeout(delay_to(env.now, at))
            if client.gone:
                return  # its polls stop with it (the ones before were counted at unregister)
            client.polls += 1
            if self.down:  # down again by the poll instant: it fetches nothing
                client.next_poll_s = at + interval
                continue
            self._fetches += 1
            client.next_poll_s = math.inf  # no poll while it fetches
            version, view = self._built_version, self._built_view
            link = self.world.link(replica.node, client.proxy.node)
            size = self.spec.push_bytes_per_cluster * max(1, client.proxy.known_clusters)
            yield env.timeout(replica.net.rtt(link) + replica.net.delay(link, size))
            self.pushes += 1
            yield env.timeout(self._apply())
            self._applied(client, version, view)
            client.next_poll_s = env.now + interval

    def poll_cost(self) -> float:
        """Maesh: the controller's CPU to answer one poll now (seconds). Every poll gets the
        whole current configuration, encoded afresh (traefik/mesh pkg/api/api.go,
        ``getCurrentConfiguration``: ``json.NewEncoder(w).Encode(a.configuration.Get())``);
        the proxy hashes the body and drops it when it is unchanged (traefik
        pkg/provider/http/http.go, ``updateConfiguration``), so a poll that finds nothing new
        costs the controller as much as one that does."""
        spec = self.spec
        view = self._built_view
        endpoints = sum(len(pods) for pods in view.values())
        return (
            spec.poll_base_cpu
            + spec.poll_per_cluster_cpu * len(view)
            + spec.poll_per_endpoint_cpu * endpoints
        )

    def _serve_polls(self) -> Generator[simpy.Event, Any, None]:
        """Maesh: the controller's CPU for answering the polls, booked at the end of each
        second: every proxy polls once per ``poll_interval``, so the second's polls are the
        proxies times one second over the interval (their mean: each proxy's phase is
        uniform), each costing :meth:`poll_cost`. One booking per core at most, which keep
        the controller's workers busy as the polls did, and no event per poll, so a poll that
        finds nothing new stays without an event of its own. A second that ends with the
        controller down books nothing (a poll to a controller that is down costs it
        nothing)."""
        replica = self.replicas[0]
        share = POLL_BOOKING_S / self.spec.poll_interval  # polls per proxy in a booking
        while True:
            yield self.env.timeout(POLL_BOOKING_S)
            if self._clients and not self.down:
                chunks = replica.cpu.workers
                work = len(self._clients) * share * self.poll_cost() / chunks
                for _ in range(chunks):
                    replica.cpu.charge(work)

    def _polls_of(self, client: _Client) -> int:
        """The polls ``client`` has made by now (those at now not yet)."""
        return (
            client.polls + next_poll(client.next_poll_s, self.spec.poll_interval, self.env.now)[1]
        )

    def polls(self) -> int:
        """Maesh: the polls every proxy has made so far (those of proxies gone too)."""
        return self._retired_polls + sum(self._polls_of(c) for c in self._clients)

    def _applied(self, client: _Client, version: int, view: dict) -> None:
        if version <= client.version or client.gone:
            return  # a later push got there first, or the proxy is gone
        proxy = client.proxy
        proxy.apply_config(version, view)
        now = self.env.now
        for record in self.changes:
            if client.version < record.version <= version and self._concerns(client, record.hosts):
                record.convergence_s.append(now - record.at_s)
        client.version = version

    # --- outages -------------------------------------------------------------------------

    def set_down(self, down: bool) -> None:
        self.down = down
        if not down:
            self._recovered.succeed()
            self._recovered = self.env.event()

    def _wait_up(self) -> Generator[simpy.Event, Any, None]:
        while self.down:
            yield self._recovered

    # --- certificates --------------------------------------------------------------------

    def _certificates(self, client: _Client) -> Generator[simpy.Event, Any, None]:
        spec = self.spec.certificates
        assert spec is not None and self.ca is not None
        env = self.env
        jitter = UniformDist(low=0.0, high=1.0).sampler(self.world.rng(f"{client.proxy.name}.cert"))
        while not client.gone:
            while self.down or self.ca_down:  # the CA does not answer: retry later
                self.signature_failures += 1
                yield env.timeout(spec.retry_interval)
            yield from self.ca.execute(spec.sign_cpu)
            self.signatures += 1
            client.proxy.install_certificate(env.now + spec.ttl)
            yield env.timeout(spec.ttl * spec.rotate_at * (1.0 - spec.jitter * jitter()))

    # --- results -------------------------------------------------------------------------

    def memory_bytes(self) -> float:
        memory = self.spec.memory
        endpoints = sum(len(pods) for pods in self.view.values())
        return float(
            memory.base_bytes
            + memory.per_proxy_bytes * len(self._clients)
            + memory.per_service_bytes * len(self.view)
            + memory.per_endpoint_bytes * endpoints
        )

    def summary(self) -> dict[str, Any]:
        polls = self.polls() if self.spec.kind == "maesh" else 0
        return {
            "kind": self.spec.kind,
            "proxies": len(self._clients),
            "pushes": self.pushes,
            "polls": polls,
            "empty_polls": polls - self._fetches,
            "signatures": self.signatures,
            "signature_failures": self.signature_failures,
            "memory_bytes": self.memory_bytes(),
            "push_counts": dict(self.push_counts),
            "push_cpu_s": self.push_cpu_s,
            "push_bytes": self.push_bytes,
            "push_contexts": self.push_contexts,
            "push_context_cpu_s": self.push_context_cpu_s,
            "merged_pushes": sum(r.queue.merged for r in self.replicas),
            "aborted_pushes": self.aborted_pushes,
            "changes": [
                {
                    "at_s": r.at_s,
                    "kind": r.kind,
                    "service": r.service,
                    "version": r.version,
                    "affected": r.affected,
                    "convergence_s": list(r.convergence_s),
                }
                for r in self.changes
            ],
        }


def convergence_summary(samples: list[float], affected: int) -> dict[str, float | int]:
    """p50, p99 and max of a change's convergence times, and how many proxies got it."""
    if not samples:
        return {
            "converged": 0,
            "affected": affected,
            "p50_s": np.nan,
            "p99_s": np.nan,
            "max_s": np.nan,
        }
    values = np.asarray(samples)
    return {
        "converged": len(samples),
        "affected": affected,
        "p50_s": float(np.quantile(values, 0.5)),
        "p99_s": float(np.quantile(values, 0.99)),
        "max_s": float(values.max()),
    }


POLL_BOOKING_S = 1.0
"""Maesh: how often the controller's CPU for the polls is booked (see ``_serve_polls``)."""


def next_poll(t_s: float, interval_s: float, at_s: float) -> tuple[float, int]:
    """The first poll instant at or after ``at_s``, and how many come before it.

    The instants are ``t_s`` and then each previous one plus ``interval_s``, rounded as the
    clock rounds a timeout (``now + delay``), so the answer is the very float a chain of
    timeouts would reach. It is found in closed form one binade at a time: within
    ``[2^e, 2^(e+1))`` every float is a multiple of the same ulp, so adding the interval
    adds the same rounded step at each instant (unless the interval sits exactly halfway
    between two multiples, a tie whose rounding depends on the instant: those few steps are
    taken one by one).

    Args:
        t_s: the next poll instant (seconds); ``inf`` for none.
        interval_s: the poll interval (seconds).
        at_s: the time (seconds).

    Returns:
        The first instant at or after ``at_s`` (``t_s`` itself if it is), and the number of
        instants before it, from ``t_s`` on.
    """
    skipped = 0
    t = t_s
    while t < at_s:
        top = math.ldexp(1.0, math.frexp(t)[1])  # t's binade is [top / 2, top)
        end = min(top, at_s)
        if t > interval_s and t + interval_s < end:
            ulp = math.ulp(t)
            step = (t + interval_s) - t  # exact: both in t's binade
            if step == 0.0:
                raise ValueError(
                    f"poll_interval ({interval_s} s) is below the clock's resolution at {t} s"
                )
            if math.fmod(interval_s, ulp) * 2 != ulp:  # no tie: a constant step
                # Stop a few steps short: the division may round, and the last steps
                # before the binade's end are rounded to its successor's ulp.
                jump = int((end - t) / step) - 2
                if jump > 0:
                    t += jump * step  # exact: a multiple of the ulp, in the binade
                    skipped += jump
        while t < end:
            t += interval_s
            skipped += 1
    return t, skipped


def delay_to(now_s: float, at_s: float) -> float:
    """The delay whose timeout, from ``now_s``, fires at ``at_s`` exactly.

    ``at_s - now_s`` does, unless the sum rounds (a tie to even, only when ``now_s`` is far
    below ``at_s``); then a neighbouring float may. If none does, the timeout is an ulp off.
    """
    delay = at_s - now_s
    if now_s + delay != at_s:
        for candidate in (math.nextafter(delay, math.inf), math.nextafter(delay, 0.0)):
            if now_s + candidate == at_s:
                return candidate
    return delay
