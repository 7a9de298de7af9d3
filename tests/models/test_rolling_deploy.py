"""A deploy's RollingUpdate, step by step (``Simulation._rolling_update``).

A zero-delay network and constant service times: the roll's steps depend only on the
readiness delay, so their times are exact. ``back`` has 3 replicas (back-0..2); the new pods
are back-3, back-4, ... in the order they start.
"""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from experiments.spec import spec_from_dict
from models.control_plane import ConfigChangeSpec
from models.simulation import RolloutStep, Simulation

ZERO_NETWORK = {"same_node": 0, "same_zone": 0, "cross_zone": 0, "bandwidth": "1000Gbps"}

# istiod with a push that lags: 0.1 s of debounce, then 10 ms per proxy's push.
CONTROL_PLANE: dict[str, Any] = {
    "kind": "istiod",
    "replicas": 1,
    "cores": 1,
    "debounce_quiet": 0.1,
    "push_base_cpu": 0.01,
    "push_per_cluster_cpu": 0.0,
    "push_per_endpoint_cpu": 0.0,
    "apply_delay": 0.0,
    "certificates": None,
}


def spec_data(
    change: dict[str, Any], *, mesh: Any = None, qps: float = 50.0, duration: float = 12.0
) -> dict[str, Any]:
    """front (1 pod) calls back (3 pods); the deploy of back at 1 s."""
    return {
        "topology": {
            "cluster": {"nodes": [{"name": "node-0"}], "network": ZERO_NETWORK},
            "call_graph": {
                "entry": "front",
                "services": [
                    {"name": "front", "replicas": 1, "service_time": "1ms", "steps": ["back"]},
                    {"name": "back", "replicas": 3, "service_time": "1ms"},
                ],
            },
        },
        "mesh": mesh
        or {
            "architecture": "sidecar",
            "mtls_mode": "DISABLE",
            "load_balancer": "round_robin",
            "retries": {"attempts": 0},
            "control_plane": CONTROL_PLANE,
        },
        "workload": {"kind": "closed_loop", "connections": 4, "qps": qps},
        "duration": duration,
        "warmup": 0,
        "changes": [{"at": 1.0, "kind": "deploy", "service": "back", **change}],
    }


class Spy:
    """Records every endpoint change of ``back`` and every pod's exit: (time, what, names,
    back's endpoint count after it)."""

    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        self.events: list[tuple[float, str, tuple[str, ...], int]] = []
        mesh = sim.mesh
        add, remove, stop = mesh.add_pods, mesh.remove_pods, mesh._stop

        def spy_add(pods: list[Any]) -> None:
            add(pods)
            self.log("add", pods)

        def spy_remove(pods: list[Any], grace: float = 0.0) -> None:
            remove(pods, grace)
            self.log("remove", pods)

        def spy_stop(pods: list[Any]) -> None:
            stop(pods)
            self.log("exit", pods)

        mesh.add_pods = spy_add  # type: ignore[method-assign]
        mesh.remove_pods = spy_remove  # type: ignore[method-assign]
        mesh._stop = spy_stop  # type: ignore[method-assign]

    def log(self, what: str, pods: list[Any]) -> None:
        count = len(self.sim.mesh.endpoints.get("back", []))
        self.events.append((self.sim.env.now, what, tuple(p.name for p in pods), count))


def simulate(data: dict[str, Any], seed: int = 3) -> tuple[Simulation, Spy, Any]:
    spec = spec_from_dict(data)
    sim = Simulation(
        spec.resolve_topology(),
        spec.mesh.resolve(),
        spec.workload,
        seed=seed,
        duration_s=spec.duration,
        warmup_s=spec.warmup,
        changes=spec.changes,
    )
    spy = Spy(sim)
    return sim, spy, sim.run()


def test_three_replicas_with_the_defaults_surge_one_pod_at_a_time():
    # maxSurge 25 % of 3 rounded up = 1, maxUnavailable 25 % rounded down = 0: one new pod
    # starts; once it is ready (0.5 s later) it joins, one old pod leaves and the next
    # new pod starts; three times. Each old pod exits after Istio's 5 s drain.
    sim, spy, _ = simulate(spec_data({"readiness_delay": 0.5}))
    assert sim.rollouts == [
        RolloutStep(1.0, "back", started=["back-3"]),
        RolloutStep(1.5, "back", started=["back-4"], ready=["back-3"], removed=["back-0"]),
        RolloutStep(2.0, "back", started=["back-5"], ready=["back-4"], removed=["back-1"]),
        RolloutStep(2.5, "back", ready=["back-5"], removed=["back-2"]),
    ]
    assert spy.events == [
        (1.5, "add", ("back-3",), 4),
        (1.5, "remove", ("back-0",), 3),
        (2.0, "add", ("back-4",), 4),
        (2.0, "remove", ("back-1",), 3),
        (2.5, "add", ("back-5",), 4),
        (2.5, "remove", ("back-2",), 3),
        (6.5, "exit", ("back-0",), 3),
        (7.0, "exit", ("back-1",), 3),
        (7.5, "exit", ("back-2",), 3),
    ]
    assert [p.name for p in sim.mesh.endpoints["back"]] == ["back-3", "back-4", "back-5"]


def test_the_endpoints_never_drop_below_the_replicas_during_the_roll():
    for delay in (0.0, 0.3):
        _, spy, _ = simulate(spec_data({"readiness_delay": delay}))
        counts = [count for _, what, _, count in spy.events if what != "exit"]
        assert len(counts) == 6 and min(counts) == 3 and max(counts) == 4


def test_with_no_readiness_delay_the_roll_is_done_in_one_instant_in_the_same_order():
    sim, spy, _ = simulate(spec_data({}))
    (step,) = sim.rollouts
    assert step.at_s == 1.0
    assert step.started == step.ready == ["back-3", "back-4", "back-5"]
    assert step.removed == ["back-0", "back-1", "back-2"]
    assert [what for _, what, _, _ in spy.events][:6] == ["add", "remove"] * 3


def test_surge_and_unavailable_as_counts_and_percentages():
    def bounds(replicas: int, **fields: Any) -> tuple[int, int]:
        change = ConfigChangeSpec(at=0.0, kind="deploy", service="s", **fields)
        return change.rolling_bounds(replicas)

    assert bounds(3) == (1, 0)
    assert bounds(10) == (3, 2)  # 2.5 up, 2.5 down
    assert bounds(4, max_surge=0, max_unavailable="50%") == (0, 2)
    assert bounds(1, max_surge="0%") == (0, 1)  # both resolve to 0: one may be unavailable
    assert bounds(5, max_surge=2, max_unavailable=1) == (2, 1)


def test_unavailable_pods_leave_before_the_new_ones_are_ready():
    # surge 0, unavailable 1: an old pod leaves, then its replacement starts; 2 endpoints
    # at the lowest.
    sim, spy, _ = simulate(
        spec_data({"readiness_delay": 0.5, "max_surge": 0, "max_unavailable": 1})
    )
    assert sim.rollouts[0] == RolloutStep(1.0, "back", started=["back-3"], removed=["back-0"])
    assert sim.rollouts[-1] == RolloutStep(2.5, "back", ready=["back-5"])
    assert min(count for _, what, _, count in spy.events if what == "remove") == 2


def test_the_drain_is_capped_by_the_termination_grace_period():
    sim, spy, _ = simulate(
        spec_data({"readiness_delay": 0.5, "drain": 9.0, "termination_grace_period": 2.0})
    )
    exits = [(t, names) for t, what, names, _ in spy.events if what == "exit"]
    assert exits == [(3.5, ("back-0",)), (4.0, ("back-1",)), (4.5, ("back-2",))]


def test_without_sidecars_the_old_pods_exit_at_once():
    sim, spy, _ = simulate(spec_data({"readiness_delay": 0.5}, mesh="none"))
    exits = [(t, names) for t, what, names, _ in spy.events if what == "exit"]
    assert exits == [(1.5, ("back-0",)), (2.0, ("back-1",)), (2.5, ("back-2",))]


def test_all_at_once_replaces_every_pod_in_one_change():
    sim, spy, _ = simulate(spec_data({"strategy": "all_at_once", "drain": 0}))
    assert sim.rollouts == []
    # Without a drain the old pods exit inside remove_pods (the spy logs the exit first).
    assert spy.events == [
        (1.0, "add", ("back-3", "back-4", "back-5"), 6),
        (1.0, "exit", ("back-0", "back-1", "back-2"), 3),
        (1.0, "remove", ("back-0", "back-1", "back-2"), 3),
    ]


@pytest.mark.parametrize("drain", [0.0, 5.0])
def test_stale_callers_are_refused_without_a_drain_and_not_with_istios(drain):
    # The push lags the endpoint change by the debounce (0.1 s) and more: front's sidecar
    # still routes to each old pod after it left. Without a drain it has exited: refused.
    data = spec_data({"readiness_delay": 0.5, "drain": drain}, qps=400.0, duration=4.0)
    sim, _, output = simulate(data)
    refused = sim.mesh.dp_stats.stale_connect_failures
    if drain == 0.0:
        assert refused > 0
    else:
        assert refused == 0
    assert output.workload.failed == refused  # no retries: each refusal is a failed call


def test_the_same_spec_rolls_the_same_way():
    data = spec_data({"readiness_delay": 0.2, "max_surge": "50%"})
    first, _, _ = simulate(data)
    second, _, _ = simulate(data, seed=99)
    assert first.rollouts == second.rollouts
    assert first.rollouts[0].started == ["back-3", "back-4"]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"max_surge": 0, "max_unavailable": "0%"}, "may not both be 0"),
        ({"grace_period": 1.0}, "grace_period: a deploy's old pods drain for `drain`"),
        ({"strategy": "all_at_once", "max_surge": 2}, "max_surge: only a rolling_update"),
        ({"strategy": "Recreate"}, "strategy"),
        ({"max_unavailable": "x%"}, "max_unavailable"),
        ({"drain": -1}, "drain"),
    ],
)
def test_bad_deploy_fields_are_named(fields, message):
    with pytest.raises(ValidationError, match=message):
        ConfigChangeSpec(at=1.0, kind="deploy", service="back", **fields)


def test_rolling_fields_belong_to_deploys_only():
    with pytest.raises(ValidationError, match="readiness_delay: only a deploy change"):
        ConfigChangeSpec(at=1.0, kind="scale", service="back", replicas=2, readiness_delay=1)
