"""CPU limits at the model level: which server a container gets, the proxy's ``resources``
spec, and a throttled sidecar in a whole run (its trace, its counters in the results).

The exact traces of the quota mechanics are in ``tests/sim/test_shared_cores.py``; here one
request crosses a sidecar's quota and its latency grows by exactly the throttled time.
"""

from __future__ import annotations

from typing import Any

import pytest
import simpy

from experiments.runner import run_experiment
from experiments.spec import spec_from_dict
from experiments.tables import run_tables
from models.proxy import ProxySpec, ResourcesSpec
from models.simulation import Simulation
from models.world import Node, World
from sim.servers import FifoServer, SharedServer
from topologies import NodeSpec

INBOUND_COST_S = 0.03  # 30 ms: more than a 200m container's quota of 20 ms per 100 ms
NS = 1e-9


def spec_dict(resources: dict[str, Any] | None, node_extra: dict | None = None) -> dict:
    proxy: dict[str, Any] = {
        "concurrency": 1,
        "inbound": [{"kind": "http_connection_manager", "request": {"base": INBOUND_COST_S}}],
    }
    if resources is not None:
        proxy["resources"] = resources
    return {
        "topology": {
            "cluster": {
                "nodes": [{"name": "node-0"}, {"name": "node-1", **(node_extra or {})}],
                "network": {"same_node": "10us", "same_zone": "100us", "bandwidth": "1Gbps"},
            },
            "call_graph": {"services": [{"name": "srv", "service_time": "1ms"}], "entry": "srv"},
            "placement": {"strategy": "explicit", "assignments": {"srv-0": "node-1"}},
        },
        "mesh": {"architecture": "sidecar", "proxy": proxy},
        "workload": {"kind": "closed_loop", "connections": 1, "qps": 2},
        "duration": 0.95,
        "warmup": 0,
        "trace_every": 1,
    }


def simulate(spec_data: dict) -> Any:
    spec = spec_from_dict(spec_data)
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
    return sim.run()


def inbound_start(trace) -> float:
    """When the server's sidecar starts its inbound work in a trace."""
    (span,) = [
        s
        for s in trace
        if s.kind == "sidecar_cpu"
        and s.scope.startswith("node-1.")
        and s.end_s - s.start_s == pytest.approx(INBOUND_COST_S)
    ]
    return span.end_s - INBOUND_COST_S


def test_a_request_crossing_the_quota_waits_for_the_next_period():
    free = simulate(spec_dict(None))
    limited = simulate(spec_dict({"requests": {"cpu": "100m"}, "limits": {"cpu": "200m"}}))
    first_free, first_limited = free.recorder.traces[0], limited.recorder.traces[0]
    start = inbound_start(first_free)
    assert start < 0.1 - 0.02  # the quota runs out within the first period
    # 20 ms of work, throttled until 100 ms, the last 10 ms after: the request is later by
    # exactly the throttled time, 100 ms - (start + 20 ms).
    delay = first_limited[-1].end_s - first_free[-1].end_s
    latency_free = max(s.end_s for s in first_free) - min(s.start_s for s in first_free)
    latency_limited = max(s.end_s for s in first_limited) - min(s.start_s for s in first_limited)
    assert latency_limited - latency_free == pytest.approx(0.1 - (start + 0.02), abs=NS)
    assert delay == pytest.approx(0.1 - (start + 0.02), abs=NS)


def test_throttling_is_reported_per_container():
    data = spec_dict({"limits": {"cpu": "200m"}})
    data["duration"] = 2.0
    result = run_experiment(spec_from_dict(data))
    throttling = result.cpu.throttling
    # Both sidecars have a binding limit; only the server's does work (30 ms per request,
    # 2 requests per second: every request crosses its 20 ms quota).
    assert set(throttling) == {"node-0.loadgen-0.sidecar", "node-1.srv-0.sidecar"}
    server = throttling["node-1.srv-0.sidecar"]
    assert server.limit_cores == 0.2
    requests = result.end_to_end.requests
    assert requests >= 3
    # Each request runs 20 ms in one period and its last 10 ms in the next.
    assert server.throttled_periods == requests
    assert server.periods == 2 * requests
    assert 0 < server.throttled_s < requests * 0.08
    assert throttling["node-0.loadgen-0.sidecar"].throttled_periods == 0
    assert "CFS throttling" in run_tables(result)


def test_a_limit_that_cannot_bind_costs_nothing_and_changes_nothing():
    free = run_experiment(spec_from_dict(spec_dict(None)))
    wide = run_experiment(spec_from_dict(spec_dict({"limits": {"cpu": 1}})))  # 1 worker
    assert wide.cpu.throttling == {}
    assert wide.end_to_end == free.end_to_end


def test_world_decides_the_server_class_when_it_builds():
    env = simpy.Environment()
    spec = spec_from_dict(spec_dict(None, {"cores": 2}))
    world = World(env, spec.resolve_topology(), seed=1, warmup_s=0.0)
    free, finite = world.nodes["node-0"], world.nodes["node-1"]
    assert type(world.cpu_server(2, "a", "app", free)) is FifoServer
    assert type(world.cpu_server(2, "b", "sidecar", free, limit_cores=2.0)) is FifoServer
    limited = world.cpu_server(2, "c", "sidecar", free, limit_cores=0.5)
    assert type(limited) is SharedServer and limited.limit_cores == 0.5
    shared = world.cpu_server(2, "d", "app", finite)
    assert type(shared) is SharedServer and shared.limit_cores is None
    assert shared.cores is finite.cores and finite.cores.cores == 2.0
    weighted = world.cpu_server(1, "e", "app", finite, request_cores=0.5)
    assert type(weighted) is SharedServer and weighted.weight == 512.0 and shared.weight == 2.0


def test_fractional_node_cores_are_kept():
    node = Node(simpy.Environment(), NodeSpec(name="n", cores=0.5))
    assert node.cores is not None and node.cores.cores == 0.5 and node.cores.speed == 0.5


def test_node_discipline_overrides_the_clusters():
    data = spec_dict(None, {"cores": 1, "cpu_discipline": "ps"})
    data["topology"]["cluster"]["cpu_discipline"] = "fifo"
    world = World(
        simpy.Environment(), spec_from_dict(data).resolve_topology(), seed=1, warmup_s=0.0
    )
    assert world.nodes["node-1"].cores.discipline == "ps"  # type: ignore[union-attr]


def test_resources_accept_kubernetes_quantities():
    spec = ProxySpec(resources={"requests": {"cpu": "100m"}, "limits": {"cpu": "2"}})
    assert spec.resources.requests.cpu == 0.1 and spec.resources.limits.cpu == 2.0
    assert ResourcesSpec().limits.cpu is None


@pytest.mark.parametrize(
    ("resources", "message"),
    [
        ({"requests": {"cpu": "2"}, "limits": {"cpu": "500m"}}, "requests.cpu"),
        ({"limits": {"cpu": 0}}, "limits.cpu must be > 0"),
        ({"limits": {"cpu": "1Gi"}}, "unknown cpu unit"),
        ({"limits": {"memory": "1Gi"}}, "memory"),
    ],
)
def test_bad_resources_are_refused_with_the_field_named(resources, message):
    with pytest.raises(ValueError, match=message) as error:
        spec_from_dict(spec_dict(resources))
    assert "resources" in str(error.value)


def test_bad_node_cpu_fields_are_refused():
    with pytest.raises(ValueError, match="cpu_discipline"):
        spec_from_dict(spec_dict(None, {"cpu_discipline": "lifo"}))
    with pytest.raises(ValueError, match="cfs_period"):
        spec_from_dict(spec_dict(None, {"cfs_period": "0ms"}))


def test_an_app_containers_limit_throttles_its_work():
    # No mesh: srv's app, 2 workers, limit 500m (50 ms per 100 ms), 80 ms of work per request,
    # one request every 0.5 s: each runs 50 ms, waits for the next period, runs 30 ms more.
    data = spec_dict(None)
    data["mesh"] = {"architecture": "none"}
    service = data["topology"]["call_graph"]["services"][0]
    service.update(service_time="80ms", workers=2, resources={"limits": {"cpu": "500m"}})
    out = simulate(data)
    first = out.recorder.traces[0]
    start = min(s.start_s for s in first)
    app = [s for s in first if s.kind == "app_cpu"]
    (queue,) = [s for s in first if s.kind == "app_queue"]
    # It reaches the app at a (< 20 ms), runs until its 50 ms of quota are used (a + 50 ms),
    # waits for the period at 100 ms, runs its last 30 ms: done at 130 ms. Its queueing span
    # is everything but its work: 130 ms - 80 ms - a.
    assert queue.start_s - start < 0.02
    assert app[0].end_s == pytest.approx(0.13, abs=NS)
    assert queue.end_s - queue.start_s == pytest.approx(0.1 - (queue.start_s + 0.05), abs=NS)
    result = run_experiment(spec_from_dict(data))
    (scope,) = result.cpu.throttling
    assert scope.endswith("srv-0.app") and result.cpu.throttling[scope].throttled_periods >= 1
