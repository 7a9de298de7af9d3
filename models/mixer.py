"""Istio's Mixer (0.x to 1.4): a policy check before each request, telemetry reports after.

Mixer is a deployment of pods (istio-policy for checks, istio-telemetry for reports), placed on
nodes, with workers and a CPU cost per check and per report batch, reached over the network.

* **Check**: before it forwards, the proxy asks Mixer whether the request may go, unless its
  check cache answers: either a fixed share of hits (``hit_ratio``) or a cache keyed by
  (source workload, destination service) whose entries live ``ttl`` seconds. A miss costs a
  round trip to a policy pod and that pod's CPU, on the request's path.
* **Report**: after the response the proxy adds the request to a batch, sent every
  ``report_batch_size`` requests or ``report_interval`` seconds, asynchronously: it costs the
  proxy's CPU (charged to a worker, like telemetry) and Mixer's, never the request's time.
* **When Mixer is down** (a ``mixer_outage`` fault), a check fails after a round trip; when
  it is slow (its policy pods queue), a check fails once ``check_timeout`` has passed. Then
  the policy decides: ``fail_open`` lets the request go, ``fail_closed`` answers 503 with
  Envoy's ``UAEX`` flag; reports to it are lost.

Telemetry v2 (Istio 1.5 and later) has no Mixer: its stats filter is CPU in the proxy only.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import simpy
from pydantic import BaseModel, ConfigDict, Field, model_validator

from models.messages import Flags, Request, Response
from models.proxy import Proxy
from models.world import Node, PodBase, World
from sim.distributions import UniformDist
from sim.network import NetworkPort
from sim.random import stable_hash
from sim.servers import CpuServer
from sim.units import Duration, Size

__all__ = ["MixerSpec", "MixerDeploymentSpec", "CheckCacheSpec", "Mixer"]


class MixerDeploymentSpec(BaseModel):
    """One Mixer deployment (istio-policy or istio-telemetry)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    replicas: Annotated[int, Field(ge=1)] = 1
    workers: Annotated[int, Field(ge=1)] = 4


class CheckCacheSpec(BaseModel):
    """The proxy's check cache: a fixed ``hit_ratio``, or entries that live ``ttl`` seconds
    per (source workload, destination service); neither means no cache."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    hit_ratio: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    ttl: Duration | None = None

    @model_validator(mode="after")
    def _one(self) -> CheckCacheSpec:
        if self.hit_ratio is not None and self.ttl is not None:
            raise ValueError("give hit_ratio or ttl, not both")
        return self


class MixerSpec(BaseModel):
    """Mixer, as a sidecar mesh of Istio 0.x to 1.4 uses it (see the module docstring).

    Attributes:
        policy: the deployment that answers checks.
        telemetry: the deployment that takes reports.
        check_cpu: Mixer's CPU per check (seconds).
        check_size_bytes: a check's request (its attribute bag) and answer, each way.
        check_on: which side's proxy checks (Istio checks on the server side, ``inbound``).
        check_cache: the proxy's check cache.
        fail_policy: what a failed check does (Istio's ``policyCheckFailOpen: false`` means
            ``fail_closed``).
        check_timeout: a check not answered within this long has failed (a slow Mixer);
            None waits for the answer however long it takes.
        report_batch_size: requests per report batch.
        report_interval: a batch that is not full goes after this long (seconds).
        report_proxy_cpu: the proxy's CPU per batch sent (seconds, charged to a worker).
        report_batch_cpu: Mixer's CPU per batch (seconds).
        report_request_cpu: Mixer's CPU per request in a batch (seconds).
        report_request_bytes: bytes per request in a batch.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    policy: MixerDeploymentSpec = MixerDeploymentSpec()
    telemetry: MixerDeploymentSpec = MixerDeploymentSpec()
    check_cpu: Duration = 0.0
    check_size_bytes: Size = 1024
    check_on: Literal["inbound", "outbound", "both"] = "inbound"
    check_cache: CheckCacheSpec = CheckCacheSpec()
    fail_policy: Literal["fail_open", "fail_closed"] = "fail_closed"
    check_timeout: Annotated[Duration, Field(gt=0)] | None = None
    report_batch_size: Annotated[int, Field(ge=1)] = 100
    report_interval: Annotated[Duration, Field(gt=0)] = 1.0
    report_proxy_cpu: Duration = 0.0
    report_batch_cpu: Duration = 0.0
    report_request_cpu: Duration = 0.0
    report_request_bytes: Size = 512


class MixerPod:
    """One Mixer pod: a node, workers, a network port."""

    def __init__(self, world: World, name: str, node: Node, kind: str, workers: int) -> None:
        self.name = name
        self.node = node
        self.scope = f"{node.name}.{name}"
        self.cpu: CpuServer = world.cpu_server(workers, self.scope, kind, node)
        self.net = NetworkPort(world.topology.cluster.network, world.rng(f"{name}.net"))


@dataclass
class _Client:
    """What one proxy keeps for Mixer: its check cache, its report batch."""

    chance: Any
    cache: dict[tuple[str, str], float] = field(default_factory=dict)
    batch: int = 0
    batch_id: int = 0


@dataclass
class MixerStats:
    """Counts after the warm-up."""

    checks: int = 0
    cache_hits: int = 0
    check_failures: int = 0
    check_timeouts: int = 0
    denied: int = 0
    reports_sent: int = 0
    reports_lost: int = 0
    reported_requests: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


class Mixer:
    """The Mixer deployments of one mesh and the proxies' Mixer clients.

    It is a :class:`~models.dataplane.LocalResponder` (its check may answer a request at the
    proxy) and a :class:`~models.dataplane.TelemetryReport` for the hops that use it.
    """

    def __init__(self, world: World, spec: MixerSpec) -> None:
        self.world = world
        self.env = world.env
        self.spec = spec
        self.down = False
        self.stats = MixerStats()
        self.policy_pods = self._deploy("istio-policy", "mixer_policy", spec.policy)
        self.telemetry_pods = self._deploy("istio-telemetry", "mixer_telemetry", spec.telemetry)
        self._next_policy = 0
        self._next_telemetry = 0
        self._clients: dict[str, _Client] = {}
        self._check_sink: dict[str, Any] = {}

    def _deploy(self, name: str, kind: str, spec: MixerDeploymentSpec) -> list[MixerPod]:
        nodes = sorted(self.world.nodes)
        offset = stable_hash(name) % len(nodes)
        return [
            MixerPod(
                self.world,
                f"{name}-{i}",
                self.world.nodes[nodes[(offset + i) % len(nodes)]],
                kind,
                spec.workers,
            )
            for i in range(spec.replicas)
        ]

    def _client(self, proxy: Proxy) -> _Client:
        client = self._clients.get(proxy.name)
        if client is None:
            chance = UniformDist(low=0.0, high=1.0).sampler(self.world.rng(f"{proxy.name}.mixer"))
            client = self._clients[proxy.name] = _Client(chance)
        return client

    def _counting(self) -> bool:
        return self.env.now >= self.world.warmup_s

    def _cache_hit(self, client: _Client, src: PodBase, host: str) -> bool:
        cache = self.spec.check_cache
        if cache.hit_ratio is not None:
            return client.chance() < cache.hit_ratio
        if cache.ttl is not None:
            expires = client.cache.get(self._cache_key(src, host))
            return expires is not None and expires > self.env.now
        return False

    @staticmethod
    def _cache_key(src: PodBase, host: str) -> tuple[str, str]:
        """(source workload, destination service): what the cached answer is for."""
        return (getattr(getattr(src, "spec", None), "name", src.name), host)

    def local_reply(
        self, proxy: Proxy, src: PodBase, host: str, request: Request
    ) -> Generator[simpy.Event, Any, Response | None]:
        """Mixer's check for one request at ``proxy`` (see the module docstring): None to go
        on, or the answer of a failed check under ``fail_closed``."""
        env = self.env
        counting = self._counting()
        client = self._client(proxy)
        if counting:
            self.stats.checks += 1
        if self._cache_hit(client, src, host):
            if counting:
                self.stats.cache_hits += 1
            return None
        pod = self.policy_pods[self._next_policy % len(self.policy_pods)]
        self._next_policy += 1
        start = env.now
        timeout = self.spec.check_timeout
        if timeout is None:
            failed = yield from self._ask(proxy, pod)
        else:
            # A slow Mixer (busy policy pods) fails the check after the timeout; the
            # answer, if it comes later, is thrown away.
            asked = env.process(self._ask(proxy, pod))
            yield asked | env.timeout(timeout)
            failed = bool(asked.value) if asked.triggered else True
            if not asked.triggered and counting:
                self.stats.check_timeouts += 1
        self._sink(proxy).add(start, env.now, not failed, request.trace)
        if not failed:
            if self.spec.check_cache.ttl is not None:  # only an answer is cached
                client.cache[self._cache_key(src, host)] = env.now + self.spec.check_cache.ttl
            return None
        if counting:
            self.stats.check_failures += 1
        if self.spec.fail_policy == "fail_open":
            return None
        if counting:
            self.stats.denied += 1
        return Response(503, 0, Flags.UNAUTHORIZED)

    def _ask(self, proxy: Proxy, pod: MixerPod) -> Generator[simpy.Event, Any, bool]:
        """One check's round trip to a policy pod; True when it failed (Mixer down)."""
        env = self.env
        link = self.world.link(proxy.node, pod.node)
        size = self.spec.check_size_bytes
        yield env.timeout(proxy.net.delay(link, size))
        if self.down:
            yield env.timeout(pod.net.delay(link, 0))  # the refusal comes back
            return True
        yield from pod.cpu.execute(self.spec.check_cpu)
        yield env.timeout(pod.net.delay(link, size))
        return False

    def _sink(self, proxy: Proxy) -> Any:
        sink = self._check_sink.get(proxy.scope)
        if sink is None:
            sink = self._check_sink[proxy.scope] = self.world.sink(proxy.scope, "mixer_check")
        return sink

    def report(self, proxy: Proxy, request: Request, response: Response) -> None:
        """Add the request to ``proxy``'s report batch; send the batch when it is due."""
        client = self._client(proxy)
        client.batch += 1
        if client.batch >= self.spec.report_batch_size:
            self._flush(proxy, client)
        elif client.batch == 1:
            self.env.process(self._flush_later(proxy, client, client.batch_id))

    def _flush_later(
        self, proxy: Proxy, client: _Client, batch_id: int
    ) -> Generator[simpy.Event, Any, None]:
        yield self.env.timeout(self.spec.report_interval)
        if client.batch_id == batch_id and client.batch:
            self._flush(proxy, client)

    def _flush(self, proxy: Proxy, client: _Client) -> None:
        requests, client.batch = client.batch, 0
        client.batch_id += 1
        proxy.cpu.charge(self.spec.report_proxy_cpu)
        self.env.process(self._send(proxy, requests))

    def _send(self, proxy: Proxy, requests: int) -> Generator[simpy.Event, Any, None]:
        """One report batch: over the network to a telemetry pod, then Mixer's CPU."""
        env = self.env
        pod = self.telemetry_pods[self._next_telemetry % len(self.telemetry_pods)]
        self._next_telemetry += 1
        counting = self._counting()
        size = requests * self.spec.report_request_bytes
        yield env.timeout(proxy.net.delay(self.world.link(proxy.node, pod.node), size))
        if self.down:
            if counting:
                self.stats.reports_lost += 1
            return
        if counting:
            self.stats.reports_sent += 1
            self.stats.reported_requests += requests
        yield from pod.cpu.execute(
            self.spec.report_batch_cpu + requests * self.spec.report_request_cpu
        )
