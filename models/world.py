"""The runtime world of one simulation: environment, random streams, nodes, pods.

The world is built from validated specs (a :class:`topologies.TopologySpec` and its placement);
it never builds a topology itself. It hands every component what it needs: its random stream
(by scope), its CPU server (the exact FIFO timeline where the node's cores are unlimited and
no CPU limit binds; shared cores, FIFO or processor sharing, and CFS quotas otherwise), the
span recorder and the network.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from types import MappingProxyType

import numpy as np
import simpy

from models.messages import Sender
from models.telemetry import IstioTelemetry
from sim.distributions import UniformDist
from sim.engine import Runner
from sim.network import LinkClass, NetworkPort, link_class
from sim.random import RandomStreams
from sim.recorder import Recorder, SpanSink
from sim.servers import CpuServer, FifoServer, PinnedWorkers, SharedCores, SharedServer
from sim.stats import LatencyHistogram, WindowedSeries
from topologies import NodeSpec, TopologySpec, principal

__all__ = ["World", "Node", "PodBase", "ServiceStats"]


class Node:
    """A cluster node at run time: its zone and, when finite, its shared cores.

    Args:
        env: the SimPy environment.
        spec: the node's spec.
        discipline: how its cores are shared when the node does not say (the cluster's
            ``cpu_discipline``).
    """

    def __init__(self, env: simpy.Environment, spec: NodeSpec, discipline: str = "fifo") -> None:
        self.name = spec.name
        self.zone = spec.zone
        self.spec = spec
        self.cfs_period_s = spec.cfs_period
        # Finite cores are shared by every container on the node (fractional counts are
        # honoured: see sim.servers.SharedCores).
        self.cores: SharedCores | None = None
        # The link class to each other node, filled by World.link (a hot-path lookup).
        self.links: dict[Node, LinkClass] = {}
        if spec.cores is not None:
            self.cores = SharedCores(env, spec.cores, spec.cpu_discipline or discipline)


class ServiceStats:
    """Server-side statistics of one workload: latency, requests and errors after warm-up
    (the service's handler records them).

    ``count``, ``errors`` and ``latency`` are of the requests answered; an injected error
    (the workload's misbehaviour) is answered, so it is in ``count`` and ``errors`` too, and
    also in ``injected_errors``; a request the application hangs on is never answered, and is
    counted in ``hangs`` only. ``error_codes`` counts the errors answered by HTTP status
    (injected ones too), so ``sum(error_codes.values()) == errors``.

    ``series`` (the spec's ``timeseries``; None = off): the requests answered, in fixed
    windows from the run's start, warm-up included, each counted in the window of its answer,
    with its latency and, for an error, its status; those that arrived after the warm-up are
    counted apart as measured (their sums over the windows are ``count`` and
    ``error_codes``).
    """

    def __init__(self, name: str, warmup_s: float, window_s: float | None = None) -> None:
        self.name = name
        self.latency = LatencyHistogram()
        self.count = 0
        self.errors = 0
        self.injected_errors = 0
        self.hangs = 0
        self.error_codes: dict[int, int] = {}
        self.warmup_s = warmup_s
        self.series = WindowedSeries(window_s) if window_s is not None else None


class PodBase:
    """What every pod has: a name, a node, a scope, a random stream, a network port, and its
    identity (what routing and authorization rules match).

    Args:
        world: the world the pod lives in.
        name: the pod's name, unique in the world (``reviews-v2-0``).
        node: the node it runs on.
        workload: its workload (deployment) name; ``None`` = ``name``.
        namespace: its Kubernetes namespace.
        service_account: its Kubernetes service account.
        labels: its labels (read-only; pods of one workload share one mapping).

    Attributes:
        principal: its identity as Istio's AuthorizationPolicy matches it,
            ``cluster.local/ns/<namespace>/sa/<service_account>``.
    """

    def __init__(
        self,
        world: World,
        name: str,
        node: Node,
        workload: str | None = None,
        namespace: str = "default",
        service_account: str = "default",
        labels: Mapping[str, str] | None = None,
    ) -> None:
        self.world = world
        self.env = world.env
        self.name = name
        self.node = node
        self.workload = workload if workload is not None else name
        self.namespace = namespace
        self.service_account = service_account
        self.principal = _principal(namespace, service_account)
        self.labels: Mapping[str, str] = labels if labels is not None else _NO_LABELS
        self.scope = f"{node.name}.{name}"
        # Streams are keyed by pod name, not by node, so a placement change does not
        # change which numbers a pod draws.
        self.rng = world.rng(f"{name}.app")
        self.net = NetworkPort(world.topology.cluster.network, world.rng(f"{name}.net"))
        self.net_sink = world.recorder.sink(self.scope, "network")
        self.mesh: Sender | None = None  # its mesh, once attached
        self.serving = True  # False once it has left its service's endpoints
        self.alive = True  # False once the pod is gone: it refuses connections

    def uniform(self, scope: str | None = None) -> Callable[[], float]:
        """A fast uniform [0, 1) sampler on the stream ``scope`` (this pod's ``.choice``
        stream by default: its call decisions)."""
        stream = self.world.rng(scope or f"{self.name}.choice")
        return UniformDist(low=0.0, high=1.0).sampler(stream)


_NO_LABELS: Mapping[str, str] = MappingProxyType({})

# One string per identity, not per pod: a workload of 100,000 replicas has one principal.
_principal = functools.lru_cache(maxsize=4096)(principal)


class World:
    """Owns the runtime state of one simulation (see the module docstring).

    Args:
        env: the SimPy environment.
        topology: the validated topology.
        seed: the root seed of this run.
        warmup_s: statistics start at this time.
        trace_every: keep the whole trace of one request in this many (0 = none).
    """

    def __init__(
        self,
        env: simpy.Environment,
        topology: TopologySpec,
        seed: int,
        warmup_s: float,
        trace_every: int = 0,
    ) -> None:
        self.env = env
        self.topology = topology
        self.seed = seed
        self.warmup_s = warmup_s
        self.streams = RandomStreams(seed)
        self.runner = Runner(env)  # the data plane's tasks hand over to each other here
        # Faults in force that make some place unreachable or some proxy down (the data
        # plane checks where a connection goes only while there is one).
        self.faults_active = 0
        # With results over time: per window index, [retries made, calls saved by a retry,
        # calls that failed after retrying] (None: off).
        self.retry_windows: dict[int, list[int]] | None = None
        self.retry_window_s = 0.0
        self.recorder = Recorder(warmup_s, trace_every=trace_every)
        # Istio's request metrics (models.telemetry.IstioTelemetry) when collected, else
        # None: the data plane checks it once where a response is delivered or answered.
        self.telemetry: IstioTelemetry | None = None
        discipline = topology.cluster.cpu_discipline
        self.nodes = {spec.name: Node(env, spec, discipline) for spec in topology.cluster.nodes}
        self.placement = topology.pods()
        self.servers: list[CpuServer] = []
        self.service_stats = {
            s.name: ServiceStats(s.name, warmup_s) for s in topology.call_graph.services
        }

    def rng(self, scope: str) -> np.random.Generator:
        """The named random stream of ``scope``."""
        return self.streams.stream(scope)

    def link(self, a: Node, b: Node) -> LinkClass:
        """The link class between two nodes (cached)."""
        found = a.links.get(b)
        if found is None:
            found = a.links[b] = link_class(a.name, a.zone, b.name, b.zone)
        return found

    def cpu_server(
        self,
        workers: int,
        scope: str,
        kind: str,
        node: Node,
        limit_cores: float | None = None,
        pinned: bool = False,
        request_cores: float | None = None,
    ) -> CpuServer:
        """A CPU server for a component on ``node``; registered for CPU accounting.

        The class is decided here, once: the exact FIFO timeline (one event per visit) unless
        the node's cores are finite or the container's CPU limit can bind. A limit of at least
        ``workers`` cores never binds (its threads cannot use more), so it costs nothing.

        Args:
            workers: its threads.
            scope: its component scope.
            kind: the component kind its CPU is charged to.
            node: the node it runs on.
            limit_cores: its CPU limit (Kubernetes ``limits.cpu``), enforced by a CFS quota
                per the node's ``cfs_period``; None for none.
            pinned: each worker runs its own connections (sim.servers.PinnedWorkers).
            request_cores: its CPU request (Kubernetes ``requests.cpu``): its weight where
                the node's cores are shared by processor sharing.
        """
        if pinned and workers > 1:
            if limit_cores is not None and limit_cores < workers:
                raise ValueError(
                    f"{scope}: a CPU limit below its workers ({limit_cores} < {workers}) with "
                    "pinned workers is not modelled (the quota is shared by all the threads)"
                )
            parts = [
                self._server(1, scope, kind, node, None, request_cores) for _ in range(workers)
            ]
            pinned_server = PinnedWorkers(parts, scope, kind)
            self.servers.append(pinned_server)
            return pinned_server
        server = self._server(workers, scope, kind, node, limit_cores, request_cores)
        self.servers.append(server)
        return server

    def _server(
        self,
        workers: int,
        scope: str,
        kind: str,
        node: Node,
        limit_cores: float | None,
        request_cores: float | None,
    ) -> CpuServer:
        server: CpuServer
        binds = limit_cores is not None and limit_cores < workers
        if node.cores is not None:
            server = SharedServer(
                self.env,
                workers,
                scope,
                kind,
                node.cores,
                limit_cores if binds else None,
                node.cfs_period_s,
                request_cores,
            )
        elif binds:
            own = SharedCores(self.env, None)
            server = SharedServer(
                self.env, workers, scope, kind, own, limit_cores, node.cfs_period_s
            )
        else:
            server = FifoServer(self.env, workers, scope, kind)
        return server

    def sink(self, scope: str, kind: str) -> SpanSink:
        """The recorder's span sink for (scope, kind)."""
        return self.recorder.sink(scope, kind)

    def reset_stats(self) -> None:
        """Called at the end of the warm-up: servers count afresh."""
        for server in self.servers:
            server.reset_stats()
