"""The control plane, with constant costs: convergence by hand, scoping, stale routing,
the split and pull variants, certificates, and the other kinds of change.

Every delay is a constant (the network, the push costs, the proxies' time to apply), and
the control plane has one replica with one core, so its pushes are generated one after
another, in the order the proxies registered (the service pods in placement order, then the
load generator, then the pods made during the run). A proxy's convergence time for a change
is then, by hand:

    debounce + (its generation, and those queued before it on the one worker)
             + network (replica node -> proxy node, push_bytes_per_cluster x clusters)
             + apply_delay

with the clusters and endpoints of each proxy counted from its scoping when it was built.
"""

from __future__ import annotations

import math
from collections.abc import Generator
from typing import Any

import numpy as np
import pytest
import simpy
from hypothesis import given, settings
from hypothesis import strategies as st

from experiments.results import RunResult
from experiments.runner import build_simulation, summarise
from experiments.spec import spec_from_dict
from models import dataplane
from models.control_plane import ControlPlane, delay_to, next_poll
from models.simulation import Simulation
from sim.random import RandomStreams

# One zone; 1 Gbps = 125e6 bytes per second; propagation is a constant.
SAME_NODE_S = 10e-6
SAME_ZONE_S = 100e-6
BYTES_PER_S = 1e9 / 8
NETWORK = {"same_node": "10us", "same_zone": "100us", "cross_zone": "1ms", "bandwidth": "1Gbps"}

# Push costs (seconds, bytes) and the proxies' time to apply.
PUSH_BASE = 0.01
PER_CLUSTER = 0.001
PER_ENDPOINT = 0.0001
BYTES_PER_CLUSTER = 1000
APPLY_S = 0.005
QUIET_S = 0.1

CONTROL_PLANE: dict[str, Any] = {
    "kind": "istiod",
    "replicas": 1,
    "cores": 1,
    "debounce_quiet": QUIET_S,
    "debounce_max": 10.0,
    "max_concurrent_pushes": 100,
    "push_base_cpu": PUSH_BASE,
    "push_per_cluster_cpu": PER_CLUSTER,
    "push_per_endpoint_cpu": PER_ENDPOINT,
    "push_bytes_per_cluster": BYTES_PER_CLUSTER,
    "apply_delay": APPLY_S,
    "certificates": None,
    # No push-context cost here (its own tests give one): a push is its proxies' pushes.
    "push_context_cpu": 0.0,
    "push_context_per_service_cpu": 0.0,
}

SEED = 7


def service(name: str, replicas: int = 1, calls: list[str] | None = None) -> dict[str, Any]:
    found: dict[str, Any] = {"name": name, "replicas": replicas, "service_time": "1ms"}
    if calls:
        found["steps"] = [{"calls": calls}]
    return found


def spec_dict(
    services: list[dict[str, Any]],
    entry: str,
    *,
    nodes: tuple[str, ...] = ("node-0",),
    control_plane: dict[str, Any] | None = None,
    mesh: dict[str, Any] | None = None,
    changes: list[dict[str, Any]] | None = None,
    faults: list[dict[str, Any]] | None = None,
    duration: float = 2.0,
    qps: float = 20.0,
    assignments: dict[str, str] | None = None,
) -> dict[str, Any]:
    if assignments is None:  # every pod on the first node
        assignments = {
            f"{s['name']}-{i}": nodes[0] for s in services for i in range(s.get("replicas", 1))
        }
    cp = {**CONTROL_PLANE, **(control_plane or {})}
    return {
        "topology": {
            "cluster": {"nodes": [{"name": n} for n in nodes], "network": NETWORK},
            "call_graph": {"services": services, "entry": entry},
            "placement": {"strategy": "explicit", "assignments": assignments},
        },
        "mesh": mesh
        or {
            "architecture": "sidecar",
            "mtls_mode": "DISABLE",
            "load_balancer": "round_robin",
            "control_plane": cp,
        },
        "workload": {"kind": "closed_loop", "connections": 1, "qps": qps},
        "duration": duration,
        "warmup": 0,
        "changes": changes or [],
        "faults": faults or [],
    }


def run(
    data: dict[str, Any], seed: int = SEED, until: float | None = None
) -> tuple[Simulation, RunResult]:
    """One replication with a known seed; the simulation (for its internals) and its result.

    ``until`` cuts the run short of the spec's duration (the spec refuses a run that ends
    before its changes or faults do; the simulation itself does not mind).
    """
    spec = spec_from_dict(data)
    sim = Simulation(
        spec.resolve_topology(),
        spec.mesh.resolve(),
        spec.workload,
        seed=seed,
        duration_s=spec.duration if until is None else until,
        warmup_s=spec.warmup,
        faults=spec.faults,
        changes=spec.changes,
    )
    output = sim.run()
    return sim, summarise(spec, [seed], [output], 0.0)


# --- the hand model -------------------------------------------------------------------------


def cost(clusters: int, endpoints: int) -> float:
    return PUSH_BASE + PER_CLUSTER * clusters + PER_ENDPOINT * endpoints


def transfer(clusters: int, link_s: float = SAME_NODE_S) -> float:
    return link_s + BYTES_PER_CLUSTER * clusters / BYTES_PER_S


def pushed(proxies: list[tuple[int, int]], delay_s: float, slots: int = 100) -> list[float]:
    """Convergence times of ``proxies`` ((clusters, endpoints), in registration order) for a
    push that starts ``delay_s`` after the change: one worker generates them in turn; with
    one slot, the next generation waits for the previous push's transfer too."""
    times = []
    worker_free = delay_s
    for clusters, endpoints in proxies:
        generated = worker_free + cost(clusters, endpoints)
        arrived = generated + transfer(clusters)
        worker_free = generated if slots > 1 else arrived
        times.append(arrived + APPLY_S)
    return times


def check_change(change: Any, expected: list[float]) -> None:
    assert change.affected == len(expected)
    assert change.converged == change.affected
    values = np.asarray(expected)
    assert change.p50_s == pytest.approx(float(np.quantile(values, 0.5)), rel=1e-9)
    assert change.p99_s == pytest.approx(float(np.quantile(values, 0.99)), rel=1e-9)
    assert change.max_s == pytest.approx(float(values.max()), rel=1e-9)


def convergence(sim: Simulation, index: int = 0) -> list[float]:
    assert sim.mesh.control_plane is not None
    return list(sim.mesh.control_plane.changes[index].convergence_s)


# a -> b, c; one replica each; one node.
ABC = [service("a", calls=["b", "c"]), service("b"), service("c")]
# Mesh scoping: every service, and the inbound cluster of a service's sidecar; the load
# generator's sidecar has none. Registration order: a-0, b-0, c-0, loadgen-0, then c-1
# (made by the scale change). The change makes every configuration count the 4 endpoints
# that exist after it, and the pushes that carry it cost that.
ABC_PROXIES = [(4, 4), (4, 4), (4, 4), (3, 4), (4, 4)]
# The same change as an incremental EDS push: c's cluster and its 2 endpoints, to each.
ABC_EDS = [(1, 2)] * 5


# --- 1. convergence of one change, by hand --------------------------------------------------


@pytest.mark.parametrize("slots", [100, 1])
@pytest.mark.parametrize("incremental_eds", [True, False])
def test_convergence_of_a_scale_change_is_debounce_generation_network_apply(slots, incremental_eds):
    data = spec_dict(
        ABC,
        "a",
        control_plane={"max_concurrent_pushes": slots, "incremental_eds": incremental_eds},
        changes=[{"at": 1.0, "kind": "scale", "service": "c", "replicas": 2}],
    )
    sim, result = run(data)
    proxies = [(p.known_clusters, p.known_endpoints) for p in sim.mesh.proxies()]
    assert proxies == ABC_PROXIES  # the scoping counts the cost model uses
    # Incremental EDS: c's endpoints only; without it, each proxy's whole configuration.
    sent = ABC_EDS if incremental_eds else ABC_PROXIES
    expected = pushed(sent, QUIET_S, slots)
    assert convergence(sim) == pytest.approx(expected, rel=1e-9)  # in registration order
    cp = result.control_plane
    assert cp is not None and cp.kind == "istiod"
    assert cp.pushes == len(ABC_PROXIES)
    summary = sim.mesh.control_plane.summary()
    kind = "eds" if incremental_eds else "full"
    assert summary["push_counts"] == {"full": 0, "eds": 0, "delta": 0, kind: len(sent)}
    assert summary["push_cpu_s"] == pytest.approx(sum(cost(*x) for x in sent), rel=1e-12)
    assert summary["push_bytes"] == sum(BYTES_PER_CLUSTER * c for c, _ in sent)
    (change,) = cp.changes
    assert (change.at_s, change.kind, change.service) == (1.0, "scale", "c")
    check_change(change, expected)
    assert result.end_to_end.error_rate == 0.0


def test_a_scale_down_does_not_push_to_the_removed_pod():
    services = [service("a", calls=["b", "c"]), service("b"), service("c", replicas=2)]
    data = spec_dict(
        services, "a", changes=[{"at": 1.0, "kind": "scale", "service": "c", "replicas": 1}]
    )
    sim, result = run(data)
    # a-0, b-0, c-0 (c-1 is gone: unregistered before the push), loadgen-0: each gets c's
    # endpoints (EDS), the one left.
    expected = pushed([(1, 1)] * 4, QUIET_S)
    assert convergence(sim) == pytest.approx(expected, rel=1e-9)
    check_change(result.control_plane.changes[0], expected)


def test_debounce_max_bounds_a_stream_of_changes():
    # Changes every 0.05-0.06 s (less than the quiet period): without a maximum the push
    # would wait until 1.11 + 0.1; with debounce_max 0.12, it starts at 1.0 + 0.12 and
    # carries all three changes.
    at = [1.0, 1.06, 1.11]
    data = spec_dict(
        ABC,
        "a",
        control_plane={"debounce_max": 0.12},
        changes=[{"at": t, "kind": "route_weights", "service": "b"} for t in at],
    )
    sim, result = run(data)
    proxies = [(4, 3), (4, 3), (4, 3), (3, 3)]  # no new pod: the counts they were built with
    cp = result.control_plane
    assert cp.pushes == len(proxies)  # one push for the three changes
    base = pushed(proxies, 0.0)
    for t, change in zip(at, cp.changes, strict=True):
        check_change(change, [1.0 + 0.12 - t + x for x in base])

    # Without the maximum: the quiet period after the last change.
    data["mesh"]["control_plane"]["debounce_max"] = 10.0
    sim, result = run(data)
    for t, change in zip(at, result.control_plane.changes, strict=True):
        check_change(change, [1.11 + QUIET_S - t + x for x in base])


# --- 2. scoping decides who is affected -----------------------------------------------------

# loadgen -> front -> back (2 replicas); "other" is called by nobody.
CHAIN = [service("front", calls=["back"]), service("back", replicas=2), service("other")]


@pytest.mark.parametrize(
    ("scoping", "affected"),
    [
        # back-0, back-1 serve back; front-0 calls it; back-2 is new.
        ("dependencies", 4),
        # every proxy: back-0, back-1, front-0, other-0, loadgen-0, back-2.
        ("mesh", 6),
    ],
)
def test_scoping_decides_which_proxies_a_change_concerns(scoping, affected):
    data = spec_dict(
        CHAIN, "front", changes=[{"at": 1.0, "kind": "scale", "service": "back", "replicas": 3}]
    )
    data["mesh"]["scoping"] = scoping
    sim, result = run(data)
    (change,) = result.control_plane.changes
    assert change.affected == affected
    assert change.converged == affected
    assert result.control_plane.pushes == affected

    # With dependencies, the proxies that know back get its endpoints (EDS: one cluster, 3
    # endpoints), in registration order (placement lists pods by workload name): back-0,
    # back-1, front-0, and the new back-2. The others get nothing.
    if scoping == "dependencies":
        expected = pushed([(1, 3)] * 4, QUIET_S)
        check_change(change, expected)


def test_dependencies_scoping_a_change_to_an_uncalled_service_concerns_only_its_own():
    data = spec_dict(
        CHAIN, "front", changes=[{"at": 1.0, "kind": "route_weights", "service": "other"}]
    )
    data["mesh"]["scoping"] = "dependencies"
    _, result = run(data)
    (change,) = result.control_plane.changes
    assert (change.affected, change.converged) == (1, 1)  # other-0's sidecar only


# --- 3. stale routing -----------------------------------------------------------------------


def stale_spec(attempts: int, duration: float) -> dict[str, Any]:
    data = spec_dict(
        CHAIN[:2],
        "front",
        control_plane={"debounce_quiet": 1.0},
        changes=[{"at": 1.0, "kind": "scale", "service": "back", "replicas": 1}],
        duration=duration,
    )
    data["mesh"]["retries"] = {"attempts": attempts}
    return data


def test_stale_routing_fails_until_the_push_and_not_after():
    # Proxies, registration order: back-0, back-1 (gone at the change), front-0, loadgen-0:
    # each gets back's one endpoint left (EDS).
    expected = pushed([(1, 1)] * 3, 1.0)
    sim, long = run(stale_spec(0, 4.0))
    cp = long.control_plane
    check_change(cp.changes[0], expected)

    # front's sidecar routes round robin on its old view [back-0, back-1] for the second
    # after the change: every other call goes to back-1, whose connection is refused.
    assert cp.stale_failures > 0
    assert cp.stale_connect_failures == cp.stale_failures  # no retries: one refusal each
    assert cp.retries == 0
    assert 8 <= cp.stale_failures <= 12  # ~ 1 s x 20 qps / 2
    # front's app answers the load generator with its dependency's 503.
    assert long.status_codes.get("503") == cp.stale_failures
    assert long.end_to_end.error_rate > 0.0

    # Ending just after front's sidecar has the new version: the same failures.
    converged_at = 1.0 + max(expected)
    _, short = run(stale_spec(0, 4.0), until=converged_at + 0.01)
    assert short.control_plane.changes[0].converged == 3
    assert short.control_plane.stale_failures == cp.stale_failures
    assert short.status_codes.get("503") == long.status_codes.get("503")

    # And before the change: none.
    _, before = run(stale_spec(0, 4.0), until=0.99)
    assert before.control_plane.stale_connect_failures == 0
    assert before.status_codes == {"200": before.end_to_end.requests}


def test_retries_absorb_stale_routing_when_another_endpoint_is_alive():
    _, result = run(stale_spec(2, 4.0))
    cp = result.control_plane
    assert cp.stale_failures == 0
    assert cp.retries > 0
    assert cp.stale_connect_failures == cp.retries  # each refusal retried once, to back-0
    assert result.end_to_end.error_rate == 0.0
    assert set(result.status_codes) == {"200"}


# --- 4. the split control plane -------------------------------------------------------------


def test_split_converges_later_by_galley_validation_and_handoff():
    galley_cpu, handoff = 0.02, 0.1
    changes = [{"at": 1.0, "kind": "scale", "service": "c", "replicas": 2}]
    costs = {"galley_cpu": galley_cpu, "galley_handoff": handoff}
    istiod_sim, istiod = run(spec_dict(ABC, "a", control_plane=costs, changes=changes))
    split_sim, split = run(
        spec_dict(ABC, "a", control_plane={**costs, "kind": "split"}, changes=changes)
    )
    expected = pushed(ABC_EDS, QUIET_S)
    check_change(istiod.control_plane.changes[0], expected)
    check_change(split.control_plane.changes[0], [galley_cpu + handoff + x for x in expected])
    assert split.control_plane.kind == "split"
    assert convergence(split_sim) == pytest.approx(
        [galley_cpu + handoff + x for x in convergence(istiod_sim)], rel=1e-9
    )


# --- 5. Maesh: proxies pull ---------------------------------------------------------------

POLL_S = 0.5


def maesh_spec() -> dict[str, Any]:
    cp = {**CONTROL_PLANE, "kind": "maesh", "poll_interval": POLL_S}
    return spec_dict(
        [service("a", calls=["b"]), service("b")],
        "a",
        nodes=("node-0", "node-1"),
        assignments={"a-0": "node-0", "b-0": "node-1"},
        mesh={"architecture": "per_node", "control_plane": cp},
        changes=[{"at": 1.0, "kind": "scale", "service": "b", "replicas": 2}],
    )


def test_maesh_proxies_apply_at_their_next_poll():
    sim, result = run(maesh_spec())
    cp_runtime = sim.mesh.control_plane
    replica_node = cp_runtime.replicas[0].node.name
    streams = RandomStreams(SEED)  # the same streams as the run's, drawn afresh
    expected = []
    for proxy in sim.mesh.proxies():  # node-0's, node-1's: the order they registered
        assert proxy.known_clusters == 2  # a and b, no inbound cluster
        t = float(streams.stream(f"{proxy.name}.poll").uniform(0.0, POLL_S))
        while t < 1.0:  # the polls before the change find nothing new
            t += POLL_S
        link = SAME_NODE_S if proxy.node.name == replica_node else SAME_ZONE_S
        fetch = 2 * link + transfer(2, link) + APPLY_S
        assert fetch <= POLL_S
        expected.append(t - 1.0 + fetch)
    assert convergence(sim) == pytest.approx(expected, rel=1e-9)
    (change,) = result.control_plane.changes
    check_change(change, expected)
    # Within one poll interval and a fetch of the change.
    worst = POLL_S + 2 * SAME_ZONE_S + transfer(2, SAME_ZONE_S) + APPLY_S
    assert change.max_s <= worst
    assert result.control_plane.kind == "maesh"
    assert result.control_plane.pushes == 2


# --- 6. certificates ------------------------------------------------------------------------

TTL_S, SIGN_S = 2.0, 0.001
CERTS = {"ttl": TTL_S, "rotate_at": 0.5, "jitter": 0.0, "sign_cpu": SIGN_S}
OUTAGE = {"kind": "control_plane_outage", "start": 1.5, "duration": 2.0}


# Certificates are checked at the TLS handshake: to see every request meet an expired one,
# each opens its own connection (no keep-alive).
NO_KEEP_ALIVE = {"max_requests_per_connection": 1}


def cert_spec(
    duration: float,
    outage: bool,
    sign_s: float = SIGN_S,
    connection_pool: dict[str, Any] | None = NO_KEEP_ALIVE,
) -> dict[str, Any]:
    data = spec_dict(
        [service("srv")],
        "srv",
        control_plane={"certificates": {**CERTS, "sign_cpu": sign_s}},
        faults=[OUTAGE] if outage else [],
        duration=duration,
    )
    data["mesh"]["mtls_mode"] = "STRICT"
    if connection_pool is not None:
        data["mesh"]["proxy"] = {"connection_pool": connection_pool}
    return data


def test_certificates_expire_during_a_control_plane_outage():
    # Two proxies (srv-0's, loadgen-0's) signed at ~0 and ~1 s. The outage (1.5 to 3.5 s)
    # makes the rotations at ~2 s and their retries at ~3 s fail; the certificates of ~1 s
    # expire at ~3 s; the retries at ~4 s succeed. Every request opens a connection, so
    # every handshake between ~3 and ~4 s fails.
    _, before_expiry = run(cert_spec(6.0, outage=True), until=2.95)
    cp = before_expiry.control_plane
    assert cp.signatures == 4
    assert cp.signature_failures == 2  # the rotations at ~2 s
    assert cp.tls_failures == 0  # still valid
    assert before_expiry.end_to_end.error_rate == 0.0

    _, result = run(cert_spec(6.0, outage=True))
    cp = result.control_plane
    assert cp.signature_failures == 4  # at ~2 s and ~3 s
    assert cp.signatures == 2 * 4  # at ~0, ~1, ~4 and ~5 s (~6 s is after the end)
    assert cp.tls_failures > 0
    # A failed handshake is a connect failure, which Istio's default policy retries twice
    # (Envoy's ``connect-failure``): every try fails while the certificate is expired.
    failed = result.status_codes.get("503")
    assert failed is not None and 18 <= failed <= 22  # ~ 1 s (3 to 4 s) x 20 qps
    # Each failed request made 3 tries; a few requests failed a try and succeeded on a retry
    # once the certificate was signed again.
    assert cp.retries >= 2 * failed
    assert cp.tls_failures == failed + cp.retries
    assert result.response_flags.get("UF,URX") == failed  # the load generator's sidecar

    # The CA is back at 3.5 s, but the proxies' next request for a certificate is their
    # retry at ~4 s: the failures go on until then.
    _, ca_back = run(cert_spec(6.0, outage=True), until=3.6)
    assert 0 < ca_back.control_plane.tls_failures < cp.tls_failures

    # Once re-signed, no more failures: a run ending at 4.5 s has them all.
    _, resigned = run(cert_spec(6.0, outage=True), until=4.5)
    assert resigned.control_plane.tls_failures == cp.tls_failures
    assert resigned.status_codes.get("503") == failed


def test_an_established_connection_outlives_its_certificate():
    # The same outage and expiry, with keep-alive (Istio's default): the connection opened
    # by the first request is never renewed, and no request fails.
    sim, result = run(cert_spec(6.0, outage=True, connection_pool=None))
    cp = result.control_plane
    assert cp.signature_failures == 4 and cp.signatures == 8  # the same expiry as above
    assert cp.tls_failures == 0
    assert result.end_to_end.error_rate == 0.0
    (sidecar,) = [p for p in sim.mesh.proxies() if p.name.startswith("loadgen-0")]
    (pool,) = sidecar.pools.values()
    assert pool.opened == 1 and pool.failed == 0


def test_a_renewed_connection_meets_the_expired_certificate():
    # An idle timeout shorter than the 50 ms between requests closes the connection after
    # each: every request opens a new one, and those between ~3 and ~4 s fail their TLS
    # handshake, as without keep-alive.
    idle = {"idle_timeout": "30ms"}
    sim, result = run(cert_spec(6.0, outage=True, connection_pool=idle))
    _, no_keep_alive = run(cert_spec(6.0, outage=True))
    assert result.control_plane.tls_failures == no_keep_alive.control_plane.tls_failures > 0
    assert result.status_codes == no_keep_alive.status_codes
    (sidecar,) = [p for p in sim.mesh.proxies() if p.name.startswith("loadgen-0")]
    (pool,) = sidecar.pools.values()
    assert pool.idle_closed > 100 and pool.failed == result.control_plane.tls_failures


def test_a_destination_rules_idle_timeout_renews_the_connections():
    # The same as above, the idle timeout set by a DestinationRule
    # (connectionPool.http.idleTimeout) instead of the proxy's pool settings.
    data = cert_spec(6.0, outage=True, connection_pool=None)
    data["policies"] = [
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "DestinationRule",
            "metadata": {"name": "srv"},
            "spec": {
                "host": "srv",
                "trafficPolicy": {"connectionPool": {"http": {"idleTimeout": "30ms"}}},
            },
        }
    ]
    spec = spec_from_dict(data)
    sim = build_simulation(spec, SEED)
    result = summarise(spec, [SEED], [sim.run()], 0.0)
    _, no_keep_alive = run(cert_spec(6.0, outage=True))
    assert result.control_plane is not None and no_keep_alive.control_plane is not None
    assert result.control_plane.tls_failures == no_keep_alive.control_plane.tls_failures > 0


def test_no_outage_no_tls_failures():
    _, result = run(cert_spec(6.0, outage=False))
    cp = result.control_plane
    assert cp.signature_failures == 0
    assert cp.tls_failures == 0
    assert result.end_to_end.error_rate == 0.0
    assert set(result.status_codes) == {"200"}


def test_traffic_waits_for_the_first_certificate():
    # Signing takes 50 ms on one worker: srv-0's sidecar is ready at 0.05 s, the load
    # generator's at 0.1 s. The first request waits for both, it does not fail.
    sign = 0.05
    _, result = run(cert_spec(1.0, outage=False, sign_s=sign))
    assert result.control_plane.tls_failures == 0
    assert result.end_to_end.error_rate == 0.0
    assert result.end_to_end.requests > 0
    assert result.end_to_end.latency.max_ms >= 2 * sign * 1e3


# --- 7. the other kinds of change -----------------------------------------------------------


def test_add_service_concerns_every_proxy_with_mesh_scoping():
    data = spec_dict(
        CHAIN[:2],
        "front",
        changes=[{"at": 1.0, "kind": "add_service", "service": "extra", "replicas": 2}],
    )
    sim, result = run(data)
    (change,) = result.control_plane.changes
    # front-0, back-0, back-1, loadgen-0, and the two new pods' sidecars.
    assert change.affected == 6
    assert change.converged == 6
    assert result.end_to_end.error_rate == 0.0
    assert "extra" in sim.mesh.sidecars["front-0"].view


def test_a_deploy_whose_old_pods_drain_loses_no_request():
    # The old pods leave the endpoints at once but drain for 1 s (longer than the push takes
    # to converge), as Istio's sidecar drains: stale callers still reach them.
    data = spec_dict(
        CHAIN[:2],
        "front",
        changes=[
            {
                "at": 1.0,
                "kind": "deploy",
                "service": "back",
                "strategy": "all_at_once",
                "drain": 1.0,
            }
        ],
        duration=3.0,
    )
    data["mesh"]["retries"] = {"attempts": 2}
    sim, result = run(data)
    (change,) = result.control_plane.changes
    assert change.converged == change.affected
    assert change.max_s < 1.0
    assert sorted(p.name for p in sim.mesh.endpoints["back"]) == ["back-2", "back-3"]
    assert result.control_plane.stale_connect_failures == 0
    assert result.control_plane.stale_failures == 0
    assert result.end_to_end.error_rate == 0.0


def test_a_deploy_whose_old_pods_exit_at_once_fails_until_convergence():
    # Without a drain, every endpoint a stale caller knows is gone: retries cannot help.
    data = spec_dict(
        CHAIN[:2],
        "front",
        changes=[
            {"at": 1.0, "kind": "deploy", "service": "back", "strategy": "all_at_once", "drain": 0}
        ],
        duration=3.0,
    )
    data["mesh"]["retries"] = {"attempts": 2}
    _, result = run(data)
    assert result.control_plane.stale_failures > 0
    assert result.status_codes.get("503", 0) == result.control_plane.stale_failures


# --- 8. Maesh polling is event-driven, with the results of polling at every instant ----------


class RecordingControlPlane(ControlPlane):
    """The control plane, logging every configuration a proxy applies: (proxy, version, time)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.applied: list[tuple[str, int, float]] = []

    def _applied(self, client: Any, version: int, view: dict) -> None:
        if version > client.version and not client.gone:
            self.applied.append((client.proxy.name, version, self.env.now))
        super()._applied(client, version, view)


class PollingControlPlane(RecordingControlPlane):
    """The reference: Maesh's proxies as they were, waking at every poll instant (an event
    per poll), each poll counted as it happens."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.polls_counted = 0

    def _poll(self, client: Any) -> Generator[simpy.Event, Any, None]:
        interval = self.spec.poll_interval
        rng = self.world.rng(f"{client.proxy.name}.poll")
        yield self.env.timeout(float(rng.uniform(0.0, interval)))
        replica = self.replicas[0]
        while not client.gone:
            self.polls_counted += 1
            if client.version < self._built_version and not self.down:
                self._fetches += 1
                version, view = self._built_version, self._built_view
                link = self.world.link(replica.node, client.proxy.node)
                size = self.spec.push_bytes_per_cluster * max(1, client.proxy.known_clusters)
                yield self.env.timeout(replica.net.rtt(link) + replica.net.delay(link, size))
                self.pushes += 1
                yield self.env.timeout(self._apply())
                self._applied(client, version, view)
            yield self.env.timeout(interval)

    def polls(self) -> int:
        return self.polls_counted


def run_with(
    monkeypatch: pytest.MonkeyPatch,
    cls: type[ControlPlane],
    data: dict[str, Any],
    seed: int,
    polls_every_s: float = 0.0,
) -> tuple[Simulation, RunResult, int]:
    """A run whose mesh has a control plane of class ``cls``; also the SimPy events it took.

    With ``polls_every_s``, the control plane's count of polls and fetches is also read
    every so often during the run, into ``sim.polls_seen``.
    """
    monkeypatch.setattr(dataplane, "ControlPlane", cls)
    spec = spec_from_dict(data)
    sim = Simulation(
        spec.resolve_topology(),
        spec.mesh.resolve(),
        spec.workload,
        seed=seed,
        duration_s=spec.duration,
        faults=spec.faults,
        changes=spec.changes,
    )
    events = 0
    step = sim.env.step

    def counted() -> None:
        nonlocal events
        events += 1
        step()

    sim.env.step = counted  # type: ignore[method-assign]
    seen: list[tuple[float, int, int]] = []
    sim.polls_seen = seen  # type: ignore[attr-defined]
    cp = sim.mesh.control_plane
    if polls_every_s > 0.0 and cp is not None:

        def read() -> Generator[simpy.Event, Any, None]:
            while True:
                yield sim.env.timeout(polls_every_s)
                seen.append((sim.env.now, cp.polls(), cp._fetches))

        sim.env.process(read())
    output = sim.run()
    return sim, summarise(spec, [seed], [output], 0.0), events


def maesh_case(case: str) -> dict[str, Any]:
    """Small Maesh runs with several changes (some built before the next poll, so a poll
    fetches the newest of them).

    ``per_node``: a proxy per node, random apply times; an outage that starts after a build
    (some proxies find the controller down at their poll) and one during which a change comes
    (its build waits). ``sidecars``: proxies that come and go (scale down, deploy), builds of
    0.2 s (an outage starts during one) and fetches of about 0.3 s for a poll interval of
    0.5 s, so builds finish while fetches are in flight.
    """
    apply = {"kind": "lognormal", "mean": 0.02, "p99": 0.08}
    changes = [
        {"at": 1.0, "kind": "scale", "service": "b", "replicas": 2},
        {"at": 1.02, "kind": "route_weights", "service": "b"},  # built before the next poll
        {"at": 1.04, "kind": "route_weights", "service": "a"},
        {"at": 4.3, "kind": "deploy", "service": "b"},
        {"at": 6.1, "kind": "scale", "service": "b", "replicas": 1},
    ]
    if case == "per_node":
        cp = {**CONTROL_PLANE, "kind": "maesh", "poll_interval": 0.3, "apply_delay": apply}
        return spec_dict(
            [service("a", calls=["b"]), service("b")],
            "a",
            nodes=("node-0", "node-1", "node-2"),
            assignments={"a-0": "node-0", "b-0": "node-1"},
            mesh={"architecture": "per_node", "control_plane": cp},
            changes=changes,
            faults=[
                {"kind": "control_plane_outage", "start": 1.1, "duration": 0.75},
                {"kind": "control_plane_outage", "start": 4.2, "duration": 0.5},
            ],
            duration=8.0,
        )
    cp = {
        **CONTROL_PLANE,
        "kind": "maesh",
        "poll_interval": 0.5,
        "push_base_cpu": 0.2,
        "apply_delay": {"kind": "uniform", "low": 0.2, "high": 0.4},
    }
    return spec_dict(
        [service("a", calls=["b"]), service("b", replicas=3), service("c")],
        "a",
        control_plane=cp,
        changes=[
            *changes[:4],
            # Built at 6.1 s; the pod removed at 6.2 s was waiting for its poll instant.
            {"at": 5.9, "kind": "route_weights", "service": "c"},
            {"at": 6.2, "kind": "scale", "service": "b", "replicas": 1},
            {"at": 6.25, "kind": "add_service", "service": "d"},
        ],
        faults=[{"kind": "control_plane_outage", "start": 4.4, "duration": 0.9}],
        duration=9.0,
    )


@pytest.mark.parametrize("case", ["per_node", "sidecars"])
@pytest.mark.parametrize("seed", [SEED, 11, 12])
def test_event_driven_polls_give_the_results_of_polling_at_every_instant(monkeypatch, case, seed):
    data = maesh_case(case)
    every = 0.0137  # read the poll counts at times no poll falls on
    ref_sim, ref, ref_events = run_with(monkeypatch, PollingControlPlane, data, seed, every)
    new_sim, new, new_events = run_with(monkeypatch, RecordingControlPlane, data, seed, every)
    ref_cp, new_cp = ref_sim.mesh.control_plane, new_sim.mesh.control_plane
    assert isinstance(ref_cp, PollingControlPlane) and type(new_cp) is RecordingControlPlane

    # Every proxy applies every version at the same instant, to the last bit.
    assert new_cp.applied == ref_cp.applied
    assert len({name for name, _, _ in ref_cp.applied}) >= 3
    # So every change converges the same (p50, p99, max, and each proxy's time), with the
    # same pushes; the polls counted in closed form are the polls the reference made.
    ref_summary, new_summary = ref_cp.summary(), new_cp.summary()
    assert new_summary == ref_summary
    # At any time during the run too (a proxy woken and waiting for its poll instant, one
    # fetching, one gone).
    assert len(new_sim.polls_seen) > 500
    assert new_sim.polls_seen == ref_sim.polls_seen
    # (a proxy removed before its poll never converges: the scale down at 6.2 s)
    assert (
        0
        < sum(len(c["convergence_s"]) for c in new_summary["changes"])
        <= sum(c["affected"] for c in new_summary["changes"])
    )
    assert new_summary["empty_polls"] < new_summary["polls"]
    assert new_summary["polls"] - new_summary["empty_polls"] >= new_summary["pushes"]
    assert new.control_plane == ref.control_plane
    # And the traffic saw the same configurations at the same times: the same run.
    assert new.model_dump() == ref.model_dump()
    # Without an event per empty poll: one event per build instead, and one per poll that
    # finds the controller down only if the outage began after the proxy was woken (at most
    # once per proxy and outage).
    woken_down = new_summary["proxies"] * len(data["faults"])  # proxies gone keep it at most
    assert new_events <= ref_events - new_summary["empty_polls"] + len(data["changes"]) + woken_down
    assert new_events < ref_events
    if case == "sidecars":  # proxies went away during the run: their polls are kept
        assert new_cp._retired_polls > 0


def test_an_idle_proxy_costs_no_event_whatever_its_poll_interval(monkeypatch):
    # No change: polling every 0.05 s or every 1 s is the same run, event for event; the
    # reference makes an event per poll.
    events = {}
    for cls in (RecordingControlPlane, PollingControlPlane):
        for interval in (0.05, 1.0):
            data = maesh_spec()
            data["changes"] = []
            data["mesh"]["control_plane"]["poll_interval"] = interval
            sim, _, count = run_with(monkeypatch, cls, data, SEED)
            events[cls, interval] = count
            summary = sim.mesh.control_plane.summary()
            assert summary["polls"] == summary["empty_polls"]
            assert summary["polls"] == pytest.approx(2 * 2.0 / interval, abs=2)
    assert events[RecordingControlPlane, 0.05] == events[RecordingControlPlane, 1.0]
    assert events[PollingControlPlane, 0.05] - events[RecordingControlPlane, 0.05] >= 2 * 39


class TracedControlPlane(ControlPlane):
    """Records, per proxy, the times its poll process is resumed (its events)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.wakes: dict[str, list[float]] = {}

    def _poll(self, client: Any) -> Generator[simpy.Event, Any, None]:
        wakes = self.wakes.setdefault(client.proxy.name, [])
        process = super()._poll(client)
        value = None
        while True:
            wakes.append(self.env.now)
            try:
                event = process.send(value)
            except StopIteration:
                return
            value = yield event


def test_exact_trace_a_proxy_wakes_at_its_first_poll_after_the_build(monkeypatch):
    # Poll interval 2 s, a change at 3 s, a build of 10 ms + 1 ms per service (2): built at
    # 3.012 s. Each proxy sleeps from its start to the build, wakes at its first poll
    # instant after it, fetches (a round trip, then the transfer), applies, and sleeps again:
    # five resumptions in 10 s, where polling at every instant takes one per 2 s.
    interval, at, duration = 2.0, 3.0, 10.0
    data = maesh_spec()
    data["mesh"]["control_plane"]["poll_interval"] = interval
    data["changes"][0]["at"] = at
    data["duration"] = duration
    sim, result, _ = run_with(monkeypatch, TracedControlPlane, data, SEED)
    cp = sim.mesh.control_plane
    built = at + (PUSH_BASE + PER_CLUSTER * 2)
    streams = RandomStreams(SEED)
    expected_convergence, polls = [], 0
    for proxy in sim.mesh.proxies():
        t = 0.0 + float(streams.stream(f"{proxy.name}.poll").uniform(0.0, interval))
        instants = [t]
        while t < built:
            t += interval
            instants.append(t)
        link = SAME_NODE_S if proxy.node.name == cp.replicas[0].node.name else SAME_ZONE_S
        fetched = t + (2 * link + transfer(2, link))
        applied = fetched + APPLY_S
        assert cp.wakes[proxy.name] == [0.0, built, t, fetched, applied]
        assert proxy.config_version == 1
        expected_convergence.append(applied - at)
        # Its polls: every instant before the end, the fetch shifting the later ones.
        t = applied + interval
        while t < duration:
            instants.append(t)
            t += interval
        polls += len(instants)
    assert convergence(sim) == expected_convergence  # exactly
    summary = cp.summary()
    assert (summary["pushes"], summary["polls"], summary["empty_polls"]) == (2, polls, polls - 2)
    check_change(result.control_plane.changes[0], expected_convergence)


# The poll instants: the chain SimPy's timeouts would give, in closed form.


def chained(t: float, interval: float, at: float) -> tuple[float, int]:
    n = 0
    while t < at:
        t += interval
        n += 1
    return t, n


@settings(max_examples=400, deadline=None)
@given(
    t=st.one_of(st.floats(0.0, 1.0), st.floats(0.0, 2000.0), st.just(0.0)),
    interval=st.one_of(
        st.sampled_from([0.1, 0.3, 1 / 3, 0.7, 1.0, 2.0, 2.5e-5]), st.floats(1e-3, 10.0)
    ),
    span=st.floats(0.0, 3000.0),
)
def test_next_poll_is_the_instant_a_chain_of_timeouts_reaches(t, interval, span):
    at = t + span * interval
    assert next_poll(t, interval, at) == chained(t, interval, at)
    assert next_poll(math.inf, interval, at) == (math.inf, 0)


@given(now=st.floats(0.0, 1e4), ahead=st.floats(0.0, 1e3))
def test_delay_to_lands_on_the_instant(now, ahead):
    at = now + ahead
    env = simpy.Environment(initial_time=now)
    timeout = env.timeout(delay_to(now, at))
    env.run(until=timeout)
    assert env.now == at
