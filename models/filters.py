"""Envoy-like filters and listeners: what a proxy computes for each request.

A listener holds a filter chain. Each filter has a CPU cost model for the request side, the
response side and the work done after the response has gone (telemetry, as Istio's pages
describe): ``base + per_kib * size / 1024`` seconds of one worker, optionally different per
protocol (HTTP/1.1 parsing costs more than HTTP/2's HPACK-ed frames, for instance).

Which filters run depends on the request: L7 filters (the HTTP connection manager and the HTTP
filters behind it) run for HTTP and gRPC, ``tcp_proxy`` for plain TCP; ``tls`` runs only when
the connection is mutual TLS. A listener folds its chain into a cost table per (protocol, mTLS)
once, so the hot path costs a dictionary lookup and a multiply-add.

An ``access_log`` filter writes one line per request after the response (Envoy's access
loggers run when the stream ends, on the worker, like the stats filter). Its cost grows with
the line it writes, and the line with the request (its method, path, authority and logged
headers), so it is the one cost that reads the request: a listener keeps it apart from the
folded sums (:class:`AccessLogCost`), and a chain without one costs nothing more per request.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Literal, cast

from pydantic import BaseModel, ConfigDict, Field, model_validator

from sim.units import Duration, Size

if TYPE_CHECKING:
    from models.messages import Request

__all__ = [
    "AccessLogCost",
    "AccessLogFilterSpec",
    "Cost",
    "FilterSpec",
    "FilterKind",
    "ListenerCost",
    "Listener",
    "PROTOCOLS",
]

PROTOCOLS = ("http1", "http2", "grpc", "tcp")

FilterKind = Literal[
    "tls",
    "http_connection_manager",
    "tcp_proxy",
    "rbac",
    "stats",
    "tracing",
    "wasm",
    "mixer",
    "router",
    "access_log",
]

# Filters that only exist for HTTP (inside the HTTP connection manager). ``stats`` is not
# one: Istio's stats filter reports TCP connections too (``istio_tcp_*``).
L7_KINDS = {"http_connection_manager", "rbac", "tracing", "wasm", "mixer", "router"}


class Cost(BaseModel):
    """CPU seconds of one worker: ``base + per_kib * size_bytes / 1024``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base: Duration = 0.0
    per_kib: Duration = 0.0


class SideCosts(BaseModel):
    """A filter's costs on each side of a request."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    request: Cost = Cost()
    response: Cost = Cost()
    after_response: Cost = Cost()


class AccessLogFilterSpec(BaseModel):
    """Which requests an access log writes, after Envoy's access log filters
    (``envoy.config.accesslog.v3.AccessLogFilter``).

    Attributes:
        status_at_least: log only responses with at least this HTTP status (Envoy's
            ``status_code_filter`` with ``comparison: {op: GE, value: ...}``; 400 logs the
            errors only). None logs every status.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    status_at_least: Annotated[int, Field(ge=100, le=599)] | None = None


# What Envoy's default access log format writes besides the request's own fields (its
# ``%START_TIME%``, protocol, status, flags, byte counts, durations, upstream host, quotes and
# separators, each at a typical width): an assumption, about 250 bytes.
DEFAULT_LINE_BYTES = 250
# The headers Envoy's default format logs (``%REQ(X-FORWARDED-FOR)%``, ``%REQ(USER-AGENT)%``,
# ``%REQ(X-REQUEST-ID)%``; ``:authority`` is the host, counted apart). Source:
# envoyproxy/envoy source/common/formatter/substitution_format_string.cc / the access log
# docs' "Default format string".
DEFAULT_LOGGED_HEADERS = ("x-forwarded-for", "user-agent", "x-request-id")


class FilterSpec(SideCosts):
    """One filter of a listener's chain.

    Attributes:
        kind: what the filter is (``tls``, ``http_connection_manager``, ``tcp_proxy``,
            ``rbac``, ``stats``, ``tracing``, ``wasm``, ``mixer``, ``router``,
            ``access_log``).
        name: a label for reports (default: the kind).
        protocols: per-protocol costs that replace the default ones (``http1``, ``http2``...).
        sampling: for ``tracing``: the share of requests traced (Istio's ``sampling``;
            Istio's default is 1 %, this field's 100 %); for ``access_log``: the share of
            requests logged (Envoy's ``runtime_filter``, a fraction). Their costs apply to
            those only.
        filter: for ``access_log``: which responses are logged (by status).
        line_bytes: for ``access_log``: the bytes of a line besides what the request puts in
            it (bytes; see :data:`DEFAULT_LINE_BYTES`).
        logged_headers: for ``access_log``: the request headers the line holds (lower case);
            each one the request has adds its value's length.

    An ``access_log`` filter costs only ``after_response`` (it writes when the stream ends;
    ``request`` and ``response`` must be left out), and its ``per_kib`` is per KiB of the
    line written, not of the response: formatting the line on the worker and the write of
    its bytes (Envoy hands them to a flush thread, ``AccessLogFileImpl::flushThreadFunc`` in
    ``source/common/access_log/access_log_manager_impl.cc``, which writes to the file in
    batches; its CPU is folded into the worker's here).
    """

    kind: FilterKind
    name: str | None = None
    protocols: dict[Literal["http1", "http2", "grpc", "tcp"], SideCosts] = {}
    sampling: Annotated[float, Field(ge=0.0, le=1.0)] = 1.0
    filter: AccessLogFilterSpec | None = None
    line_bytes: Annotated[Size, Field(ge=0)] = DEFAULT_LINE_BYTES
    logged_headers: list[str] = list(DEFAULT_LOGGED_HEADERS)

    @model_validator(mode="after")
    def _access_log_fields(self) -> FilterSpec:
        if self.kind != "access_log":
            # By value, not by the fields set: a dumped spec (every field) validates again.
            own = {
                name
                for name, off in (
                    ("filter", None),
                    ("line_bytes", DEFAULT_LINE_BYTES),
                    ("logged_headers", list(DEFAULT_LOGGED_HEADERS)),
                )
                if getattr(self, name) != off
            }
            if own:
                raise ValueError(
                    f"{', '.join(sorted(own))}: only an access_log filter has "
                    f"{'these fields' if len(own) > 1 else 'this field'} (kind is {self.kind!r})"
                )
            return self
        sides = [("", cast("SideCosts", self))] + [
            (f"protocols.{p}.", c) for p, c in self.protocols.items()
        ]
        for prefix, side in sides:
            for which in ("request", "response"):
                if getattr(side, which) != Cost():
                    raise ValueError(
                        f"{prefix}{which}: an access_log filter writes after the response; "
                        "give its cost as after_response (per_kib: per KiB of the line)"
                    )
        return self

    def applies(self, protocol: str, mtls: bool) -> bool:
        """Whether this filter runs for a request of ``protocol`` on a (m)TLS connection."""
        if self.kind == "tls":
            return mtls
        if self.kind == "tcp_proxy":
            return protocol == "tcp"
        if self.kind in L7_KINDS:
            return protocol != "tcp"
        return True

    def costs(self, protocol: str) -> SideCosts:
        return cast("dict[str, SideCosts]", self.protocols).get(protocol, self)


@dataclass(frozen=True, slots=True)
class AccessLogCost:
    """An access log's expected CPU per response, for one protocol (seconds of one worker).

    Attributes:
        min_status: responses below this status are not logged (0: all are).
        base: seconds per line, times the sampling.
        per_byte: seconds per byte of the line, times the sampling.
        line_bytes: the line's bytes besides the request's fields.
        headers: the request headers the line holds.
        l7: whether the line holds the method and path (not for TCP).
    """

    min_status: int
    base: float
    per_byte: float
    line_bytes: int
    headers: tuple[str, ...]
    l7: bool

    def line_size(self, request: Request) -> int:
        """The bytes of the line written for ``request`` (Envoy's default format: method,
        path and authority, the logged headers, and the fixed part)."""
        size = self.line_bytes + len(request.host)
        if self.l7:
            size += len(request.method) + len(request.path)
            headers: Mapping[str, str] = request.headers
            if headers:
                for name in self.headers:
                    value = headers.get(name)
                    if value is not None:
                        size += len(value)
        return size

    def cost(self, request: Request, status: int) -> float:
        """The CPU (seconds) of logging ``request`` answered with ``status`` (0 when the
        filter does not log it)."""
        if status < self.min_status:
            return 0.0
        return self.base + self.per_byte * self.line_size(request)


@dataclass(frozen=True, slots=True)
class ListenerCost:
    """A chain's costs for one (protocol, mTLS): (base, per-byte) per side, in seconds, and
    its access logs (none: an empty tuple)."""

    request_base: float
    request_per_byte: float
    response_base: float
    response_per_byte: float
    after_base: float
    after_per_byte: float
    logs: tuple[AccessLogCost, ...] = ()

    def request(self, size_bytes: int) -> float:
        return self.request_base + self.request_per_byte * size_bytes

    def response(self, size_bytes: int) -> float:
        return self.response_base + self.response_per_byte * size_bytes

    def after(self, size_bytes: int) -> float:
        """The after-response cost of the folded filters (access logs apart: :meth:`logged`)."""
        return self.after_base + self.after_per_byte * size_bytes

    def logged(self, request: Request, status: int) -> float:
        """The access logs' cost for ``request`` answered with ``status`` (seconds)."""
        return sum(log.cost(request, status) for log in self.logs)


class Listener:
    """A filter chain folded into per-(protocol, mTLS) cost tables.

    The expected cost of a sampled filter (tracing, access logs) is folded in as
    ``sampling x cost``: the CPU it adds over many requests is right, and a per-request coin
    toss would add a random draw to every request for a cost that is small next to the rest
    of the chain. An access log's status filter is not a coin toss: it is decided per
    response (:class:`AccessLogCost`).
    """

    def __init__(self, name: str, filters: list[FilterSpec]) -> None:
        self.name = name
        self.filters = list(filters)
        self._table = {
            (protocol, mtls): self._fold(protocol, mtls)
            for protocol in PROTOCOLS
            for mtls in (False, True)
        }

    def _fold(self, protocol: str, mtls: bool) -> ListenerCost:
        sums = [0.0] * 6
        logs: list[AccessLogCost] = []
        for f in self.filters:
            if not f.applies(protocol, mtls):
                continue
            c = f.costs(protocol)
            w = f.sampling if f.kind in ("tracing", "access_log") else 1.0
            if f.kind == "access_log":
                after = c.after_response
                if w > 0.0 and (after.base > 0.0 or after.per_kib > 0.0):
                    status = f.filter.status_at_least if f.filter is not None else None
                    logs.append(
                        AccessLogCost(
                            min_status=status or 0,
                            base=w * after.base,
                            per_byte=w * after.per_kib / 1024.0,
                            line_bytes=int(f.line_bytes),
                            headers=tuple(h.lower() for h in f.logged_headers),
                            l7=protocol != "tcp",
                        )
                    )
                continue
            for i, cost in enumerate((c.request, c.response, c.after_response)):
                sums[2 * i] += w * cost.base
                sums[2 * i + 1] += w * cost.per_kib / 1024.0
        rb, rpb, sb, spb, ab, apb = sums
        return ListenerCost(rb, rpb, sb, spb, ab, apb, tuple(logs))

    def cost(self, protocol: str, mtls: bool) -> ListenerCost:
        """The folded costs for a request of ``protocol``, on mTLS or not."""
        return self._table[(protocol, mtls)]
