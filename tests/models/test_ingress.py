"""The edge hop: Istio's ingress gateway and Traefik in front of Traefik Mesh, by exact traces.

The set-up of ``test_hop_traces`` (constant delays everywhere, one request in flight): the
load generator on ``node-0`` calls ``srv`` on ``node-1``, now through an ingress. Each test
builds, from the constants and by hand, the spans one request must leave, and checks the
recorded trace span for span and the end-to-end latency against their sum.
"""

from __future__ import annotations

from typing import Any

import pytest

from experiments.spec import SpecError, spec_from_dict
from tests.models.test_hop_traces import (
    PROXY,
    QPS,
    REQUEST_BYTES,
    RESPONSE_BYTES,
    TLS_BASE,
    TLS_PER_KIB,
    Place,
    Span3,
    check_run,
    check_trace,
    non_zero,
    proxied_path,
    simulate,
    spec_dict,
)

GATEWAY = "node-0.istio-ingressgateway-0"
TRAEFIK = "node-0.traefik-0"
SERVER_SIDECAR = "node-1.srv-0.sidecar"


def ingress(kind: str, **extra: Any) -> dict[str, Any]:
    return {"kind": kind, "replicas": 1, "nodes": ["node-0"], **extra}


def with_termination(spans: list[Span3], scope: str) -> list[Span3]:
    """``spans`` with the ``tls`` filter's cost added once more to the CPU spans of ``scope``
    (TLS terminated from outside: the request's bytes on the way in, the response's out)."""
    out = []
    seen = 0
    for kind, where, seconds in spans:
        if where == scope and kind.endswith("_cpu"):
            size = REQUEST_BYTES if seen == 0 else RESPONSE_BYTES
            seconds += TLS_BASE + TLS_PER_KIB * size / 1024
            seen += 1
        out.append((kind, where, seconds))
    assert seen == 2
    return out


# --- Istio's ingress gateway ------------------------------------------------------------------


@pytest.mark.parametrize("mtls_mode", ["STRICT", "DISABLE"])
def test_istio_gateway_is_the_client_side_envoy(mtls_mode):
    """client -> gateway (edge listener, picks, pooled mTLS to the sidecar) -> sidecar -> app:
    the load generator has no sidecar; the gateway's spans are ``ingress_*``."""
    mesh = {
        "architecture": "sidecar",
        "proxy": PROXY,
        "mtls_mode": mtls_mode,
        "ingress": ingress("istio_gateway"),
    }
    _, out = simulate(mesh)
    mtls = mtls_mode != "DISABLE"
    places = [
        Place("ingress", GATEWAY, "node-0", True, mtls, pooled_to="node-1"),
        Place("sidecar", SERVER_SIDECAR, "node-1", True, mtls),
    ]
    check_run(out, proxied_path(places, True), proxied_path(places, False))
    scopes = {s.scope for t in out.recorder.traces for s in t}
    assert "node-0.loadgen-0.sidecar" not in scopes
    assert ("tls_handshake" in {s.kind for s in out.recorder.traces[0]}) == mtls


def test_istio_gateway_on_another_node_pays_the_network_to_it():
    """The gateway on the server's node: the client's request crosses to it, and the
    gateway's connection to the sidecar stays on the node."""
    gateway = "node-1.istio-ingressgateway-0"
    mesh = {
        "architecture": "sidecar",
        "proxy": PROXY,
        "ingress": ingress("istio_gateway", nodes=["node-1"]),
    }
    _, out = simulate(mesh)
    places = [
        Place("ingress", gateway, "node-1", True, True, pooled_to="node-1"),
        Place("sidecar", SERVER_SIDECAR, "node-1", True, True),
    ]
    check_run(out, proxied_path(places, True), proxied_path(places, False))


def test_istio_gateway_terminating_tls_costs_the_tls_filter_once_more():
    """A Gateway server with ``tls``: the gateway decrypts from outside and encrypts to the
    sidecar, two TLS sessions; only the gateway's CPU spans grow, by the ``tls`` filter."""
    servers = [{"port": 443, "hosts": ["srv"], "tls": {"mode": "SIMPLE"}}]
    mesh = {
        "architecture": "sidecar",
        "proxy": PROXY,
        "ingress": ingress("istio_gateway", servers=servers),
    }
    _, out = simulate(mesh)
    places = [
        Place("ingress", GATEWAY, "node-0", True, True, pooled_to="node-1"),
        Place("sidecar", SERVER_SIDECAR, "node-1", True, True),
    ]
    first = with_termination(proxied_path(places, True), GATEWAY)
    steady = with_termination(proxied_path(places, False), GATEWAY)
    check_run(out, first, steady)


def test_gateway_cpu_is_charged_to_the_ingress():
    mesh = {"architecture": "sidecar", "proxy": PROXY, "ingress": ingress("istio_gateway")}
    _, out = simulate(mesh)
    proxies = {p.scope: p for p in out.proxies}
    assert GATEWAY in proxies and proxies[GATEWAY].kind == "ingress"
    assert proxies[GATEWAY].requests == 10  # every request went through it
    assert proxies[GATEWAY].cpu_s > 0.0


# --- Traefik in front of Traefik Mesh ---------------------------------------------------------


@pytest.mark.parametrize("server_side", [False, True])
def test_traefik_straight_to_the_pod(server_side):
    """Traefik's own load balancer picks the pod: no node proxy on the way in, even with
    ``server_side`` (the request does not enter the mesh); Traefik Mesh has no mTLS."""
    mesh = {
        "architecture": "per_node",
        "proxy": PROXY,
        "server_side": server_side,
        "ingress": ingress("traefik"),
    }
    _, out = simulate(mesh)
    places = [Place("ingress", TRAEFIK, "node-0", True, False, "node-1", peer_is_proxy=False)]
    check_run(out, proxied_path(places, True), proxied_path(places, False))
    assert not any(s.kind.startswith("node_proxy") for t in out.recorder.traces for s in t)


def test_traefik_via_the_mesh_goes_through_a_node_proxy():
    """``via_mesh``: Traefik sends to ``srv.default.traefik.mesh``; kube-proxy picks a node
    proxy per request here, which picks the pod. Each request's trace is that path, the
    first through each node proxy opening its connections."""
    mesh = {
        "architecture": "per_node",
        "proxy": PROXY,
        "ingress": ingress("traefik", via_mesh=True),
    }
    _, out = simulate(mesh)
    traces = out.recorder.traces
    assert len(traces) == 10
    seen: set[str] = set()
    sums = []
    for i, trace in enumerate(traces):
        node_proxy = next(s.scope for s in non_zero(trace) if s.kind == "node_proxy_io")
        node = node_proxy.split(".")[0]
        places = [
            Place("ingress", TRAEFIK, "node-0", True, False, pooled_to=node),
            Place("node_proxy", node_proxy, node, True, False, "node-1", peer_is_proxy=False),
        ]
        expected = proxied_path(places, node_proxy not in seen)
        seen.add(node_proxy)
        check_trace(trace, expected, i / QPS)
        sums.append(sum(s for _, _, s in expected))
    assert seen == {"node-0.node-proxy", "node-1.node-proxy"}  # both picked in ten draws
    assert out.workload.latency.min == pytest.approx(min(sums), rel=1e-9)
    assert out.workload.latency.max == pytest.approx(max(sums), rel=1e-9)


def test_replicas_share_the_requests_and_the_run_is_deterministic():
    mesh = {
        "architecture": "sidecar",
        "proxy": PROXY,
        "ingress": {"kind": "istio_gateway", "replicas": 2},
    }
    _, out = simulate(mesh)
    served = {p.scope: p.requests for p in out.proxies if p.kind == "ingress"}
    assert set(served) == {GATEWAY, "node-1.istio-ingressgateway-1"}
    assert sum(served.values()) == 10 and min(served.values()) > 0
    _, again = simulate(mesh)
    assert {p.scope: p.requests for p in again.proxies if p.kind == "ingress"} == served


# --- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mesh", "message"),
    [
        (
            {"architecture": "sidecar", "ingress": {"kind": "istio_gateway"}},
            "mesh.ingress.replicas: Field required",
        ),
        (
            {
                "architecture": "sidecar",
                "ingress": {
                    "kind": "istio_gateway",
                    "replicas": 1,
                    "servers": [{"hosts": ["srv", "ratings.default"]}],
                },
            },
            "mesh.ingress.servers.0.hosts.1: no service 'ratings.default'; services: srv",
        ),
        (
            {
                "architecture": "sidecar",
                "ingress": {"kind": "istio_gateway", "replicas": 1, "servers": [{"hosts": []}]},
            },
            "mesh.ingress.servers.0.hosts: List should have at least 1 item",
        ),
        (
            {"architecture": "sidecar", "ingress": {"kind": "traefik", "replicas": 1}},
            "mesh.ingress.kind: traefik fronts a per_node mesh, not a sidecar one",
        ),
        (
            {"architecture": "per_node", "ingress": {"kind": "istio_gateway", "replicas": 1}},
            "mesh.ingress.kind: istio_gateway fronts a sidecar mesh, not a per_node one",
        ),
        (
            {
                "architecture": "sidecar",
                "ingress": {"kind": "istio_gateway", "replicas": 1, "via_mesh": True},
            },
            "via_mesh: only a traefik ingress",
        ),
        (
            {
                "architecture": "sidecar",
                "ingress": {"kind": "istio_gateway", "replicas": 1, "nodes": ["edge-0"]},
            },
            "mesh.ingress.nodes.0: no node 'edge-0'; nodes: node-0, node-1",
        ),
        (
            {"architecture": "ambient", "ingress": {"kind": "istio_gateway", "replicas": 1}},
            "ingress",
        ),
    ],
)
def test_bad_ingress_is_refused_naming_the_field(mesh, message):
    with pytest.raises(SpecError) as error:
        spec_from_dict(spec_dict(mesh))
    assert message in str(error.value)


def test_a_gateway_that_admits_another_host_is_refused():
    """The entry must be admitted: the load generator's requests would all be 404."""
    data = spec_dict({"architecture": "sidecar"})
    data["topology"]["call_graph"]["services"].append({"name": "other", "service_time": "1ms"})
    data["topology"]["placement"]["assignments"]["other-0"] = "node-1"
    data["mesh"]["ingress"] = {
        "kind": "istio_gateway",
        "replicas": 1,
        "servers": [{"hosts": ["other"]}],
    }
    with pytest.raises(SpecError) as error:
        spec_from_dict(data)
    assert "mesh.ingress.servers: no server admits the entry service 'srv'" in str(error.value)


# --- Istio's egress gateway ----------------------------------------------------------------------

EGRESS = "node-1.istio-egressgateway-0"


def egress_spec(mtls_mode: str) -> dict[str, Any]:
    """``srv`` stands for an external host: its namespace is outside the mesh; the load
    generator (namespace ``default``, injected) calls it through the egress gateway."""
    mesh = {
        "architecture": "sidecar",
        "proxy": PROXY,
        "mtls_mode": mtls_mode,
        "egress": {"replicas": 1, "nodes": ["node-1"], "hosts": ["srv"]},
    }
    data = spec_dict(mesh)
    data["topology"]["namespaces"] = {"external": {"labels": {"istio-injection": "disabled"}}}
    data["topology"]["call_graph"]["services"][0]["namespace"] = "external"
    return data


@pytest.mark.parametrize("mtls_mode", ["STRICT", "DISABLE"])
def test_egress_gateway_between_the_sidecar_and_the_external_service(mtls_mode):
    """client app -> own sidecar (mTLS to the gateway, which is not the picker) -> egress
    gateway (terminates that mTLS, picks the endpoint, plaintext out) -> srv, no sidecar."""
    from tests.models.test_partial_mesh import simulate as simulate_data

    _, out = simulate_data(egress_spec(mtls_mode))
    mtls = mtls_mode != "DISABLE"
    places = [
        Place("sidecar", "node-0.loadgen-0.sidecar", "node-0", True, mtls, pooled_to="node-1"),
        Place("egress", EGRESS, "node-1", True, False, "node-1", peer_is_proxy=False),
    ]
    first, steady = proxied_path(places, True), proxied_path(places, False)
    if mtls:
        first, steady = with_termination(first, EGRESS), with_termination(steady, EGRESS)
    check_run(out, first, steady)
    scopes = {s.scope for t in out.recorder.traces for s in t}
    assert "node-1.srv-0.sidecar" not in scopes


def test_bad_egress_is_refused_naming_the_field():
    data = egress_spec("STRICT")
    data["mesh"]["egress"]["hosts"] = ["srv", "api.example"]
    with pytest.raises(SpecError) as error:
        spec_from_dict(data)
    assert "mesh.egress.hosts.1: no service 'api.example'; services: srv" in str(error.value)
    data["mesh"]["egress"] = {"hosts": ["srv"]}
    with pytest.raises(SpecError) as error:
        spec_from_dict(data)
    assert "mesh.egress.replicas: Field required" in str(error.value)


def test_an_edge_proxy_has_no_loopback_hop_in_its_io():
    """The mesh's proxy with io components: the gateway takes its io without ``ipc`` (no app
    beside it), the server's sidecar keeps it."""
    proxy = {**PROXY, "io_delay": None, "io": {"ipc": "3us", "read_write": "5us", "epoll": "2us"}}
    mesh = {"architecture": "sidecar", "proxy": proxy, "ingress": ingress("istio_gateway")}
    _, out = simulate(mesh)
    io = {(s.kind, s.scope, round((s.end_s - s.start_s) * 1e9)) for s in out.recorder.traces[1]}
    io = {x for x in io if x[0].endswith("_io")}
    assert io == {("ingress_io", GATEWAY, 7000), ("sidecar_io", SERVER_SIDECAR, 10000)}


# --- what a gateway's routes are -------------------------------------------------------------


def run_with_policies(mesh: dict[str, Any], policies: list[dict[str, Any]]) -> Any:
    from tests.models.test_partial_mesh import simulate as simulate_data

    data = spec_dict(mesh)
    data["policies"] = policies
    return simulate_data(data)[1]


ABORT_ALL = {
    "kind": "VirtualService",
    "metadata": {"name": "srv"},
    "spec": {
        "hosts": ["srv"],
        "http": [
            {
                "route": [{"destination": {"host": "srv"}}],
                "fault": {"abort": {"httpStatus": 418, "percentage": {"value": 100}}},
            }
        ],
    },
}


def test_a_virtual_service_bound_to_the_mesh_does_not_apply_at_the_gateway():
    """Without ``gateways`` a VirtualService is the sidecars' (``mesh``): its abort answers
    the load generator's sidecar's requests, not the gateway's."""
    sidecars = {"architecture": "sidecar", "proxy": PROXY}
    assert run_with_policies(sidecars, [ABORT_ALL]).workload.status_codes == {418: 10}
    gateway = {**sidecars, "ingress": ingress("istio_gateway")}
    assert run_with_policies(gateway, [ABORT_ALL]).workload.status_codes == {200: 10}


@pytest.mark.parametrize(("via_mesh", "status"), [(False, 200), (True, 404)])
def test_traefik_does_not_run_traefik_meshs_access_control(via_mesh, status):
    """In ACL mode with no TrafficTarget, Traefik Mesh's node proxies refuse every call (404:
    no router); Traefik in front of the mesh is not a node proxy: straight to the pods it
    routes, through the mesh the node proxy refuses."""
    mesh = {
        "architecture": "per_node",
        "proxy": PROXY,
        "acl": True,
        "ingress": ingress("traefik", via_mesh=via_mesh),
    }
    _, out = simulate(mesh)
    assert out.workload.status_codes == {status: 10}
