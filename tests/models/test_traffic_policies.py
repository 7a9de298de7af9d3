"""Traffic policies, traced exactly: retries and their back-offs, timeouts, outlier ejection and
return, Traefik's breaker, Envoy's token bucket, Istio's authorization order, weighted splits,
retry amplification and its caps, the pool's circuit breaker, mirroring.

Every run here is on one node with a zero-delay network, zero-cost proxies and services whose
times are binary fractions, so the instants below are exact sums. Back-offs draw from each
proxy's jitter stream; the tests that time them fix that draw at 0.5, for which Envoy's
back-offs (base 25 ms) are 12, 25, 50, ... ms (``models.resilience``).
"""

from __future__ import annotations

from typing import Any

import pytest

from experiments.runner import build_simulation, run_experiment
from experiments.spec import SpecError, spec_from_dict

S = 2.0**-6  # a service's CPU time (s): 15.625 ms
UT_BODY = 24 / 125e6  # Envoy's 504 body, "upstream request timeout", at 1 Gbps (s)
NET = {"same_node": 0, "same_zone": 0, "cross_zone": 0, "bandwidth": "1Gbps"}
SIDECAR = {"architecture": "sidecar", "mtls_mode": "DISABLE", "proxy": {"concurrency": 2}}


def service(name: str, calls: list[str] | None = None, **fields: Any) -> dict[str, Any]:
    return {
        "name": name,
        "service_time": S,
        "workers": 64,
        "request_size_bytes": 0,
        "response_size_bytes": 0,
        "steps": [{"calls": [c]} for c in (calls or [])],
        **fields,
    }


def spec(
    services: list[dict[str, Any]],
    policies: list[dict[str, Any]] | None = None,
    mesh: dict[str, Any] | None = None,
    workload: dict[str, Any] | None = None,
    duration: float = 0.5,
    **extra: Any,
) -> Any:
    return spec_from_dict(
        {
            "topology": {
                "cluster": {"nodes": [{"name": "node-0"}], "network": NET},
                "call_graph": {
                    "services": services,
                    "entry": services[0].get("host") or services[0]["name"],
                },
            },
            "mesh": mesh or SIDECAR,
            "workload": workload or {"kind": "closed_loop", "connections": 1, "qps": 1},
            "duration": duration,
            "warmup": 0,
            "policies": policies or [],
            **extra,
        }
    )


def run(experiment: Any, jitter: float | None = 0.5) -> tuple[Any, Any]:
    """Build and run; with ``jitter``, every proxy's back-off draw is that value."""
    sim = build_simulation(experiment)
    if jitter is not None:
        for proxy in sim.mesh.proxies():
            proxy._jitter = lambda: jitter
    return sim, sim.run()


def received(out: Any, workload: str) -> int:
    return int(out.services[workload].count)


def latency_s(out: Any) -> float:
    """The one end-to-end request's latency."""
    hist = out.workload.latency
    assert hist.count == 1
    return float(hist.max)


# --- retries ---------------------------------------------------------------------------------


def test_one_retried_request_makes_three_tries_with_envoys_back_offs():
    # Istio's default: 2 retries on 503. The app answers 503 after its CPU time; the client's
    # sidecar backs off 12 ms, then 25 ms (draw 0.5), between the tries.
    failing = service("srv", misbehaviour={"error_ratio": 1.0})
    sim, out = run(spec([failing]))
    assert received(out, "srv") == 3
    assert latency_s(out) == pytest.approx(3 * S + 0.012 + 0.025, abs=1e-12)
    assert out.workload.status_codes == {503: 1}
    assert out.workload.flags == {"URX": 1}
    counters = out.traffic.destinations["srv"]
    assert counters["upstream_rq_total"] == 3
    assert counters["upstream_rq_retry"] == 2
    assert counters["upstream_rq_retry_limit_exceeded"] == 1
    assert counters["upstream_rq_5xx"] == 3


def test_a_status_the_policy_does_not_name_is_not_retried():
    # 500 is not in Istio's default (503 only); a route's retryOn of 5xx retries it.
    failing = service("srv", misbehaviour={"error_ratio": 1.0, "error_status": 500})
    _, out = run(spec([failing]))
    assert received(out, "srv") == 1
    assert out.workload.flags == {"-": 1}
    vs = virtual_service("srv", {"retries": {"attempts": 3, "retryOn": "5xx"}})
    _, out = run(spec([failing], [vs]))
    assert received(out, "srv") == 4
    assert out.workload.flags == {"URX": 1}


def virtual_service(host: str, http: dict[str, Any], name: str | None = None) -> dict[str, Any]:
    return {
        "kind": "VirtualService",
        "metadata": {"name": name or host},
        "spec": {"hosts": [host], "http": [{"route": [{"destination": {"host": host}}], **http}]},
    }


def destination_rule(host: str, policy: dict[str, Any], **spec_fields: Any) -> dict[str, Any]:
    return {
        "kind": "DestinationRule",
        "metadata": {"name": host},
        "spec": {"host": host, "trafficPolicy": policy, **spec_fields},
    }


CHAIN = [
    service("a", ["b"]),
    service("b", ["c"]),
    service("c", misbehaviour={"error_ratio": 1.0}),
]


def test_retries_multiply_down_a_chain_27_tries_at_the_leaf():
    # attempts 2 (3 tries) at each of 3 levels: the load generator's sidecar, a's, b's.
    once = {"kind": "closed_loop", "connections": 1, "qps": 0.1}  # one request in the run
    _, out = run(spec(CHAIN, workload=once, duration=2.0))
    assert (received(out, "a"), received(out, "b"), received(out, "c")) == (3, 9, 27)
    assert out.workload.status_codes == {503: 1}


def test_max_retries_zero_caps_the_storm_at_one_try_per_level():
    rules = [destination_rule(h, {"connectionPool": {"http": {"maxRetries": 0}}}) for h in "abc"]
    once = {"kind": "closed_loop", "connections": 1, "qps": 0.1}
    _, out = run(spec(CHAIN, rules, workload=once, duration=2.0))
    assert (received(out, "a"), received(out, "b"), received(out, "c")) == (1, 1, 1)
    assert all(out.traffic.destinations[h]["upstream_rq_retry_overflow"] == 1 for h in "abc")


def test_a_retry_budget_caps_concurrent_retries_under_load():
    # 100 requests a second into the chain: retries overlap. A budget of 20 % of the active
    # requests (at least 1 at once) lets fewer through than the uncapped 27 per request.
    load = {"kind": "open_loop", "rate_rps": 100}
    _, free = run(spec(CHAIN, workload=load, duration=2.0), jitter=None)
    budget = {"retryBudget": {"percent": 20, "minRetryConcurrency": 1}}
    rules = [destination_rule(h, budget) for h in "abc"]
    _, capped = run(spec(CHAIN, rules, workload=load, duration=2.0), jitter=None)
    # Uncapped, c answers about 9 tries for each of a's (3 x 3; the run's edges cut a few).
    free_ratio = received(free, "c") / received(free, "a")
    capped_ratio = received(capped, "c") / received(capped, "a")
    assert free_ratio > 8
    assert capped_ratio < free_ratio / 2
    overflow = sum(
        capped.traffic.destinations[h].get("upstream_rq_retry_overflow", 0) for h in "abc"
    )
    assert overflow > 0


# --- timeouts --------------------------------------------------------------------------------


def test_a_route_timeout_answers_504_ut_at_its_instant():
    hanging = service("srv", misbehaviour={"hang_ratio": 1.0})
    _, out = run(spec([hanging], [virtual_service("srv", {"timeout": "100ms"})]))
    assert latency_s(out) == pytest.approx(0.1 + UT_BODY, abs=1e-12)
    assert out.workload.status_codes == {504: 1}
    assert out.workload.flags == {"UT": 1}
    assert out.traffic.destinations["srv"]["upstream_rq_timeout"] == 1
    assert out.services["srv"].hangs == 1


def test_per_try_timeouts_retry_and_the_route_timeout_ends_it_all():
    hanging = service("srv", misbehaviour={"hang_ratio": 1.0})
    retries = {"retries": {"attempts": 2, "perTryTimeout": "30ms", "retryOn": "5xx"}}
    _, out = run(spec([hanging], [virtual_service("srv", retries)]))
    # Three tries of 30 ms, back-offs of 12 and 25 ms between them.
    assert latency_s(out) == pytest.approx(3 * 0.030 + 0.012 + 0.025 + UT_BODY, abs=1e-12)
    assert received(out, "srv") == 0 and out.services["srv"].hangs == 3
    assert out.workload.flags == {"UT,URX": 1}
    assert out.traffic.destinations["srv"]["upstream_rq_per_try_timeout"] == 3
    # A route timeout of 50 ms cuts the second try short.
    both = {**retries, "timeout": "50ms"}
    _, out = run(spec([hanging], [virtual_service("srv", both)]))
    assert latency_s(out) == pytest.approx(0.050 + UT_BODY, abs=1e-12)
    assert out.workload.flags == {"UT": 1}
    assert out.services["srv"].hangs == 2


def test_a_slow_answer_within_the_timeout_is_not_cut():
    slow = service("srv", misbehaviour={"extra_latency": 0.0625})
    _, out = run(spec([slow], [virtual_service("srv", {"timeout": "100ms"})]))
    assert latency_s(out) == pytest.approx(S + 0.0625, abs=1e-12)
    assert out.workload.status_codes == {200: 1}


# --- outlier detection -----------------------------------------------------------------------


def test_an_ejected_pod_returns_after_its_ejection_time_and_a_second_ejection_lasts_twice():
    # srv has a good pod and a bad one; round robin; no retries. The bad pod's first 503
    # ejects it (consecutive5xxErrors 1); it returns at the first interval tick (every 1 s
    # from the cluster's creation at 0) at or after ejection + 2 s; its next 503 ejects it
    # for 4 s.
    services = [
        service("good", host="srv"),
        service("bad", host="srv", misbehaviour={"error_ratio": 1.0}),
    ]
    policies = [
        destination_rule(
            "srv",
            {
                "loadBalancer": {"simple": "ROUND_ROBIN"},
                "outlierDetection": {
                    "consecutive5xxErrors": 1,
                    "interval": "1s",
                    "baseEjectionTime": "2s",
                    "maxEjectionPercent": 100,
                },
            },
        ),
        virtual_service("srv", {"retries": {"attempts": 0}}),
    ]
    load = {"kind": "closed_loop", "connections": 1, "qps": 8}  # every 0.125 s
    bad_counts = []
    for until in (2.9, 3.2, 6.9):
        _, out = run(spec(services, policies, workload=load, duration=until))
        bad_counts.append(received(out, "bad"))
    assert bad_counts == [1, 2, 2]
    assert out.traffic.destinations["srv"]["outlier_detection_ejections_total"] == 2
    assert out.traffic.ejections_active == {"srv": 1}


# --- Traefik Mesh's circuit breaker ----------------------------------------------------------


def test_traefiks_breaker_trips_on_the_first_response_then_falls_back_for_10_s():
    srv = service(
        "srv",
        misbehaviour={"error_ratio": 1.0, "error_status": 502},
        annotations={"mesh.traefik.io/circuit-breaker-expression": "NetworkErrorRatio() > 0.30"},
    )
    mesh = {"architecture": "per_node", "proxy": {"concurrency": 2}}
    load = {"kind": "closed_loop", "connections": 1, "qps": 8}
    _, out = run(spec([srv], mesh=mesh, workload=load, duration=10.5))
    (transitions,) = out.traffic.breakers.values()
    # oxy checks the condition on every response after the next check time; the first one
    # trips it (ratio 1.0). The first request at or after the fallback's end recovers.
    assert transitions[0] == pytest.approx((S, "tripped"))
    assert transitions[1][1] == "recovering" and transitions[1][0] == pytest.approx(10.125)
    assert received(out, "srv") == 1
    assert out.workload.status_codes[502] == 1
    assert out.workload.status_codes[503] >= 79  # 0.125 .. 10.0 s: the fallback answers


# --- Envoy's local rate limit ----------------------------------------------------------------


def test_the_token_bucket_refills_one_token_every_fill_interval():
    # 2 tokens, 1 more every 0.5 s; requests every 0.125 s from 0: allowed at 0 and 0.125
    # (the bucket), then at 0.5, 1.0 and 1.5 (a fill each, applied before the request).
    policy = {
        "kind": "LocalRateLimit",
        "metadata": {"name": "srv"},
        "spec": {
            "workloadSelector": {"matchLabels": {"app": "srv"}},
            "token_bucket": {"max_tokens": 2, "tokens_per_fill": 1, "fill_interval": "500ms"},
        },
    }
    load = {"kind": "closed_loop", "connections": 1, "qps": 8}
    _, out = run(spec([service("srv")], [policy], workload=load, duration=1.99))
    assert out.workload.status_codes == {200: 5, 429: 11}
    assert out.workload.flags == {"RL": 11}
    assert received(out, "srv") == 5


# --- Istio's authorization order -------------------------------------------------------------

LOADGEN = "cluster.local/ns/default/sa/loadgen"


def authz(name: str, action: str, rules: list[dict[str, Any]] | None) -> dict[str, Any]:
    body: dict[str, Any] = {"selector": {"matchLabels": {"app": "srv"}}, "action": action}
    if rules is not None:
        body["rules"] = rules
    return {"kind": "AuthorizationPolicy", "metadata": {"name": name}, "spec": body}


@pytest.mark.parametrize(
    ("method", "path", "policies", "status"),
    [
        ("GET", "/a", [], 200),  # no policy: allowed
        ("GET", "/a", ["allow-get"], 200),  # an ALLOW matches
        ("POST", "/a", ["allow-get"], 403),  # ALLOW policies exist, none matches
        ("GET", "/admin", ["allow-get", "deny-admin"], 403),  # DENY comes first
        ("POST", "/a", ["deny-admin"], 200),  # only DENY policies, none matches
        ("GET", "/a", ["allow-nothing"], 403),  # ALLOW without rules allows nothing
        ("GET", "/a", ["deny-nothing"], 200),  # DENY without rules denies nothing
    ],
)
def test_authorization_in_istios_order(method, path, policies, status):
    catalog = {
        "allow-get": authz(
            "allow-get",
            "ALLOW",
            [
                {
                    "from": [{"source": {"principals": [LOADGEN]}}],
                    "to": [{"operation": {"methods": ["GET"]}}],
                }
            ],
        ),
        "deny-admin": authz(
            "deny-admin", "DENY", [{"to": [{"operation": {"paths": ["/admin*"]}}]}]
        ),
        "allow-nothing": authz("allow-nothing", "ALLOW", None),
        "deny-nothing": authz("deny-nothing", "DENY", None),
    }
    load = {
        "kind": "closed_loop",
        "connections": 1,
        "qps": 8,
        "requests": [{"method": method, "path": path}],
    }
    _, out = run(
        spec([service("srv")], [catalog[p] for p in policies], workload=load, duration=0.9)
    )
    assert out.workload.status_codes == {status: 8}
    denied = sum(c.get("rbac_denied", 0) for c in out.traffic.proxies.values())
    assert denied == (8 if status == 403 else 0)
    assert received(out, "srv") == (0 if status == 403 else 8)


# --- splits and mirrors ----------------------------------------------------------------------


def test_a_weighted_split_sends_its_share_within_sampling_error():
    services = [service("v1", host="srv", version="v1"), service("v2", host="srv", version="v2")]
    rule = destination_rule(
        "srv",
        {},
        subsets=[
            {"name": "v1", "labels": {"version": "v1"}},
            {"name": "v2", "labels": {"version": "v2"}},
        ],
    )
    split = {
        "kind": "VirtualService",
        "metadata": {"name": "srv"},
        "spec": {
            "hosts": ["srv"],
            "http": [
                {
                    "route": [
                        {"destination": {"host": "srv", "subset": "v1"}, "weight": 80},
                        {"destination": {"host": "srv", "subset": "v2"}, "weight": 20},
                    ]
                }
            ],
        },
    }
    load = {"kind": "open_loop", "rate_rps": 2000}
    _, out = run(spec(services, [rule, split], workload=load, duration=2.0), jitter=None)
    n1, n2 = received(out, "v1"), received(out, "v2")
    n = n1 + n2
    sigma = (n * 0.2 * 0.8) ** 0.5
    assert abs(n2 - 0.2 * n) < 5 * sigma
    # Tries counted when sent, visits when answered: the last few are in flight at the end.
    assert 0 <= out.traffic.subsets["srv/v2"]["upstream_rq_total"] - n2 <= 10


def test_a_mirror_copies_requests_without_waiting_for_them():
    services = [service("srv"), service("shadow", misbehaviour={"extra_latency": 1.0})]
    mirror = virtual_service("srv", {"mirror": {"host": "shadow"}})
    _, out = run(spec(services, [mirror], duration=0.5))
    assert received(out, "srv") == 1
    assert latency_s(out) == pytest.approx(S, abs=1e-12)  # not the shadow's second
    assert sum(c.get("rq_mirrored", 0) for c in out.traffic.proxies.values()) == 1


# --- the pool's circuit breaker --------------------------------------------------------------


def test_max_connections_and_pending_overflow_answer_503_uo_at_once():
    # Three connections (fortio-like, 10 ms apart) to a backend that takes 0.25 s a request
    # on its one worker: one request holds the one connection, one waits, the third
    # overflows and is answered 503 UO at once (an overflow is not retried). No request
    # waits longer than the one before it plus its own: the queue cannot grow.
    slow = service("srv", workers=1, service_time=0.25)
    limits = {
        "connectionPool": {"tcp": {"maxConnections": 1}, "http": {"http1MaxPendingRequests": 1}}
    }
    load = {"kind": "closed_loop", "connections": 3, "qps": 300}
    experiment = spec([slow], [destination_rule("srv", limits)], workload=load, duration=2.0)
    _, out = run(experiment)
    overflowed = out.workload.flags["UO"]
    assert out.workload.status_codes == {200: out.workload.status_codes[200], 503: overflowed}
    assert out.traffic.destinations["srv"]["upstream_rq_pending_overflow"] == overflowed
    assert out.workload.latency.min == 0.0  # an overflow, answered at once
    assert out.workload.latency.max <= 0.5 + 1e-9  # one ahead of it, at most
    # Without the limits, the three connections queue at the backend: 0.75 s each.
    _, queued = run(spec([slow], workload=load, duration=2.0))
    assert "UO" not in queued.workload.flags
    assert queued.workload.latency.max == pytest.approx(0.75, abs=1e-9)


# --- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "column"),
    [("__import__('os')", 1), ("NetworkErrorRatio() > 0.3 &&", 29), ("Unknown() > 1", 1)],
)
def test_a_breaker_expression_outside_the_grammar_is_a_validation_error(expression, column):
    srv = service("srv", annotations={"mesh.traefik.io/circuit-breaker-expression": expression})
    with pytest.raises(SpecError) as caught:
        spec([srv], mesh={"architecture": "per_node"})
    message = str(caught.value)
    assert "circuit-breaker-expression" in message
    assert f"column {column}" in message


def test_policies_that_name_what_does_not_exist_are_refused():
    with pytest.raises(SpecError, match=r"policies.0.spec.hosts.0: no service 'nope'"):
        spec([service("srv")], [virtual_service("nope", {})])
    bad_subset = {
        "kind": "VirtualService",
        "metadata": {"name": "srv"},
        "spec": {
            "hosts": ["srv"],
            "http": [{"route": [{"destination": {"host": "srv", "subset": "v9"}}]}],
        },
    }
    with pytest.raises(SpecError, match=r"subset: no DestinationRule of 'srv' defines subset 'v9'"):
        spec([service("srv")], [bad_subset])
    with pytest.raises(SpecError, match="Traefik Mesh reads SMI"):
        spec([service("srv")], [virtual_service("srv", {})], mesh={"architecture": "per_node"})
    with pytest.raises(SpecError, match="no proxy to run"):
        spec([service("srv")], [virtual_service("srv", {})], mesh={"architecture": "none"})


def test_routing_without_policies_matches_the_plain_router():
    # The same run, with and without an empty-handed DestinationRule (no field set): the
    # same numbers (a policy that changes nothing changes nothing).
    load = {"kind": "open_loop", "rate_rps": 500}
    plain = run_experiment(spec([service("srv")], workload=load, duration=1.0))
    ruled = run_experiment(
        spec([service("srv")], [destination_rule("srv", {})], workload=load, duration=1.0)
    )
    assert plain.end_to_end.latency == ruled.end_to_end.latency
    assert plain.status_codes == ruled.status_codes


def test_a_route_with_a_fault_has_no_retries_and_a_refused_retry_is_an_overflow():
    failing = service("srv", misbehaviour={"error_ratio": 1.0})
    delayed = virtual_service(
        "srv", {"fault": {"delay": {"fixedDelay": "10ms", "percentage": {"value": 100}}}}
    )
    _, out = run(spec([failing], [delayed]))
    assert received(out, "srv") == 1  # Istio: with a fault, the route's retries are off
    assert out.workload.flags == {"DI": 1}
    capped = destination_rule("srv", {"connectionPool": {"http": {"maxRetries": 0}}})
    _, out = run(spec([failing], [capped]))
    assert received(out, "srv") == 1
    assert out.workload.flags == {"UO": 1}  # Envoy's router: a refused retry overflowed


def test_traefik_annotations_are_for_traefik_mesh_only():
    limited = service(
        "srv",
        annotations={
            "mesh.traefik.io/ratelimit-average": "1",
            "mesh.traefik.io/ratelimit-burst": "1",
        },
    )
    load = {"kind": "closed_loop", "connections": 1, "qps": 8}
    _, sidecars = run(spec([limited], workload=load, duration=0.99))
    assert sidecars.workload.status_codes == {200: 8}
    mesh = {"architecture": "per_node", "proxy": {"concurrency": 2}}
    _, traefik = run(spec([limited], mesh=mesh, workload=load, duration=0.99))
    assert traefik.workload.status_codes.get(429, 0) > 0


def test_traefik_acl_mode_without_traffic_targets_has_no_route_to_anything():
    mesh = {"architecture": "per_node", "acl": True, "proxy": {"concurrency": 2}}
    load = {"kind": "closed_loop", "connections": 1, "qps": 8}
    _, out = run(spec([service("srv")], mesh=mesh, workload=load, duration=0.99))
    assert out.workload.status_codes == {404: 8}
    assert received(out, "srv") == 0


def test_consistent_hashing_keeps_a_header_on_one_pod_and_a_retry_moves_along_the_ring():
    services = [service("srv", replicas=4, misbehaviour=None)]
    rule = destination_rule("srv", {"loadBalancer": {"consistentHash": {"httpHeaderName": "user"}}})
    load = {
        "kind": "closed_loop",
        "connections": 1,
        "qps": 8,
        "requests": [{"headers": {"user": "jason"}}],
    }
    sim, out = run(spec(services, [rule], workload=load, duration=0.99))
    per_pod = [p.app.visits for p in sim.pods]
    assert sorted(per_pod) == [0, 0, 0, 8]  # one user, one pod
