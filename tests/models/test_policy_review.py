"""Findings of the review of issue 8 (traffic management and resilience), each shown through
the public API as the expected behaviour. Each failed when the review wrote it and passes since
its fix; they stay as regression tests (the two retry-budget leaks failed on 6b3f177).
"""

from __future__ import annotations

from typing import Any

import pytest

from experiments.spec import SpecError
from tests.models.test_traffic_policies import (
    destination_rule,
    run,
    service,
    spec,
    virtual_service,
)

FAILING = service("srv", misbehaviour={"error_ratio": 1.0})  # 503 after 15.6 ms


def budgets(sim: Any) -> list[int]:
    """Retries in flight by each cluster's retry budget (``maxRetries``)."""
    return [
        c.retries.active
        for p in sim.mesh.proxies()
        for c in p.clusters.values()
        if c.retries is not None
    ]


def test_a_route_timeout_during_a_back_off_gives_the_retry_back_to_the_budget():
    # The first try fails at 15.6 ms; the back-off (12 ms at draw 0.5) runs past the route's
    # 20 ms timeout: 504 UT. Each of the ten requests of the run should get its one retry.
    vs = virtual_service("srv", {"timeout": "20ms", "retries": {"attempts": 2, "retryOn": "5xx"}})
    dr = destination_rule("srv", {"connectionPool": {"http": {"maxRetries": 1}}})
    load = {"kind": "closed_loop", "connections": 1, "qps": 10}
    sim, out = run(spec([FAILING], [vs, dr], workload=load, duration=1.0))
    counters = out.traffic.destinations["srv"]
    assert counters.get("upstream_rq_retry_overflow", 0) == 0, counters
    assert max(budgets(sim)) <= 1


def test_a_retry_refused_by_the_request_limit_gives_the_retry_back_to_the_budget():
    dr = destination_rule(
        "srv", {"connectionPool": {"http": {"maxRetries": 1, "http2MaxRequests": 1}}}
    )
    load = {"kind": "open_loop", "rate_rps": 200}
    sim, out = run(spec([FAILING], [dr], workload=load, duration=1.0), jitter=None)
    counters = out.traffic.destinations["srv"]
    # On 6b3f177: upstream_rq_retry 1, upstream_rq_retry_overflow 46 (the slot never returned).
    assert counters["upstream_rq_retry"] > 5, counters


def test_an_empty_fault_is_refused():
    hanging = service("srv", misbehaviour={"hang_ratio": 1.0})
    with pytest.raises(SpecError, match="fault"):
        spec([hanging], [virtual_service("srv", {"timeout": "100ms", "fault": {}})])


@pytest.mark.parametrize("regex", ["((a+))+$", "(a|a)*$", "(?:a|a)+$", "(a?){25}a{25}"])
def test_a_regex_that_backtracks_exponentially_is_refused(regex: str):
    vs = {
        "kind": "VirtualService",
        "metadata": {"name": "srv"},
        "spec": {
            "hosts": ["srv"],
            "http": [
                {
                    "match": [{"headers": {"end-user": {"regex": regex}}}],
                    "route": [{"destination": {"host": "srv"}}],
                }
            ],
        },
    }
    with pytest.raises(SpecError, match="regex"):
        spec([service("srv")], [vs])


def test_max_connections_1_over_three_pods_does_not_deadlock():
    services = [service("front", ["srv"]), service("srv", replicas=3)]
    pool = destination_rule("srv", {"connectionPool": {"tcp": {"maxConnections": 1}}})
    load = {"kind": "closed_loop", "connections": 1, "qps": 10}
    _, out = run(spec(services, [pool], workload=load, duration=1.0))
    # Today: one request answered in the second, the closed loop's next one never.
    assert out.workload.status_codes == {200: 10}
