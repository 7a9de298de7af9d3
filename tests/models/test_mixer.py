"""Istio's Mixer, with constant delays everywhere: checks, the check cache, reports, outages.

The set-up is the one of ``test_hop_traces.py``: a load generator (``loadgen-0``, on
``node-0``) calls one service ``srv`` (one replica, on ``node-1``, same zone) in a closed loop
with one connection at 10 qps, so nothing ever queues, and every delay is a constant. The
sidecar mesh is given inline with a small proxy spec and every Mixer field set explicitly.

Mixer's pods are placed by a stable hash of the deployment's name on the sorted nodes
(``Mixer._deploy``); :func:`mixer_node` computes the same, so the link class of a check or a
report (same node or same zone) follows from it, and each test that depends on it checks the
placement against the simulation's.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from experiments.runner import run_experiment
from experiments.spec import SpecError, spec_from_dict
from models.simulation import Simulation
from sim.random import stable_hash

# The network: one zone, two nodes; bandwidth 1 Gbps = 125e6 bytes per second.
SAME_NODE_S = 10e-6
SAME_ZONE_S = 100e-6
BYTES_PER_S = 1e9 / 8
NETWORK = {"same_node": "10us", "same_zone": "100us", "cross_zone": "1ms", "bandwidth": "1Gbps"}
NODES = ["node-0", "node-1"]
CLIENT_NODE, SERVER_NODE = "node-0", "node-1"

REQUEST_BYTES = 1024
RESPONSE_BYTES = 2048
SERVICE_S = 1e-3
IO_S = 5e-6

# The proxy: tls + the HTTP connection manager on both listeners, nothing after the response.
TLS_BASE = 10e-6
HCM_REQ_BASE, HCM_REQ_PER_KIB = 20e-6, 2e-6
HCM_RESP_BASE, HCM_RESP_PER_KIB = 15e-6, 1e-6
FILTERS = [
    {"kind": "tls", "request": {"base": TLS_BASE}, "response": {"base": TLS_BASE}},
    {
        "kind": "http_connection_manager",
        "request": {"base": HCM_REQ_BASE, "per_kib": HCM_REQ_PER_KIB},
        "response": {"base": HCM_RESP_BASE, "per_kib": HCM_RESP_PER_KIB},
    },
]
PROXY = {
    "concurrency": 2,
    "io_delay": "5us",
    "outbound": FILTERS,
    "inbound": FILTERS,
    "tls": {"client_cpu": 100e-6, "server_cpu": 200e-6, "round_trips": 1},
}

CHECK_CPU = 300e-6
CHECK_BYTES = 2048
REPORT_REQUEST_BYTES = 512

CLIENT = "node-0.loadgen-0"  # the load generator's pod scope
CLIENT_SIDECAR = "node-0.loadgen-0.sidecar"
SERVER_SIDECAR = "node-1.srv-0.sidecar"

QPS = 10.0
NO_CACHE = {"max_entries": 0}  # every check goes to Mixer
UNCHECKED = {"disable_policy_checks": True}  # Istio 1.1 to 1.4's default: reports only
DURATION_S = 0.95  # ten requests, at 0, 0.1, ..., 0.9 s, all finished in time
REQUESTS = 10


def mixer(**fields: Any) -> dict[str, Any]:
    """A Mixer spec with every field explicit; ``fields`` override."""
    spec: dict[str, Any] = {
        "policy": {"replicas": 1, "workers": 4},
        "telemetry": {"replicas": 1, "workers": 4},
        "check_cpu": CHECK_CPU,
        "check_size_bytes": CHECK_BYTES,
        "check_on": "inbound",
        "check_cache": NO_CACHE,
        "fail_policy": "fail_closed",
        "report_batch_size": 1,
        "report_interval": 1.0,
        "report_proxy_cpu": 0.0,
        "report_batch_cpu": 0.0,
        "report_request_cpu": 0.0,
        "report_request_bytes": REPORT_REQUEST_BYTES,
    }
    spec.update(fields)
    return spec


def spec_dict(mixer_spec: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "topology": {
            "cluster": {"nodes": [{"name": n} for n in NODES], "network": NETWORK},
            "call_graph": {
                "services": [
                    {
                        "name": "srv",
                        "service_time": f"{SERVICE_S * 1e3:g}ms",
                        "request_size_bytes": REQUEST_BYTES,
                        "response_size_bytes": RESPONSE_BYTES,
                    }
                ],
                "entry": "srv",
            },
            "placement": {"strategy": "explicit", "assignments": {"srv-0": SERVER_NODE}},
        },
        # No retries: these tests follow one request through Mixer's check; Istio's default
        # retries of a 503 (the client's sidecar retrying a failed check) are tested with
        # the router (tests/models/test_traffic_policies.py).
        "mesh": {
            "architecture": "sidecar",
            "proxy": PROXY,
            "mixer": mixer_spec,
            "retries": {"attempts": 0},
        },
        "workload": {"kind": "closed_loop", "connections": 1, "qps": QPS},
        "duration": DURATION_S,
        "warmup": 0,
        "trace_every": 1,
        **extra,
    }


def simulate(mixer_spec: dict[str, Any], **extra: Any) -> tuple[Simulation, Any]:
    spec = spec_from_dict(spec_dict(mixer_spec, **extra))
    sim = Simulation(
        spec.resolve_topology(),
        spec.mesh.resolve(),
        spec.workload,
        seed=3,
        duration_s=spec.duration,
        warmup_s=spec.warmup,
        client_node=spec.client_node,
        trace_every=spec.trace_every,
        faults=spec.faults,
    )
    return sim, sim.run()


def outage(start: float, duration: float) -> list[dict[str, Any]]:
    return [{"kind": "mixer_outage", "start": start, "duration": duration}]


# --- the hand model -------------------------------------------------------------------------


def net(link_s: float, size: int) -> float:
    return link_s + size / BYTES_PER_S


def link(a: str, b: str) -> float:
    return SAME_NODE_S if a == b else SAME_ZONE_S


def mixer_node(deployment: str) -> str:
    """Where the first pod of a Mixer deployment runs (as ``Mixer._deploy`` places it)."""
    return sorted(NODES)[stable_hash(deployment) % len(NODES)]


POLICY_NODE = mixer_node("istio-policy")
TELEMETRY_NODE = mixer_node("istio-telemetry")
CHECKER_NODE = {CLIENT_SIDECAR: CLIENT_NODE, SERVER_SIDECAR: SERVER_NODE}
CHECKERS = {
    "inbound": [SERVER_SIDECAR],
    "outbound": [CLIENT_SIDECAR],
    "both": [CLIENT_SIDECAR, SERVER_SIDECAR],
}


def check_round_trip(checker: str) -> float:
    """A check that misses the cache: the attribute bag to the policy pod, its CPU, back."""
    one_way = net(link(CHECKER_NODE[checker], POLICY_NODE), CHECK_BYTES)
    return one_way + CHECK_CPU + one_way


def failed_check(checker: str) -> float:
    """A check while Mixer is down: the bag goes, a refusal (no bytes) comes back, no CPU."""
    to = link(CHECKER_NODE[checker], POLICY_NODE)
    return net(to, CHECK_BYTES) + net(to, 0)


def request_cpu(size: int) -> float:
    return TLS_BASE + HCM_REQ_BASE + HCM_REQ_PER_KIB * size / 1024


def response_cpu(size: int) -> float:
    return TLS_BASE + HCM_RESP_BASE + HCM_RESP_PER_KIB * size / 1024


# --- trace helpers --------------------------------------------------------------------------


def non_zero(trace: list) -> list:
    return [s for s in trace if s.end_s > s.start_s]


def latency(trace: list, i: int) -> float:
    """The end-to-end latency of request ``i`` (sent at ``i / QPS``) from its trace."""
    return trace[-1].end_s - i / QPS


def durations(spans: list) -> list[tuple[str, str, float]]:
    return [(s.kind, s.scope, s.end_s - s.start_s) for s in spans]


def assert_same_spans(got: list, expected: list) -> None:
    assert [(k, sc) for k, sc, _ in got] == [(k, sc) for k, sc, _ in expected]
    for g, e in zip(got, expected, strict=True):
        assert g[2] == pytest.approx(e[2], rel=1e-9, abs=1e-12), (g, e)


def with_checks(hit_trace: list, checkers: list[str], seconds: dict[str, float]) -> list:
    """A hit's spans with a ``mixer_check`` span of ``seconds[checker]`` inserted right after
    each checking proxy's request-side CPU (the check comes before it forwards)."""
    out = []
    done: set[str] = set()
    for kind, scope, dur in durations(non_zero(hit_trace)):
        out.append((kind, scope, dur))
        if kind == "sidecar_cpu" and scope in checkers and scope not in done:
            done.add(scope)
            out.append(("mixer_check", scope, seconds[scope]))
    assert done == set(checkers)
    return out


# --- 1. a check costs exactly one round trip to Mixer; a cache hit costs nothing ---------------


@pytest.mark.parametrize("check_on", ["inbound", "outbound", "both"])
def test_a_check_adds_one_mixer_round_trip(check_on):
    free_sim, free = simulate(mixer(check_on=check_on, **UNCHECKED))
    miss_sim, miss = simulate(mixer(check_on=check_on, check_cache=NO_CACHE))
    (policy,) = miss_sim.mesh.mixer.policy_pods  # type: ignore[attr-defined]
    assert policy.node.name == POLICY_NODE  # the hand model's placement is the simulation's

    checkers = CHECKERS[check_on]
    trips = {c: check_round_trip(c) for c in checkers}
    added = sum(trips.values())
    assert len(free.recorder.traces) == len(miss.recorder.traces) == REQUESTS
    for i, (h, m) in enumerate(zip(free.recorder.traces, miss.recorder.traces, strict=True)):
        # Unchecked, nothing leaves the proxy; a miss is that path plus the check span(s).
        assert "mixer_check" not in {s.kind for s in h}
        assert_same_spans(durations(non_zero(m)), with_checks(h, checkers, trips))
        for span in (s for s in m if s.kind == "mixer_check"):
            assert span.ok
        assert latency(m, i) - latency(h, i) == pytest.approx(added, rel=1e-9)
    # The histograms agree: min (steady) and max (the first request, with its handshakes).
    assert miss.workload.latency.min - free.workload.latency.min == pytest.approx(added, rel=1e-9)
    assert miss.workload.latency.max - free.workload.latency.max == pytest.approx(added, rel=1e-9)

    per_request = len(checkers)
    assert free.extras["mixer"]["checks"] == free.extras["mixer"]["cache_hits"] == 0
    assert miss.extras["mixer"]["checks"] == 10 * per_request
    assert miss.extras["mixer"]["cache_hits"] == 0
    assert miss.extras["mixer"]["check_failures"] == miss.extras["mixer"]["denied"] == 0
    # Mixer's CPU: one check_cpu per miss on the policy pod, none without checks.
    assert policy.cpu.cpu_s == pytest.approx(10 * per_request * CHECK_CPU, rel=1e-9)
    assert free_sim.mesh.mixer.policy_pods[0].cpu.cpu_s == 0.0  # type: ignore[attr-defined]


@pytest.mark.parametrize("check_on", ["inbound", "both"])
def test_a_cache_hit_is_as_fast_as_no_check(check_on):
    # Mixer's default answer (1 minute, 10,000 uses): the first request misses, fills the
    # (loadgen, srv) entry, and the nine after it hit, on the path an unchecked request takes.
    _, free = simulate(mixer(check_on=check_on, **UNCHECKED))
    _, cached = simulate(mixer(check_on=check_on, check_cache={}))
    _, miss = simulate(mixer(check_on=check_on, check_cache=NO_CACHE))
    first = durations(non_zero(cached.recorder.traces[0]))
    assert first == durations(non_zero(miss.recorder.traces[0]))
    for h, c in zip(free.recorder.traces[1:], cached.recorder.traces[1:], strict=True):
        assert durations(non_zero(c)) == durations(non_zero(h))
    checkers = len(CHECKERS[check_on])
    assert cached.extras["mixer"]["checks"] == 10 * checkers
    assert cached.extras["mixer"]["cache_hits"] == 9 * checkers


def test_the_check_time_is_in_the_run_result_per_request():
    data = spec_dict(mixer(check_cache=NO_CACHE), trace_every=0)
    result = run_experiment(spec_from_dict(data))
    assert result.end_to_end.requests == REQUESTS
    assert result.hops_ms["mixer_check"] == pytest.approx(
        check_round_trip(SERVER_SIDECAR) * 1e3, rel=1e-9
    )
    assert result.cpu.by_kind["mixer_policy"] == pytest.approx(
        REQUESTS * CHECK_CPU / DURATION_S, rel=1e-9
    )
    assert result.extras["mixer"]["checks"] == REQUESTS


# --- 2. the check cache: valid duration, use count, LRU, keys ------------------------------


def missed(out: Any) -> list[int]:
    return [i for i, t in enumerate(out.recorder.traces) if any(s.kind == "mixer_check" for s in t)]


def test_an_answer_expires_after_its_valid_duration():
    # Thirteen requests, at 0, 0.1, ..., 1.2 s; the server sidecar checks each one a constant
    # time after it is sent (longer for the first, which opens the connection: its entry
    # expires a little later than 0.45 s after request 0's send). The first misses and keeps
    # the (loadgen, srv) answer for 0.45 s; requests 1 to 4 hit; request 5 (0.5 s) finds it
    # expired and misses; 6 to 9 hit; 10 misses; 11 and 12 hit.
    _, out = simulate(mixer(check_cache={"valid_duration": 0.45}), duration=1.25)
    traces = out.recorder.traces
    assert len(traces) == 13
    assert missed(out) == [0, 5, 10]
    assert out.extras["mixer"]["checks"] == 13
    assert out.extras["mixer"]["cache_hits"] == 10
    for i in missed(out):
        (check,) = [s for s in traces[i] if s.kind == "mixer_check"]
        assert check.scope == SERVER_SIDECAR
        assert check.end_s - check.start_s == pytest.approx(check_round_trip(SERVER_SIDECAR))
    # The steady requests that miss are exactly one round trip slower than those that hit.
    steady_hit = latency(traces[1], 1)
    assert latency(traces[5], 5) - steady_hit == pytest.approx(check_round_trip(SERVER_SIDECAR))
    assert latency(traces[10], 10) - steady_hit == pytest.approx(check_round_trip(SERVER_SIDECAR))
    assert all(latency(traces[i], i) == pytest.approx(steady_hit) for i in (2, 4, 6, 9, 11))


@pytest.mark.parametrize(("uses", "expected"), [(1, [0, 2, 4, 6, 8]), (3, [0, 4, 8]), (9, [0])])
def test_an_answer_serves_its_valid_use_count_then_misses(uses, expected):
    # An answer serves ``uses`` hits after the miss that brought it; the next request misses.
    _, out = simulate(mixer(check_cache={"valid_use_count": uses}))
    assert missed(out) == expected
    assert out.extras["mixer"]["cache_hits"] == REQUESTS - len(expected)


def chain_spec(max_entries: int, referenced: list[str]) -> dict[str, Any]:
    """``srv`` calls ``a`` then ``b`` for each request; its sidecar checks on the outbound
    side, so one cache sees (srv, a), (srv, b), (srv, a), ... in turn."""
    data = spec_dict(
        mixer(
            check_on="outbound", check_cache={"max_entries": max_entries, "referenced": referenced}
        )
    )
    services = data["topology"]["call_graph"]["services"]
    services[0]["steps"] = [{"calls": ["a"]}, {"calls": ["b"]}]
    services += [{"name": "a", "service_time": "1ms"}, {"name": "b", "service_time": "1ms"}]
    data["topology"]["placement"]["assignments"].update({"a-0": SERVER_NODE, "b-0": SERVER_NODE})
    return data


def srv_checks(out: Any) -> list[str]:
    """The scopes of the checks that went to Mixer, in the order they were made."""
    spans = [s for t in out.recorder.traces for s in t if s.kind == "mixer_check"]
    return [s.scope for s in sorted(spans, key=lambda s: s.start_s)]


@pytest.mark.parametrize(
    ("max_entries", "referenced", "srv_misses", "evictions"),
    [
        # Two keys, room for two: each misses once.
        (2, ["source.workload.name", "destination.service.host"], 2, 0),
        # Room for one: a evicts b and b evicts a, every time after the first.
        (1, ["source.workload.name", "destination.service.host"], 20, 19),
        # The destination not referenced: one key for both calls.
        (1, ["source.workload.name"], 1, 0),
    ],
)
def test_lru_eviction_at_capacity_and_a_different_key_misses(
    max_entries, referenced, srv_misses, evictions
):
    spec = spec_from_dict(chain_spec(max_entries, referenced))
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
    out = sim.run()
    checks = srv_checks(out)
    # The load generator's sidecar checks srv once per key too (one key: loadgen -> srv).
    assert checks.count(CLIENT_SIDECAR) == 1
    assert checks.count(SERVER_SIDECAR) == srv_misses
    stats = out.extras["mixer"]
    assert stats["checks"] == REQUESTS * 3  # loadgen -> srv, srv -> a, srv -> b
    assert stats["cache_hits"] == REQUESTS * 3 - 1 - srv_misses
    assert stats["cache_evictions"] == evictions


def test_the_cache_in_the_small():
    """The cache's mechanics on one proxy's client, at fixed times: LRU order, a hit's use,
    expiry strictly after the valid duration, a different key."""
    spec = spec_from_dict(
        spec_dict(
            mixer(check_cache={"max_entries": 2, "valid_duration": 1.0, "valid_use_count": 2})
        )
    )
    sim = Simulation(
        spec.resolve_topology(), spec.mesh.resolve(), spec.workload, seed=3, duration_s=5.0
    )
    mixer_ = sim.mesh.mixer  # type: ignore[attr-defined]
    proxy = sim.mesh.sidecars["srv-0"]  # type: ignore[attr-defined]
    client = mixer_._client(proxy)
    a, b, c = ("loadgen", "a"), ("loadgen", "b"), ("loadgen", "c")
    assert not mixer_._cache_hit(client, a)  # empty
    mixer_._cache_answer(client, a)  # valid until 1.0 s, 2 uses
    mixer_._cache_answer(client, b)
    assert not mixer_._cache_hit(client, c)  # a different key misses
    assert mixer_._cache_hit(client, a)  # a is now the most recent; b the least
    mixer_._cache_answer(client, c)  # at capacity: b goes
    assert list(client.cache) == [a, c]
    assert not mixer_._cache_hit(client, b)
    assert mixer_._cache_hit(client, a)  # its second and last use
    assert not mixer_._cache_hit(client, a)  # no use left: removed
    assert list(client.cache) == [c]
    sim.env.run(until=1.0)
    assert mixer_._cache_hit(client, c)  # at exactly the expiry it is still valid
    sim.env.run(until=1.0 + 1e-9)
    assert not mixer_._cache_hit(client, c)  # expired: removed
    assert not client.cache


def test_a_check_cache_refuses_an_unknown_attribute():
    data = spec_dict(mixer(check_cache={"referenced": ["source.principal", "request.body"]}))
    with pytest.raises(SpecError, match=r"check_cache\.referenced") as caught:
        spec_from_dict(data)
    assert "request.body" in str(caught.value)


# --- 3. reports never lengthen a request ----------------------------------------------------

REPORT_PROXY_CPU = 2e-3
REPORT_BATCH_CPU = 1e-3
REPORT_REQUEST_CPU = 0.5e-3


def test_reports_cost_cpu_but_never_latency():
    """Batches of one request, so every response is reported at once by both sidecars: the
    proxies' charged work (2 ms) and Mixer's are far shorter than the 0.1 s between requests,
    and with two workers the next request always finds one free anyway."""

    def run(**costs: float) -> Any:
        data = spec_dict(mixer(**UNCHECKED, **costs), trace_every=0)
        # Measure from 0.05 s: the ten requests of 0.1 s ... 1.0 s, all reported by 1.05 s.
        data.update(duration=1.05, warmup=0.05)
        return run_experiment(spec_from_dict(data))

    free = run()
    paid = run(
        report_proxy_cpu=REPORT_PROXY_CPU,
        report_batch_cpu=REPORT_BATCH_CPU,
        report_request_cpu=REPORT_REQUEST_CPU,
    )
    assert free.end_to_end.requests == paid.end_to_end.requests == REQUESTS
    a, b = free.end_to_end.latency, paid.end_to_end.latency
    assert (a.p50_ms, a.p99_ms, a.max_ms, a.mean_ms) == (b.p50_ms, b.p99_ms, b.max_ms, b.mean_ms)
    assert free.histogram().min == paid.histogram().min
    assert free.histogram().max == paid.histogram().max

    # Both sidecars report every request; each batch (of one) is sent and none is lost.
    for result in (free, paid):
        counts = result.extras["mixer"]
        assert counts["reported_requests"] == 2 * result.end_to_end.requests == 20
        assert counts["reports_sent"] == 20
        assert counts["reports_lost"] == 0
    measured_s = 1.0
    assert free.cpu.by_kind["mixer_telemetry"] == 0.0
    assert paid.cpu.by_kind["mixer_telemetry"] == pytest.approx(
        20 * (REPORT_BATCH_CPU + REPORT_REQUEST_CPU) / measured_s, rel=1e-9
    )
    # The proxies pay report_proxy_cpu per batch sent, on top of their filter chains.
    assert paid.cpu.by_kind["sidecar"] - free.cpu.by_kind["sidecar"] == pytest.approx(
        20 * REPORT_PROXY_CPU / measured_s, rel=1e-9
    )
    assert paid.cpu.by_kind["app"] == free.cpu.by_kind["app"]


def batches_by_hand(size: int, interval: float) -> list[int]:
    """The batches one sidecar sends in the run: its reports come 0.1 s apart (plus a
    constant); a batch goes when it holds ``size`` requests, or ``interval`` after its first
    request, if that is before the end of the run."""
    sent: list[int] = []
    batch = 0
    due = math.inf
    for k in range(REQUESTS):
        t = k / QPS
        if batch and t > due:  # the timer sent the batch before this report
            sent.append(batch)
            batch, due = 0, math.inf
        batch += 1
        if batch == size:
            sent.append(batch)
            batch, due = 0, math.inf
        elif batch == 1:
            due = t + interval
    if batch and due < DURATION_S:
        sent.append(batch)
    return sent


@pytest.mark.parametrize(
    ("size", "interval", "expected"),
    [
        (1, 1.0, [1] * 10),  # every request at once
        (3, 10.0, [3, 3, 3]),  # by size only; the tenth waits for a timer after the run
        (4, 0.35, [4, 4]),  # by size (0.3 s < 0.35 s); the last two wait past the end
        (100, 0.25, [3, 3, 3]),  # by time: 0, 0.1, 0.2 go at 0.25 s; the tenth is left
        (100, 0.02, [1] * 10),  # by time, each alone, the last at 0.92 s (< 0.95 s)
        (2, 0.15, [2, 2, 2, 2, 2]),  # by size, always just before the timer
        (2, 0.25, [2, 2, 2, 2, 2]),  # a sent batch's timer must not send the next one
    ],
)
def test_report_batches_by_size_and_interval(size, interval, expected):
    assert batches_by_hand(size, interval) == expected  # the hand model agrees with the table
    costs = {
        "report_proxy_cpu": REPORT_PROXY_CPU,
        "report_batch_cpu": REPORT_BATCH_CPU,
        "report_request_cpu": REPORT_REQUEST_CPU,
    }
    spec = mixer(
        **UNCHECKED,
        report_batch_size=size,
        report_interval=interval,
        **costs,
    )
    data = spec_dict(spec, trace_every=0)
    result = run_experiment(spec_from_dict(data))
    counts = result.extras["mixer"]
    # Two sidecars, each with the same batches.
    assert counts["reports_sent"] == 2 * len(expected)
    assert counts["reported_requests"] == 2 * sum(expected)
    assert counts["reports_lost"] == 0
    telemetry_s = 2 * (len(expected) * REPORT_BATCH_CPU + sum(expected) * REPORT_REQUEST_CPU)
    assert result.cpu.by_kind["mixer_telemetry"] == pytest.approx(
        telemetry_s / DURATION_S, rel=1e-9
    )


# --- 4. fail open, fail closed --------------------------------------------------------------

OUTAGE_START, OUTAGE_S = 0.25, 0.4  # Mixer is down from 0.25 s to 0.65 s: requests 3 to 6
IN_OUTAGE = [3, 4, 5, 6]


def test_fail_open_lets_every_request_through():
    data = outage(OUTAGE_START, OUTAGE_S)
    _, ok = simulate(mixer(fail_policy="fail_open"))
    _, out = simulate(mixer(fail_policy="fail_open"), faults=data)
    assert out.workload.status_codes == {200: REQUESTS}
    assert out.workload.measured_errors == 0
    counts = out.extras["mixer"]
    assert counts["checks"] == REQUESTS
    assert counts["check_failures"] == len(IN_OUTAGE)
    assert counts["denied"] == 0
    # Reports that arrive while Mixer is down are lost: both sidecars' for requests 3 to 6.
    assert counts["reports_lost"] == 2 * len(IN_OUTAGE)
    assert counts["reports_sent"] == counts["reported_requests"] == 2 * (REQUESTS - 4)
    for i, (good, trace) in enumerate(zip(ok.recorder.traces, out.recorder.traces, strict=True)):
        (check,) = [s for s in trace if s.kind == "mixer_check"]
        assert "app_cpu" in {s.kind for s in trace}  # the request reached the app
        if i in IN_OUTAGE:
            # The check fails after a round trip without Mixer's CPU, and the request goes on.
            assert not check.ok
            assert check.end_s - check.start_s == pytest.approx(failed_check(SERVER_SIDECAR))
            assert latency(trace, i) - latency(good, i) == pytest.approx(
                failed_check(SERVER_SIDECAR) - check_round_trip(SERVER_SIDECAR)
            )
        else:
            assert check.ok
            assert latency(trace, i) == pytest.approx(latency(good, i), rel=1e-12)


def denied_spans() -> list[tuple[str, str, float]]:
    """A steady request that the server sidecar answers 503 when its check fails: no app, an
    empty response, and no network leg or io between the server sidecar and the app."""
    to_server = link(CLIENT_NODE, SERVER_NODE)
    return [
        ("network", CLIENT, net(SAME_NODE_S, REQUEST_BYTES)),
        ("sidecar_io", CLIENT_SIDECAR, IO_S),
        ("sidecar_cpu", CLIENT_SIDECAR, request_cpu(REQUEST_BYTES)),
        ("network", CLIENT_SIDECAR, net(to_server, REQUEST_BYTES)),
        ("sidecar_io", SERVER_SIDECAR, IO_S),
        ("sidecar_cpu", SERVER_SIDECAR, request_cpu(REQUEST_BYTES)),
        ("mixer_check", SERVER_SIDECAR, failed_check(SERVER_SIDECAR)),
        ("sidecar_cpu", SERVER_SIDECAR, response_cpu(0)),
        ("network", SERVER_SIDECAR, net(to_server, 0)),
        ("sidecar_io", CLIENT_SIDECAR, IO_S),
        ("sidecar_cpu", CLIENT_SIDECAR, response_cpu(0)),
        ("network", CLIENT_SIDECAR, net(SAME_NODE_S, 0)),
    ]


def test_fail_closed_answers_503_uaex_during_the_outage():
    faults = outage(OUTAGE_START, OUTAGE_S)
    _, ok = simulate(mixer())
    _, out = simulate(mixer(fail_policy="fail_closed"), faults=faults)
    counts = out.extras["mixer"]
    assert counts["check_failures"] == counts["denied"] == len(IN_OUTAGE)
    assert out.workload.status_codes == {200: 6, 503: 4}
    assert out.workload.flags == {"UAEX": 4}
    assert counts["reports_lost"] == 8  # denied requests are reported too, and lost
    assert counts["reports_sent"] == counts["reported_requests"] == 12
    for i, (good, trace) in enumerate(zip(ok.recorder.traces, out.recorder.traces, strict=True)):
        (check,) = [s for s in trace if s.kind == "mixer_check"]
        reached_app = "app_cpu" in {s.kind for s in trace}
        if i in IN_OUTAGE:
            assert not check.ok and not reached_app
            assert_same_spans(durations(non_zero(trace)), denied_spans())
            assert latency(trace, i) == pytest.approx(sum(d for _, _, d in denied_spans()))
        else:  # before and after the outage: as without it
            assert check.ok and reached_app
            assert durations(non_zero(trace)) == durations(non_zero(good))

    # The same through the run result.
    data = spec_dict(mixer(fail_policy="fail_closed"), faults=faults, trace_every=0)
    result = run_experiment(spec_from_dict(data))
    assert result.status_codes == {"200": 6, "503": 4}
    assert result.response_flags == {"UAEX": 4}
    assert result.end_to_end.error_rate == pytest.approx(0.4)
    assert result.extras["mixer"]["denied"] == result.response_flags["UAEX"]
    assert result.extras["mixer"]["reports_lost"] == 8


def test_fail_closed_with_a_cache_denies_every_check_that_misses_during_the_outage():
    # Request 0 checks (ok) at ~0 s and caches for 0.5 s; 1 to 5 hit. Mixer is down from
    # 0.55 s: request 6 misses, its check fails, and it is denied. Requests 7 to 9 must not
    # hit a cache entry that Mixer never granted: 7 and 8 are denied too. Request 9 checks
    # just after the outage ends (at 0.9 s) and passes.
    _, out = simulate(mixer(check_cache={"valid_duration": 0.5}), faults=outage(0.55, 0.35))
    assert out.extras["mixer"]["denied"] == 3
    assert out.extras["mixer"]["check_failures"] == 3
    assert out.workload.status_codes == {200: 7, 503: 3}


# --- 5. the spec refuses a Mixer outage without Mixer ---------------------------------------


def bookinfo_spec(profile: str, **extra: Any) -> dict[str, Any]:
    return {
        "topology": "bookinfo",
        "mesh": profile,
        "workload": {"kind": "open_loop", "rate_rps": 200},
        "duration": 2.0,
        "warmup": 0.5,
        **extra,
    }


@pytest.mark.parametrize("profile", ["istio-1.8", "linkerd2", "none"])
def test_a_mixer_outage_needs_mixer(profile):
    with pytest.raises(SpecError, match=r"faults\.0\.kind") as caught:
        spec_from_dict(bookinfo_spec(profile, faults=outage(0.5, 0.5)))
    assert "mixer_outage" in str(caught.value)


def test_a_mixer_outage_is_accepted_with_mixer():
    spec = spec_from_dict(bookinfo_spec("istio-1.4", faults=outage(0.5, 0.5)))
    assert spec.faults[0].kind == "mixer_outage"
    inline = spec_from_dict(spec_dict(mixer(), faults=outage(0.25, 0.4)))
    assert inline.faults[0].duration == 0.4


def test_an_inline_mesh_without_mixer_is_refused_too():
    data = spec_dict(mixer(), faults=outage(0.25, 0.4))
    del data["mesh"]["mixer"]
    with pytest.raises(SpecError, match=r"faults\.0\.kind"):
        spec_from_dict(data)


# --- 6. the Mixer-era profiles run ----------------------------------------------------------


@pytest.mark.parametrize("profile", ["istio-1.1", "istio-1.4"])
def test_mixer_era_profiles_report_but_do_not_check_as_installed(profile):
    # Istio 1.1 to 1.4 install with disablePolicyChecks: true; reports go on.
    result = run_experiment(spec_from_dict(bookinfo_spec(profile)))
    assert result.end_to_end.requests > 0
    assert result.end_to_end.error_rate == 0.0
    assert result.cpu.by_kind["mixer_policy"] == 0.0
    assert result.cpu.by_kind["mixer_telemetry"] > 0.0
    counts = result.extras["mixer"]
    assert counts["checks"] == counts["cache_hits"] == 0
    assert counts["reports_sent"] > 0 and counts["reported_requests"] > 0
    assert "mixer_check" not in result.hops_ms or result.hops_ms["mixer_check"] == 0.0


@pytest.mark.parametrize("profile", ["istio-1.1", "istio-1.4"])
def test_mixer_era_profiles_check_when_a_spec_turns_checks_on(profile):
    on = {"profile": profile, "overrides": {"mixer": {"disable_policy_checks": False}}}
    # No warm-up: the first checks, which fill the caches, are the ones that reach Mixer.
    result = run_experiment(spec_from_dict(bookinfo_spec(profile) | {"mesh": on, "warmup": 0}))
    assert result.end_to_end.requests > 0
    assert result.end_to_end.error_rate == 0.0
    assert result.cpu.by_kind["mixer_policy"] > 0.0
    assert result.cpu.by_kind["mixer_telemetry"] > 0.0
    counts = result.extras["mixer"]
    # Answers valid 1 minute and 10,000 uses: one miss per (source workload, destination
    # service) per inbound sidecar, then hits (with a few concurrent first misses).
    assert 0 < counts["checks"] - counts["cache_hits"] < counts["cache_hits"]
    assert counts["reports_sent"] > 0 and counts["reported_requests"] > 0
    assert counts["check_failures"] == counts["denied"] == counts["reports_lost"] == 0
    assert result.hops_ms["mixer_check"] > 0.0


# --- a slow Mixer: the check times out and the policy decides -----------------------------


@pytest.mark.parametrize(("policy", "status"), [("fail_open", 200), ("fail_closed", 503)])
def test_a_check_slower_than_its_timeout_fails_and_the_policy_decides(policy, status):
    # The policy pod takes 50 ms per check; the proxy waits 10 ms, then gives up.
    slow = mixer(check_cpu=0.05, check_timeout=0.01, fail_policy=policy)
    _, out = simulate(slow)
    stats = out.extras["mixer"]
    assert stats["check_timeouts"] == stats["checks"] == stats["check_failures"] > 0
    assert set(out.workload.status_codes) == {status}
    for trace in out.recorder.traces:
        (check,) = [s for s in trace if s.kind == "mixer_check"]
        assert check.end_s - check.start_s == pytest.approx(0.01)
        assert not check.ok
