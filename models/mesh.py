"""The interface every mesh architecture implements.

An architecture decides the hops of one call from a pod to a service: which proxies the
request passes through, what each costs, and how an endpoint is chosen. Each architecture is
one module with a spec (a pydantic model whose ``architecture`` field is its discriminator)
and a :class:`Mesh` subclass; adding one touches that new module and a row of the table in
:mod:`models.architectures`, from which the spec union and the registry are derived.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import replace
from typing import TYPE_CHECKING, Any, ClassVar

import simpy
from pydantic import BaseModel

from models.messages import EventParent, Parent, Request, Response
from models.scoping import ConfigIndex
from models.world import PodBase, World
from sim.engine import Task

if TYPE_CHECKING:
    from models.service import ClientPod, ServicePod

__all__ = ["Mesh", "Parent"]  # Parent: from models.messages


class _Answer(Task):
    """A response given at once (no endpoint, say), handed over through the ready queue so
    that the caller is never re-entered from inside its own call."""

    __slots__ = ("parent", "slot")

    def __init__(self, mesh: Mesh, parent: Parent, slot: int, response: Response) -> None:
        super().__init__(mesh.env, mesh.world.runner)
        self.parent = parent
        self.slot = slot
        self._value = response
        self._next = self._deliver

    def _deliver(self) -> None:
        self.parent.on_reply(self.slot, self._value)


class Mesh:
    """Base class of the architectures (see the module docstring).

    Args:
        world: the runtime world.
        spec: the architecture's validated spec.
    """

    architecture: ClassVar[str] = ""

    def __init__(self, world: World, spec: BaseModel) -> None:
        self.world = world
        self.env = world.env
        self.spec = spec
        self.endpoints: dict[str, list[ServicePod]] = {}

    def use_policies(self, policies: Any) -> None:
        """The experiment's traffic policies, compiled (``models.routing.PolicySet``), before
        :meth:`attach`. A mesh without proxies has nothing to run them: only an empty set
        (``models.policy_check`` refuses the others before a run). Traefik Mesh's service
        annotations are only annotations to it, as to Kubernetes: ignored."""
        if not replace(policies, traefik={}).empty:
            raise ValueError(f"the {self.architecture} mesh runs no traffic policies")

    def attach(self, pods: list[ServicePod], clients: list[ClientPod]) -> None:
        """Connect the pods (and the load generator's) to this mesh; build its proxies."""
        pod: PodBase
        for pod in pods:
            self.endpoints.setdefault(pod.host, []).append(pod)
        for pod in [*pods, *clients]:
            pod.mesh = self

    def add_pods(self, pods: list[ServicePod]) -> None:
        """New pods during the run (scale up, deploy, a new service): they become endpoints.

        The lists of endpoints are replaced, never changed in place: balancers and proxies'
        configurations may still hold the old ones.
        """
        for pod in pods:
            self.endpoints[pod.host] = [*self.endpoints.get(pod.host, []), pod]
            pod.mesh = self

    def remove_pods(self, pods: list[ServicePod], grace_period_s: float = 0.0) -> None:
        """Pods that go away (scale down, deploy): they leave the endpoints now, and refuse
        connections once ``grace_period_s`` has passed (at once by default)."""
        for pod in pods:
            pod.serving = False
            self.endpoints[pod.host] = [p for p in self.endpoints[pod.host] if p is not pod]
        if grace_period_s > 0.0:
            self.env.process(self._stop_later(pods, grace_period_s))
        else:
            self._stop(pods)

    def _stop_later(
        self, pods: list[ServicePod], grace_period_s: float
    ) -> Generator[simpy.Event, Any, None]:
        yield self.env.timeout(grace_period_s)
        self._stop(pods)

    def _stop(self, pods: list[ServicePod]) -> None:
        for pod in pods:
            pod.alive = False

    def set_ready(self, pods: list[Any], ready: bool) -> None:
        """Pods leave (or rejoin) their services' endpoints, as Kubernetes takes a pod whose
        readiness fails out of them; the mesh learns of it as of any change."""
        hosts: set[str] = set()
        for pod in pods:
            current = self.endpoints.get(pod.host, [])
            if ready and pod not in current:
                self.endpoints[pod.host] = sorted([*current, pod], key=lambda p: p.name)
            elif not ready and pod in current:
                self.endpoints[pod.host] = [p for p in current if p is not pod]
            else:
                continue
            hosts.add(pod.host)
        for host in sorted(hosts):
            self.config_changed("readiness", host, {host})

    def all_pods(self) -> list[Any]:
        """Every pod that is an endpoint now."""
        return [pod for pods in self.endpoints.values() for pod in pods]

    def proxies_of(self, pods: list[Any]) -> list[Any]:
        """The proxies these pods' traffic goes through (for a proxy crash)."""
        raise ValueError(f"the {self.architecture} mesh has no proxy to crash")

    def set_proxies_ready(self, proxies: list[Any], ready: bool) -> None:
        """Shared proxies leave (or rejoin) the endpoints clients reach them by (Traefik
        Mesh's shadow services); nothing for the other meshes."""

    def proxy_is_pods(self, proxies: list[Any]) -> bool:
        """Whether a crash of these proxies takes their pods down too (sidecars)."""
        return False

    def config_index(self) -> ConfigIndex:
        """The mesh's services and endpoints now, for each component's share of them."""
        return ConfigIndex.build(
            (pod.host, pod.spec.namespace, 1) for pods in self.endpoints.values() for pod in pods
        )

    def config_changed(self, kind: str, service: str, hosts: set[str]) -> None:
        """The configuration changed (after add_pods / remove_pods, or routing only)."""
        self._balancers_changed()

    def _balancers_changed(self) -> None:
        """Without a control plane, callers see the live endpoints at once."""

    def send(
        self, src: PodBase, host: str, request: Request, parent: Parent, slot: int = 0
    ) -> None:
        """Carry ``request`` from ``src`` to a pod of ``host``; its response goes to
        ``parent.on_reply(slot, response)`` when it is back at ``src`` (the fast path)."""
        raise NotImplementedError

    def answer_now(self, parent: Parent, slot: int, response: Response) -> None:
        """Give ``parent`` a response made at once, without an event."""
        _Answer(self, parent, slot, response).soon()

    def request(self, src: PodBase, host: str, request: Request) -> simpy.Event:
        """Send ``request``; the event that fires with its response (for SimPy processes:
        ``response = yield mesh.request(...)``)."""
        event = simpy.Event(self.env)
        self.send(src, host, request, EventParent(event))
        return event

    def call(
        self, src: PodBase, host: str, request: Request
    ) -> Generator[simpy.Event, Any, Response]:
        """Carry ``request`` from ``src`` to a pod of ``host`` and its response back, as a
        generator for ``yield from`` in a SimPy process."""
        response: Response = yield self.request(src, host, request)
        return response

    def proxies(self) -> list[Any]:
        """Every proxy of this mesh (none without proxies)."""
        return []

    def reset_stats(self) -> None:
        """Called at the end of the warm-up."""

    def set_fault(self, kind: str, active: bool) -> None:
        """Start (``active``) or end a fault of ``kind`` (``mixer_outage``, ...)."""
        raise ValueError(f"the {self.architecture} mesh has nothing a {kind!r} fault applies to")

    def extras(self) -> dict[str, Any]:
        """Architecture-specific counts for the result (Mixer's, the control plane's)."""
        return {}

    def traffic(self) -> Any:
        """What the routers counted (``models.dataplane.TrafficOutput``); None without
        proxies."""
        return None

    def memory_bytes(self) -> dict[str, float]:
        """Modelled memory per proxy scope, in bytes (none for no mesh)."""
        return {}
