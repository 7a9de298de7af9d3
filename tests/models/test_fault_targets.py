"""Faults with targets, traced: when requests start failing, with which flag, when the
endpoint leaves and rejoins the proxies' view, when traffic is whole again; a refused connect
against a black-holed one.

The load generator is on node-0, the service ``srv`` on node-1; the network has zero delay,
proxies cost nothing, the service's CPU time is a binary fraction, requests go every 0.125 s
from 0 on one connection, and back-offs draw 0.5 (12 and 25 ms; see
tests/models/test_traffic_policies.py), so every instant below is an exact sum.
"""

from __future__ import annotations

from typing import Any

import pytest

from experiments.runner import build_simulation
from experiments.spec import SpecError, spec_from_dict

S = 2.0**-6
NET = {"same_node": 0, "same_zone": 0, "cross_zone": 0, "bandwidth": "1Gbps"}
SIDECAR = {"architecture": "sidecar", "mtls_mode": "DISABLE", "proxy": {"concurrency": 2}}
EVERY_EIGHTH = {"kind": "closed_loop", "connections": 1, "qps": 8}
BACK_OFFS = 0.012 + 0.025


def spec(faults: list[dict[str, Any]], duration: float = 0.99, **extra: Any) -> Any:
    data = {
        "topology": {
            "cluster": {
                "nodes": [{"name": "node-0", "zone": "a"}, {"name": "node-1", "zone": "b"}],
                "network": NET,
            },
            "call_graph": {
                "services": [
                    {
                        "name": "srv",
                        "service_time": S,
                        "workers": 8,
                        "request_size_bytes": 0,
                        "response_size_bytes": 0,
                    }
                ],
                "entry": "srv",
            },
            "placement": {"strategy": "explicit", "assignments": {"srv-0": "node-1"}},
        },
        "mesh": SIDECAR,
        "workload": EVERY_EIGHTH,
        "duration": duration,
        "warmup": 0,
        "client_node": "node-0",
        "trace_every": 1,
        "faults": faults,
    }
    data.update(extra)
    return spec_from_dict(data)


def run(experiment: Any) -> Any:
    sim = build_simulation(experiment)
    for proxy in sim.mesh.proxies():
        proxy._jitter = lambda: 0.5
    return sim.run()


def outcomes(out: Any) -> list[tuple[float, float]]:
    """(start, latency) of each traced request, in order."""
    found = []
    for trace in out.recorder.traces:
        if trace:
            start = min(s.start_s for s in trace)
            end = max(s.end_s for s in trace)
            found.append((start, end - start))
    return found


def test_a_crashed_pod_refuses_then_leaves_the_endpoints_then_comes_back():
    crash = {
        "kind": "pod_crash",
        "start": 0.3,
        "target": {"pod": "srv-0"},
        "restart_delay": 0.5,
        "detection": 0.25,
    }
    out = run(spec([crash]))
    # 0, .125, .25: served. .375, .5: refused at once, retried twice (UF,URX). At .55 the
    # readiness probe has failed: srv has no endpoint (UH) for .625 and .75. At .8 it runs
    # and is ready again: .875 is served.
    assert out.workload.status_codes == {200: 4, 503: 4}
    assert out.workload.flags == {"UF,URX": 2, "UH": 2}
    (record,) = out.faults
    assert record.targets == ["srv-0"]
    assert record.events == [
        (pytest.approx(0.55), "endpoints removed: srv-0"),
        (pytest.approx(0.8), "restarted"),
        (pytest.approx(0.8), "endpoints back"),
    ]


def test_a_failed_node_black_holes_connections_until_the_connect_timeout():
    # The DestinationRule's connectTimeout is 100 ms: each try into the black hole waits for
    # it, where a refused one fails at once (the pod crash above).
    # No keep-alive (maxRequestsPerConnection 1): every request opens a connection, so every
    # try into the black hole waits for the connect timeout.
    rule = {
        "kind": "DestinationRule",
        "metadata": {"name": "srv"},
        "spec": {
            "host": "srv",
            "trafficPolicy": {
                "connectionPool": {
                    "tcp": {"connectTimeout": "100ms"},
                    "http": {"maxRequestsPerConnection": 1},
                }
            },
        },
    }
    failure = {"kind": "node_failure", "start": 0.3, "duration": 0.5, "target": {"node": "node-1"}}
    out = run(spec([failure], policies=[rule]))
    flags = out.workload.flags
    assert flags == {"UF,URX": flags["UF,URX"]} and flags["UF,URX"] >= 1
    latencies = sorted(latency for start, latency in outcomes(out) if 0.3 <= start < 0.8)
    # A request that needs a new connection waits the timeout 3 times (and 2 back-offs).
    assert latencies[-1] >= 3 * 0.1 + BACK_OFFS - 1e-9
    crash = {"kind": "pod_crash", "start": 0.3, "target": {"pod": "srv-0"}, "restart_delay": 0.5}
    refused = run(spec([crash], policies=[rule]))
    worst = max(latency for start, latency in outcomes(refused) if 0.3 <= start < 0.8)
    assert worst == pytest.approx(BACK_OFFS, abs=1e-9)  # refused: no wait but the back-offs


def test_a_request_on_a_connection_into_a_failed_node_is_lost_and_its_timeout_decides():
    # The connection to srv is open (keep-alive) when node-1 fails: the request goes into the
    # black hole and only the route's timeout answers (504 UT after 200 ms).
    timeout = {
        "kind": "VirtualService",
        "metadata": {"name": "srv"},
        "spec": {
            "hosts": ["srv"],
            "http": [{"route": [{"destination": {"host": "srv"}}], "timeout": "200ms"}],
        },
    }
    failure = {"kind": "node_failure", "start": 0.3, "duration": 0.6, "target": {"node": "node-1"}}
    out = run(spec([failure], policies=[timeout]))
    lost = [(s, lat) for s, lat in outcomes(out) if 0.3 <= s < 0.9]
    assert lost and all(lat == pytest.approx(0.2, abs=1e-6) for _, lat in lost)
    assert out.workload.flags.get("UT", 0) == len(lost)


def test_a_degraded_link_adds_its_latency_both_ways():
    degraded = {
        "kind": "link_degradation",
        "start": 0.3,
        "duration": 0.4,
        "latency": "5ms",
        "target": {"link": ["a", "b"]},
    }
    out = run(spec([degraded]))
    for start, latency in outcomes(out):
        extra = 2 * 0.005 if 0.3 <= start < 0.7 else 0.0
        assert latency == pytest.approx(S + extra, abs=1e-9), start
    assert out.workload.status_codes == {200: 8}


def test_a_partition_between_zones_is_a_black_hole_both_ways():
    part = {"kind": "partition", "start": 0.3, "duration": 0.4, "target": {"link": ["a", "b"]}}
    out = run(spec([part]))
    # 0, .125 and .25 are served. The one at .375 goes on the open connection into the
    # partition and is lost; with no timeout to answer it, it is still in flight at the end
    # of this run (and the single connection sends nothing more).
    assert out.workload.status_codes == {200: 3}
    assert out.workload.sent == 4 and out.workload.in_flight_now == 1


def test_a_message_lost_in_a_partition_arrives_with_tcps_first_retransmission_after_the_heal():
    # Sent at .375 into the partition (healed at .7): TCP resends it after 200 ms (.575, still
    # cut), then 400 ms later (.975): it arrives then, and is served.
    part = {"kind": "partition", "start": 0.3, "duration": 0.4, "target": {"link": ["a", "b"]}}
    out = run(spec([part], duration=1.99))
    delayed = [lat for start, lat in outcomes(out) if start == 0.375]
    assert delayed == [pytest.approx(0.2 + 0.4 + S, abs=1e-9)]
    assert set(out.workload.status_codes) == {200}


def test_a_crashed_sidecar_takes_its_pod_down_and_the_callers_own_fails_at_once():
    crash = {"kind": "proxy_crash", "start": 0.3, "target": {"pod": "srv-0"}, "restart_delay": 0.5}
    out = run(spec([crash]))
    (record,) = out.faults
    assert record.targets == ["srv-0.sidecar"]
    assert out.workload.flags == {"UF,URX": 4}  # .375 to .75, as for a crashed pod
    assert out.workload.status_codes == {200: 4, 503: 4}


def test_a_scheduled_misbehaviour_only_lasts_its_window():
    bad = {
        "kind": "misbehaviour",
        "start": 0.3,
        "duration": 0.3,
        "target": {"service": "srv"},
        "misbehaviour": {"error_ratio": 1.0, "error_status": 500},
    }
    out = run(spec([bad]))
    # .375 and .5 answer 500 (not retried by Istio's default: 503 only); the rest 200.
    assert out.workload.status_codes == {200: 6, 500: 2}


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        (
            {"kind": "pod_crash", "start": 0.3, "duration": 1, "target": {"pod": "srv-0"}},
            "duration: a pod_crash has none",
        ),
        ({"kind": "node_failure", "start": 0.3}, "a node_failure names a node or a zone"),
        (
            {"kind": "node_failure", "start": 0.3, "target": {"node": "node-9"}},
            "faults.0.target.node: no node 'node-9'",
        ),
        (
            {"kind": "partition", "start": 0.3, "target": {"link": ["a", "zz"]}},
            "'zz' is neither a node nor a zone",
        ),
        ({"kind": "pod_crash", "start": 0.3, "target": {"service": "nope"}}, "no service 'nope'"),
        ({"kind": "pod_crash", "start": 0.3, "target": {"version": "v9"}}, "selects no pod"),
        (
            {"kind": "link_degradation", "start": 0.3, "target": {"link": ["a", "b"]}},
            "adds latency, loss, or both",
        ),
        ({"kind": "misbehaviour", "start": 0.3, "target": {"service": "srv"}}, "says how"),
        ({"kind": "pod_crash", "start": 5.0, "target": {"pod": "srv-0"}}, "after the run"),
        (
            {"kind": "control_plane_outage", "start": 0.1, "duration": 0.1},
            "needs a mesh with a control_plane",
        ),
    ],
)
def test_bad_faults_are_refused_naming_the_field(fault, message):
    with pytest.raises(SpecError, match=message.replace("(", r"\(").replace(")", r"\)")):
        spec([fault])


def test_crashed_node_proxies_fail_the_calls_through_them_at_once():
    # Traefik Mesh: both node proxies are down (the load generator's connection goes through
    # one of them, as kube-proxy picks it): its calls fail at once with the app's own error
    # (no proxy answered: no flag); each failed connection is dropped and the next request
    # opens another. Restarted at 0.8 s, before their readiness probes (3 s) take them out of
    # the shadow service's endpoints.
    mesh = {"architecture": "per_node", "proxy": {"concurrency": 2}}
    crashes = [
        {"kind": "proxy_crash", "start": 0.3, "target": {"node": node}, "restart_delay": 0.5}
        for node in ("node-0", "node-1")
    ]
    out = run(spec(crashes, mesh=mesh))
    assert [r.targets for r in out.faults] == [["node-0.node-proxy"], ["node-1.node-proxy"]]
    assert all(r.events == [(0.8, "restarted")] for r in out.faults)
    assert out.workload.status_codes == {200: 4, 503: 4}
    assert out.workload.flags == {"-": 4}
    failed = [lat for start, lat in outcomes(out) if 0.3 <= start < 0.8]
    assert failed == []  # failed at once: no span on the way (nothing reached a proxy)
