"""Exact traces of one call through every architecture, with constant delays everywhere.

A load generator (``loadgen-0``, on ``node-0``) calls one service ``srv`` (one replica, on
``node-1``, same zone) in a closed loop with one connection at 10 qps, so nothing ever
queues. Every delay is a constant: the network (propagation + size / bandwidth), the proxies'
io delay, the filter costs and the service time. Each test builds, from those constants and by
hand, the exact list of spans ``(kind, scope, duration)`` one request must leave in its trace,
and checks the recorded trace against it, span for span, and the end-to-end latency against
their sum.

The first request of a run opens the pooled connections (a TCP round trip and, with mTLS, a
TLS handshake); later requests reuse them. Both are checked.

Zero-length spans (queue spans with no wait: the proxies and apps record them always) are
dropped before comparing; a separate check makes sure only queue spans are ever zero-length.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from experiments.runner import run_experiment
from experiments.spec import spec_from_dict
from models.simulation import Simulation

# The network: one zone, two nodes; bandwidth 1 Gbps = 125e6 bytes per second.
SAME_NODE_S = 10e-6
SAME_ZONE_S = 100e-6
BYTES_PER_S = 1e9 / 8
NETWORK = {"same_node": "10us", "same_zone": "100us", "cross_zone": "1ms", "bandwidth": "1Gbps"}

REQUEST_BYTES = 1024  # 1 KiB
RESPONSE_BYTES = 2048  # 2 KiB
SERVICE_S = 1e-3
IO_S = 5e-6

# Filter costs (seconds), the same chain on every listener of every proxy.
TLS_BASE, TLS_PER_KIB = 10e-6, 1e-6  # both sides
HCM_REQ_BASE, HCM_REQ_PER_KIB, HCM_RESP_BASE = 20e-6, 2e-6, 15e-6
TCP_REQ_BASE, TCP_RESP_BASE = 7e-6, 3e-6
STATS_AFTER = 30e-6  # after the response: off the request's path
FILTERS = [
    {
        "kind": "tls",
        "request": {"base": TLS_BASE, "per_kib": TLS_PER_KIB},
        "response": {"base": TLS_BASE, "per_kib": TLS_PER_KIB},
    },
    {
        "kind": "http_connection_manager",
        "request": {"base": HCM_REQ_BASE, "per_kib": HCM_REQ_PER_KIB},
        "response": {"base": HCM_RESP_BASE},
    },
    {"kind": "tcp_proxy", "request": {"base": TCP_REQ_BASE}, "response": {"base": TCP_RESP_BASE}},
    {"kind": "stats", "after_response": {"base": STATS_AFTER}},
]
TLS_CLIENT_CPU, TLS_SERVER_CPU = 100e-6, 200e-6
PROXY = {
    "concurrency": 2,
    "io_delay": "5us",
    "outbound": FILTERS,
    "inbound": FILTERS,
    "tls": {"client_cpu": TLS_CLIENT_CPU, "server_cpu": TLS_SERVER_CPU, "round_trips": 1},
}
ZTUNNEL = {**PROXY, "layer": "l4"}

CLIENT = "node-0.loadgen-0"  # the load generator's pod scope (its network sink)
SERVER = "node-1.srv-0"  # the server pod's scope (its network sink)
APP = "node-1.srv-0.app"  # the server's workers

QPS = 10.0
DURATION_S = 0.95  # ten requests, at 0, 0.1, ..., 0.9 s, all finished in time


def spec_dict(mesh: dict[str, Any], protocol: str = "http1", **extra: Any) -> dict[str, Any]:
    return {
        "topology": {
            "cluster": {"nodes": [{"name": "node-0"}, {"name": "node-1"}], "network": NETWORK},
            "call_graph": {
                "services": [
                    {
                        "name": "srv",
                        "service_time": f"{SERVICE_S * 1e3:g}ms",
                        "request_size_bytes": REQUEST_BYTES,
                        "response_size_bytes": RESPONSE_BYTES,
                        "protocol": protocol,
                    }
                ],
                "entry": "srv",
            },
            "placement": {"strategy": "explicit", "assignments": {"srv-0": "node-1"}},
        },
        "mesh": mesh,
        "workload": {"kind": "closed_loop", "connections": 1, "qps": QPS},
        "duration": DURATION_S,
        "warmup": 0,
        "trace_every": 1,
        **extra,
    }


def simulate(mesh: dict[str, Any], protocol: str = "http1") -> tuple[Simulation, Any]:
    spec = spec_from_dict(spec_dict(mesh, protocol))
    sim = Simulation(
        spec.resolve_topology(),
        spec.mesh.resolve(),
        spec.workload,
        seed=3,
        duration_s=spec.duration,
        warmup_s=spec.warmup,
        client_node=spec.client_node,
        trace_every=spec.trace_every,
    )
    return sim, sim.run()


# --- the hand model -------------------------------------------------------------------------


def net(link_s: float, size: int) -> float:
    return link_s + size / BYTES_PER_S


def link(a: str, b: str) -> float:
    return SAME_NODE_S if a == b else SAME_ZONE_S


def proxy_cpu(side: str, size: int, l7: bool, mtls: bool) -> float:
    """The CPU of a listener's side, from the filter constants: ``tls`` with mTLS only, the
    HTTP connection manager for L7, ``tcp_proxy`` for L4; ``stats`` costs after only."""
    kib = size / 1024
    cost = TLS_BASE + TLS_PER_KIB * kib if mtls else 0.0
    if l7:
        cost += HCM_REQ_BASE + HCM_REQ_PER_KIB * kib if side == "request" else HCM_RESP_BASE
    else:
        cost += TCP_REQ_BASE if side == "request" else TCP_RESP_BASE
    return cost


@dataclass(frozen=True)
class Place:
    """A proxy on the path: its span-kind prefix, scope, node, and how it computes."""

    kind: str
    scope: str
    node: str
    l7: bool
    mtls: bool
    # For a hop that holds a pooled connection: the node of what it connects to, and whether
    # a proxy (which pays the TLS server CPU) accepts it.
    pooled_to: str | None = None
    peer_is_proxy: bool = True


Span3 = tuple[str, str, float]  # (kind, scope, seconds)


def proxied_path(places: list[Place], first: bool) -> list[Span3]:
    """``client -> places... -> srv`` and back, each leg a network span of the sender, then
    at each proxy its io and CPU; the first request also opens the pooled connections."""
    spans: list[Span3] = []
    here_scope, here_node = CLIENT, "node-0"
    for p in places:
        spans.append(("network", here_scope, net(link(here_node, p.node), REQUEST_BYTES)))
        spans.append((f"{p.kind}_io", p.scope, IO_S))
        spans.append((f"{p.kind}_cpu", p.scope, proxy_cpu("request", REQUEST_BYTES, p.l7, p.mtls)))
        if first and p.pooled_to is not None:
            rtt = 2 * link(p.node, p.pooled_to)
            spans.append(("tcp_handshake", p.scope, rtt))
            if p.mtls:
                server = TLS_SERVER_CPU if p.peer_is_proxy else 0.0
                spans.append(("tls_handshake", p.scope, TLS_CLIENT_CPU + rtt + server))
        here_scope, here_node = p.scope, p.node
    spans.append(("network", here_scope, net(link(here_node, "node-1"), REQUEST_BYTES)))
    spans.append(("app_cpu", APP, SERVICE_S))
    here_scope, here_node = SERVER, "node-1"
    for p in reversed(places):
        spans.append(("network", here_scope, net(link(here_node, p.node), RESPONSE_BYTES)))
        spans.append((f"{p.kind}_io", p.scope, IO_S))
        spans.append(
            (f"{p.kind}_cpu", p.scope, proxy_cpu("response", RESPONSE_BYTES, p.l7, p.mtls))
        )
        here_scope, here_node = p.scope, p.node
    spans.append(("network", here_scope, net(link(here_node, "node-0"), RESPONSE_BYTES)))
    return spans


# --- checks ---------------------------------------------------------------------------------


def non_zero(trace: list) -> list:
    return [s for s in trace if s.end_s > s.start_s]


def check_trace(trace: list, expected: list[Span3], start_s: float) -> None:
    """The trace is exactly ``expected`` (zero-length spans aside), back to back from the
    request's start, and only queue spans are zero-length (nothing queues here)."""
    zero = [s for s in trace if s.end_s == s.start_s]
    assert all(s.kind.endswith("_queue") for s in zero), zero
    spans = non_zero(trace)
    assert [(s.kind, s.scope) for s in spans] == [(k, sc) for k, sc, _ in expected]
    for span, (_, _, seconds) in zip(spans, expected, strict=True):
        assert span.ok
        assert span.end_s - span.start_s == pytest.approx(seconds, rel=1e-9, abs=1e-12), span
    # One call, no fan-out: the spans tile the request's time without gaps or overlaps.
    assert spans[0].start_s == pytest.approx(start_s, abs=1e-12)
    for before, after in zip(spans, spans[1:], strict=False):
        assert after.start_s == pytest.approx(before.end_s, abs=1e-12), (before, after)


def check_run(out: Any, first: list[Span3], steady: list[Span3]) -> None:
    traces = out.recorder.traces
    requests = 10
    assert len(traces) == requests  # every request traced, all finished within the run
    check_trace(traces[0], first, 0.0)
    for i, trace in enumerate(traces[1:], start=1):
        check_trace(trace, steady, i / QPS)
    # End to end: the first request pays the handshakes once; every later one is the sum of
    # the steady path's constants.
    latency = out.workload.latency
    assert latency.count == requests
    assert latency.max == pytest.approx(sum(s for _, _, s in first), rel=1e-9)
    assert latency.min == pytest.approx(sum(s for _, _, s in steady), rel=1e-9)
    handshakes = {"tcp_handshake", "tls_handshake"}
    for trace in traces[1:]:
        assert not handshakes & {s.kind for s in trace}


def sidecar_places(mtls: bool, l7: bool) -> list[Place]:
    client = "node-0.loadgen-0.sidecar"
    server = "node-1.srv-0.sidecar"
    return [
        Place("sidecar", client, "node-0", l7, mtls, pooled_to="node-1"),
        Place("sidecar", server, "node-1", l7, mtls),
    ]


# --- the tests ------------------------------------------------------------------------------


def test_no_mesh_is_app_network_app():
    _, out = simulate({"architecture": "none"})
    steady = [
        ("network", CLIENT, net(SAME_ZONE_S, REQUEST_BYTES)),
        ("app_cpu", APP, SERVICE_S),
        ("network", SERVER, net(SAME_ZONE_S, RESPONSE_BYTES)),
    ]
    check_run(out, steady, steady)


def test_sidecar_trace_literally():
    """The hop sequence spelled out once, for readability; the other tests build it."""
    _, out = simulate({"architecture": "sidecar", "proxy": PROXY})
    c, s = "node-0.loadgen-0.sidecar", "node-1.srv-0.sidecar"
    assert [(x.kind, x.scope) for x in out.recorder.traces[1]] == [
        ("network", CLIENT),
        ("sidecar_io", c),
        ("sidecar_queue", c),
        ("sidecar_cpu", c),
        ("network", c),
        ("sidecar_io", s),
        ("sidecar_queue", s),
        ("sidecar_cpu", s),
        ("network", s),
        ("app_queue", APP),
        ("app_cpu", APP),
        ("network", SERVER),
        ("sidecar_io", s),
        ("sidecar_queue", s),
        ("sidecar_cpu", s),
        ("network", s),
        ("sidecar_io", c),
        ("sidecar_queue", c),
        ("sidecar_cpu", c),
        ("network", c),
    ]
    first = [(x.kind, x.scope) for x in out.recorder.traces[0]]
    assert first[4:6] == [("tcp_handshake", c), ("tls_handshake", c)]


@pytest.mark.parametrize(
    ("mtls_mode", "protocol"),
    [("STRICT", "http1"), ("DISABLE", "http1"), ("STRICT", "tcp"), ("DISABLE", "http2")],
)
def test_sidecar(mtls_mode, protocol):
    mesh = {"architecture": "sidecar", "proxy": PROXY, "mtls_mode": mtls_mode}
    _, out = simulate(mesh, protocol)
    places = sidecar_places(mtls_mode != "DISABLE", protocol != "tcp")
    check_run(out, proxied_path(places, True), proxied_path(places, False))
    first_kinds = {s.kind for s in out.recorder.traces[0]}
    assert "tcp_handshake" in first_kinds
    assert ("tls_handshake" in first_kinds) == (mtls_mode != "DISABLE")


def test_sidecar_latency_by_hand():
    """One steady request's latency, added up literally from the constants."""
    _, out = simulate({"architecture": "sidecar", "proxy": PROXY})
    kib_in, kib_out = REQUEST_BYTES / 1024, RESPONSE_BYTES / 1024
    request_cpu = (TLS_BASE + TLS_PER_KIB * kib_in) + (HCM_REQ_BASE + HCM_REQ_PER_KIB * kib_in)
    response_cpu = (TLS_BASE + TLS_PER_KIB * kib_out) + HCM_RESP_BASE
    expected = (
        (SAME_NODE_S + REQUEST_BYTES / BYTES_PER_S) * 2  # app -> sidecar, sidecar -> app
        + (SAME_ZONE_S + REQUEST_BYTES / BYTES_PER_S)  # sidecar -> sidecar
        + (SAME_NODE_S + RESPONSE_BYTES / BYTES_PER_S) * 2
        + (SAME_ZONE_S + RESPONSE_BYTES / BYTES_PER_S)
        + 4 * IO_S
        + 2 * request_cpu
        + 2 * response_cpu
        + SERVICE_S
    )
    assert out.workload.latency.min == pytest.approx(expected, rel=1e-9)
    assert out.workload.latency.min == pytest.approx(1453.728e-6, rel=1e-9)


def picked_node_proxy(out: Any) -> tuple[str, str]:
    """The node proxy kube-proxy picked for the load generator's one connection, (scope,
    node): a DaemonSet on both nodes, and a pick at random (see models/per_node.py)."""
    scope = non_zero(out.recorder.traces[0])[1].scope  # the first proxy's io span
    assert scope in ("node-0.node-proxy", "node-1.node-proxy")
    return scope, scope.split(".")[0]


@pytest.mark.parametrize("mtls_mode", ["DISABLE", "STRICT"])
def test_per_node_client_side_only(mtls_mode):
    mesh = {"architecture": "per_node", "proxy": PROXY, "mtls_mode": mtls_mode}
    _, out = simulate(mesh)
    mtls = mtls_mode != "DISABLE"
    scope, node = picked_node_proxy(out)
    # The node proxy connects straight to the app: no proxy accepts the TLS handshake; the
    # client's keep-alive connection stays on the proxy picked (every trace is this path).
    places = [Place("node_proxy", scope, node, True, mtls, "node-1", False)]
    check_run(out, proxied_path(places, True), proxied_path(places, False))
    assert ("tls_handshake" in {s.kind for s in out.recorder.traces[0]}) == mtls


@pytest.mark.parametrize("mtls_mode", ["DISABLE", "STRICT"])
def test_per_node_server_side(mtls_mode):
    mesh = {"architecture": "per_node", "proxy": PROXY, "server_side": True, "mtls_mode": mtls_mode}
    _, out = simulate(mesh)
    mtls = mtls_mode != "DISABLE"
    scope, node = picked_node_proxy(out)
    places = [
        Place("node_proxy", scope, node, True, mtls, "node-1"),
        Place("node_proxy", "node-1.node-proxy", "node-1", True, mtls),
    ]
    check_run(out, proxied_path(places, True), proxied_path(places, False))


def test_ambient_l4_only():
    mesh = {"architecture": "ambient", "ztunnel": ZTUNNEL, "waypoints": "none"}
    _, out = simulate(mesh)
    # ztunnels are L4: tls + tcp_proxy, never the HTTP filters, though the app speaks HTTP.
    places = [
        Place("ztunnel", "node-0.ztunnel", "node-0", False, True, "node-1"),
        Place("ztunnel", "node-1.ztunnel", "node-1", False, True),
    ]
    check_run(out, proxied_path(places, True), proxied_path(places, False))


@pytest.mark.parametrize("waypoints", ["all", ["srv"]])
def test_ambient_with_a_waypoint(waypoints):
    mesh = {
        "architecture": "ambient",
        "ztunnel": ZTUNNEL,
        "waypoint": PROXY,
        "waypoints": waypoints,
    }
    sim, out = simulate(mesh)
    (waypoint,) = sim.mesh.waypoints["srv"]  # type: ignore[attr-defined]
    wp_node = waypoint.node.name
    places = [
        Place("ztunnel", "node-0.ztunnel", "node-0", False, True, wp_node),
        Place("waypoint", f"{wp_node}.srv-waypoint-0", wp_node, True, True, "node-1"),
        Place("ztunnel", "node-1.ztunnel", "node-1", False, True),
    ]
    check_run(out, proxied_path(places, True), proxied_path(places, False))
    first = [s.kind for s in out.recorder.traces[0]]
    assert first.count("tcp_handshake") == 2 and first.count("tls_handshake") == 2


def test_proxyless():
    mesh = {
        "architecture": "proxyless",
        "client_cpu": {"base": 10e-6, "per_kib": 1e-6},
        "server_cpu": {"base": 20e-6},
    }
    _, out = simulate(mesh)
    lib = "grpc_library_cpu"
    steady = [
        (lib, "node-0.loadgen-0.app", 10e-6 + 1e-6 * REQUEST_BYTES / 1024),
        ("network", CLIENT, net(SAME_ZONE_S, REQUEST_BYTES)),
        (lib, APP, 20e-6),
        ("app_cpu", APP, SERVICE_S),
        (lib, APP, 20e-6),
        ("network", SERVER, net(SAME_ZONE_S, RESPONSE_BYTES)),
        (lib, "node-0.loadgen-0.app", 10e-6 + 1e-6 * RESPONSE_BYTES / 1024),
    ]
    # Channels are long-lived: no connection set-up, not even on the first request.
    check_run(out, steady, steady)


def test_after_response_work_costs_cpu_but_not_latency():
    """The ``stats`` filter's after-response cost is charged to the sidecars' CPU, and the
    latency is the same as with no after-response cost at all."""

    def run(filters: list[dict]) -> Any:
        proxy = {**PROXY, "outbound": filters, "inbound": filters}
        data = spec_dict({"architecture": "sidecar", "proxy": proxy})
        # Measure from 0.05 s: the ten requests of 0.1 s ... 1.0 s, all within 1.05 s.
        data.update(duration=1.05, warmup=0.05, trace_every=0)
        return run_experiment(spec_from_dict(data))

    with_after = run(FILTERS)
    without = run([f for f in FILTERS if f["kind"] != "stats"])
    assert with_after.end_to_end.requests == without.end_to_end.requests == 10
    a, b = with_after.end_to_end.latency, without.end_to_end.latency
    assert (a.p50_ms, a.max_ms, a.mean_ms) == (b.p50_ms, b.max_ms, b.mean_ms)
    assert with_after.histogram().min == without.histogram().min
    assert with_after.histogram().max == without.histogram().max
    # Per request, each of the two sidecars: request + response side, plus the after work.
    per_request = 2 * (
        proxy_cpu("request", REQUEST_BYTES, True, True)
        + proxy_cpu("response", RESPONSE_BYTES, True, True)
    )
    measured_s = 1.0
    assert without.cpu.by_kind["sidecar"] == pytest.approx(10 * per_request / measured_s)
    assert with_after.cpu.by_kind["sidecar"] == pytest.approx(
        10 * (per_request + 2 * STATS_AFTER) / measured_s
    )
    assert with_after.cpu.by_kind["app"] == without.cpu.by_kind["app"]


# --- two requests at once: known bugs (see the reasons) -------------------------------------


def two_at_once(protocol: str) -> Any:
    """Two closed-loop connections without pacing: both send at t = 0."""
    data = spec_dict({"architecture": "sidecar", "proxy": PROXY}, protocol)
    data.update(workload={"kind": "closed_loop", "connections": 2, "qps": 0}, duration=0.01)
    spec = spec_from_dict(data)
    sim = Simulation(
        spec.resolve_topology(),
        spec.mesh.resolve(),
        spec.workload,
        3,
        spec.duration,
        0.0,
        trace_every=1,
    )
    return sim.run()


def test_each_request_that_opens_a_connection_records_its_own_handshakes():
    out = two_at_once("http1")  # one request per connection: each opens its own
    for trace in out.recorder.traces[:2]:
        kinds = [s.kind for s in trace]
        assert kinds.count("tcp_handshake") == 1 and kinds.count("tls_handshake") == 1, kinds


def test_no_request_uses_a_connection_before_its_handshake_is_done():
    out = two_at_once("http2")  # streams: the second request shares the first's connection
    first, second = out.recorder.traces[:2]
    (tls,) = [s for s in first if s.kind == "tls_handshake"]
    server_sidecar = "node-1.srv-0.sidecar"
    reached = min(s.start_s for s in second if s.scope == server_sidecar)
    assert reached >= tls.end_s, (reached, tls.end_s)
