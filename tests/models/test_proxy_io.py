"""A proxy's io per pass: MeshInsight's components, per direction, growing with the size.

One load generator (``node-0``) calls one service (``srv-0`` on ``node-1``) through two
sidecars, one request at a time (closed loop, one connection, 10 qps): nothing queues, every
delay is a constant, so each io span of a trace is known exactly. The client's sidecar passes
the call through its outbound listener, the server's through its inbound one; each pass of the
request costs its direction's io at the request's size, each pass of the response at the
response's size.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from experiments.profiles import load_profile
from experiments.runner import run_experiment
from experiments.spec import spec_from_dict
from experiments.tables import run_tables
from models.proxy import ProxySpec
from models.simulation import Simulation
from sim.distributions import GammaDist

US = 1e-6
REQUEST_BYTES = 1024
RESPONSE_BYTES = 2048
CLIENT_SIDECAR = "node-0.loadgen-0.sidecar"
SERVER_SIDECAR = "node-1.srv-0.sidecar"

# Distinct constants per direction and component, so a trace tells them apart (seconds).
OUT = {"ipc": 3 * US, "rw_base": 2 * US, "rw_per_kib": 1 * US, "epoll": 1 * US}
IN = {"ipc": 11 * US, "rw_base": 7 * US, "rw_per_kib": 0.5 * US, "epoll": 4 * US}


def direction(c: dict[str, float]) -> dict[str, Any]:
    return {
        "ipc": c["ipc"],
        "read_write": {"base": c["rw_base"], "per_kib": c["rw_per_kib"]},
        "epoll": c["epoll"],
    }


IO = {"outbound": direction(OUT), "inbound": direction(IN)}
FILTERS = [{"kind": "http_connection_manager", "request": {"base": "20us"}}]


def io_of(c: dict[str, float], size: int) -> float:
    """One pass's io by hand: every component's constant, read_write's per KiB."""
    return c["ipc"] + c["rw_base"] + c["rw_per_kib"] * size / 1024 + c["epoll"]


def proxy(**io: Any) -> dict[str, Any]:
    return {"concurrency": 2, "outbound": FILTERS, "inbound": FILTERS, **io}


def spec_dict(
    proxy_spec: dict[str, Any], request_bytes: int = REQUEST_BYTES, **extra: Any
) -> dict[str, Any]:
    return {
        "topology": {
            "cluster": {
                "nodes": [{"name": "node-0"}, {"name": "node-1"}],
                "network": {"same_zone": "100us", "bandwidth": "1Gbps"},
            },
            "call_graph": {
                "services": [
                    {
                        "name": "srv",
                        "service_time": "1ms",
                        "request_size_bytes": request_bytes,
                        "response_size_bytes": RESPONSE_BYTES,
                    }
                ],
                "entry": "srv",
            },
            "placement": {"strategy": "explicit", "assignments": {"srv-0": "node-1"}},
        },
        "mesh": {"architecture": "sidecar", "mtls_mode": "DISABLE", "proxy": proxy_spec},
        "workload": {"kind": "closed_loop", "connections": 1, "qps": 10},
        "duration": 0.95,
        "warmup": 0,
        "trace_every": 1,
        **extra,
    }


def simulate(data: dict[str, Any]) -> Any:
    spec = spec_from_dict(data)
    return Simulation(
        spec.resolve_topology(),
        spec.mesh.resolve(),
        spec.workload,
        seed=3,
        duration_s=spec.duration,
        warmup_s=spec.warmup,
        client_node=spec.client_node,
        trace_every=spec.trace_every,
    ).run()


def io_spans(trace: list) -> list[tuple[str, float]]:
    return [(s.scope, s.end_s - s.start_s) for s in trace if s.kind == "sidecar_io"]


def test_each_direction_costs_its_own_io_in_an_exact_trace():
    out = simulate(spec_dict(proxy(io=IO)))
    expected = [
        (CLIENT_SIDECAR, io_of(OUT, REQUEST_BYTES)),  # the request, outbound
        (SERVER_SIDECAR, io_of(IN, REQUEST_BYTES)),  # the request, inbound
        (SERVER_SIDECAR, io_of(IN, RESPONSE_BYTES)),  # the response, inbound
        (CLIENT_SIDECAR, io_of(OUT, RESPONSE_BYTES)),  # the response, outbound
    ]
    assert len(out.recorder.traces) == 10
    for trace in out.recorder.traces:
        found = io_spans(trace)
        assert [scope for scope, _ in found] == [scope for scope, _ in expected]
        for (_, seconds), (_, want) in zip(found, expected, strict=True):
            assert seconds == pytest.approx(want, rel=1e-9, abs=1e-15)
    # The end-to-end latency moves by exactly that io against a proxy without any.
    without = simulate(spec_dict(proxy()))
    added = sum(want for _, want in expected)
    assert out.workload.latency.min - without.workload.latency.min == pytest.approx(added, rel=1e-9)


@pytest.mark.parametrize("architecture", ["ambient", "per_node"])
def test_node_proxies_pay_their_direction_s_io(architecture):
    """The node proxy that takes the call from the client passes it outbound (its outbound
    listener), the one in front of the server inbound."""
    data = spec_dict(proxy())
    kind, key = ("ztunnel", "ztunnel") if architecture == "ambient" else ("node_proxy", "proxy")
    data["mesh"] = {"architecture": architecture, key: {**proxy(io=IO), "layer": "l4"}}
    if architecture == "per_node":
        data["mesh"]["server_side"] = True
    out = simulate(data)
    found = [
        (s.scope, s.end_s - s.start_s) for s in out.recorder.traces[1] if s.kind == f"{kind}_io"
    ]
    scopes = [scope for scope, _ in found]
    assert len(found) == 4 and scopes[0] == scopes[3] and scopes[1] == scopes[2], found
    if architecture == "ambient":  # (which node proxy a per-node client uses is not ours)
        assert scopes[0].startswith("node-0.") and scopes[1].startswith("node-1."), found
    want = [
        io_of(OUT, REQUEST_BYTES),
        io_of(IN, REQUEST_BYTES),
        io_of(IN, RESPONSE_BYTES),
        io_of(OUT, RESPONSE_BYTES),
    ]
    assert [seconds for _, seconds in found] == pytest.approx(want, rel=1e-9)


def test_a_server_side_proxy_alone_pays_inbound_io_only():
    """The inbound io on its own: the client's sidecar has no outbound io at all."""
    out = simulate(spec_dict(proxy(io={"inbound": direction(IN)})))
    found = io_spans(out.recorder.traces[1])
    assert found == [
        (SERVER_SIDECAR, pytest.approx(io_of(IN, REQUEST_BYTES), rel=1e-9)),
        (SERVER_SIDECAR, pytest.approx(io_of(IN, RESPONSE_BYTES), rel=1e-9)),
    ]


def test_io_grows_with_the_message_by_its_per_kib_terms():
    small = simulate(spec_dict(proxy(io=IO), request_bytes=1024))
    large = simulate(spec_dict(proxy(io=IO), request_bytes=16 * 1024))
    a, b = io_spans(small.recorder.traces[1]), io_spans(large.recorder.traces[1])
    # The request's passes grow by 15 KiB times their direction's per-KiB term; the
    # response's (2 KiB both times) do not move.
    assert b[0][1] - a[0][1] == pytest.approx(15 * OUT["rw_per_kib"], rel=1e-9)
    assert b[1][1] - a[1][1] == pytest.approx(15 * IN["rw_per_kib"], rel=1e-9)
    assert b[2][1] == pytest.approx(a[2][1], rel=1e-12)
    assert b[3][1] == pytest.approx(a[3][1], rel=1e-12)


def test_the_breakdown_shows_the_components_and_they_sum_to_the_io():
    result = run_experiment(spec_from_dict(spec_dict(proxy(io=IO), trace_every=0)))
    hops = result.hops_ms
    assert "sidecar_io" not in hops
    # Per request, both sidecars, request and response (ms).
    kib_req, kib_resp = REQUEST_BYTES / 1024, RESPONSE_BYTES / 1024
    ipc = 2 * (OUT["ipc"] + IN["ipc"])
    read_write = 2 * (OUT["rw_base"] + IN["rw_base"]) + (kib_req + kib_resp) * (
        OUT["rw_per_kib"] + IN["rw_per_kib"]
    )
    epoll = 2 * (OUT["epoll"] + IN["epoll"])
    assert hops["sidecar_io_ipc"] == pytest.approx(ipc * 1e3, rel=1e-9)
    assert hops["sidecar_io_read_write"] == pytest.approx(read_write * 1e3, rel=1e-9)
    assert hops["sidecar_io_epoll"] == pytest.approx(epoll * 1e3, rel=1e-9)
    # The table lists the io's total, then its components under it.
    table = run_tables(result)
    lines = [line.split() for line in table.splitlines()]
    at = lines.index(["sidecar_io", f"{(ipc + read_write + epoll) * 1e3:.3f}"])
    assert [row[0] for row in lines[at + 1 : at + 4]] == ["ipc", "read_write", "epoll"]


def test_random_components_share_out_exactly_the_recorded_io():
    """With random components, the components add up to the io the sinks recorded; a
    deterministic one gets exactly its time, the random ones about their expected shares."""
    io = {
        "ipc": {"kind": "gamma", "shape": 2, "mean": "40us"},
        "read_write": {"base": "10us", "per_kib": "4us"},
        "epoll": {"kind": "exponential", "mean": "20us"},  # not mergeable: summed draw by draw
    }
    data = spec_dict(proxy(io=io), trace_every=0, duration=20.0, warmup=1.0)
    spec = spec_from_dict(data)
    sim = Simulation(
        spec.resolve_topology(),
        spec.mesh.resolve(),
        spec.workload,
        seed=5,
        duration_s=spec.duration,
        warmup_s=spec.warmup,
    )
    out = sim.run()
    recorded = out.recorder.total_by_kind()["sidecar_io"]
    split = out.extras["io_breakdown"]["sidecar_io"]
    assert sum(split.values()) == pytest.approx(recorded, rel=1e-12)
    paths = [p for proxy in sim.mesh.proxies() for p in (proxy.io_out, proxy.io_in)]
    assert sum(p.passes for p in paths) > 700  # ~190 requests x 4 passes
    read_write = sum(p.passes * 10e-6 + p.bytes * 4e-6 / 1024 for p in paths)
    assert split["sidecar_io_read_write"] == pytest.approx(read_write, rel=1e-9)
    # The random rest is what ipc (40 us) and epoll (20 us) drew, about 60 us a pass; it is
    # shared by their means.
    rest = recorded - read_write
    assert rest == pytest.approx(sum(p.passes for p in paths) * 60e-6, rel=0.05)
    assert split["sidecar_io_ipc"] == pytest.approx(rest * 2 / 3, rel=1e-9)
    assert split["sidecar_io_epoll"] == pytest.approx(rest / 3, rel=1e-9)


def test_gammas_of_one_scale_are_drawn_as_one_gamma():
    spec = ProxySpec.model_validate(
        {
            "io": {
                "ipc": {"kind": "gamma", "shape": 3.6, "mean": "180us"},
                "read_write": {"kind": "gamma", "shape": 3.58, "mean": "179us"},
                "epoll": {"kind": "erlang", "k": 2, "mean": "100us"},
            }
        }
    )
    out, into = spec.io_paths(np.random.default_rng(7))
    assert out.draw is into.draw  # a symmetric io: one sampler for both directions
    merged = GammaDist.model_validate({"shape": 9.18, "mean": "459us"}).sampler(
        np.random.default_rng(7)
    )
    assert [out.draw() for _ in range(1000)] == pytest.approx([merged() for _ in range(1000)])


def test_the_shorthand_still_works_and_draws_as_before():
    """``io_delay`` is one total both ways, whatever the size; a single-component ``io`` with
    the same distribution draws the same stream, so only the breakdown's names differ."""
    gamma = {"kind": "gamma", "shape": 4, "mean": "50us"}
    data = spec_dict(proxy(io_delay=gamma), trace_every=0)
    short = run_experiment(spec_from_dict(data))
    assert "sidecar_io" in short.hops_ms
    assert not any(k.startswith("sidecar_io_") for k in short.hops_ms)
    long = run_experiment(spec_from_dict(spec_dict(proxy(io={"ipc": gamma}), trace_every=0)))
    assert long.end_to_end.latency == short.end_to_end.latency
    assert long.hops_ms["sidecar_io_ipc"] == pytest.approx(short.hops_ms["sidecar_io"])
    # Size-independent: a 16 KiB request pays the same io as a 1 KiB one.
    small = simulate(spec_dict(proxy(io_delay="5us")))
    large = simulate(spec_dict(proxy(io_delay="5us"), request_bytes=16 * 1024))
    assert io_spans(small.recorder.traces[1]) == io_spans(large.recorder.traces[1])
    assert all(s == pytest.approx(5 * US) for _, s in io_spans(small.recorder.traces[1]))


def test_a_profile_io_can_be_replaced_by_the_shorthand_in_an_override():
    mesh = {"profile": "istio-1.8", "overrides": {"proxy": {"io": None, "io_delay": "1ms"}}}
    spec = spec_from_dict({**spec_dict(proxy()), "mesh": mesh})
    assert spec.mesh.resolve().proxy.io_delay is not None
    # Without setting io to null, the error says how.
    mesh = {"profile": "istio-1.8", "overrides": {"proxy": {"io_delay": "1ms"}}}
    with pytest.raises(ValueError, match="give io or io_delay .* set io to null"):
        spec_from_dict({**spec_dict(proxy()), "mesh": mesh})


@pytest.mark.parametrize(
    ("io", "message"),
    [
        ({"outbound": {"ipc": {"bse": "1us"}}}, "io.outbound.ipc.bse"),
        ({"outbound": {"read_write": {"per_kib": "-1us"}}}, "per_kib"),
        (
            {"inbound": {"epoll": {"kind": "pareto", "alpha": 1, "scale": "1us"}}},
            "io.inbound.epoll.base: a distribution without a finite mean",
        ),
    ],
)
def test_bad_io_is_named(io, message):
    with pytest.raises(ValidationError, match=message):
        ProxySpec.model_validate({"io": io})


def test_profiles_keep_their_io_total_at_one_kib():
    """The shipped profiles' io at Istio's calibration point (1 KiB) has the mean of its
    fitted total (a pass, both ways), as refitted to fortio's pacing and pinned workers."""
    before = {
        ("istio-1.1", "proxy"): 1100,
        ("istio-1.4", "proxy"): 730,
        ("istio-1.8", "proxy"): 40,
        ("istio-1.24", "proxy"): 40,
        ("istio-1.24-ambient", "ztunnel"): 6,
        ("istio-1.24-ambient", "waypoint"): 40,
        ("linkerd2", "proxy"): 20,
        ("maesh", "proxy"): 250,
        ("istio-ambient", "ztunnel"): 6,
        ("istio-ambient", "waypoint"): 40,
    }
    for (name, which), mean_us in before.items():
        proxy_spec = ProxySpec.model_validate(load_profile(name).mesh[which])
        assert proxy_spec.io is not None, name
        for path in proxy_spec.io_paths(np.random.default_rng(1)):
            means = sum(r + c for _, r, c, _ in path.parts) + path.per_byte * 1024
            assert means == pytest.approx(mean_us * US, rel=1e-6), (name, which)
            draws = np.array([path.draw() for _ in range(50_000)])
            drawn = draws.mean() + path.base + path.per_byte * 1024
            assert drawn == pytest.approx(mean_us * US, rel=0.1), (name, which)  # heavy tails


def test_the_breakdown_of_a_run_with_a_profile_sums_to_its_io():
    data = copy.deepcopy(spec_dict(proxy(), trace_every=0))
    data["mesh"] = "istio-1.8"
    result = run_experiment(spec_from_dict(data))
    parts = [v for k, v in result.hops_ms.items() if k.startswith("sidecar_io_")]
    assert len(parts) == 3 and all(v > 0 for v in parts)


def test_a_direction_overrides_a_profiles_components_there_only():
    """A profile gives io as components (both ways); an override's ``outbound`` replaces
    them on the outbound side, component by component, and ``meshsim show``'s output (both
    directions in full) given back as overrides changes nothing."""
    from experiments.profiles import resolve_mesh

    mesh = resolve_mesh("istio-1.8", {"proxy": {"io": {"outbound": {"ipc": "1ms"}}}})
    base = resolve_mesh("istio-1.8")
    io, io0 = mesh.proxy.io, base.proxy.io
    assert io.outbound.ipc.base.mean() == pytest.approx(1e-3)
    assert io.outbound.read_write == io0.outbound.read_write
    assert io.inbound == io0.inbound
    shown = base.model_dump(mode="json")
    again = resolve_mesh("istio-1.8", shown)
    assert again.model_dump() == base.model_dump()
