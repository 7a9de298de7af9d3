"""The span recorder: per-hop time, aggregated as it happens, and a sample of whole traces.

Every hop of a request (an app's CPU, a proxy's queue, the network, a TLS handshake) is a
span: ``(scope, kind, start, end, ok)``. Keeping every span would cost memory that grows
with the run, so the recorder aggregates spans into a :class:`SpanSink` per (scope, kind)
at once (count, total time, errors), which is all the per-hop breakdown needs, and keeps the
whole list of spans only for the requests chosen for tracing.

Components ask for their sinks once, when they are built, and call :meth:`SpanSink.add` on
the hot path; spans that start before the end of the warm-up are not counted.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Recorder", "SpanSink", "Span"]


@dataclass(frozen=True, slots=True)
class Span:
    """One hop of one traced request."""

    scope: str
    kind: str
    start_s: float
    end_s: float
    ok: bool


class SpanSink:
    """Aggregates the spans of one (scope, kind): count, total seconds, errors."""

    __slots__ = ("scope", "kind", "count", "total_s", "errors", "_warmup_s")

    def __init__(self, scope: str, kind: str, warmup_s: float) -> None:
        self.scope = scope
        self.kind = kind
        self.count = 0
        self.total_s = 0.0
        self.errors = 0
        self._warmup_s = warmup_s

    def add(
        self, start_s: float, end_s: float, ok: bool = True, trace: list[Span] | None = None
    ) -> None:
        """Record one span; ``trace`` is the request's trace list when it is traced."""
        if start_s >= self._warmup_s:
            self.count += 1
            self.total_s += end_s - start_s
            if not ok:
                self.errors += 1
        if trace is not None:
            trace.append(Span(self.scope, self.kind, start_s, end_s, ok))

    def add_visit(
        self,
        other: SpanSink,
        res: list[float],
        trace: list[Span] | None,
    ) -> None:
        """A CPU visit's two spans from its reservation ``[arrival, work, start, end]``:
        this sink's queue ``[arrival, start]`` and ``other``'s CPU ``[start, end]``."""
        arrival, _, start, end = res
        if arrival >= self._warmup_s:
            self.count += 1
            self.total_s += start - arrival
            other.count += 1
            other.total_s += end - start
        if trace is not None:
            trace.append(Span(self.scope, self.kind, arrival, start, True))
            trace.append(Span(other.scope, other.kind, start, end, True))


def record_hop(
    net: SpanSink,
    io: SpanSink,
    queue: SpanSink,
    cpu: SpanSink,
    sent_s: float,
    reached_s: float,
    res: list[float],
    trace: list[Span] | None,
) -> None:
    """The spans of one hop through a proxy, in one call: the sender's network transfer
    ``[sent, reached]`` (none when ``sent_s`` < 0: the proxy answered itself), the proxy's io
    delay ``[reached, arrival]`` (none when zero), then its queue and CPU from the reservation
    ``[arrival, work, start, end]``."""
    arrival, _, start, end = res
    if sent_s >= 0.0:
        if sent_s >= net._warmup_s:
            net.count += 1
            net.total_s += reached_s - sent_s
        if arrival > reached_s and reached_s >= io._warmup_s:
            io.count += 1
            io.total_s += arrival - reached_s
    if arrival >= queue._warmup_s:
        queue.count += 1
        queue.total_s += start - arrival
        cpu.count += 1
        cpu.total_s += end - start
    if trace is not None:
        if sent_s >= 0.0:
            trace.append(Span(net.scope, net.kind, sent_s, reached_s, True))
            if arrival > reached_s:
                trace.append(Span(io.scope, io.kind, reached_s, arrival, True))
        trace.append(Span(queue.scope, queue.kind, arrival, start, True))
        trace.append(Span(cpu.scope, cpu.kind, start, end, True))


class Recorder:
    """Owns the span sinks of one run and the sampled traces.

    Args:
        warmup_s: spans that start before this time are not counted (seconds).
        trace_every: keep the whole trace of one request in this many (0 = none).
        max_traces: keep at most this many traces.
    """

    def __init__(self, warmup_s: float = 0.0, trace_every: int = 0, max_traces: int = 100) -> None:
        self.warmup_s = warmup_s
        self.trace_every = trace_every
        self.max_traces = max_traces
        self._sinks: dict[tuple[str, str], SpanSink] = {}
        self.traces: list[list[Span]] = []
        self._seen = 0

    def sink(self, scope: str, kind: str) -> SpanSink:
        """The sink for (scope, kind), created on first use."""
        key = (scope, kind)
        found = self._sinks.get(key)
        if found is None:
            found = self._sinks[key] = SpanSink(scope, kind, self.warmup_s)
        return found

    def sinks(self) -> list[SpanSink]:
        """All sinks, sorted by scope then kind."""
        return [self._sinks[k] for k in sorted(self._sinks)]

    def new_trace(self) -> list[Span] | None:
        """A list to collect one request's spans in, or None when it is not sampled."""
        if not self.trace_every:
            return None
        self._seen += 1
        if self._seen % self.trace_every or len(self.traces) >= self.max_traces:
            return None
        trace: list[Span] = []
        self.traces.append(trace)
        return trace

    def total_by_kind(self) -> dict[str, float]:
        """Seconds recorded per span kind, summed over scopes."""
        totals: dict[str, float] = {}
        for sink in self._sinks.values():
            totals[sink.kind] = totals.get(sink.kind, 0.0) + sink.total_s
        return dict(sorted(totals.items()))
