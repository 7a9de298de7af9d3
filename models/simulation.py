"""One simulation, from validated specs to raw statistics (desmod's lifecycle).

build (world, pods, mesh, workload) -> connect -> start processes -> run -> collect.
The experiments layer turns the :class:`SimulationOutput` into a user-facing result.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import simpy
from pydantic import BaseModel

import models.architectures  # noqa: F401  (registers every architecture)
from models.faults import FaultSpec, schedule_faults
from models.mesh import Mesh, mesh_class
from models.service import ClientPod, ServicePod
from models.workload import ClosedLoopSpec, OpenLoopSpec, Workload, WorkloadStats
from models.world import ServiceStats, World
from sim.recorder import Recorder
from sim.servers import CpuServer
from topologies import TopologySpec

__all__ = ["Simulation", "SimulationOutput", "ProxyUsage", "simulate"]

CLIENT_POD = "loadgen-0"


@dataclass(frozen=True)
class ProxyUsage:
    """What one proxy did after the warm-up, and the memory it is modelled to hold."""

    scope: str
    kind: str
    node: str
    cpu_s: float
    requests: int
    memory_bytes: float


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
        faults: the fault schedule.
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
        self.mesh: Mesh = mesh_class(mesh.architecture)(world, mesh)
        self.mesh.attach(self.pods, [self.client])
        self.faults = list(faults or [])
        entry = topology.call_graph.workloads_of(topology.call_graph.entry)[0]
        self.workload = Workload(
            workload,
            self.client,
            topology.call_graph.entry,
            entry.request_size_bytes,
            entry.response_size_bytes,
            entry.protocol,
            warmup_s,
        )

    def run(self) -> SimulationOutput:
        """Run to the end of the duration and collect."""
        self.workload.start()
        schedule_faults(self.env, self.mesh, self.faults)
        if self.warmup_s > 0:
            self.env.run(until=self.warmup_s)
            self.world.reset_stats()
            self.mesh.reset_stats()
            self.workload.stats.in_flight.reset(self.env.now)
        self.env.run(until=self.duration_s)
        return SimulationOutput(
            measured_s=self.duration_s - self.warmup_s,
            workload=self.workload.stats,
            services=self.world.service_stats,
            recorder=self.world.recorder,
            servers=self.world.servers,
            memory_bytes=self.mesh.memory_bytes(),
            extras=self.mesh.extras(),
            proxies=[
                ProxyUsage(p.scope, p.kind, p.node.name, p.cpu.cpu_s, p.requests, p.memory_bytes())
                for p in self.mesh.proxies()
            ],
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
