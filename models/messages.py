"""Requests and responses as they travel between pods and proxies."""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Any, Protocol

import simpy

from sim.recorder import Span

__all__ = ["Request", "Response", "Flags", "Parent", "EventParent", "Sender"]


class Flags:
    """Envoy's response flags (access log ``%RESPONSE_FLAGS%``, Istio's ``response_flags``)."""

    NONE = "-"
    NO_HEALTHY_UPSTREAM = "UH"
    UPSTREAM_CONNECT_FAILURE = "UF"
    UPSTREAM_OVERFLOW = "UO"
    NO_ROUTE = "NR"
    UPSTREAM_RETRY_LIMIT = "URX"
    UPSTREAM_TIMEOUT = "UT"
    UPSTREAM_CONNECTION_TERMINATION = "UC"
    DELAY_INJECTED = "DI"
    FAULT_INJECTED = "FI"
    RATE_LIMITED = "RL"
    UNAUTHORIZED = "UAEX"


@dataclass(slots=True)
class Request:
    """One request on its way to ``host``.

    Attributes:
        host: the destination service (host name), as the caller names it.
        size_bytes: request size on the wire, headers and body.
        response_size_bytes: the size the server answers with.
        protocol: ``http1``, ``http2``, ``grpc`` or ``tcp``.
        start_s: when the request was created (simulated seconds).
        trace: the spans of this request when it is traced, else None.
    """

    host: str
    size_bytes: int
    response_size_bytes: int
    protocol: str
    start_s: float
    trace: list[Span] | None = None


@dataclass(frozen=True, slots=True)
class Response:
    """The answer to a request: an HTTP status, Envoy response flags and a size (immutable,
    so that one can be shared by many requests)."""

    status: int = 200
    size_bytes: int = 0
    flags: str = Flags.NONE

    @property
    def ok(self) -> bool:
        """True for a 1xx-3xx answer; 4xx and 5xx count as errors."""
        return self.status < 400


class Parent(Protocol):
    """Who waits for a call's response: a service's visit, a workload, an event for a SimPy
    process. ``slot`` tells a parent with several calls in flight which one answered."""

    def on_reply(self, slot: int, response: Response) -> None: ...


class EventParent:
    """Turns a call's response into a SimPy event's value (for ordinary processes)."""

    __slots__ = ("event",)

    def __init__(self, event: simpy.Event) -> None:
        self.event = event

    def on_reply(self, slot: int, response: Response) -> None:
        self.event.succeed(response)


class Sender(Protocol):
    """What a pod sends its calls through: its mesh (see :class:`models.mesh.Mesh`)."""

    def send(
        self, src: Any, host: str, request: Request, parent: Parent, slot: int = 0
    ) -> None: ...

    def request(self, src: Any, host: str, request: Request) -> simpy.Event: ...

    def call(
        self, src: Any, host: str, request: Request
    ) -> Generator[simpy.Event, Any, Response]: ...
