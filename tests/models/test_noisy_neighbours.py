"""Noisy neighbours: two busy pods on one node slow each other through a shared node proxy,
and do not through their own sidecars, unless the node's cores are few.

The load generator and an entry service ``front`` (fast, many workers) run on ``node-0``;
``front`` calls ``a`` and ``b`` in one parallel step; ``a`` and ``b`` run on ``node-1``.
Every proxy has one worker and costs 0.3 ms on the request side of its *inbound* chain only,
so the proxies on ``node-0`` carry the same work whether ``b`` is called or not. At 1100 rps:

* per node, with ``server_side``: ``node-1``'s proxy runs the inbound chain of both ``a`` and
  ``b``: 33 % busy with ``a`` alone, 66 % with both; ``a``'s requests queue behind ``b``'s.
* sidecars: ``a`` and ``b`` have a sidecar each (33 % busy either way); with unlimited cores
  nothing on ``a``'s path changes when ``b`` is called.
* sidecars on a one-core ``node-1``: both sidecars and both apps compete for the core.

Each comparison is one run with ``b`` called (probability 1) and one without (probability 0),
with the same seed (common random numbers: the same arrivals). The per-service results are
measured at the pod, without the proxies, so the end-to-end latency (``front``'s, which waits
for ``a``) and the queueing at the proxies, per scope, are compared instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from experiments.spec import spec_from_dict
from models.simulation import Simulation

RATE_RPS = 1100.0
FILTER_COST = "0.3ms"
SEED = 7


@dataclass
class Outcome:
    e2e_mean_s: float
    queue_s: dict[tuple[str, str], float]  # mean wait per visit, per (scope, kind)
    a_service_s: float  # a's latency at the pod (its app's queue and CPU)
    requests: int


def run(architecture: str, b_probability: float, node1_cores: int | None = None) -> Outcome:
    proxy = {
        "concurrency": 1,
        "inbound": [{"kind": "http_connection_manager", "request": {"base": FILTER_COST}}],
    }
    mesh: dict = {"architecture": architecture, "proxy": proxy}
    if architecture == "per_node":
        mesh["server_side"] = True
    node1: dict = {"name": "node-1"}
    if node1_cores is not None:
        node1["cores"] = node1_cores
    step = {
        "calls": [{"service": "a"}, {"service": "b", "probability": b_probability}],
        "parallel": True,
    }
    spec = spec_from_dict(
        {
            "topology": {
                "cluster": {
                    "nodes": [{"name": "node-0"}, node1],
                    "network": {
                        "same_node": "5us",
                        "same_zone": "20us",
                        "cross_zone": "1ms",
                        "bandwidth": "10Gbps",
                    },
                },
                "call_graph": {
                    "services": [
                        {"name": "front", "service_time": "10us", "workers": 64, "steps": [step]},
                        {"name": "a", "service_time": "0.1ms", "workers": 64},
                        {"name": "b", "service_time": "0.1ms", "workers": 64},
                    ],
                    "entry": "front",
                },
                "placement": {
                    "strategy": "explicit",
                    "assignments": {"front-0": "node-0", "a-0": "node-1", "b-0": "node-1"},
                },
            },
            "mesh": mesh,
            "workload": {"kind": "open_loop", "rate_rps": RATE_RPS},
            "duration": "2s",
            "warmup": "0.2s",
        }
    )
    sim = Simulation(spec.resolve_topology(), spec.mesh.resolve(), spec.workload, SEED, 2.0, 0.2)
    out = sim.run()
    queue = {
        (s.scope, s.kind): s.total_s / s.count
        for s in out.recorder.sinks()
        if s.kind.endswith("_queue") and s.count
    }
    return Outcome(
        e2e_mean_s=out.workload.latency.mean,
        queue_s=queue,
        a_service_s=out.services["a"].latency.mean,
        requests=out.workload.latency.count,
    )


def test_pods_sharing_a_node_proxy_slow_each_other():
    alone, both = run("per_node", 0.0), run("per_node", 1.0)
    assert alone.requests > 1500 and both.requests == alone.requests
    shared = ("node-1.node-proxy", "node_proxy_queue")
    # a's requests (and responses) now wait behind b's in node-1's proxy.
    assert both.queue_s[shared] > 3 * alone.queue_s[shared]
    assert both.e2e_mean_s > 1.3 * alone.e2e_mean_s
    # The proxy, not a's own pod, is where the time goes: a's app never queues.
    assert both.a_service_s == pytest.approx(alone.a_service_s, rel=1e-9)


def test_pods_with_their_own_sidecars_do_not_slow_each_other():
    alone, both = run("sidecar", 0.0), run("sidecar", 1.0)
    assert alone.requests > 1500 and both.requests == alone.requests
    own = ("node-1.a-0.sidecar", "sidecar_queue")
    # a's sidecar sees the same arrivals and the same work either way (common random
    # numbers make it identical; allow for noise all the same).
    assert both.queue_s[own] == pytest.approx(alone.queue_s[own], rel=0.05)
    assert ("node-1.b-0.sidecar", "sidecar_queue") not in alone.queue_s
    assert both.e2e_mean_s == pytest.approx(alone.e2e_mean_s, rel=0.05)
    assert both.a_service_s == pytest.approx(alone.a_service_s, rel=1e-9)


def test_sidecars_on_a_one_core_node_contend_for_the_core():
    alone, both = run("sidecar", 0.0, node1_cores=1), run("sidecar", 1.0, node1_cores=1)
    assert alone.requests > 1500
    own = ("node-1.a-0.sidecar", "sidecar_queue")
    # The core is 44 % busy with a's work alone, 88 % with b's too.
    assert both.queue_s[own] > 3 * alone.queue_s[own]
    assert both.a_service_s > 1.5 * alone.a_service_s  # a's app waits for the core too
    assert both.e2e_mean_s > 1.5 * alone.e2e_mean_s
