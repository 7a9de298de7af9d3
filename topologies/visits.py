"""How much work one request asks of a call graph: its expected number of service visits.

A visit is one workload serving one request (its own CPU work, then its calls). A request to a
host visits one of the host's workloads, which makes each of its calls with the call's
probability, and each call is a request to the callee host, and so on down the graph. The
expected number of visits is what a simulated request costs (every visit is a few events), so
it tells, before a run, whether a topology can be simulated at all: a random DAG whose calls
fan out at every level makes a number of visits that grows exponentially with its depth.
"""

from __future__ import annotations

from .callgraph import CallGraphSpec
from .errors import TopologyError
from .memo import cached_on

__all__ = ["expected_visits"]


def expected_visits(graph: CallGraphSpec, host: str | None = None) -> float:
    """Return the expected number of service visits of one request to ``host``.

    The request visits one workload of the host, chosen in proportion to its replicas (as the
    default load balancing spreads requests over the host's pods; route weights, retries and
    failures are not counted). A workload's expected visits are 1 (itself) plus, for every
    call of every step, the call's probability times the callee host's expected visits; a
    host called twice counts twice. The sum is computed once per call graph by dynamic
    programming over its workloads in reverse topological order, in time linear in workloads
    and calls, without recursion.

    Floats are used throughout: small graphs give exact values (a chain of ``n`` services
    gives ``n``), and a graph whose count exceeds the float range (about 1.8e308) gives
    ``inf`` rather than an error.

    Args:
        graph: A validated call graph (so acyclic).
        host: The host the request is sent to; ``None`` for the graph's entry.

    Returns:
        The expected visits, at least 1 (``inf`` if too large for a float).

    Raises:
        TopologyError: If no workload serves ``host``.
    """
    by_host = cached_on(graph, "expected_visits", (graph.services,), lambda: _by_host(graph))
    target = graph.entry if host is None else host
    found = by_host.get(target)
    if found is None:
        raise TopologyError(f"unknown host {target!r}; hosts: {', '.join(graph.hosts())}")
    return found


def _by_host(graph: CallGraphSpec) -> dict[str, float]:
    """The expected visits of a request to each host of the graph."""
    by_workload: dict[str, float] = {}
    by_host: dict[str, float] = {}

    def of_host(host: str) -> float:
        found = by_host.get(host)
        if found is None:
            workloads = graph.workloads_of(host)
            replicas = sum(w.replicas for w in workloads)
            # Weights of at most 1 times each workload's visits: no spurious overflow.
            found = by_host[host] = sum(
                (w.replicas / replicas) * by_workload[w.name] for w in workloads
            )
        return found

    # Callees come before their callers, so every host a workload calls is known when the
    # workload is reached.
    for svc in reversed(graph.topological_order()):
        total = 1.0
        for step in svc.steps:
            for call in step.calls:
                if call.probability > 0.0:  # 0 x inf would be nan; a call never made adds 0
                    total += call.probability * of_host(call.service)
        by_workload[svc.name] = total
    for host in graph.hosts():
        of_host(host)
    return by_host
