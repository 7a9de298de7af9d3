"""Istio's push semantics, by exact traces: incremental EDS, full pushes, delta xDS, the push
queue that merges a proxy's pending pushes, and the debouncer that waits for the last push.

The set-up is test_control_plane's: one replica with one core, constant costs, every pod on
one node; a proxy's push is its generation, the network, then its time to apply.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest
import simpy

from models.control_plane import ControlPlane, PushRequest
from tests.models.test_control_plane import (
    ABC,
    ABC_EDS,
    ABC_PROXIES,
    APPLY_S,
    BYTES_PER_CLUSTER,
    CHAIN,
    QUIET_S,
    SEED,
    check_change,
    convergence,
    cost,
    pushed,
    run_with,
    spec_dict,
    transfer,
)


class TracedPushes(ControlPlane):
    """Logs each push as it is generated, (time, proxy, version, kind, CPU, bytes), and the
    start of each debounced push."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sends: list[tuple[float, str, int, str, float, int]] = []
        self.push_starts: list[float] = []

    def _sent(self, client: Any, request: PushRequest) -> tuple[str, float, int]:
        kind, cpu, size = super()._sent(client, request)
        self.sends.append((self.env.now, client.proxy.name, request.version, kind, cpu, size))
        return kind, cpu, size

    def _push_all(self, request: PushRequest) -> Generator[simpy.Event, Any, None]:
        self.push_starts.append(self.env.now)
        yield from super()._push_all(request)


def same(found: list[tuple], expected: list[tuple]) -> bool:
    """Two traces alike: their texts equal, their numbers to 1e-12 relative."""
    if len(found) != len(expected):
        return False
    for a, b in zip(found, expected, strict=True):
        if len(a) != len(b):
            return False
        for x, y in zip(a, b, strict=True):
            if isinstance(y, str) or isinstance(x, str):
                if x != y:
                    return False
            elif x != pytest.approx(y, rel=1e-12):
                return False
    return True


def traced(monkeypatch: pytest.MonkeyPatch, data: dict[str, Any]) -> tuple[Any, Any, TracedPushes]:
    sim, result, _ = run_with(monkeypatch, TracedPushes, data, SEED)
    cp = sim.mesh.control_plane
    assert isinstance(cp, TracedPushes)
    return sim, result, cp


SCALE_C = [{"at": 1.0, "kind": "scale", "service": "c", "replicas": 2}]
CONTEXT_S = 0.05  # a push context's CPU, where a test gives one


def test_an_endpoint_change_is_sent_as_eds_only(monkeypatch):
    # c scaled from 1 to 2 pods: each proxy gets c's ClusterLoadAssignment (1 cluster, its 2
    # endpoints), not its 4 clusters and 4 endpoints; no push context is built, though one
    # would cost CONTEXT_S.
    data = spec_dict(ABC, "a", control_plane={"push_context_cpu": CONTEXT_S}, changes=SCALE_C)
    sim, result, cp = traced(monkeypatch, data)
    names = [p.name for p in sim.mesh.proxies()]
    expected = pushed(ABC_EDS, QUIET_S)
    eds_cpu = cost(1, 2)
    # Every push is taken from the queue at once (100 pushers); the one core generates them
    # in turn, in registration order (the convergence times say so).
    sends = [(1.0 + QUIET_S, name, 1, "eds", eds_cpu, BYTES_PER_CLUSTER) for name in names]
    assert same(cp.sends, sends), cp.sends
    assert convergence(sim) == pytest.approx(expected, rel=1e-9)
    check_change(result.control_plane.changes[0], expected)
    summary = cp.summary()
    assert summary["push_counts"] == {"full": 0, "eds": 5, "delta": 0}
    assert (summary["push_contexts"], summary["push_context_cpu_s"]) == (0, 0.0)
    assert summary["push_cpu_s"] == pytest.approx(5 * eds_cpu, rel=1e-12)
    assert summary["push_bytes"] == 5 * BYTES_PER_CLUSTER
    # Each proxy holds the new endpoints all the same.
    assert all(len(p.view["c"]) == 2 for p in sim.mesh.proxies())

    # Without incremental EDS, the same change regenerates every proxy's configuration.
    data["mesh"]["control_plane"]["incremental_eds"] = False
    sim, _, cp = traced(monkeypatch, data)
    assert [s[3] for s in cp.sends] == ["full"] * 5
    assert [s[4] for s in cp.sends] == pytest.approx([cost(*x) for x in ABC_PROXIES])
    assert cp.sends[0][0] == pytest.approx(1.0 + QUIET_S + CONTEXT_S, rel=1e-12)
    assert cp.summary()["push_contexts"] == 1


@pytest.mark.parametrize("xds", ["sotw", "delta"])
def test_a_route_change_is_a_full_push(monkeypatch, xds):
    # A route change for b: a new push context (CONTEXT_S, on the one core), then every
    # proxy's whole configuration, with delta xDS too (Istio's RDS and LDS have no deltas).
    data = spec_dict(
        ABC,
        "a",
        control_plane={"push_context_cpu": CONTEXT_S, "xds": xds},
        changes=[{"at": 1.0, "kind": "route_weights", "service": "b"}],
    )
    sim, result, cp = traced(monkeypatch, data)
    proxies = [(4, 3), (4, 3), (4, 3), (3, 3)]  # a-0, b-0, c-0, loadgen-0: as built
    assert [(p.known_clusters, p.known_endpoints) for p in sim.mesh.proxies()] == proxies
    expected = pushed(proxies, QUIET_S + CONTEXT_S)
    assert convergence(sim) == pytest.approx(expected, rel=1e-9)
    check_change(result.control_plane.changes[0], expected)
    assert [(s[3], s[5]) for s in cp.sends] == [("full", BYTES_PER_CLUSTER * c) for c, _ in proxies]
    summary = cp.summary()
    assert summary["push_counts"] == {"full": 4, "eds": 0, "delta": 0}
    assert (summary["push_contexts"], summary["push_context_cpu_s"]) == (1, CONTEXT_S)


def test_delta_xds_sends_only_what_changed(monkeypatch):
    # A new service "extra" (2 pods) in a mesh-scoped mesh: with state of the world, every
    # proxy gets its whole configuration again; with delta xDS, only extra's cluster and its
    # 2 endpoints.
    changes = [{"at": 1.0, "kind": "add_service", "service": "extra", "replicas": 2}]
    data = spec_dict(CHAIN[:2], "front", changes=changes)
    sim, _, sotw = traced(monkeypatch, data)
    whole = [(p.known_clusters, p.known_endpoints) for p in sim.mesh.proxies()]
    assert len(whole) == 6  # front-0, back-0, back-1, loadgen-0, extra-0, extra-1
    assert same(
        [s[3:] for s in sotw.sends], [("full", cost(*x), BYTES_PER_CLUSTER * x[0]) for x in whole]
    )
    assert convergence(sim) == pytest.approx(pushed(whole, QUIET_S), rel=1e-9)

    data["mesh"]["control_plane"]["xds"] = "delta"
    sim, result, delta = traced(monkeypatch, data)
    assert same([s[3:] for s in delta.sends], [("delta", cost(1, 2), BYTES_PER_CLUSTER)] * 6)
    expected = pushed([(1, 2)] * 6, QUIET_S)
    assert convergence(sim) == pytest.approx(expected, rel=1e-9)
    check_change(result.control_plane.changes[0], expected)
    assert "extra" in sim.mesh.sidecars["front-0"].view  # the proxies know the new service
    assert sotw.summary()["push_cpu_s"] == pytest.approx(sum(cost(*x) for x in whole))
    assert delta.summary()["push_cpu_s"] == pytest.approx(6 * cost(1, 2))
    assert delta.summary()["push_bytes"] == 6 * BYTES_PER_CLUSTER


SLOW_BASE = 0.1  # a push's base CPU, so that pushes are still queued at the next change
ROUTES = [(4, 3), (4, 3), (4, 3), (3, 3)]  # a-0, b-0, c-0, loadgen-0


def slow_cost(clusters: int, endpoints: int) -> float:
    return cost(clusters, endpoints) - cost(0, 0) + SLOW_BASE


def test_the_push_queue_merges_two_pending_pushes_for_one_proxy(monkeypatch):
    # Two route changes: b at 1.0 (pushed from 1.1) and c at 1.15 (pushed from 1.25), one
    # push at a time, each ~0.104 s. At 1.25, a-0 has had version 1; b-0 is being pushed
    # to (version 2 waits for that push to be done); c-0 and loadgen-0 still wait in the
    # queue, and their two requests become one. Pushes: a-0 v1, b-0 v1, c-0 v2, loadgen-0
    # v2, a-0 v2, b-0 v2: 6, not 8.
    changes = [
        {"at": 1.0, "kind": "route_weights", "service": "b"},
        {"at": 1.15, "kind": "route_weights", "service": "c"},
    ]
    data = spec_dict(
        ABC,
        "a",
        control_plane={"push_base_cpu": SLOW_BASE, "max_concurrent_pushes": 1},
        changes=changes,
    )
    sim, result, cp = traced(monkeypatch, data)
    order = [(0, 1), (1, 1), (2, 2), (3, 2), (0, 2), (1, 2)]  # (proxy, version)
    names = [p.name for p in sim.mesh.proxies()]
    t, sends, applied = 1.0 + QUIET_S, [], {}
    for index, version in order:
        t = max(t, 1.15 + QUIET_S) if version == 2 else t
        sends.append((t, names[index], version))
        t += slow_cost(*ROUTES[index])
        t += transfer(ROUTES[index][0])  # one slot: the next waits for the transfer
        applied.setdefault(index, []).append((version, t + APPLY_S))
    assert same([s[:3] for s in cp.sends], sends), cp.sends
    # c-0's and loadgen-0's (b-0's new request waited for its push: no merge).
    assert cp.summary()["merged_pushes"] == 2
    assert cp.pushes == 6
    # Convergence of each change: its proxies' first version at or above it.
    for k, change in enumerate(result.control_plane.changes):
        at = changes[k]["at"]
        times = [min(t for v, t in applied[i] if v >= k + 1) - at for i in range(4)]
        check_change(change, times)

    # Istio 1.1, without the queue: each request is a push of its own; the older full push
    # still waiting for the slot (c-0's and loadgen-0's version 1) is dropped when the newer
    # one starts: again 6 pushes, but in the order the requests came.
    data["mesh"]["control_plane"]["push_queue"] = False
    _, _, old = traced(monkeypatch, data)
    assert [(s[1], s[2]) for s in old.sends] == [
        (names[0], 1),
        (names[1], 1),
        *[(name, 2) for name in names],
    ]
    assert old.summary()["aborted_pushes"] == 2
    assert old.summary()["merged_pushes"] == 0


def test_the_debouncer_does_not_start_a_push_while_the_previous_is_in_progress(monkeypatch):
    # Route changes at 1.0 and 1.2, and at 1.55; each push builds a push context of 0.5 s.
    # The first push starts at 1.1 and is in progress until 1.6. The second change is due at
    # 1.3 but waits for it; at 1.6 the change of 1.55 is not yet quiet (until 1.65), so the
    # second push starts at 1.65, carrying both.
    context_s = 0.5
    changes = [{"at": t, "kind": "route_weights", "service": "b"} for t in (1.0, 1.2, 1.55)]
    data = spec_dict(
        ABC,
        "a",
        control_plane={"push_context_cpu": context_s},
        changes=changes,
        duration=4.0,
    )
    sim, result, cp = traced(monkeypatch, data)
    assert cp.push_starts == pytest.approx([1.1, 1.55 + QUIET_S], rel=1e-12)
    assert cp.summary()["push_contexts"] == 2
    # The first push's proxies got version 1; the second's, version 3 (the two merged).
    assert sorted({s[2] for s in cp.sends}) == [1, 3]

    # Istio 1.1's debouncer does not wait: the second push starts when due (1.3), while the
    # first still builds its context; the third change makes a third push at 1.65.
    data["mesh"]["control_plane"]["debounce_waits_for_push"] = False
    _, _, old = traced(monkeypatch, data)
    assert old.push_starts == pytest.approx([1.1, 1.2 + QUIET_S, 1.55 + QUIET_S], rel=1e-12)
    assert old.summary()["push_contexts"] == 3
