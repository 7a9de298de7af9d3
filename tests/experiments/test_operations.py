"""Operational complexity as a number: Bookinfo with one canary policy under Istio and under
Traefik Mesh, counted by hand.

Bookinfo (topologies/catalog.py): 6 workloads of one pod each (productpage, details,
reviews-v1, reviews-v2, reviews-v3, ratings) behind 4 hosts (productpage, details, reviews,
ratings), on 3 nodes.
"""

from __future__ import annotations

import pytest

from experiments.operations import operations, yaml_lines
from experiments.results import RunResult
from experiments.runner import run_experiment
from experiments.spec import load_spec
from experiments.specs import shipped_specs


def spec(name: str, *overrides: str):
    path = next(p for p in shipped_specs() if p.stem == name)
    return load_spec(path, list(overrides))


def counted(name: str):
    s = spec(name)
    return operations(s.resolve_topology(), s.mesh.resolve(), list(s.policies))


def test_istio_canary_counts():
    ops = counted("canary")  # istio-1.8, a DestinationRule and a VirtualService
    # The DestinationRule, dumped as Kubernetes YAML, is 16 lines: apiVersion, kind,
    # metadata, name, spec, host, subsets, then 3 per subset (- name, labels, version) x 3.
    # The VirtualService is 17: apiVersion, kind, metadata, name, spec, hosts, - reviews,
    # http, - route, then 4 per destination (- destination, host, subset, weight) x 2.
    assert ops.objects_by_kind == {"DestinationRule": 1, "VirtualService": 1}
    assert ops.objects == 2
    assert ops.yaml_lines == 16 + 17
    assert ops.annotations == 0
    # istiod: 1 replica of 4 cores; memory 200 MB + 400 KB x 6 sidecars + 500 KB x 4 hosts
    # (no per-endpoint term in istio-1.8's model).
    assert ops.control_plane_pods == 1
    assert ops.control_plane_cores == 4.0
    assert ops.control_plane_memory_bytes == 200e6 + 6 * 400e3 + 4 * 500e3
    # A sidecar upgrade: 6 sidecars, each pod restarts to get the new one.
    assert ops.rollout == "sidecar"
    assert (ops.proxies, ops.proxy_restarts, ops.app_restarts, ops.app_rebuilds) == (6, 0, 6, 0)


def test_traefik_mesh_canary_counts():
    ops = counted("canary-smi")  # maesh, one SMI TrafficSplit
    # The TrafficSplit is 11 lines: apiVersion, kind, metadata, name, spec, service, backends,
    # then 2 per backend (- service, weight) x 2. Its backends name the workloads reviews-v1
    # and reviews-v3, which no Service of Bookinfo selects alone (its Service is reviews):
    # the operator writes a Service for each, 10 lines: apiVersion, kind, metadata, name,
    # spec, selector, app, version, ports, - port.
    assert ops.objects_by_kind == {"Service": 2, "TrafficSplit": 1}
    assert ops.objects == 3
    assert ops.yaml_lines == 11 + 2 * 10
    assert ops.annotations == 0
    # The Traefik Mesh controller: 1 pod of 1 core; 50 MB + 100 KB x 3 node proxies + 50 KB x
    # 4 hosts.
    assert ops.control_plane_pods == 1
    assert ops.control_plane_cores == 1.0
    assert ops.control_plane_memory_bytes == 50e6 + 3 * 100e3 + 4 * 50e3
    # A DaemonSet rollout: one proxy per node (3), no app pod restarts.
    assert ops.rollout == "daemonset"
    assert (ops.proxies, ops.proxy_restarts, ops.app_restarts, ops.app_rebuilds) == (3, 3, 0, 0)


def test_traefik_annotations_are_lines_on_the_service():
    s = spec("rate-limit-traefik")
    topology = s.resolve_topology()
    ops = operations(topology, s.mesh.resolve(), list(s.policies))
    expected = {
        (w.host_name, key)
        for w in topology.call_graph.services
        for key in w.annotations
        if key.startswith("mesh.traefik.io/")
    }
    assert expected  # the spec rate-limits with annotations
    assert ops.annotations == len(expected)
    assert ops.yaml_lines == sum(
        yaml_lines(p.model_dump(mode="json", by_alias=True, exclude_unset=True)) for p in s.policies
    ) + len(expected)


@pytest.mark.parametrize(
    ("mesh", "rollout", "upgrade"),
    [
        # ambient, L4 only: a ztunnel per node (3), no waypoint, no app restart.
        ("istio-ambient", "ambient", (3, 3, 0, 0)),
        # ambient with a waypoint for every host (4 hosts, 1 replica each): 3 + 4.
        ("{profile: istio-ambient, overrides: {waypoints: all}}", "ambient", (7, 7, 0, 0)),
        # proxyless: 6 xDS clients in the apps, 6 pods restart, 6 images rebuilt.
        ("proxyless-grpc", "library", (6, 0, 6, 6)),
        ("none", "none", (0, 0, 0, 0)),
    ],
)
def test_roll_outs_per_architecture(mesh, rollout, upgrade):
    s = spec("bookinfo-istio", f"mesh={mesh}")
    ops = operations(s.resolve_topology(), s.mesh.resolve(), list(s.policies))
    assert ops.rollout == rollout
    assert (ops.proxies, ops.proxy_restarts, ops.app_restarts, ops.app_rebuilds) == upgrade


def test_a_run_carries_the_counts_and_they_survive_a_round_trip():
    result = run_experiment(spec("canary-smi", "duration=2s", "warmup=0.5s"))
    assert result.operations == counted("canary-smi")
    again = RunResult.model_validate_json(result.model_dump_json())
    assert again.operations == result.operations
