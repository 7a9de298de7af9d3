"""Traefik Mesh's routing: which node proxy a client's connection goes through, and its opt-in.

A client reaches ``<svc>.<ns>.traefik.mesh``, a shadow service whose endpoints are the node
proxies of every node; kube-proxy picks one per connection, uniformly at random (see
models/per_node.py for the sources). The network has fixed delays (10 us on a node, 100 us
between nodes of a zone, 1 Gbps), the proxies a fixed cost, so each trace is an exact sum.
"""

from __future__ import annotations

from typing import Any

import pytest

from experiments.runner import build_simulation
from experiments.spec import SpecError, spec_from_dict

SAME_NODE_S, SAME_ZONE_S, BYTES_PER_S = 10e-6, 100e-6, 1e9 / 8
NETWORK = {"same_node": "10us", "same_zone": "100us", "cross_zone": "1ms", "bandwidth": "1Gbps"}
SIZE = 1000  # bytes, request and response
SERVICE_S = 1e-3
IO_S = 5e-6
CPU_S = 20e-6  # the node proxy's outbound chain, per side (request, response)
PROXY = {
    "concurrency": 2,
    "io_delay": "5us",
    "outbound": [
        {"kind": "http_connection_manager", "request": {"base": CPU_S}, "response": {"base": CPU_S}}
    ],
}
MESH = {"architecture": "per_node", "proxy": PROXY}


def spec(
    nodes: int,
    workload: dict[str, Any],
    services: list[dict[str, Any]] | None = None,
    assignments: dict[str, str] | None = None,
    **extra: Any,
) -> Any:
    srv = {
        "name": "srv",
        "service_time": f"{SERVICE_S * 1e3:g}ms",
        "workers": 1000,
        "request_size_bytes": SIZE,
        "response_size_bytes": SIZE,
    }
    call_graph = extra.pop("call_graph", {})
    return spec_from_dict(
        {
            "topology": {
                "cluster": {
                    "nodes": [{"name": f"node-{i}"} for i in range(nodes)],
                    "network": NETWORK,
                },
                "call_graph": {"services": services or [srv], "entry": "srv", **call_graph},
                "placement": {
                    "strategy": "explicit",
                    "assignments": assignments or {"srv-0": "node-1"},
                },
            },
            "mesh": extra.pop("mesh", MESH),
            "workload": workload,
            "warmup": 0,
            "client_node": "node-0",
            "trace_every": 1,
            **extra,
        }
    )


ONE_CONNECTION = {"kind": "closed_loop", "connections": 1, "qps": 10}


def leg(a: str, b: str) -> float:
    """One message of SIZE bytes from node ``a`` to node ``b``."""
    return (SAME_NODE_S if a == b else SAME_ZONE_S) + SIZE / BYTES_PER_S


def spans(trace: list) -> list[tuple[str, str, float]]:
    return [(s.kind, s.scope, s.end_s - s.start_s) for s in trace if s.end_s > s.start_s]


def test_a_call_crosses_to_another_nodes_proxy():
    # Three nodes; the load generator on node-0, srv-0 on node-1. The first seed whose one
    # connection kube-proxy sends to node-2's proxy (neither the client's node nor the
    # server's): the request crosses node-0 -> node-2 -> node-1 and the response comes back the
    # same way; every request of the run rides that connection.
    for seed in range(1, 50):
        experiment = spec(3, ONE_CONNECTION, duration=0.25, seed=seed)
        sim = build_simulation(experiment)
        out = sim.run()
        if out.recorder.traces[0][1].scope == "node-2.node-proxy":
            break
    else:
        pytest.fail("no seed of 49 sent the connection to node-2's proxy")
    proxy, client, server = "node-2.node-proxy", "node-0.loadgen-0", "node-1.srv-0"
    steady = [
        ("network", client, leg("node-0", "node-2")),  # the app to the proxy kube-proxy picked
        ("node_proxy_io", proxy, IO_S),
        ("node_proxy_cpu", proxy, CPU_S),
        ("network", proxy, leg("node-2", "node-1")),  # the proxy to the endpoint it picked
        ("app_cpu", "node-1.srv-0.app", SERVICE_S),
        ("network", server, leg("node-1", "node-2")),
        ("node_proxy_io", proxy, IO_S),
        ("node_proxy_cpu", proxy, CPU_S),
        ("network", proxy, leg("node-2", "node-0")),
    ]
    first = steady[:3] + [("tcp_handshake", proxy, 2 * SAME_ZONE_S)] + steady[3:]
    traces = out.recorder.traces
    assert len(traces) == 3  # at 0, 0.1 and 0.2 s
    for i, trace in enumerate(traces):
        expected = first if i == 0 else steady
        found = spans(trace)
        assert [(k, s) for k, s, _ in found] == [(k, s) for k, s, _ in expected]
        for (_, _, got), (_, _, want) in zip(found, expected, strict=True):
            assert got == pytest.approx(want, rel=1e-9)
    # Four node-to-node legs where the client's own node proxy would make two.
    assert out.workload.latency.min == pytest.approx(sum(t for *_, t in steady), rel=1e-9)
    assert sim.mesh.extras()["shadow_service_connections"] == {"opened": 1, "crossing_nodes": 1}


@pytest.mark.parametrize("nodes", [2, 4, 8])
def test_the_share_of_connections_crossing_nodes_is_n_minus_1_over_n(nodes):
    # 400 connections opened together (fortio's -c 400), each a draw of kube-proxy's: a
    # binomial share with mean (n - 1) / n; 4 standard deviations at most (sd <= 0.025).
    connections = 400
    workload = {"kind": "closed_loop", "connections": connections, "qps": 0}
    sim = build_simulation(spec(nodes, workload, duration=0.005, seed=7))
    sim.run()
    counts = sim.mesh.extras()["shadow_service_connections"]
    assert counts["opened"] == connections
    p = (nodes - 1) / nodes
    sd = (p * (1 - p) / connections) ** 0.5
    assert abs(counts["crossing_nodes"] / connections - p) <= 4 * sd
    # Every node's proxy got some of them (a DaemonSet: the shadow service's endpoints).
    busy = {name for name, proxy in sim.mesh.node_proxies.items() if proxy.requests}
    assert busy == {f"node-{i}" for i in range(nodes)}


def test_the_same_seed_picks_the_same_proxies_and_another_seed_others():
    def picks(seed: int) -> list[str]:
        workload = {"kind": "closed_loop", "connections": 20, "qps": 0}
        sim = build_simulation(spec(4, workload, duration=0.003, seed=seed))
        sim.run()
        return [p.name for p in sim.mesh.proxies() for _ in range(p.requests)]

    assert picks(1) == picks(1)
    assert picks(1) != picks(2)


def test_a_proxy_crash_hurts_clients_on_other_nodes():
    # The load generator on node-0; node-1's proxy crashes at 0.3 s for 0.5 s. Of the seeds
    # whose connection kube-proxy sent to node-1's proxy (another node's), the request at
    # 0.4 s fails at once, and the connection is dropped. With the fault's detection at 0,
    # the crashed proxy has left the shadow service's endpoints: the next request opens a new
    # connection, to node-0's proxy, and succeeds. Where the connection went to node-0's
    # proxy, node-1's crash hurts nothing.
    crash = {
        "kind": "proxy_crash",
        "start": 0.3,
        "target": {"node": "node-1"},
        "restart_delay": 0.5,
        "detection": 0,
    }
    seen = set()
    for seed in range(1, 20):
        sim = build_simulation(spec(2, ONE_CONNECTION, duration=0.95, seed=seed, faults=[crash]))
        out = sim.run()
        first = out.recorder.traces[0][1].scope
        seen.add(first)
        (record,) = out.faults
        assert record.targets == ["node-1.node-proxy"]
        if first == "node-1.node-proxy":
            assert out.workload.status_codes == {200: 9, 503: 1}
            assert record.events == [
                (0.3, "proxies unready: node-1.node-proxy"),
                (0.8, "restarted"),
                (0.8, "proxies ready"),
            ]
            after = [t[1].scope for t in out.recorder.traces[5:] if t]
            assert after == ["node-0.node-proxy"] * len(after) and len(after) == 5
            assert sim.mesh.extras()["shadow_service_connections"]["opened"] == 2
        else:
            assert out.workload.status_codes == {200: 10}
    assert seen == {"node-0.node-proxy", "node-1.node-proxy"}


def test_a_call_by_the_plain_name_bypasses_the_proxies():
    # web (node-0) calls api (node-1) by its plain name: straight to the pod. The load
    # generator calls web by its mesh name: through a node proxy.
    services = [
        {
            "name": "web",
            "service_time": "1ms",
            "request_size_bytes": SIZE,
            "response_size_bytes": SIZE,
            "steps": [{"calls": [{"service": "api", "via_mesh": False}]}],
        },
        {
            "name": "api",
            "service_time": "1ms",
            "request_size_bytes": SIZE,
            "response_size_bytes": SIZE,
        },
    ]
    experiment = spec(
        2,
        ONE_CONNECTION,
        services=services,
        assignments={"web-0": "node-0", "api-0": "node-1"},
        call_graph={"entry": "web"},
        duration=0.25,
    )
    out = build_simulation(experiment).run()
    for trace in out.recorder.traces:
        kinds = [(k, s) for k, s, _ in spans(trace)]
        at_api = kinds.index(("app_cpu", "node-1.api-0.app"))
        # web's call: web's network span straight to api, api's answer straight back.
        assert kinds[at_api - 1] == ("network", "node-0.web-0")
        assert kinds[at_api + 1] == ("network", "node-1.api-0")
        assert kinds[at_api - 2] == ("app_cpu", "node-0.web-0.app")
        proxies = [k for k, _ in kinds if k.startswith("node_proxy")]
        assert len(proxies) == 4  # the load generator's call only: io and CPU, both ways
    # And the load generator by the plain name too: no proxy at all.
    experiment = spec(
        2,
        ONE_CONNECTION,
        services=services,
        assignments={"web-0": "node-0", "api-0": "node-1"},
        call_graph={"entry": "web", "entry_via_mesh": False},
        duration=0.25,
    )
    sim = build_simulation(experiment)
    out = sim.run()
    assert all(not k.startswith("node_proxy") for t in out.recorder.traces for k, *_ in spans(t))
    assert sum(p.requests for p in sim.mesh.proxies()) == 0
    assert out.workload.status_codes == {200: 3}


def test_a_workload_calls_a_service_by_one_name():
    services = [
        {"name": "web", "steps": ["api", {"calls": [{"service": "api", "via_mesh": False}]}]},
        {"name": "api"},
    ]
    with pytest.raises(SpecError, match="step 2 calls 'api' with via_mesh: false"):
        spec(2, ONE_CONNECTION, services=services, call_graph={"entry": "web"}, duration=0.1)


def test_every_poll_costs_the_controller_its_whole_configuration():
    # A controller whose answer to a poll costs 1 ms + 0.1 ms per service + 0.01 ms per
    # endpoint: srv's 2 pods make 1.12 ms a poll, found new or not. Three node proxies poll
    # every 0.5 s: 6 polls a second, booked at the end of each second on the controller's
    # 2 cores; the bookings of 1 s .. 10 s are done by 10.5 s: 60 polls.
    control_plane = {
        "kind": "maesh",
        "cores": 2,
        "poll_interval": 0.5,
        "poll_base_cpu": "1ms",
        "poll_per_cluster_cpu": "100us",
        "poll_per_endpoint_cpu": "10us",
        "certificates": None,
    }
    experiment = spec(
        3,
        ONE_CONNECTION,
        services=[{"name": "srv", "replicas": 2}],
        assignments={"srv-0": "node-1", "srv-1": "node-2"},
        mesh={**MESH, "control_plane": control_plane},
        duration=10.5,
    )
    sim = build_simulation(experiment)
    sim.run()
    cp = sim.mesh.control_plane
    (controller,) = [s for s in sim.world.servers if s.kind == "maesh_controller"]
    assert cp.poll_cost() == pytest.approx(1.12e-3, rel=1e-12)
    assert controller.cpu_s == pytest.approx(3 * 10 / 0.5 * 1.12e-3, rel=1e-9)
    summary = cp.summary()
    assert summary["polls"] == pytest.approx(3 * 10.5 / 0.5, abs=3)  # the polls counted
    assert summary["polls"] == summary["empty_polls"]  # nothing new: every poll was empty
    # The same run with polls that cost nothing: no CPU on the controller at all.
    free = {**control_plane, "poll_base_cpu": 0, "poll_per_cluster_cpu": 0}
    free["poll_per_endpoint_cpu"] = 0
    experiment = spec(
        3,
        ONE_CONNECTION,
        services=[{"name": "srv", "replicas": 2}],
        assignments={"srv-0": "node-1", "srv-1": "node-2"},
        mesh={**MESH, "control_plane": free},
        duration=10.5,
    )
    sim = build_simulation(experiment)
    sim.run()
    (controller,) = [s for s in sim.world.servers if s.kind == "maesh_controller"]
    assert controller.cpu_s == 0.0


@pytest.mark.parametrize(("limit", "ok"), [(3, True), (2, False)])
def test_tcp_services_beyond_the_port_limit_get_no_port(limit, ok):
    # Three TCP services (mesh.traefik.io/traffic-type: tcp), a, b and c; the load generator
    # calls c. With limitTCPPort 2, a and b take the two TCP entry points and c's shadow
    # service has no port: its calls fail at once, before any proxy.
    tcp = {"mesh.traefik.io/traffic-type": "tcp"}
    services = [
        {"name": name, "protocol": "tcp", "annotations": tcp, "service_time": "1ms"}
        for name in ("a", "b", "c")
    ]
    experiment = spec(
        2,
        ONE_CONNECTION,
        services=services,
        assignments={"a-0": "node-1", "b-0": "node-1", "c-0": "node-1"},
        call_graph={"entry": "c"},
        mesh={**MESH, "limit_tcp_ports": limit},
        duration=0.25,
    )
    sim = build_simulation(experiment)
    out = sim.run()
    assert out.workload.status_codes == ({200: 3} if ok else {503: 3})
    assert (sum(p.requests for p in sim.mesh.proxies()) > 0) == ok
