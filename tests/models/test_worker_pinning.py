"""Envoy's threading: a connection is pinned to the worker that accepted it, each worker has
its own upstream pools, and one HTTP/2 connection puts all its streams on one worker.

The server's sidecar has two workers; what each did is read from its pinned workers' own
servers (``proxy.cpu.parts``).
"""

from __future__ import annotations

from typing import Any

import pytest
import simpy

from experiments.spec import spec_from_dict
from models.simulation import Simulation
from sim.engine import Runner, Task
from sim.servers import FifoServer, PinnedWorkers

INBOUND_S = 0.5e-3


def simulate(
    balance: str, protocol: str, workload: dict[str, Any], duration: float = 2.0
) -> tuple[Simulation, Any]:
    proxy = {
        "concurrency": 2,
        "connection_balance": balance,
        "inbound": [{"kind": "http_connection_manager", "request": {"base": INBOUND_S}}],
    }
    spec = spec_from_dict(
        {
            "topology": {
                "cluster": {
                    "nodes": [{"name": "node-0"}, {"name": "node-1"}],
                    "network": {"same_node": "10us", "same_zone": "100us", "bandwidth": "1Gbps"},
                },
                "call_graph": {
                    "services": [
                        {"name": "srv", "service_time": "1ms", "workers": 64, "protocol": protocol}
                    ],
                    "entry": "srv",
                },
                "placement": {"strategy": "explicit", "assignments": {"srv-0": "node-1"}},
            },
            "mesh": {"architecture": "sidecar", "mtls_mode": "STRICT", "proxy": proxy},
            "workload": workload,
            "duration": duration,
            "warmup": 0,
        }
    )
    sim = Simulation(
        spec.resolve_topology(),
        spec.mesh.resolve(),
        spec.workload,
        seed=5,
        duration_s=spec.duration,
        warmup_s=0.0,
    )
    return sim, sim.run()


def server_sidecar(sim: Simulation):
    (proxy,) = [p for p in sim.mesh.proxies() if p.name.startswith("srv-0")]
    return proxy


OPEN_LOOP = {"kind": "open_loop", "rate_rps": 1200}  # 60 % of one worker's inbound capacity


@pytest.mark.parametrize("balance", ["kernel", "exact"])
def test_an_http2_connections_streams_all_run_on_one_worker(balance):
    sim, out = simulate(balance, "http2", OPEN_LOOP)
    proxy = server_sidecar(sim)
    busy = [part.cpu_s for part in proxy.cpu.parts]
    # One HTTP/2 connection from the client's sidecar: one worker did everything, the other
    # nothing at all (not a request, not a handshake).
    assert sorted(busy)[0] == 0.0 and sorted(busy)[1] > 0.5
    assert sum(1 for n in proxy.accepted if n) == 1
    assert out.workload.latency.count > 2000


def test_pinning_queues_what_a_shared_pool_would_not():
    # The same arrivals (same seed): on one pinned worker the inbound work queues more than
    # on two interchangeable ones.
    pinned_sim, pinned = simulate("kernel", "http2", OPEN_LOOP)
    shared_sim, shared = simulate("shared", "http2", OPEN_LOOP)

    def queue(sim):
        (sink,) = [
            s
            for s in sim.world.recorder.sinks()
            if s.kind == "sidecar_queue" and s.scope.startswith("node-1.")
        ]
        return sink.total_s / sink.count

    assert queue(pinned_sim) > 3 * queue(shared_sim)
    assert pinned.workload.latency.mean > shared.workload.latency.mean


def test_http1_connections_are_spread_over_the_workers():
    # Eight HTTP/1.1 connections (fortio -c 8, no pacing): exact balance puts four on each
    # worker; both workers work.
    closed = {"kind": "closed_loop", "connections": 8, "qps": 0}
    sim, _ = simulate("exact", "http1", closed, duration=0.5)
    proxy = server_sidecar(sim)
    (pool,) = [p for key, p in _client_pools(sim)]
    assert pool.size == proxy.accepted[0] + proxy.accepted[1]
    assert abs(proxy.accepted[0] - proxy.accepted[1]) <= 1
    assert all(part.cpu_s > 0 for part in proxy.cpu.parts)


def _client_pools(sim: Simulation):
    (client,) = [p for p in sim.mesh.proxies() if p.name.startswith("loadgen-0")]
    return list(client.pools.items())


def test_pinned_workers_exact_trace():
    env = simpy.Environment()
    runner = Runner(env)
    workers = PinnedWorkers([FifoServer(env, 1, "p", "sidecar") for _ in range(2)], "p", "sidecar")
    done = []

    class Visit(Task):
        def __init__(self, name):
            super().__init__(env, runner)
            self.name = name
            self._next = self.finished

        def finished(self):
            done.append((self.name, self.res[2], self.res[3]))

    # Two visits on worker 0 at 0: the second waits for the first although worker 1 is idle;
    # a visit on no connection takes the first free worker (1).
    workers.visit_on(0, Visit("a"), 0.0, 1.0)
    workers.visit_on(0, Visit("b"), 0.0, 1.0)
    workers.visit(Visit("c"), 0.0, 1.0)
    env.run()
    assert sorted(done) == [("a", 0.0, 1.0), ("b", 1.0, 2.0), ("c", 0.0, 1.0)]
    assert workers.parts[0].cpu_s == 2.0 and workers.parts[1].cpu_s == 1.0
    assert workers.cpu_s == 3.0 and workers.visits == 3


def test_a_binding_limit_with_pinned_workers_is_refused():
    proxy = {"concurrency": 2, "connection_balance": "kernel", "resources": {"limits": {"cpu": 1}}}
    with pytest.raises(ValueError, match="connection_balance") as error:
        spec_from_dict(
            {
                "topology": "bookinfo",
                "mesh": {"architecture": "sidecar", "proxy": proxy},
                "workload": {"kind": "open_loop", "rate_rps": 10},
                "duration": 1,
                "warmup": 0,
            }
        )
    assert "limits.cpu" in str(error.value)
