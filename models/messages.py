"""Requests and responses as they travel between pods and proxies."""

from __future__ import annotations

from collections.abc import Generator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Protocol

import simpy

from sim.recorder import Span

__all__ = ["NO_HEADERS", "Request", "Response", "Flags", "Parent", "EventParent", "Sender"]

NO_HEADERS: Mapping[str, str] = MappingProxyType({})
"""The headers of a request that has none: one shared, read-only empty mapping."""


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


@dataclass(slots=True, init=False)
class Request:
    """One request on its way to ``host``.

    Attributes:
        host: the destination service (host name), as the caller names it.
        size_bytes: request size on the wire, headers and body.
        response_size_bytes: the size the server answers with.
        protocol: ``http1``, ``http2``, ``grpc`` or ``tcp``.
        start_s: when the request was created (simulated seconds).
        trace: the spans of this request when it is traced, else None.
        method: the HTTP method (``GET``); what a route or an authorization rule matches.
        path: the request's path (``/productpage``), starting with ``/``.
        headers: its headers, names in lower case (as HTTP/2 writes them), values strings.
            A read-only mapping shared, never copied: by every request a workload draws
            from one entry of its mix, and by every call a service makes while it serves a
            request (services propagate their caller's headers, as Bookinfo's do with
            ``end-user`` and the tracing headers).

    The attributes added after ``trace`` have defaults, so the hot path builds a request
    positionally from its first five fields, as before. ``__init__`` is written out because
    ``dataclass`` refuses a ``mappingproxy`` default (unhashable on Python 3.11, so taken for
    mutable), and a ``default_factory`` would cost a call per request.
    """

    host: str
    size_bytes: int
    response_size_bytes: int
    protocol: str
    start_s: float
    trace: list[Span] | None
    method: str
    path: str
    headers: Mapping[str, str]

    def __init__(
        self,
        host: str,
        size_bytes: int,
        response_size_bytes: int,
        protocol: str,
        start_s: float,
        trace: list[Span] | None = None,
        method: str = "GET",
        path: str = "/",
        headers: Mapping[str, str] = NO_HEADERS,
    ) -> None:
        self.host = host
        self.size_bytes = size_bytes
        self.response_size_bytes = response_size_bytes
        self.protocol = protocol
        self.start_s = start_s
        self.trace = trace
        self.method = method
        self.path = path
        self.headers = headers


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
