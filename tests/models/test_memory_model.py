"""The memory model: N sidecars that each know N services grow as N² mesh-wide, a proxy per
node as nodes × N, and scoping a sidecar to its dependencies makes it linear again.

N services, one replica each, placed round robin on K nodes (explicitly, so that every node
hosts pods), with a memory model of 1000 bytes per known cluster, 100 per known endpoint and
nothing per connection (traffic does not matter). The mesh is built, not run:
``Simulation(...).mesh.memory_bytes()`` is the modelled memory per proxy.

What each proxy knows (``models.scoping``): a service's sidecar with ``scoping: mesh`` knows
every service (N clusters, N endpoints) plus one inbound cluster for its own; the load
generator's sidecar has no inbound cluster. A node proxy knows every service and has no
inbound cluster either.
"""

from __future__ import annotations

from typing import Any

import pytest

from experiments.runner import run_experiment
from experiments.spec import spec_from_dict
from models.simulation import Simulation

CLUSTER_B = 1000
ENDPOINT_B = 100
MEMORY = {
    "base_bytes": 0,
    "per_cluster_bytes": CLUSTER_B,
    "per_endpoint_bytes": ENDPOINT_B,
    "per_connection_bytes": 0,
}


def spec(n: int, nodes: int, mesh: dict[str, Any], chain: bool = False, **extra: Any) -> Any:
    services = [
        {"name": f"s{i}", "steps": [f"s{i + 1}"] if chain and i + 1 < n else []} for i in range(n)
    ]
    return spec_from_dict(
        {
            "topology": {
                "cluster": {"nodes": [{"name": f"node-{k}"} for k in range(nodes)]},
                "call_graph": {"services": services, "entry": "s0"},
                "placement": {
                    "strategy": "explicit",
                    "assignments": {f"s{i}-0": f"node-{i % nodes}" for i in range(n)},
                },
            },
            "mesh": mesh,
            "workload": {"kind": "open_loop", "rate_rps": 10},
            "duration": 1.0,
            "warmup": 0.0,
            **extra,
        }
    )


def memory(n: int, nodes: int, mesh: dict[str, Any], chain: bool = False) -> dict[str, float]:
    s = spec(n, nodes, mesh, chain)
    sim = Simulation(s.resolve_topology(), s.mesh.resolve(), s.workload, 1, 1.0)
    return sim.mesh.memory_bytes()


def sidecar(scoping: str) -> dict[str, Any]:
    return {"architecture": "sidecar", "proxy": {"memory": MEMORY}, "scoping": scoping}


PER_NODE = {"architecture": "per_node", "proxy": {"memory": MEMORY}}


@pytest.mark.parametrize("n", [10, 20, 40])
def test_sidecars_scoped_to_the_mesh_hold_n_squared(n):
    found = memory(n, 4, sidecar("mesh"))
    assert len(found) == n + 1  # one sidecar per pod, and the load generator's
    service = (n + 1) * CLUSTER_B + n * ENDPOINT_B  # every service, and its own inbound
    client = n * CLUSTER_B + n * ENDPOINT_B
    assert found["node-0.loadgen-0.sidecar"] == client
    assert all(v == service for k, v in found.items() if "loadgen" not in k)
    assert sum(found.values()) == n * service + client


def test_sidecar_memory_grows_quadratically():
    totals = {n: sum(memory(n, 4, sidecar("mesh")).values()) for n in (10, 20, 40)}
    r1, r2 = totals[20] / totals[10], totals[40] / totals[20]
    # (2N)² / N² = 4, less the linear terms' share, which shrinks as N grows.
    assert 3.5 < r1 < r2 < 4.0, (r1, r2)


def test_sidecars_scoped_to_their_dependencies_grow_linearly():
    def total(n: int) -> float:
        return sum(memory(n, 4, sidecar("dependencies"), chain=True).values())

    for n in (10, 20, 40):
        # s_i calls s_{i+1}: it knows 2 services + inbound (the last one: 1 + inbound);
        # the load generator knows s0.
        middle = 3 * CLUSTER_B + 2 * ENDPOINT_B
        last = 2 * CLUSTER_B + ENDPOINT_B
        client = CLUSTER_B + ENDPOINT_B
        assert total(n) == (n - 1) * middle + last + client
    assert total(40) - total(20) == pytest.approx(2 * (total(20) - total(10)))
    assert total(40) / total(20) < 2.01


@pytest.mark.parametrize(("n", "nodes"), [(10, 2), (20, 2), (20, 4), (40, 4), (40, 8)])
def test_node_proxies_hold_nodes_times_n(n, nodes):
    found = memory(n, nodes, PER_NODE)
    assert sorted(found) == sorted(f"node-{k}.node-proxy" for k in range(nodes))
    assert all(v == n * CLUSTER_B + n * ENDPOINT_B for v in found.values())


def test_node_proxy_memory_doubles_with_services_and_with_nodes():
    def total(n: int, nodes: int) -> float:
        return sum(memory(n, nodes, PER_NODE).values())

    assert total(20, 4) == 2 * total(10, 4)
    assert total(40, 4) == 2 * total(20, 4)
    assert total(40, 8) == 2 * total(40, 4)
    assert total(20, 4) == 4 * (20 * CLUSTER_B + 20 * ENDPOINT_B)


def test_node_proxies_on_every_node():
    # A DaemonSet: 3 services on nodes 0..2 of 6, a node proxy on each of the 6 (the shadow
    # services' endpoints are the proxies of every node, pods or not), each knowing them all.
    found = memory(3, 6, PER_NODE)
    assert sorted(found) == [f"node-{k}.node-proxy" for k in range(6)]
    assert all(v == 3 * CLUSTER_B + 3 * ENDPOINT_B for v in found.values())


def test_run_result_reports_the_same_memory():
    """Through the experiment runner, with traffic (connections cost nothing here)."""
    result = run_experiment(spec(10, 4, sidecar("mesh")))
    assert result.end_to_end.requests > 0
    assert sum(result.memory_bytes.values()) == 10 * (11 * CLUSTER_B + 10 * ENDPOINT_B) + (
        10 * CLUSTER_B + 10 * ENDPOINT_B
    )
