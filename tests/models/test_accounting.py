"""Accounting that cannot lie: CPU counted as it runs, requests in flight counted.

A server booked beyond the end of a run has done only the work up to the end; over any
window a component shows at most as many busy cores as it has workers. The request balance
``sent = completed + failed + in flight`` holds with every term counted on its own (in
flight: +1 when sent, -1 when the response is back), so it can fail.
"""

from __future__ import annotations

from typing import Any

import pytest
import simpy

from experiments.runner import build_simulation, run_experiment
from experiments.spec import spec_from_dict
from models.simulation import Simulation
from sim.servers import FifoServer


def one_service(
    mesh: Any, rate_rps: float, duration: float, warmup: float = 0.0, **service: Any
) -> dict[str, Any]:
    return {
        "topology": {
            "cluster": {"nodes": [{"name": "node-0"}]},
            "call_graph": {
                "services": [{"name": "srv", "service_time": "1ms", "workers": 1, **service}],
                "entry": "srv",
            },
        },
        "mesh": mesh,
        "workload": {"kind": "open_loop", "rate_rps": rate_rps},
        "duration": duration,
        "warmup": warmup,
        "seed": 7,
    }


def simulation(data: dict[str, Any]) -> Simulation:
    return build_simulation(spec_from_dict(data))


def busy_cores_within_workers(sim: Simulation, measured_s: float) -> dict[str, float]:
    """Each server's busy cores over the measured window, checked against its workers."""
    cores = {}
    for server in sim.world.servers:
        cores[server.scope] = server.cpu_s / measured_s
        assert server.cpu_s <= server.workers * measured_s * (1 + 1e-9), (
            server.scope,
            server.cpu_s,
            server.workers,
        )
    return cores


def test_a_booking_past_the_end_counts_only_the_work_done():
    env = simpy.Environment()
    server = FifoServer(env, 1, "s", "app")
    env.run(until=1.0)
    server.book(10.0)  # 10 s of work from t = 1 s
    env.run(until=3.5)
    assert server.cpu_s == pytest.approx(2.5)
    server.reset_stats()
    env.run(until=4.0)
    assert server.cpu_s == pytest.approx(0.5)
    env.run(until=20.0)
    assert server.cpu_s == pytest.approx(7.5)  # all 10 s done, 2.5 s of them before the reset


def test_work_booked_ahead_is_counted_when_it_runs():
    env = simpy.Environment()
    server = FifoServer(env, 2, "s", "app")
    res = server.reserve(2.0, 1.0)  # arrives at 2 s
    assert res == [2.0, 1.0, 2.0, 3.0]
    env.run(until=1.5)
    assert server.cpu_s == 0.0
    env.run(until=2.5)
    assert server.cpu_s == pytest.approx(0.5)


@pytest.mark.parametrize("workers", [1, 3])
def test_overload_never_shows_more_busy_cores_than_workers(workers):
    # Utilisation 1.5: the queue grows for the whole run.
    rate = 1.5 * workers * 1000.0
    sim = simulation(one_service("none", rate, duration=2.0, warmup=0.5, workers=workers))
    out = sim.run()
    cores = busy_cores_within_workers(sim, out.measured_s)
    assert cores["node-0.srv-0.app"] == pytest.approx(workers, rel=0.01)  # busy all along
    w = out.workload
    assert w.in_flight_now > 100  # the backlog
    assert w.sent == w.completed + w.failed + w.in_flight_now


def test_a_sidecar_with_one_worker_at_overload_shows_at_most_one_core():
    mesh = {
        "architecture": "sidecar",
        "proxy": {
            "concurrency": 1,
            "outbound": [{"kind": "router", "request": {"base": "1ms"}}],
            "inbound": [{"kind": "router", "request": {"base": "1ms"}}],
        },
        "control_plane": None,
    }
    sim = simulation(one_service(mesh, 1500.0, duration=2.0, warmup=0.5, service_time="0.1ms"))
    out = sim.run()
    cores = busy_cores_within_workers(sim, out.measured_s)
    sidecars = {k: v for k, v in cores.items() if k.endswith("sidecar")}
    assert sidecars and max(sidecars.values()) <= 1.0 + 1e-9
    assert max(sidecars.values()) > 0.95  # 1.5 x its capacity is offered: busy all along


def test_a_run_shorter_than_a_service_time():
    sim = simulation(one_service("none", 5000.0, duration=0.0005, service_time="1ms"))
    out = sim.run()
    busy_cores_within_workers(sim, out.measured_s)
    w = out.workload
    assert w.completed == 0
    assert w.sent == w.in_flight_now > 0


def test_the_control_plane_in_a_1_ms_run_shows_at_most_its_cores():
    sim = simulation(one_service("istio-1.8", 100.0, duration=0.001))
    out = sim.run()
    busy_cores_within_workers(sim, out.measured_s)


def test_conservation_counted_at_overload_through_the_runner():
    result = run_experiment(spec_from_dict(one_service("istio-1.8", 3000.0, duration=1.0)))
    c = result.conservation
    assert c.in_flight > 0
    assert c.sent == c.completed + c.failed + c.in_flight


def test_a_chain_of_10000_services_runs_without_a_deep_python_stack():
    # Calls used to nest as generators: a chain of 3,000 raised RecursionError.
    data = {
        "topology": {"catalog": "chain", "params": {"n": 10_000, "service_time": "10us"}},
        "mesh": "none",
        "workload": {"kind": "closed_loop", "connections": 1, "qps": 0},
        "duration": 5.0,  # about 1.6 s a request: 20,000 network legs, 10,000 visits
        "warmup": 0,
        "seed": 1,
    }
    out = simulation(data).run()
    assert out.workload.completed >= 1
