"""Proxy memory moves with load: per open connection and per request in flight.

A load generator calls one service ``srv`` (one pod, both on ``node-0``) through sidecars,
in a closed loop of ``c`` connections at ``c`` qps (one request per connection per second).
``srv`` takes 2 s per request and has workers to spare, so every connection's first request
is still in flight when the last connection sends its own (within the first second, however
the load generator spreads its connections' starts), and nothing else is sent before 2 s. At
the peak each sidecar then holds ``c`` requests in flight and ``c`` connections (HTTP/1.1: one
request per connection at a time, from the client's sidecar to the server's), so its memory
is its configuration plus ``c * (per_connection_bytes + per_request_bytes)``, exactly.
"""

from __future__ import annotations

from typing import Any

import pytest

from experiments.runner import build_simulation, run_experiment
from experiments.spec import spec_from_dict
from models.simulation import Simulation

CONNECTION_B = 30_000
REQUEST_B = 5_000
MEMORY = {
    "base_bytes": 1_000_000,
    "per_cluster_bytes": 1000,
    "per_endpoint_bytes": 100,
    "per_connection_bytes": CONNECTION_B,
    "per_request_bytes": REQUEST_B,
}
NET = {"same_node": "10us", "same_zone": "100us", "cross_zone": "1ms", "bandwidth": "1Gbps"}
CLIENT_SIDECAR = "node-0.loadgen-0.sidecar"
SERVER_SIDECAR = "node-0.srv-0.sidecar"


def spec_dict(
    connections: int, memory: dict[str, Any] | None = None, duration: float = 3.0, **extra: Any
) -> dict[str, Any]:
    return {
        "topology": {
            "cluster": {"nodes": [{"name": "node-0"}], "network": NET},
            "call_graph": {
                "services": [{"name": "srv", "service_time": "2s", "workers": 64}],
                "entry": "srv",
            },
        },
        "mesh": {
            "architecture": "sidecar",
            "mtls_mode": "DISABLE",
            "proxy": {"concurrency": 2, "memory": memory or MEMORY},
        },
        "workload": {"kind": "closed_loop", "connections": connections, "qps": connections},
        "duration": duration,
        "warmup": 0,
        **extra,
    }


def run(data: dict[str, Any]) -> tuple[Simulation, Any]:
    sim = build_simulation(spec_from_dict(data))
    return sim, sim.run()


def configuration(sim: Simulation) -> dict[str, float]:
    """Each proxy's memory with nothing open: its configuration alone."""
    return {
        p.scope: p.spec.memory.total(p.known_clusters, p.known_endpoints, 0)
        for p in sim.mesh.proxies()  # type: ignore[attr-defined]
    }


@pytest.mark.parametrize("connections", [1, 4, 16])
def test_memory_is_configuration_plus_what_is_open_at_the_peak(connections):
    sim, out = run(spec_dict(connections))
    config = configuration(sim)
    for scope in (CLIENT_SIDECAR, SERVER_SIDECAR):
        proxy = next(p for p in sim.mesh.proxies() if p.scope == scope)  # type: ignore[attr-defined]
        assert proxy.peak_connections == connections
        assert out.memory_bytes[scope] == config[scope] + connections * (CONNECTION_B + REQUEST_B)


def test_memory_grows_with_concurrency_by_exactly_the_modelled_amount():
    found = {c: run(spec_dict(c))[1].memory_bytes for c in (2, 8)}
    for scope in (CLIENT_SIDECAR, SERVER_SIDECAR):
        assert found[8][scope] - found[2][scope] == 6 * (CONNECTION_B + REQUEST_B)
    # Each part alone: requests in flight without a cost per connection, and the reverse.
    requests_only = {**MEMORY, "per_connection_bytes": 0}
    connections_only = {**MEMORY, "per_request_bytes": 0}
    for memory, per in ((requests_only, REQUEST_B), (connections_only, CONNECTION_B)):
        low, high = (run(spec_dict(c, memory))[1].memory_bytes for c in (2, 8))
        assert high[SERVER_SIDECAR] - low[SERVER_SIDECAR] == 6 * per


def test_the_mean_counts_each_request_for_the_time_it_is_in_flight():
    # One connection, 1.5 s: the one request is sent at 0 and answered after 2 s, so the
    # client's sidecar holds it for the whole run (its mean is one request), and the
    # server's from when it reaches it; no connection costs anything here.
    memory = {**MEMORY, "per_connection_bytes": 0}
    sim, out = run(spec_dict(1, memory, duration=1.5, trace_every=1))
    proxies = {p.scope: p for p in sim.mesh.proxies()}  # type: ignore[attr-defined]
    config = configuration(sim)
    client, server = proxies[CLIENT_SIDECAR], proxies[SERVER_SIDECAR]
    assert client.memory_mean_bytes() == pytest.approx(config[CLIENT_SIDECAR] + REQUEST_B)
    # The request reached the server's sidecar when the client's sidecar sent it on: the
    # network span out of the client's sidecar starts then.
    (trace,) = out.recorder.traces
    (sent,) = [s.start_s for s in trace if s.kind == "network" and s.scope == CLIENT_SIDECAR]
    share = (1.5 - sent) / 1.5
    assert 0.0 < sent < 0.01
    assert server.memory_mean_bytes() == pytest.approx(
        config[SERVER_SIDECAR] + share * REQUEST_B, rel=1e-12
    )
    assert server.memory_mean_bytes() < server.memory_bytes()


def test_nothing_in_flight_after_the_responses_have_gone_back():
    # Short requests (1 ms), 2 s run: every stream opened is closed again once its response
    # has left the proxy; at the end only requests still under way are held.
    data = spec_dict(4, duration=2.0)
    data["topology"]["call_graph"]["services"][0]["service_time"] = "1ms"
    sim, _ = run(data)
    for proxy in sim.mesh.proxies():  # type: ignore[attr-defined]
        assert 0 <= proxy.streams <= 4


def test_an_attempt_given_up_on_releases_its_streams():
    # Half the requests hang at the app; a per-try timeout gives up on them and retries.
    # Each given-up try resets its stream at the server's sidecar: without that, the server's
    # sidecar would hold one more request per timeout, hundreds by the end.
    data = spec_dict(4, duration=5.0)
    srv = data["topology"]["call_graph"]["services"][0]
    srv["service_time"] = "1ms"
    srv["misbehaviour"] = {"hang_ratio": 0.5}
    data["workload"]["qps"] = 400
    data["policies"] = [
        {
            "apiVersion": "networking.istio.io/v1beta1",
            "kind": "VirtualService",
            "metadata": {"name": "srv"},
            "spec": {
                "hosts": ["srv"],
                "http": [
                    {
                        "route": [{"destination": {"host": "srv"}}],
                        "retries": {"attempts": 2, "perTryTimeout": "20ms", "retryOn": "5xx"},
                    }
                ],
            },
        }
    ]
    sim, out = run(data)
    assert out.traffic.destinations["srv"]["upstream_rq_per_try_timeout"] > 100
    proxies = {p.scope: p for p in sim.mesh.proxies()}  # type: ignore[attr-defined]
    for scope in (CLIENT_SIDECAR, SERVER_SIDECAR):
        assert 0 <= proxies[scope].streams <= 4
    # The peak: at most one request per connection at once, on four connections (and the
    # pool may keep a few more connections open than are busy).
    config = configuration(sim)
    server = proxies[SERVER_SIDECAR]
    in_flight = (server.memory_bytes() - config[SERVER_SIDECAR]) - (
        server.peak_connections * CONNECTION_B
    )
    assert in_flight <= 4 * REQUEST_B


def test_the_run_result_reports_the_peak_and_the_mean():
    data = spec_dict(1, {**MEMORY, "per_connection_bytes": 0}, duration=1.5)
    sim, _ = run(data)
    expected = {p.scope: p for p in sim.mesh.proxies()}  # type: ignore[attr-defined]
    result = run_experiment(spec_from_dict(data))
    for scope in (CLIENT_SIDECAR, SERVER_SIDECAR):
        proxy = result.proxies[scope]
        assert proxy.memory_bytes == expected[scope].memory_bytes()
        assert proxy.memory_mean_bytes == pytest.approx(expected[scope].memory_mean_bytes())
        assert proxy.memory_mean_bytes <= proxy.memory_bytes
    assert result.memory_bytes[SERVER_SIDECAR] == result.proxies[SERVER_SIDECAR].memory_bytes
