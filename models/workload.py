"""Workloads: where requests come from.

* Open loop: requests arrive as a Poisson process at ``rate_rps``, whatever the system does
  (an ingress facing many users).
* Closed loop: fortio's load generator (``fortio load``), paced as its periodic runner paces
  it (fortio ``periodic/periodic.go``: ``runQPSSetup``, ``runMaxQPSSetup``, ``Run`` and
  ``runOne``). ``connections`` (``-c``) threads, each sending one request and waiting for its
  reply before the next; ``qps`` (``-qps``) is the total rate, split evenly over them, and
  0 sends back to back. Every connection starts at once and keeps its own schedule: its call
  ``i`` is due ``i / (qps / connections)`` seconds after the start; a connection that is
  late sends at once, and again, until it is back on its schedule (fortio catches up), and
  sleeps only when it is ahead. ``uniform`` (``-uniform``) staggers the starts over one
  period; ``jitter`` (``-jitter``) moves each sleep by up to ±10 %; ``nocatchup``
  (``-nocatchup``) skips the calls that are already late instead; ``exactly`` (``-n``) sends
  that many calls in all; ``keepalive: false`` (``-keepalive=false``) opens a new connection
  for every call.

Each request is ``GET /`` with no headers, unless the spec gives a request mix
(``requests``): then each request is drawn from its entries by weight (for example 90 %
``GET /productpage`` and 10 % the same with the header ``end-user: jason``).

Both record the end-to-end latency of the requests that start after the warm-up, the
requests in flight as a time-weighted level, and counts for the conservation check:
every request sent is completed, failed, or still in flight.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass
from itertools import accumulate
from types import MappingProxyType
from typing import Annotated, Any, Literal, Union

import simpy
from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator, model_validator

from models.messages import NO_HEADERS, Request, Response
from models.service import ClientPod
from sim.distributions import UniformDist, exponential
from sim.engine import Task
from sim.stats import LatencyHistogram, TimeWeighted, WindowedLevel, WindowedSeries
from sim.units import Rate, Size
from topologies import HttpMethod, HttpPath

__all__ = [
    "MAX_CONNECTIONS",
    "MAX_RATE_RPS",
    "MAX_REQUEST_MIX",
    "MAX_HEADERS",
    "RequestMixEntry",
    "OpenLoopSpec",
    "ClosedLoopSpec",
    "FortioPlan",
    "fortio_plan",
    "WorkloadSpec",
    "Workload",
    "SeriesWorkload",
    "WorkloadSeries",
    "WorkloadStats",
]

MAX_RATE_RPS = 1e9
"""The highest arrival rate or ``qps`` (requests per second): a mean gap of 1 ns. Simulated
time is a float, whose resolution after a day (86,400 s) is about 1.5e-11 s and after four
months about 2e-9 s: shorter gaps would collapse onto the same instants. Runs below this are
still refused when they are too large for the budget (``experiments.budget``)."""

MAX_CONNECTIONS = 1_000_000
"""The most closed-loop connections: each is a client with its own schedule and request in
flight; fortio's ``-c`` is used with tens to thousands."""


MAX_CALLS = 10**15
"""The most calls a closed loop's ``exactly`` (fortio's ``-n``) may ask for."""

MAX_REQUEST_MIX = 1000
"""The most entries of a workload's request mix."""

MAX_HEADERS = 32
"""The most headers of one entry of a request mix."""

_HEADER_NAME = r"^[!#$%&'*+.^_`|~0-9a-z-]+$"
"""A header name once lower-cased: an HTTP token (RFC 9110, section 5.6.2)."""

HeaderName = Annotated[str, Field(pattern=_HEADER_NAME, max_length=256)]
HeaderValue = Annotated[str, Field(pattern=r"^[^\r\n\x00]*$", max_length=8192)]
"""A header value: any text without CR, LF or NUL (which would end or split the header)."""


class RequestMixEntry(BaseModel):
    """One kind of request in a workload's mix.

    Attributes:
        weight: Relative weight (> 0): the entry's share is its weight over the sum.
        method: The HTTP method, upper case.
        path: The path, starting with ``/``.
        headers: Header names (lower-cased here, as HTTP/2 writes them) to values; at most
            32. Two names that differ only in case are refused.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    weight: float = Field(default=1.0, gt=0, allow_inf_nan=False)
    method: HttpMethod = "GET"
    path: HttpPath = "/"
    headers: dict[HeaderName, HeaderValue] = Field(default_factory=dict, max_length=MAX_HEADERS)

    @field_validator("headers", mode="before")
    @classmethod
    def _lower_case_names(cls, headers: Any) -> Any:
        if not isinstance(headers, Mapping):
            return headers  # pydantic refuses it, naming the field
        lowered: dict[Any, Any] = {}
        for name, value in headers.items():
            key = name.lower() if isinstance(name, str) else name
            if key in lowered:
                raise ValueError(f"header {key!r} is given twice (names ignore case)")
            lowered[key] = value
        return lowered


RequestMix = Annotated[list[RequestMixEntry], Field(max_length=MAX_REQUEST_MIX)]


class OpenLoopSpec(BaseModel):
    """Poisson arrivals at a fixed rate.

    Attributes:
        rate_rps: mean arrival rate, requests per second.
        payload_bytes: request size; None = the entry service's default.
        requests: the request mix (see :class:`RequestMixEntry`); empty = every request
            ``GET /`` with no headers.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["open_loop"] = "open_loop"
    rate_rps: Annotated[Rate, Field(gt=0, le=MAX_RATE_RPS)]
    payload_bytes: Size | None = None
    requests: RequestMix = Field(default_factory=list)


class ClosedLoopSpec(BaseModel):
    """fortio's load generator: ``connections`` threads, each waiting for its reply.

    fortio runs for ``-t`` or ``-n`` calls; here the run's length is the experiment's
    ``duration``, which interrupts the load generator as fortio's ``-t 0`` ("until
    interrupted") is: each connection keeps fortio's open-ended schedule, call ``i`` due at
    ``i / (qps / connections)``. (With ``-t``, fortio stretches that period by ``1 / (n - 1)``,
    ``n`` the calls of a connection, so that its last call lands on the end of the run: under
    0.01 % for Istio's 240 s runs, and that last call, due at the very end, would never be
    sent in a simulated run, which stops there.) fortio's
    own defaults for the flags below are the defaults here, except ``-c`` (4) and ``-qps``
    (8): these are Istio's benchmark's (16 and 1000).

    Attributes:
        connections: fortio's ``-c``: threads, each with its connection and its schedule.
        qps: fortio's ``-qps``: the target total rate (requests per second), split evenly
            over the connections; 0 = no pacing (each connection sends as soon as its reply
            is back).
        exactly: fortio's ``-n`` (with ``-t 0``): the number of calls in all, split over the
            connections as fortio splits them (see :func:`fortio_plan`); None = until the
            run ends. The run still ends at the experiment's duration: calls not sent by
            then are not sent.
        jitter: fortio's ``-jitter``: each sleep before a call is moved by a uniform draw
            within ±10 % of its length (``periodic.getJitter``); a late call is not moved.
        uniform: fortio's ``-uniform``: connection ``k`` of ``c`` starts ``k / c`` of a
            period late, so that the connections' calls are evenly staggered.
        nocatchup: fortio's ``-nocatchup``: a connection that is late skips the calls
            whose time has passed, instead of sending them back to back.
        keepalive: fortio's ``-keepalive`` (its default, true: a connection carries all its
            thread's calls); false = each call opens a new TCP connection first, a round
            trip to whatever accepts it (see :meth:`Workload.connect_rtt`), counted in the
            call's latency as fortio counts it.
        payload_bytes: request size; None = the entry service's default.
        requests: the request mix (see :class:`RequestMixEntry`); empty = every request
            ``GET /`` with no headers.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["closed_loop"] = "closed_loop"
    connections: Annotated[int, Field(ge=1, le=MAX_CONNECTIONS)] = 16
    qps: Annotated[Rate, Field(ge=0, le=MAX_RATE_RPS)] = 1000.0
    exactly: Annotated[int, Field(ge=1, le=MAX_CALLS)] | None = None
    jitter: StrictBool = False
    uniform: StrictBool = False
    nocatchup: StrictBool = False
    keepalive: StrictBool = True
    payload_bytes: Size | None = None
    requests: RequestMix = Field(default_factory=list)

    @model_validator(mode="after")
    def _fortio_flags(self) -> ClosedLoopSpec:
        if self.qps == 0:
            # fortio reads these only in its -qps mode (periodic.go, runOne): say so, rather
            # than silently ignore them.
            for name in ("jitter", "uniform", "nocatchup"):
                if getattr(self, name):
                    raise ValueError(f"{name} paces calls: it needs qps > 0 (qps 0 is no pacing)")
            if self.exactly is not None and self.exactly < self.connections:
                # fortio would still make one call on every connection (runOne checks the
                # count after the call): more than asked for.
                raise ValueError(
                    f"exactly ({self.exactly}) must be at least connections "
                    f"({self.connections}) with qps 0"
                )
        return self


@dataclass(frozen=True)
class FortioPlan:
    """What fortio's runner makes of a closed loop: its threads and their schedules.

    Attributes:
        threads: connections that run (fortio lowers ``-c`` for a short run).
        calls: calls of each connection; None = until the run ends.
        per_thread_qps: ``qps / threads``, each connection's rate (0 = no pacing).
        offsets_s: when each connection starts, after the workload's start (seconds).
    """

    threads: int
    calls: tuple[int, ...] | None
    per_thread_qps: float
    offsets_s: tuple[float, ...]

    def due(self, k: int, i: int) -> float:
        """When call ``i`` (from 0) of connection ``k`` is due, after the workload's start
        (seconds): fortio's ``targetElapsedInSec`` (``runOne``) plus the connection's
        offset."""
        return self.offsets_s[k] + i / self.per_thread_qps


def fortio_plan(spec: ClosedLoopSpec) -> FortioPlan:
    """fortio's threads, calls and start offsets for ``spec`` (``-t 0``: no duration).

    As fortio's ``periodic.go`` computes them:

    * With ``qps > 0`` and ``exactly`` (``runQPSSetup``): fewer than 2 calls become 2 on one
      thread; fewer than 2 per thread lower the threads to ``exactly // 2``; each thread makes
      ``exactly // threads`` calls and the first the remainder too. Without ``exactly`` every
      thread runs until the run ends.
    * Call ``i`` of a thread is due at ``i / (qps / threads)`` after its start (``runOne``'s
      ``targetElapsedInSec`` without a duration).
    * With ``-uniform``, thread ``k`` starts ``d - d / threads × (threads - k)`` late, ``d``
      its period (``runOne``): ``k / threads`` of a period.
    * With ``qps: 0`` (``runMaxQPSSetup``): each thread makes ``exactly // threads`` calls,
      the first the remainder too; without ``exactly``, until the run ends.

    Args:
        spec: the closed loop.

    Returns:
        The plan.
    """
    threads = spec.connections
    exactly = spec.exactly
    if spec.qps == 0:
        if exactly is None:
            return FortioPlan(threads, None, 0.0, (0.0,) * threads)
        per, left = divmod(exactly, threads)
        return FortioPlan(threads, (per + left,) + (per,) * (threads - 1), 0.0, (0.0,) * threads)
    calls: tuple[int, ...] | None = None
    if exactly is not None:
        total = exactly
        if total < 2:
            total, threads = 2, 1
        if 2 * threads > total:
            threads = total // 2
        per = total // threads
        calls = (per + total - per * threads,) + (per,) * (threads - 1)
    per_thread_qps = spec.qps / threads
    offsets = (0.0,) * threads
    if spec.uniform:
        d = 1.0 / per_thread_qps
        offsets = tuple(d - d / threads * (threads - k) for k in range(threads))
    return FortioPlan(threads, calls, per_thread_qps, offsets)


WorkloadSpec = Annotated[Union[OpenLoopSpec, ClosedLoopSpec], Field(discriminator="kind")]  # noqa: UP007


class WorkloadStats:
    """End-to-end statistics, as the load generator sees them.

    ``in_flight_now`` is counted, not derived: +1 when a request is sent, -1 when its
    response is back, so that ``sent == completed + failed + in_flight_now`` is a check.
    """

    def __init__(self, env: simpy.Environment, warmup_s: float) -> None:
        self.latency = LatencyHistogram()
        self.in_flight = TimeWeighted(env.now, 0.0)
        self.in_flight_now = 0
        self.sent = 0
        self.completed = 0
        self.failed = 0
        self.measured = 0
        self.measured_errors = 0
        self.status_codes: dict[int, int] = {}
        self.flags: dict[str, int] = {}
        self._warmup_s = warmup_s


class Workload:
    """Sends requests from a client pod to the call graph's entry service.

    Args:
        spec: the validated workload spec.
        client: the load generator's pod.
        entry: the host the requests go to.
        request_size_bytes: default request size (the entry's).
        response_size_bytes: the entry's response size.
        protocol: the entry's protocol.
        warmup_s: latency is recorded for requests that start after this.
    """

    def __init__(
        self,
        spec: OpenLoopSpec | ClosedLoopSpec,
        client: ClientPod,
        entry: str,
        request_size_bytes: int,
        response_size_bytes: int,
        protocol: str,
        warmup_s: float,
    ) -> None:
        self.spec = spec
        self.client = client
        self.env = client.env
        self.entry = entry
        self.request_size_bytes = spec.payload_bytes or request_size_bytes
        self.response_size_bytes = response_size_bytes
        self.protocol = protocol
        self.warmup_s = warmup_s
        self.stats = WorkloadStats(self.env, warmup_s)
        self._rng = client.world.rng("workload.arrivals")
        # (method, path, headers) of every request, or a draw from the mix's entries (its
        # stream made only for 2 entries or more, so a run without a mix draws as before).
        kinds = [
            (e.method, e.path, MappingProxyType(dict(e.headers)) if e.headers else NO_HEADERS)
            for e in spec.requests
        ]
        self._kind: tuple[str, str, Mapping[str, str]] = kinds[0] if kinds else _GET_ROOT
        self._pick: Callable[[], tuple[str, str, Mapping[str, str]]] | None = None
        if len(kinds) > 1:
            self._pick = _picker(
                kinds,
                [e.weight for e in spec.requests],
                UniformDist(low=0.0, high=1.0).sampler(client.world.rng("workload.requests")),
            )

    def start(self) -> None:
        """Start the arrival processes."""
        world = self.client.world
        if isinstance(self.spec, OpenLoopSpec):
            gap = exponential(1.0 / self.spec.rate_rps).sampler(self._rng)
            _Arrivals(self, gap).start()
        else:
            spec = self.spec
            plan = fortio_plan(spec)
            jitter = None
            if spec.jitter:
                # fortio's getJitter: a whole number of nanoseconds within ±10 % of the sleep;
                # here a float (the difference is below a nanosecond). Drawn on [0, 0.2] (a
                # distribution's bounds are durations, never negative), less 0.1 when used.
                jitter = UniformDist(low=0.0, high=0.2).sampler(world.rng("workload.jitter"))
            for k in range(plan.threads):
                _Connection(self, world.runner, plan, k, jitter).start()

    def connect_rtt(self) -> float:
        """The TCP handshake of a new connection from the load generator (seconds): a round
        trip to whatever accepts it. Where the client has a proxy on its path (a sidecar, a
        node proxy, a ztunnel: the first hop of its route), that proxy accepts it, on the
        link from the client's node to the proxy's; the proxy's own upstream connections stay
        pooled (Envoy drops the hop-by-hop ``Connection: close`` and reuses them). Without
        one, the server pod accepts it: the link to the entry's first endpoint (the pod is
        picked when the request is sent; exact when the entry's pods share a node, as in
        Istio's benchmark).
        """
        client = self.client
        mesh = client.mesh
        first_hops = getattr(mesh, "first_hops", None)
        node = None
        if first_hops is not None:
            hops = first_hops(client, self.entry)
            if hops:
                node = hops[0].proxy.node
        if node is None:
            endpoints = getattr(mesh, "endpoints", {}).get(self.entry)
            node = endpoints[0].node if endpoints else client.node
        link = client.node.links.get(node) or client.world.link(client.node, node)
        return client.net.rtt(link)

    def new_request(self) -> Request:
        """A request to the entry, counted as sent now."""
        env = self.env
        start = env.now
        stats = self.stats
        stats.sent += 1
        stats.in_flight_now += 1
        stats.in_flight.add(start, 1.0)
        method, path, headers = self._kind if self._pick is None else self._pick()
        return Request(
            self.entry,
            self.request_size_bytes,
            self.response_size_bytes,
            self.protocol,
            start,
            self.client.world.recorder.new_trace(),
            method,
            path,
            headers,
        )

    def done(self, request: Request, response: Response) -> None:
        """The response to ``request`` is back: record it."""
        stats = self.stats
        end = self.env.now
        start = request.start_s
        stats.in_flight_now -= 1
        stats.in_flight.add(end, -1.0)
        if response.status < 400:
            stats.completed += 1
        else:
            stats.failed += 1
        if start >= self.warmup_s:
            stats.measured += 1
            stats.latency.add(end - start)
            stats.status_codes[response.status] = stats.status_codes.get(response.status, 0) + 1
            if response.status >= 400:
                stats.measured_errors += 1
                stats.flags[response.flags] = stats.flags.get(response.flags, 0) + 1

    def send(self) -> Generator[simpy.Event, Any, Response]:
        """One request, end to end, with its statistics (a generator for SimPy processes)."""
        request = self.new_request()
        assert self.client.mesh is not None
        response: Response = yield self.client.mesh.request(self.client, self.entry, request)
        self.done(request, response)
        return response


class WorkloadSeries:
    """End-to-end statistics in fixed windows from the run's start (0 s), warm-up included.

    A request counts at two times: it is **sent** in the window of its start, and it
    **ends** (completed, or failed: status 400 or more) in the window of its end, where its
    latency goes too (what a dashboard shows: a request is seen when its response is back).
    Requests in flight are a level per window. So, per window,
    ``sent = ended + (in flight at its end - in flight at its start)``.

    Attributes:
        ended: requests by the window they ended in: counts, latency, errors by response flag
            (and, apart, those that started after the warm-up: the run's measured requests).
        sent: requests sent, by window index.
        in_flight: requests in flight, a level per window.
        failed_spans: failed requests by (window of their start, window of their end): what
            a fault's "requests lost" counts.
    """

    def __init__(self, window_s: float, warmup_s: float) -> None:
        self.window_s = window_s
        self.warmup_s = warmup_s
        self.ended = WindowedSeries(window_s)
        self.sent: dict[int, int] = {}
        self.in_flight = WindowedLevel(window_s)
        self.failed_spans: dict[tuple[int, int], int] = {}


class SeriesWorkload(Workload):
    """A :class:`Workload` that also records :class:`WorkloadSeries` (the spec's
    ``timeseries``). A run without a time series uses :class:`Workload` itself, whose hot
    path has no branch for it.

    Args:
        window_s: the window (seconds), > 0.
        (the others as :class:`Workload`'s)
    """

    def __init__(
        self,
        spec: OpenLoopSpec | ClosedLoopSpec,
        client: ClientPod,
        entry: str,
        request_size_bytes: int,
        response_size_bytes: int,
        protocol: str,
        warmup_s: float,
        window_s: float,
    ) -> None:
        super().__init__(
            spec, client, entry, request_size_bytes, response_size_bytes, protocol, warmup_s
        )
        self.series = WorkloadSeries(window_s, warmup_s)

    def new_request(self) -> Request:
        request = super().new_request()
        series = self.series
        start = request.start_s
        i = int(start // series.window_s)
        series.sent[i] = series.sent.get(i, 0) + 1
        series.in_flight.add(start, 1.0)
        return request

    def done(self, request: Request, response: Response) -> None:
        super().done(request, response)
        series = self.series
        end = self.env.now
        start = request.start_s
        series.in_flight.add(end, -1.0)
        ok = response.status < 400
        series.ended.add(
            end, end - start, ok, None if ok else response.flags, start >= series.warmup_s
        )
        if not ok:
            w = series.window_s
            key = (int(start // w), int(end // w))
            series.failed_spans[key] = series.failed_spans.get(key, 0) + 1


_GET_ROOT: tuple[str, str, Mapping[str, str]] = ("GET", "/", NO_HEADERS)
"""A request when the workload has no mix."""


def _picker(
    kinds: list[tuple[str, str, Mapping[str, str]]],
    weights: list[float],
    uniform: Callable[[], float],
) -> Callable[[], tuple[str, str, Mapping[str, str]]]:
    """A draw of one of ``kinds`` with probabilities proportional to ``weights`` (one
    uniform draw and a binary search over the cumulative weights)."""
    bounds = list(accumulate(weights))
    total = bounds[-1]
    last = len(kinds) - 1

    def pick() -> tuple[str, str, Mapping[str, str]]:
        # min(): u * total can round up to the total itself.
        return kinds[min(bisect_right(bounds, uniform() * total), last)]

    return pick


class _Arrivals(Task):
    """Poisson arrivals: one event per arrival, each request an exchange of the mesh."""

    __slots__ = ("workload", "gap", "requests")

    def __init__(self, workload: Workload, gap: Any) -> None:
        super().__init__(workload.env, workload.client.world.runner)
        self.workload = workload
        self.gap = gap
        self.requests: dict[int, Request] = {}  # in flight, by slot

    def start(self) -> None:
        self._next = self._arrive
        self.wake_at(self.env.now + self.gap())

    def _arrive(self) -> None:
        workload = self.workload
        request = workload.new_request()
        slot = workload.stats.sent
        self.requests[slot] = request
        client = workload.client
        assert client.mesh is not None
        client.mesh.send(client, workload.entry, request, self, slot)
        self.wake_at(self.env._now + self.gap())  # type: ignore[attr-defined]

    def on_reply(self, slot: int, response: Response) -> None:
        self.workload.done(self.requests.pop(slot), response)


class _Connection(Task):
    """One fortio thread (``periodic.go``, ``runOne``): send, wait for the reply, then sleep
    until the next call is due, or send at once when it is already due (fortio catches up:
    its schedule is fixed from the start, so a late connection sends back to back until it
    is on time again). One event per call at most: a wake at the due time, none when late.

    Attributes:
        i: the call being made (from 0); the connection stops after ``calls``.
        base_s: the connection's start (the workload's, plus its ``-uniform`` offset).
    """

    __slots__ = ("workload", "i", "calls", "base_s", "rate", "jitter", "skip", "request", "_call")

    def __init__(
        self,
        workload: Workload,
        runner: Any,
        plan: FortioPlan,
        k: int,
        jitter: Callable[[], float] | None,
    ) -> None:
        super().__init__(workload.env, runner)
        self.workload = workload
        self.i = 0
        self.calls: float = plan.calls[k] if plan.calls is not None else math.inf
        self.base_s = workload.env.now + plan.offsets_s[k]
        self.rate = plan.per_thread_qps
        self.jitter = jitter
        spec: ClosedLoopSpec = workload.spec  # type: ignore[assignment]
        self.skip = spec.nocatchup
        # What runs when a call is due: send, or (-keepalive=false) connect first.
        self._call = self._send if spec.keepalive else self._connect

    def start(self) -> None:
        self._next = self._call
        self.wake_at(self.base_s)

    def _connect(self) -> None:
        """A new connection for this call (fortio's ``-keepalive=false``): the call starts
        now, and is sent once the TCP handshake is done."""
        workload = self.workload
        self.request = workload.new_request()
        start = self.env._now  # type: ignore[attr-defined]
        end = start + workload.connect_rtt()
        workload.client.world.sink(workload.client.scope, "tcp_handshake").add(
            start, end, True, self.request.trace
        )
        self._next = self._connected
        self.wake_at(end)

    def _connected(self) -> None:
        self._next = self._call
        workload = self.workload
        client = workload.client
        assert client.mesh is not None
        client.mesh.send(client, workload.entry, self.request, self, 0)

    def _send(self) -> None:
        workload = self.workload
        request = self.request = workload.new_request()
        client = workload.client
        assert client.mesh is not None
        client.mesh.send(client, workload.entry, request, self, 0)

    def on_reply(self, slot: int, response: Response) -> None:
        self.workload.done(self.request, response)
        i = self.i = self.i + 1
        if i >= self.calls:
            return  # fortio: "expected exit for that mode"
        rate = self.rate
        if rate == 0.0:  # no pacing: the next call at once
            self.soon()
            return
        now = self.env._now  # type: ignore[attr-defined]
        base = self.base_s
        due = base + i / rate  # fortio's targetElapsedInSec (no duration: -t 0)
        if due < now:
            if not self.skip:
                self.soon()  # late: send now (fortio sleeps a negative time: not at all)
                return
            # -nocatchup: skip every call whose time has passed (fortio's `continue`).
            i = max(i, math.ceil((now - base) * rate))
            while base + i / rate < now:
                i += 1
            if i >= self.calls:
                return
            self.i = i
            due = base + i / rate
        if self.jitter is not None:
            due += (due - now) * (self.jitter() - 0.1)  # getJitter: ±10 % of the sleep
        self.wake_at(due)
