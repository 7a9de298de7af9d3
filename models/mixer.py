"""Istio's Mixer (0.x to 1.4): a policy check before each request, telemetry reports after.

Mixer is a deployment of pods (istio-policy for checks, istio-telemetry for reports), placed on
nodes, with workers and a CPU cost per check and per report batch, reached over the network.

* **Check**: before it forwards, the proxy asks Mixer whether the request may go, unless its
  check cache answers. A miss costs a round trip to a policy pod and that pod's CPU, on the
  request's path. Istio 1.1 and later install with ``disablePolicyChecks: true``
  (install/kubernetes/helm/istio/values.yaml, ``global.disablePolicyChecks``, release-1.1 to
  release-1.4; ``false`` in release-1.0): the proxy then never checks, and Mixer only takes
  reports (``disable_policy_checks``).
* **The check cache** is the Mixer client's in the proxy (istio/proxy,
  src/istio/mixerclient/check_cache.cc, ``CheckCache::Check`` and ``CacheResponse``): an LRU
  of at most ``max_entries`` answers (``CheckOptions::num_entries``, 10,000 by default,
  include/istio/mixerclient/options.h), keyed by the values of the attributes Mixer says the
  check referenced (``referenced_attributes``: here ``referenced``), each valid for
  ``valid_duration`` and ``valid_use_count`` uses (the CheckResponse's precondition; Mixer
  answers a check no adapter decided with 1 minute and 10,000 uses, istio/istio
  mixer/pkg/runtime/dispatcher/dispatcher.go, ``defaultValidDuration`` and
  ``defaultValidUseCount``). An entry is expired once ``now > expiry`` or its uses are spent
  (``CacheElem::IsExpired``); a hit spends one use and makes the entry the most recent. Only
  an answer is cached: a check that failed (Mixer down or too slow) is not. Envoy keeps one
  cache per worker thread (the filter's ``Control`` is thread-local, src/envoy/http/mixer/
  control_factory.h); here a proxy has one, as a request's worker is not modelled here.
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

import re
from collections import OrderedDict
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import simpy
from pydantic import BaseModel, ConfigDict, Field, field_validator

from models.messages import Flags, Request, Response
from models.proxy import Proxy
from models.world import Node, PodBase, World
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


# The attributes a check may reference (Istio's attribute vocabulary), and how a request's
# value of each is read: (source pod, destination host, request) -> value.
_ATTRIBUTES: dict[str, Callable[[PodBase, str, Request], str]] = {
    "source.principal": lambda src, host, request: src.principal,
    "source.workload.name": lambda src, host, request: src.workload,
    "source.namespace": lambda src, host, request: src.namespace,
    "destination.service.host": lambda src, host, request: host,
    "request.method": lambda src, host, request: request.method,
    "request.path": lambda src, host, request: request.path,
}
_HEADER = re.compile(r"request\.headers\[([A-Za-z0-9_.-]+)\]")


def _header(name: str) -> Callable[[PodBase, str, Request], str]:
    return lambda src, host, request: request.headers.get(name, "")


def _reader(attribute: str) -> Callable[[PodBase, str, Request], str]:
    """How to read ``attribute`` of a check (see :data:`_ATTRIBUTES`)."""
    found = _ATTRIBUTES.get(attribute)
    if found is not None:
        return found
    header = _HEADER.fullmatch(attribute)
    if header is None:
        raise ValueError(
            f"{attribute!r} is not an attribute a check can reference here: one of "
            f"{', '.join(_ATTRIBUTES)}, or request.headers[<name>]"
        )
    return _header(header.group(1).lower())


class CheckCacheSpec(BaseModel):
    """The proxy's check cache (the Mixer client's; see the module docstring).

    Attributes:
        max_entries: answers kept, least recently used evicted first (the Mixer client's
            ``num_entries``: 10,000); 0 turns the cache off (every check goes to Mixer).
        valid_duration: how long an answer stays valid (seconds; Mixer's default answer: 60).
        valid_use_count: how many hits an answer serves (Mixer's default answer: 10,000).
        referenced: the attributes the check referenced, whose values key the cache. What
            Mixer references depends on its rules; the default (the source workload and the
            destination service) is an assumption for a mesh whose rules match on those.
            ``source.principal``, ``source.workload.name``, ``source.namespace``,
            ``destination.service.host``, ``request.method``, ``request.path``,
            ``request.headers[<name>]``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_entries: Annotated[int, Field(ge=0)] = 10_000
    valid_duration: Annotated[Duration, Field(gt=0)] = 60.0
    valid_use_count: Annotated[int, Field(ge=1)] = 10_000
    referenced: tuple[str, ...] = ("source.workload.name", "destination.service.host")

    @field_validator("referenced")
    @classmethod
    def _known(cls, referenced: tuple[str, ...]) -> tuple[str, ...]:
        for attribute in referenced:
            _reader(attribute)
        return referenced


class MixerSpec(BaseModel):
    """Mixer, as a sidecar mesh of Istio 0.x to 1.4 uses it (see the module docstring).

    Attributes:
        policy: the deployment that answers checks.
        telemetry: the deployment that takes reports.
        check_cpu: Mixer's CPU per check (seconds).
        check_size_bytes: a check's request (its attribute bag) and answer, each way.
        disable_policy_checks: no check at all, only reports (Istio's
            ``global.disablePolicyChecks``: false in 1.0, true from 1.1 on).
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
    disable_policy_checks: bool = False
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

    def checks(self, direction: str) -> bool:
        """Whether the proxies check on their ``inbound`` or ``outbound`` listener."""
        return not self.disable_policy_checks and self.check_on in (direction, "both")


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

    # Its check cache: key -> [expiry (seconds), uses left], least recently used first.
    cache: OrderedDict[tuple[str, ...], list[float]] = field(default_factory=OrderedDict)
    batch: int = 0
    batch_id: int = 0


@dataclass
class MixerStats:
    """Counts after the warm-up."""

    checks: int = 0
    cache_hits: int = 0
    cache_evictions: int = 0
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
        self._readers = [_reader(a) for a in spec.check_cache.referenced]

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
            client = self._clients[proxy.name] = _Client()
        return client

    def _counting(self) -> bool:
        return self.env.now >= self.world.warmup_s

    def _key(self, src: PodBase, host: str, request: Request) -> tuple[str, ...]:
        """The values of the referenced attributes: what a cached answer is for."""
        return tuple([read(src, host, request) for read in self._readers])

    def _cache_hit(self, client: _Client, key: tuple[str, ...]) -> bool:
        """Whether the cache answers (``CheckCache::Check``): an entry past its expiry or
        out of uses is removed and misses; a hit spends a use and becomes the most recent."""
        cache = client.cache
        entry = cache.get(key)
        if entry is None:
            return False
        if self.env.now > entry[0] or entry[1] == 0:
            del cache[key]
            return False
        entry[1] -= 1
        cache.move_to_end(key)
        return True

    def _cache_answer(self, client: _Client, key: tuple[str, ...]) -> None:
        """Keep Mixer's answer for ``key`` (``CheckCache::CacheResponse``): valid for
        ``valid_duration`` and ``valid_use_count`` uses; at capacity, the least recently
        used entry goes."""
        spec = self.spec.check_cache
        cache = client.cache
        entry = [self.env.now + spec.valid_duration, spec.valid_use_count]
        if key in cache:
            cache[key] = entry
            cache.move_to_end(key)
            return
        if len(cache) >= spec.max_entries:
            cache.popitem(last=False)
            if self._counting():
                self.stats.cache_evictions += 1
        cache[key] = entry

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
        caching = self.spec.check_cache.max_entries > 0
        key = self._key(src, host, request) if caching else ()
        if caching and self._cache_hit(client, key):
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
            if caching:  # only an answer is cached
                self._cache_answer(client, key)
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
