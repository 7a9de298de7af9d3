"""The connection pool's idle timeout and failed handshakes, by exact traces.

The opener here is a plain delay (a handshake of ``HANDSHAKE_S``), succeeding or not as the
test says; the pool decides when connections open and close.
"""

from __future__ import annotations

import pytest
import simpy

from experiments.spec import spec_from_dict
from models.connections import Connection, ConnectionPool, ConnectionPoolSpec
from models.simulation import Simulation

HANDSHAKE_S = 0.01


def make_pool(env, multiplexed=False, ok=lambda: True, **spec):
    log = []

    def opener(trace, conn):
        yield env.timeout(HANDSHAKE_S)
        log.append(("opened", env.now))
        return ok()

    def changed(delta):
        log.append(("open" if delta > 0 else "closed", env.now))

    pool = ConnectionPool(env, ConnectionPoolSpec(**spec), multiplexed, opener, changed)
    return pool, log


def request(env, pool, hold_s, results, name):
    """Take a connection (waiting for it if need be), hold it ``hold_s``, release it."""
    got = pool.acquire()
    if type(got) is not Connection:
        got = yield got
    if got is None:
        results.append((name, env.now, "failed"))
        return
    results.append((name, env.now, "sent"))
    yield env.timeout(hold_s)
    pool.release(got)


def at(env, when, gen):
    yield env.timeout(when)
    yield from gen


@pytest.mark.parametrize("multiplexed", [False, True])
def test_idle_timeout_closes_a_connection_and_the_next_request_opens_one(multiplexed):
    env = simpy.Environment()
    pool, log = make_pool(env, multiplexed, idle_timeout="1s")
    results = []
    env.process(request(env, pool, 0.1, results, "a"))  # idle from 0.11
    env.process(at(env, 0.5, request(env, pool, 0.1, results, "b")))  # reuses it; idle 0.6
    env.process(at(env, 2.0, request(env, pool, 0.1, results, "c")))  # after it closed at 1.6
    env.run()
    assert results == [
        ("a", HANDSHAKE_S, "sent"),
        ("b", 0.5, "sent"),
        ("c", 2.0 + HANDSHAKE_S, "sent"),
    ]
    assert log == [
        ("open", 0.0),
        ("opened", HANDSHAKE_S),
        ("closed", pytest.approx(1.6)),  # 1 s after b released it
        ("open", 2.0),
        ("opened", 2.0 + HANDSHAKE_S),
        ("closed", pytest.approx(3.11)),  # c released it at 2.11
    ]
    assert pool.opened == 2 and pool.idle_closed == 2 and pool.size == 0


def test_a_busy_connection_is_not_closed_by_the_idle_timeout():
    env = simpy.Environment()
    pool, log = make_pool(env, idle_timeout="1s")
    results = []
    env.process(request(env, pool, 5.0, results, "long"))  # active for 5 s
    env.run(until=4.0)
    assert pool.size == 1 and pool.idle_closed == 0
    env.run()
    assert log[-1] == ("closed", pytest.approx(6.0 + HANDSHAKE_S))


def test_zero_idle_timeout_never_closes():
    env = simpy.Environment()
    pool, log = make_pool(env, idle_timeout=0)
    results = []
    env.process(request(env, pool, 0.1, results, "a"))
    env.run(until=10_000.0)
    assert pool.size == 1
    assert all(kind != "closed" for kind, _ in log)


def test_default_idle_timeout_is_envoys_hour():
    assert ConnectionPoolSpec().idle_timeout == 3600.0


@pytest.mark.parametrize("multiplexed", [False, True])
def test_a_failed_handshake_fails_its_waiters_and_the_pending_ones(multiplexed):
    env = simpy.Environment()
    pool, log = make_pool(env, multiplexed, ok=lambda: False, max_connections=1)
    results = []
    env.process(request(env, pool, 0.1, results, "a"))
    env.process(request(env, pool, 0.1, results, "b"))  # pending (HTTP/1) or a stream on it
    env.run()
    assert results == [("a", HANDSHAKE_S, "failed"), ("b", HANDSHAKE_S, "failed")]
    assert pool.failed == 1 and pool.size == 0
    assert pool.limits.pending == 0 and pool.limits.connections == 0
    assert log == [("open", 0.0), ("opened", HANDSHAKE_S), ("closed", HANDSHAKE_S)]


# --- TLS session resumption, in a whole run ----------------------------------------------------

FULL_CLIENT_S, FULL_SERVER_S = 300e-6, 500e-6
RESUMED_CLIENT_S, RESUMED_SERVER_S = 50e-6, 70e-6


def tls_spans(resumption: bool, session_timeout: str = "2h") -> list[float]:
    """The TLS handshake spans of a run where every request opens a connection."""
    tls = {
        "client_cpu": FULL_CLIENT_S,
        "server_cpu": FULL_SERVER_S,
        "session_resumption": resumption,
        "resumed_client_cpu": RESUMED_CLIENT_S,
        "resumed_server_cpu": RESUMED_SERVER_S,
        "session_timeout": session_timeout,
    }
    spec = spec_from_dict(
        {
            "topology": {
                "cluster": {
                    "nodes": [{"name": "node-0"}, {"name": "node-1"}],
                    "network": {"same_node": "10us", "same_zone": "100us", "bandwidth": "1Gbps"},
                },
                "call_graph": {
                    "services": [{"name": "srv", "service_time": "1ms"}],
                    "entry": "srv",
                },
                "placement": {"strategy": "explicit", "assignments": {"srv-0": "node-1"}},
            },
            "mesh": {
                "architecture": "sidecar",
                "mtls_mode": "STRICT",
                "proxy": {"tls": tls, "connection_pool": {"max_requests_per_connection": 1}},
            },
            "workload": {"kind": "closed_loop", "connections": 1, "qps": 10},
            "duration": 0.35,
            "warmup": 0,
            "trace_every": 1,
        }
    )
    sim = Simulation(
        spec.resolve_topology(),
        spec.mesh.resolve(),
        spec.workload,
        seed=1,
        duration_s=spec.duration,
        warmup_s=0.0,
        trace_every=1,
    )
    out = sim.run()
    return [
        s.end_s - s.start_s
        for trace in out.recorder.traces
        for s in trace
        if s.kind == "tls_handshake"
    ]


def test_a_resumed_handshake_costs_the_resumed_cpu():
    full = tls_spans(False)
    resumed = tls_spans(True)
    assert len(full) == len(resumed) == 4  # requests at 0, 0.1, 0.2, 0.3 s: one each
    # Without resumption every handshake is full, and they are all alike.
    assert full == pytest.approx([full[0]] * 4, abs=1e-12)
    # With it, the first is full; the later ones resume the session and save the CPU.
    saved = (FULL_CLIENT_S - RESUMED_CLIENT_S) + (FULL_SERVER_S - RESUMED_SERVER_S)
    assert resumed[0] == pytest.approx(full[0], abs=1e-12)
    assert resumed[1:] == pytest.approx([full[0] - saved] * 3, abs=1e-12)


def test_a_session_past_its_timeout_is_not_resumed():
    # Sessions live 150 ms: the handshake at 0.1 s resumes the session of 0 s, the one at
    # 0.2 s is full again (a new session), and 0.3 s resumes that one.
    spans = tls_spans(True, session_timeout="150ms")
    full = spans[0]
    saved = (FULL_CLIENT_S - RESUMED_CLIENT_S) + (FULL_SERVER_S - RESUMED_SERVER_S)
    assert spans == pytest.approx([full, full - saved, full, full - saved], abs=1e-12)
