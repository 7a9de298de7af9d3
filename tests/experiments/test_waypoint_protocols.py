"""A waypoint parses the application's HTTP itself: HTTP/2 and gRPC requests are charged the
connection manager's HTTP/2 costs, whatever the HBONE tunnel carrying them (istio-1.24-ambient)."""

from __future__ import annotations

import pytest

from experiments.profiles import resolve_mesh
from experiments.runner import run_experiment
from experiments.spec import spec_from_dict
from models.filters import Listener

PAYLOAD = 1024


def waypoint_cpu_per_request_s(protocol: str) -> float:
    spec = spec_from_dict(
        {
            "topology": {
                "cluster": {"nodes": [{"name": "node-0"}, {"name": "node-1"}]},
                "call_graph": {
                    "services": [
                        {
                            "name": "srv",
                            "protocol": protocol,
                            "service_time": "100us",
                            "request_size_bytes": PAYLOAD,
                            "response_size_bytes": PAYLOAD,
                        }
                    ],
                    "entry": "srv",
                },
                "placement": {"strategy": "explicit", "assignments": {"srv-0": "node-1"}},
            },
            "mesh": {"profile": "istio-1.24-ambient"},
            "workload": {"kind": "closed_loop", "connections": 1, "qps": 100},
            "client_node": "node-0",
            "duration": 3.0,
            "warmup": 1.0,
            "seed": 3,
        }
    )
    result = run_experiment(spec)
    (waypoint,) = [p for p in result.proxies.values() if p.kind == "waypoint"]
    return float(waypoint.vcpu_per_1000_rps) / 1000.0


@pytest.mark.parametrize("protocol", ["http2", "grpc"])
def test_waypoint_charges_http2_its_own_parsing_costs(protocol):
    chain = Listener("inbound", resolve_mesh("istio-1.24-ambient").waypoint.inbound)
    http1 = chain.cost("http1", True)
    http2 = chain.cost(protocol, True)
    expected = {
        p: c.request(PAYLOAD) + c.response(PAYLOAD) + c.after(PAYLOAD)
        for p, c in (("http1", http1), (protocol, http2))
    }
    assert expected[protocol] < expected["http1"]  # the profile gives HTTP/2 its own, cheaper costs
    for p, cost in expected.items():
        assert waypoint_cpu_per_request_s(p) == pytest.approx(cost, rel=1e-3)
