"""Envoy-like filters and listeners: what a proxy computes for each request.

A listener holds a filter chain. Each filter has a CPU cost model for the request side, the
response side and the work done after the response has gone (telemetry, as Istio's pages
describe): ``base + per_kib * size / 1024`` seconds of one worker, optionally different per
protocol (HTTP/1.1 parsing costs more than HTTP/2's HPACK-ed frames, for instance).

Which filters run depends on the request: L7 filters (the HTTP connection manager and the HTTP
filters behind it) run for HTTP and gRPC, ``tcp_proxy`` for plain TCP; ``tls`` runs only when
the connection is mutual TLS. A listener folds its chain into a cost table per (protocol, mTLS)
once, so the hot path costs a dictionary lookup and a multiply-add.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal, cast

from pydantic import BaseModel, ConfigDict, Field

from sim.units import Duration

__all__ = ["Cost", "FilterSpec", "FilterKind", "ListenerCost", "Listener", "PROTOCOLS"]

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


class FilterSpec(SideCosts):
    """One filter of a listener's chain.

    Attributes:
        kind: what the filter is (``tls``, ``http_connection_manager``, ``tcp_proxy``,
            ``rbac``, ``stats``, ``tracing``, ``wasm``, ``mixer``, ``router``).
        name: a label for reports (default: the kind).
        protocols: per-protocol costs that replace the default ones (``http1``, ``http2``...).
        sampling: for ``tracing``: the share of requests traced (Istio's ``sampling``;
            Istio's default is 1 %, this field's 100 %); its costs apply to those only.
    """

    kind: FilterKind
    name: str | None = None
    protocols: dict[Literal["http1", "http2", "grpc", "tcp"], SideCosts] = {}
    sampling: Annotated[float, Field(ge=0.0, le=1.0)] = 1.0

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
class ListenerCost:
    """A chain's costs for one (protocol, mTLS): (base, per-byte) per side, in seconds."""

    request_base: float
    request_per_byte: float
    response_base: float
    response_per_byte: float
    after_base: float
    after_per_byte: float

    def request(self, size_bytes: int) -> float:
        return self.request_base + self.request_per_byte * size_bytes

    def response(self, size_bytes: int) -> float:
        return self.response_base + self.response_per_byte * size_bytes

    def after(self, size_bytes: int) -> float:
        return self.after_base + self.after_per_byte * size_bytes


class Listener:
    """A filter chain folded into per-(protocol, mTLS) cost tables.

    The expected cost of a sampled filter (tracing) is folded in as ``sampling x cost``: the
    CPU it adds over many requests is right, and a per-request coin toss would add a random
    draw to every request for a cost that is small next to the rest of the chain.
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
        for f in self.filters:
            if not f.applies(protocol, mtls):
                continue
            c = f.costs(protocol)
            w = f.sampling if f.kind == "tracing" else 1.0
            for i, cost in enumerate((c.request, c.response, c.after_response)):
                sums[2 * i] += w * cost.base
                sums[2 * i + 1] += w * cost.per_kib / 1024.0
        return ListenerCost(*sums)

    def cost(self, protocol: str, mtls: bool) -> ListenerCost:
        """The folded costs for a request of ``protocol``, on mTLS or not."""
        return self._table[(protocol, mtls)]
