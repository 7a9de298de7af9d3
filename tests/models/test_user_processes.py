"""What users write stays ordinary SimPy processes and works beside the fast path.

A process of the user's own sends requests through the mesh (``mesh.call`` with ``yield
from``, ``mesh.request`` with ``yield``) and calls a pod directly (``pod.handle``), while the
load generator's requests run on the fast path in the same environment.
"""

from __future__ import annotations

import pytest

from experiments.runner import build_simulation
from experiments.spec import spec_from_dict
from models.messages import Request


@pytest.mark.parametrize("mesh", ["none", "istio-1.8", "maesh", "istio-ambient", "proxyless-grpc"])
def test_a_users_process_calls_through_the_mesh_beside_the_workload(mesh):
    spec = spec_from_dict(
        {
            "topology": "bookinfo",
            "mesh": mesh,
            "workload": {"kind": "open_loop", "rate_rps": 100},
            "duration": 2.0,
            "warmup": 0,
            "seed": 5,
        }
    )
    sim = build_simulation(spec)
    env, mesh_ = sim.env, sim.mesh
    seen = []

    def user():
        yield env.timeout(0.5)
        for i in range(5):
            request = Request("productpage", 512, 2048, "http1", env.now)
            start = env.now
            if i % 2:
                response = yield mesh_.request(sim.client, "productpage", request)
            else:
                response = yield from mesh_.call(sim.client, "productpage", request)
            seen.append((response.status, env.now - start))
            details = next(p for p in sim.pods if p.spec.name == "details")
            answer = yield from details.handle(Request("details", 100, 100, "http1", env.now))
            seen.append((answer.status, 0.0))

    env.process(user())
    out = sim.run()
    assert len(seen) == 10
    assert all(status == 200 for status, _ in seen)
    assert all(latency > 0.0 for status, latency in seen[::2])  # through the mesh: it takes time
    assert out.workload.completed > 150  # the workload ran beside it
    w = out.workload
    assert w.sent == w.completed + w.failed + w.in_flight_now
