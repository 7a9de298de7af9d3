"""The shipped failure experiments show what their comments say: each test runs the spec and
a variant without the policy (or under another mesh) and checks the one difference the spec
is for. The windows of every shipped spec summing to its totals is
tests/experiments/test_shipped_specs.py's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from experiments.runner import run_experiment
from experiments.spec import spec_from_dict
from experiments.specs import shipped_specs

SPECS = {p.stem: p for p in shipped_specs()}


def data_of(name: str) -> dict[str, Any]:
    path: Path = SPECS[name]
    data: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    return data


def fault_of(data: dict[str, Any]) -> Any:
    result = run_experiment(spec_from_dict(data))
    (fault,) = result.faults or []
    return fault


def since_loss(fault: Any) -> float:
    """From the node's loss to traffic whole again (seconds; inf if not by the run's end)."""
    if fault.recovered_at_s is None:
        return float("inf")
    return float(fault.recovered_at_s - fault.start_s)


def test_the_failure_specs_are_shipped():
    for name in ("node-failure", "node-failure-maesh", "node-failure-ambient"):
        assert name in SPECS


def test_outlier_detection_makes_traffic_whole_within_seconds_not_at_endpoint_removal():
    data = data_of("node-failure")
    ejected = fault_of(data)
    data["policies"] = [p for p in data["policies"] if p["kind"] != "DestinationRule"]
    waited = fault_of(data)
    # Ejection within a second or two; without it, Kubernetes' 40 s node grace period.
    assert ejected.disturbed and since_loss(ejected) <= 2.0
    assert waited.failed > ejected.failed
    assert since_loss(waited) >= 40.0


def test_per_architecture_the_errors_start_at_their_connect_timeouts():
    # Istio's sidecars retry and eject: next to nothing lost (a request whose two tries both
    # meet the lost node fails; 1 of about 2,900 in this run). Traefik's node proxies fail new
    # connections after their 30 s dial timeout, and the requests on their open keep-alive
    # connections hang. Ambient's ztunnels carry everything on an open HTTP/2 (HBONE)
    # connection: its streams hang, no error at all (no timeout; HTTP/2 keep-alive pings,
    # which would close the dead connection, are not modelled).
    sidecar = fault_of(data_of("node-failure"))
    ambient = fault_of(data_of("node-failure-ambient"))
    maesh = fault_of(data_of("node-failure-maesh"))
    assert sidecar.share_lost < 0.002 and sidecar.saved_by_retries > 10 * sidecar.failed
    assert sidecar.requests_stuck == 0
    assert maesh.time_to_errors_s == 30.0 and maesh.share_lost > 0.1
    assert maesh.requests_stuck > 100
    assert ambient.failed == 0 and ambient.requests_stuck > 100
    assert ambient.disturbed and ambient.recovered_at_s is None
    assert since_loss(maesh) == float("inf")


def no_retries(host: str) -> dict[str, Any]:
    """A VirtualService for ``host`` that retries nothing (``retries: {attempts: 0}``)."""
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": host},
        "spec": {
            "hosts": [host],
            "http": [{"route": [{"destination": {"host": host}}], "retries": {"attempts": 0}}],
        },
    }


def test_istios_default_retries_hide_a_crashed_pod_until_its_endpoint_leaves():
    data = data_of("pod-crash")
    retried = fault_of(data)
    data["policies"] = [no_retries("api"), no_retries("web")]
    bare = fault_of(data)
    # The refused connects to api-1 are retried on another pod: nothing is lost.
    assert retried.failed == 0 and retried.saved_by_retries > 50
    # Without retries a third of the calls fail from the crash until the endpoint leaves.
    assert bare.failed > 50 and bare.time_to_errors_s == 0.0
    assert bare.saved_by_retries == 0


def test_a_slow_pod_fills_the_pools_above_it_unless_its_callers_time_out_and_eject_it():
    open_pools = fault_of(data_of("cascading-failure"))
    guarded = fault_of(data_of("cascading-failure-guarded"))
    # Unguarded, the entry fails though only pricing-0 is slow: frontend's pools overflow.
    assert open_pools.failed > 100 and "frontend" in open_pools.services_hurt
    assert open_pools.recovered_at_s is not None and open_pools.recovered_at_s > 15.0
    # Guarded, pricing's callers time its tries out and eject it: nothing fails upstream.
    assert guarded.failed == 0 and not guarded.services_hurt
    assert guarded.recovered_during_fault and since_loss(guarded) <= 2.0


def deploy_run(name: str) -> Any:
    return run_experiment(spec_from_dict(data_of(name)))


def test_a_rolling_deploy_without_drain_refuses_connections_until_each_push_and_a_drain_not():
    abrupt = deploy_run("rolling-deploy")
    drained = deploy_run("rolling-deploy-drain")
    assert abrupt.control_plane is not None and drained.control_plane is not None
    assert abrupt.timeseries is not None and drained.timeseries is not None
    # Without drain, web's sidecars connect to each old pod after it left until istiod's push
    # lands; the retry finds another pod of the stale list alive (one pod replaced at a time).
    assert abrupt.control_plane.stale_connect_failures > 0
    assert abrupt.control_plane.stale_failures == 0
    assert sum(abrupt.timeseries.services["web"].errors) == 0
    # With Istio's 5 s drain the old pods answer until every sidecar has the new list.
    assert drained.control_plane.stale_connect_failures == 0
    assert drained.control_plane.retries == 0


def test_without_retries_each_step_of_the_roll_fails_calls_in_its_own_window():
    data = data_of("rolling-deploy")
    data["policies"] = [no_retries("api"), no_retries("web")]
    bare = run_experiment(spec_from_dict(data))
    assert bare.timeseries is not None and bare.control_plane is not None
    web = bare.timeseries.services["web"]
    failing = [bare.timeseries.starts_s[i] for i, errors in enumerate(web.errors) if errors]
    # One window per step: a new pod ready and an old one gone at 12, 14 and 16 s.
    assert failing == [12.0, 14.0, 16.0]
    assert sum(web.errors) == bare.control_plane.stale_connect_failures > 0


def test_outlier_detection_keeps_a_partitioned_zones_traffic_at_home():
    data = data_of("zone-partition")
    ejected = fault_of(data)
    data["policies"] = [p for p in data["policies"] if p["kind"] != "DestinationRule"]
    timed_out = fault_of(data)
    # The zone-a callers eject zone-b's pods within two seconds; next to nothing is lost (a
    # request whose three tries all went into the cut before the ejection can fail: 1 here).
    assert ejected.failed <= 0.02 * timed_out.failed and ejected.recovered_during_fault
    assert since_loss(ejected) <= 2.0
    # Without ejection half of the tries go on into the cut until it heals.
    assert timed_out.failed > 50
    assert timed_out.recovered_at_s is not None and timed_out.recovered_at_s >= 25.0
