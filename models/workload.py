"""Workloads: where requests come from.

* Open loop: requests arrive as a Poisson process at ``rate_rps``, whatever the system does
  (an ingress facing many users).
* Closed loop: ``connections`` clients, each sending one request and waiting for its reply
  before the next, paced so that together they aim at ``qps`` (fortio's ``-c`` and ``-qps``;
  ``qps: 0`` means as fast as they can). Each connection sends on its own schedule, one
  request every ``connections / qps`` seconds; a connection that falls behind sends at once.

Both record the end-to-end latency of the requests that start after the warm-up, the
requests in flight as a time-weighted level, and counts for the conservation check:
every request sent is completed, failed, or still in flight.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Annotated, Any, Literal, Union

import simpy
from pydantic import BaseModel, ConfigDict, Field

from models.messages import Request, Response
from models.service import ClientPod
from sim.distributions import exponential
from sim.stats import LatencyHistogram, TimeWeighted
from sim.units import Rate, Size

__all__ = ["OpenLoopSpec", "ClosedLoopSpec", "WorkloadSpec", "Workload", "WorkloadStats"]


class OpenLoopSpec(BaseModel):
    """Poisson arrivals at a fixed rate.

    Attributes:
        rate_rps: mean arrival rate, requests per second.
        payload_bytes: request size; None = the entry service's default.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["open_loop"] = "open_loop"
    rate_rps: Annotated[Rate, Field(gt=0)]
    payload_bytes: Size | None = None


class ClosedLoopSpec(BaseModel):
    """fortio-style connections, each waiting for its reply.

    Attributes:
        connections: fortio's ``-c``.
        qps: fortio's ``-qps``, the target total rate; 0 = no pacing.
        payload_bytes: request size; None = the entry service's default.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["closed_loop"] = "closed_loop"
    connections: Annotated[int, Field(ge=1)] = 16
    qps: Annotated[Rate, Field(ge=0)] = 1000.0
    payload_bytes: Size | None = None


WorkloadSpec = Annotated[Union[OpenLoopSpec, ClosedLoopSpec], Field(discriminator="kind")]  # noqa: UP007


class WorkloadStats:
    """End-to-end statistics, as the load generator sees them."""

    def __init__(self, env: simpy.Environment, warmup_s: float) -> None:
        self.latency = LatencyHistogram()
        self.in_flight = TimeWeighted(env.now, 0.0)
        self.sent = 0
        self.completed = 0
        self.failed = 0
        self.measured = 0
        self.measured_errors = 0
        self.status_codes: dict[int, int] = {}
        self.flags: dict[str, int] = {}
        self._warmup_s = warmup_s

    @property
    def outstanding(self) -> int:
        return self.sent - self.completed - self.failed


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

    def start(self) -> None:
        """Start the arrival processes."""
        if isinstance(self.spec, OpenLoopSpec):
            self.env.process(self._open_loop(self.spec.rate_rps))
        else:
            spec = self.spec
            interval = spec.connections / spec.qps if spec.qps > 0 else 0.0
            for i in range(spec.connections):
                # Connections start evenly spread over one interval, so they do not send
                # in lockstep.
                self.env.process(self._connection(i * interval / spec.connections, interval))

    def _open_loop(self, rate_rps: float) -> Generator[simpy.Event, Any, None]:
        """Poisson arrivals: exponential gaps, one process per request."""
        env = self.env
        gap = exponential(1.0 / rate_rps).sampler(self._rng)
        while True:
            yield env.timeout(gap())
            env.process(self.send())

    def _connection(self, offset_s: float, interval_s: float) -> Generator[simpy.Event, Any, None]:
        """One fortio connection: send, wait for the reply, wait for the next slot."""
        env = self.env
        if offset_s > 0.0:
            yield env.timeout(offset_s)
        due = env.now
        while True:
            yield from self.send()
            due += interval_s
            if due > env.now:
                yield env.timeout(due - env.now)
            else:
                due = env.now

    def send(self) -> Generator[simpy.Event, Any, Response]:
        """One request, end to end, with its statistics."""
        env = self.env
        stats = self.stats
        start = env.now
        stats.sent += 1
        stats.in_flight.add(start, 1.0)
        request = Request(
            self.entry,
            self.request_size_bytes,
            self.response_size_bytes,
            self.protocol,
            start,
            self.client.world.recorder.new_trace(),
        )
        assert self.client.mesh is not None
        response = yield from self.client.mesh.call(self.client, self.entry, request)
        end = env.now
        stats.in_flight.add(end, -1.0)
        if response.ok:
            stats.completed += 1
        else:
            stats.failed += 1
        if start >= self.warmup_s:
            stats.measured += 1
            stats.latency.add(end - start)
            stats.status_codes[response.status] = stats.status_codes.get(response.status, 0) + 1
            if not response.ok:
                stats.measured_errors += 1
                stats.flags[response.flags] = stats.flags.get(response.flags, 0) + 1
        return response
