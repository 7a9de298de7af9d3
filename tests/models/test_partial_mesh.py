"""Partial meshes: Istio's injection and ambient enrollment rules, PeerAuthentication, and the
exact traces of calls between pods in and out of the mesh.

The traces reuse the set-up of ``test_hop_traces``: a load generator (``loadgen-0``, in
namespace ``default``, on ``node-0``) calls ``srv`` (one replica, on ``node-1``) ten times at
10 qps, every delay a constant, so each request's spans can be written down by hand.
"""

from __future__ import annotations

from typing import Any

import pytest

from experiments.spec import spec_from_dict
from models.ambient import EnrollmentSpec, enrolled, use_waypoint
from models.policies import PeerAuthentication, peer_authentication_mode
from models.sidecar import InjectionSpec, injected
from models.simulation import Simulation
from tests.models.test_hop_traces import (
    APP,
    CLIENT,
    PROXY,
    QPS,
    REQUEST_BYTES,
    RESPONSE_BYTES,
    SAME_ZONE_S,
    SERVER,
    SERVICE_S,
    STATS_AFTER,
    ZTUNNEL,
    Place,
    check_run,
    net,
    proxied_path,
    proxy_cpu,
    spec_dict,
)

SERVER_SIDECAR = "node-1.srv-0.sidecar"
CLIENT_SIDECAR = "node-0.loadgen-0.sidecar"
HANDSHAKES = {"tcp_handshake", "tls_handshake"}


def peer_auth(mode: str, namespace: str = "prod", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "security.istio.io/v1beta1",
        "kind": "PeerAuthentication",
        "metadata": {"name": "default", "namespace": namespace},
        "spec": {"mtls": {"mode": mode}, **spec},
    }


def partial(
    mesh: dict[str, Any],
    namespaces: dict[str, dict[str, str]],
    server_namespace: str = "prod",
    server_labels: dict[str, str] | None = None,
    server_annotations: dict[str, str] | None = None,
    policies: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    data = spec_dict(mesh)
    data["topology"]["namespaces"] = {n: {"labels": labels} for n, labels in namespaces.items()}
    service = data["topology"]["call_graph"]["services"][0]
    service["namespace"] = server_namespace
    if server_labels:
        service["labels"] = server_labels
    if server_annotations:
        service["annotations"] = server_annotations
    if policies:
        data["policies"] = policies
    return data


def simulate(data: dict[str, Any]) -> tuple[Simulation, Any]:
    spec = spec_from_dict(data)
    sim = Simulation(
        spec.resolve_topology(),
        spec.mesh.resolve(),
        spec.workload,
        seed=3,
        duration_s=spec.duration,
        warmup_s=spec.warmup,
        client_node=spec.client_node,
        trace_every=spec.trace_every,
        policies=spec.policies,
    )
    return sim, sim.run()


def cpu_by_proxy(out: Any) -> dict[str, float]:
    return {p.scope: p.cpu_s for p in out.proxies if p.cpu_s > 0.0}


SIDECAR = {"architecture": "sidecar", "proxy": PROXY}
OUTSIDE_DEFAULT = {"default": {"istio-injection": "disabled"}}  # the load generator's


# --- Istio's injector, rule by rule ------------------------------------------------------------


@pytest.mark.parametrize(
    ("namespace", "ns_labels", "labels", "annotations", "settings", "expected"),
    [
        # Namespace label: enabled injects, disabled never does (not even a pod saying true).
        ("prod", {"istio-injection": "enabled"}, {}, {}, {}, True),
        ("prod", {"istio-injection": "disabled"}, {}, {}, {}, False),
        (
            "prod",
            {"istio-injection": "disabled"},
            {"sidecar.istio.io/inject": "true"},
            {},
            {},
            False,
        ),
        # A pod opts out by label or, when it has no label, by annotation; the label wins.
        (
            "prod",
            {"istio-injection": "enabled"},
            {"sidecar.istio.io/inject": "false"},
            {},
            {},
            False,
        ),
        (
            "prod",
            {"istio-injection": "enabled"},
            {},
            {"sidecar.istio.io/inject": "false"},
            {},
            False,
        ),
        (
            "prod",
            {"istio-injection": "enabled"},
            {"sidecar.istio.io/inject": "true"},
            {"sidecar.istio.io/inject": "false"},
            {},
            True,
        ),
        # An unlabelled namespace: only enableNamespacesByDefault injects (on here, off in
        # Istio), or a pod labelled true (an annotation alone is not seen by the webhook).
        ("prod", {}, {}, {}, {}, True),
        ("prod", {}, {}, {}, {"enable_namespaces_by_default": False}, False),
        (
            "prod",
            {},
            {"sidecar.istio.io/inject": "true"},
            {},
            {"enable_namespaces_by_default": False},
            True,
        ),
        (
            "prod",
            {},
            {},
            {"sidecar.istio.io/inject": "true"},
            {"enable_namespaces_by_default": False},
            False,
        ),
        ("prod", {}, {"sidecar.istio.io/inject": "false"}, {}, {}, False),
        # Revisions: istio.io/rev on the namespace or the pod selects a control plane.
        (
            "prod",
            {"istio.io/rev": "default"},
            {},
            {},
            {"enable_namespaces_by_default": False},
            True,
        ),
        ("prod", {"istio.io/rev": "canary"}, {}, {}, {}, False),
        ("prod", {"istio.io/rev": "canary"}, {}, {}, {"revision": "canary"}, True),
        ("prod", {"istio-injection": "enabled"}, {}, {}, {"revision": "canary"}, False),
        ("prod", {}, {"istio.io/rev": "canary"}, {}, {"revision": "canary"}, True),
        # The injector's policy: disabled injects only pods that say true.
        ("prod", {"istio-injection": "enabled"}, {}, {}, {"policy": "disabled"}, False),
        (
            "prod",
            {"istio-injection": "enabled"},
            {},
            {"sidecar.istio.io/inject": "true"},
            {"policy": "disabled"},
            True,
        ),
        # A value other than true or false falls back to the policy.
        ("prod", {"istio-injection": "enabled"}, {}, {"sidecar.istio.io/inject": "yes"}, {}, True),
        # System namespaces are never injected.
        ("kube-system", {"istio-injection": "enabled"}, {}, {}, {}, False),
        ("kube-system", {}, {}, {}, {}, False),
    ],
)
def test_injection_follows_istios_webhook(
    namespace, ns_labels, labels, annotations, settings, expected
):
    assert (
        injected(InjectionSpec(**settings), namespace, ns_labels, labels, annotations) is expected
    )


@pytest.mark.parametrize(
    ("ns_labels", "labels", "by_default", "expected"),
    [
        ({"istio.io/dataplane-mode": "ambient"}, {}, False, True),
        ({"istio.io/dataplane-mode": "ambient"}, {"istio.io/dataplane-mode": "none"}, False, False),
        ({}, {"istio.io/dataplane-mode": "ambient"}, False, True),
        ({}, {}, False, False),
        ({}, {}, True, True),
        ({}, {"istio.io/dataplane-mode": "none"}, True, False),
        ({"istio.io/dataplane-mode": "none"}, {}, True, False),
    ],
)
def test_ambient_enrollment_follows_the_cni_selectors(ns_labels, labels, by_default, expected):
    spec = EnrollmentSpec(namespaces_by_default=by_default)
    assert enrolled(spec, ns_labels, labels) is expected


def test_use_waypoint_service_then_namespace():
    ns = {"istio.io/use-waypoint": "waypoint"}
    assert use_waypoint({}, "prod", ns) == ("prod", "waypoint")
    assert use_waypoint({"istio.io/use-waypoint": "mine"}, "prod", ns) == ("prod", "mine")
    assert use_waypoint({"istio.io/use-waypoint": "none"}, "prod", ns) is None
    shared = {"istio.io/use-waypoint": "wp", "istio.io/use-waypoint-namespace": "infra"}
    assert use_waypoint(shared, "prod", {}) == ("infra", "wp")
    assert use_waypoint({}, "prod", {}) is None


def test_peer_authentication_precedence():
    def pa(namespace: str, mode: str, selector: dict[str, str] | None = None) -> PeerAuthentication:
        spec: dict[str, Any] = {"mtls": {"mode": mode}}
        if selector is not None:
            spec["selector"] = {"matchLabels": selector}
        return PeerAuthentication.model_validate(
            {
                "metadata": {"name": f"{namespace}-{mode.lower()}", "namespace": namespace},
                "spec": spec,
            }
        )

    mesh = pa("istio-system", "STRICT")
    space = pa("prod", "PERMISSIVE")
    workload = pa("prod", "DISABLE", {"app": "srv"})
    labels = {"app": "srv"}
    assert peer_authentication_mode([], "prod", labels, "STRICT") == "STRICT"
    assert peer_authentication_mode([mesh], "prod", labels, "PERMISSIVE") == "STRICT"
    assert peer_authentication_mode([mesh, space], "prod", labels, "STRICT") == "PERMISSIVE"
    assert peer_authentication_mode([mesh, space, workload], "prod", labels, "STRICT") == "DISABLE"
    # The workload policy selects in its own namespace only; UNSET inherits.
    assert peer_authentication_mode([workload], "other", labels, "STRICT") == "STRICT"
    assert peer_authentication_mode([mesh, pa("prod", "UNSET")], "prod", labels, "x") == "STRICT"


# --- an unmeshed client and a meshed server --------------------------------------------------


def test_unmeshed_client_to_permissive_server_is_plaintext():
    """The client has no sidecar: kube-proxy's pick, the network, then the server's inbound
    listener alone, without the ``tls`` filter; no connection set-up is modelled for a plain
    client, so the first request is like the others, and no handshake anywhere."""
    data = partial(SIDECAR, OUTSIDE_DEFAULT, policies=[peer_auth("PERMISSIVE")])
    sim, out = simulate(data)
    assert sorted(sim.mesh.sidecars) == ["srv-0"]  # type: ignore[attr-defined]
    server = [Place("sidecar", SERVER_SIDECAR, "node-1", True, False)]
    path = proxied_path(server, first=False)
    check_run(out, path, path)
    assert not HANDSHAKES & {s.kind for t in out.recorder.traces for s in t}
    # Only the server's inbound listener costs, without TLS, each way (and its stats after).
    per_request = (
        proxy_cpu("request", REQUEST_BYTES, True, False)
        + proxy_cpu("response", RESPONSE_BYTES, True, False)
        + STATS_AFTER
    )
    cpu = cpu_by_proxy(out)
    assert list(cpu) == [SERVER_SIDECAR]
    assert cpu[SERVER_SIDECAR] == pytest.approx(10 * per_request)
    assert out.workload.status_codes == {200: 10}


def test_unmeshed_client_to_strict_server_is_reset():
    """A STRICT sidecar has no plaintext filter chain: it closes the connection as it
    accepts it. The client, with no proxy, sees a reset (a 503 without a flag here) one
    transfer there and one back after it sent; the app never sees the request."""
    data = partial(SIDECAR, OUTSIDE_DEFAULT, policies=[peer_auth("STRICT")])
    sim, out = simulate(data)
    assert out.workload.status_codes == {503: 10}
    assert out.extras["data_plane"]["plaintext_refused"] == 10
    assert out.services["srv"].count == 0
    assert sim.mesh.sidecars["srv-0"].requests == 0  # type: ignore[attr-defined]
    there, back = net(SAME_ZONE_S, REQUEST_BYTES), SAME_ZONE_S
    for i, trace in enumerate(out.recorder.traces):
        assert [(s.kind, s.scope, s.ok) for s in trace] == [
            ("network", CLIENT, True),
            ("network", SERVER, False),
        ]
        assert trace[0].start_s == pytest.approx(i / QPS, abs=1e-12)
        assert trace[0].end_s - trace[0].start_s == pytest.approx(there, rel=1e-9)
        assert trace[1].end_s - trace[1].start_s == pytest.approx(back, rel=1e-9)
    assert out.workload.latency.max == pytest.approx(there + back, rel=1e-9)
    assert out.workload.latency.min == pytest.approx(there + back, rel=1e-9)


def test_mesh_wide_default_decides_without_a_policy():
    # The mesh's own mtls_mode is the mode where no PeerAuthentication applies.
    strict = partial({**SIDECAR, "mtls_mode": "STRICT"}, OUTSIDE_DEFAULT)
    permissive = partial({**SIDECAR, "mtls_mode": "PERMISSIVE"}, OUTSIDE_DEFAULT)
    assert simulate(strict)[1].workload.status_codes == {503: 10}
    assert simulate(permissive)[1].workload.status_codes == {200: 10}
    # A root-namespace (mesh-wide) PeerAuthentication overrides it.
    root = partial(SIDECAR, OUTSIDE_DEFAULT, policies=[peer_auth("PERMISSIVE", "istio-system")])
    assert simulate(root)[1].workload.status_codes == {200: 10}


# --- a meshed client and a server without a sidecar --------------------------------------------


def client_only(first: bool) -> list:
    """The client's sidecar alone, plaintext (auto mTLS), connecting to the app itself: a TCP
    round trip on the first request, no TLS handshake."""
    place = Place("sidecar", CLIENT_SIDECAR, "node-0", True, False, "node-1", False)
    return proxied_path([place], first)


@pytest.mark.parametrize(
    ("namespaces", "labels", "annotations"),
    [
        ({"legacy": {"istio-injection": "disabled"}}, None, None),  # a namespace without
        ({}, {"sidecar.istio.io/inject": "false"}, None),  # a pod opted out by label
        ({"legacy": {"istio-injection": "enabled"}}, None, {"sidecar.istio.io/inject": "false"}),
    ],
)
def test_meshed_client_to_a_pod_without_sidecar(namespaces, labels, annotations):
    data = partial(SIDECAR, namespaces, "legacy", labels, annotations)
    sim, out = simulate(data)
    assert sorted(sim.mesh.sidecars) == ["loadgen-0"]  # type: ignore[attr-defined]
    check_run(out, client_only(True), client_only(False))
    assert "tls_handshake" not in {s.kind for t in out.recorder.traces for s in t}
    assert list(cpu_by_proxy(out)) == [CLIENT_SIDECAR]


def test_meshed_client_to_a_disabled_server_sends_plaintext():
    """PeerAuthentication DISABLE on a meshed server: auto mTLS sends it plaintext, so both
    listeners run without the ``tls`` filter and no TLS handshake is made."""
    data = partial(SIDECAR, {}, policies=[peer_auth("DISABLE")])
    _, out = simulate(data)
    places = [
        Place("sidecar", CLIENT_SIDECAR, "node-0", True, False, pooled_to="node-1"),
        Place("sidecar", SERVER_SIDECAR, "node-1", True, False),
    ]
    check_run(out, proxied_path(places, True), proxied_path(places, False))


def test_no_namespace_labelled_is_no_sidecar_at_all():
    """Istio's own default (namespaces are not injected unless labelled): nobody has a
    sidecar, and the call is the app-network-app of no mesh."""
    mesh = {**SIDECAR, "injection": {"enable_namespaces_by_default": False}}
    sim, out = simulate(partial(mesh, {}, policies=[peer_auth("PERMISSIVE")]))
    assert sim.mesh.sidecars == {}  # type: ignore[attr-defined]
    steady = [
        ("network", CLIENT, net(SAME_ZONE_S, REQUEST_BYTES)),
        ("app_cpu", APP, SERVICE_S),
        ("network", SERVER, net(SAME_ZONE_S, RESPONSE_BYTES)),
    ]
    check_run(out, steady, steady)


def test_full_mesh_with_peer_authentication_is_unchanged():
    """Every pod meshed: STRICT or PERMISSIVE, the same numbers as without any policy."""
    base = simulate(spec_dict(SIDECAR))[1]
    for mode in ("STRICT", "PERMISSIVE"):
        data = spec_dict(SIDECAR)
        data["policies"] = [peer_auth(mode, "default")]
        out = simulate(data)[1]
        assert out.workload.latency.max == base.workload.latency.max
        assert out.workload.latency.min == base.workload.latency.min
        assert cpu_by_proxy(out) == cpu_by_proxy(base)


# --- ambient ---------------------------------------------------------------------------------

AMBIENT = {"architecture": "ambient", "ztunnel": ZTUNNEL, "waypoint": PROXY}
OPT_IN = {"enrollment": {"namespaces_by_default": False}}


def test_ambient_opt_in_per_namespace_plain_client():
    """Only ``prod`` is enrolled (Istio's default: a namespace must be labelled): the load
    generator calls in plaintext, the server's ztunnel takes it (PERMISSIVE) on its inbound
    listener without TLS; the client's node's ztunnel carries nothing."""
    data = partial(
        {**AMBIENT, **OPT_IN},
        {"prod": {"istio.io/dataplane-mode": "ambient"}},
        policies=[peer_auth("PERMISSIVE")],
    )
    sim, out = simulate(data)
    assert sim.mesh.members.outside == {"loadgen-0"}  # type: ignore[attr-defined]
    place = [Place("ztunnel", "node-1.ztunnel", "node-1", False, False)]
    path = proxied_path(place, first=False)
    check_run(out, path, path)
    assert list(cpu_by_proxy(out)) == ["node-1.ztunnel"]


def test_ambient_strict_resets_a_plain_client():
    data = partial(
        {**AMBIENT, **OPT_IN},
        {"prod": {"istio.io/dataplane-mode": "ambient"}},
        policies=[peer_auth("STRICT")],
    )
    _, out = simulate(data)
    assert out.workload.status_codes == {503: 10}
    assert out.extras["data_plane"]["plaintext_refused"] == 10


@pytest.mark.parametrize(
    ("namespaces", "labels"),
    [
        ({"default": {"istio.io/dataplane-mode": "ambient"}}, None),  # prod is not enrolled
        (
            {
                "default": {"istio.io/dataplane-mode": "ambient"},
                "prod": {"istio.io/dataplane-mode": "ambient"},
            },
            {"istio.io/dataplane-mode": "none"},  # the pod opts out
        ),
    ],
)
def test_ambient_enrolled_client_to_a_pod_outside(namespaces, labels):
    """The client's ztunnel alone, in plaintext, straight to the app: a TCP round trip on
    the first request, no TLS handshake."""
    data = partial({**AMBIENT, **OPT_IN}, namespaces, server_labels=labels)
    _, out = simulate(data)
    place = Place("ztunnel", "node-0.ztunnel", "node-0", False, False, "node-1", False)
    check_run(out, proxied_path([place], True), proxied_path([place], False))


@pytest.mark.parametrize(
    ("namespaces", "labels", "expected"),
    [
        ({"prod": {"istio.io/use-waypoint": "waypoint"}}, None, "waypoint.prod"),
        ({}, {"istio.io/use-waypoint": "mine"}, "mine.prod"),
        ({"prod": {"istio.io/use-waypoint": "waypoint"}}, {"istio.io/use-waypoint": "none"}, None),
        ({}, None, None),
    ],
)
def test_ambient_waypoints_where_labels_say(namespaces, labels, expected):
    data = partial({**AMBIENT, "waypoints": "labels"}, namespaces, server_labels=labels)
    sim, out = simulate(data)
    waypoints = sim.mesh.waypoints  # type: ignore[attr-defined]
    if expected is None:
        assert waypoints == {}
        places = [
            Place("ztunnel", "node-0.ztunnel", "node-0", False, True, "node-1"),
            Place("ztunnel", "node-1.ztunnel", "node-1", False, True),
        ]
    else:
        (waypoint,) = waypoints["srv"]
        assert waypoint.name == f"{expected}-0"
        node = waypoint.node.name
        places = [
            Place("ztunnel", "node-0.ztunnel", "node-0", False, True, node),
            Place("waypoint", f"{node}.{expected}-0", node, True, True, "node-1"),
            Place("ztunnel", "node-1.ztunnel", "node-1", False, True),
        ]
    check_run(out, proxied_path(places, True), proxied_path(places, False))


# --- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policies", "mesh", "message"),
    [
        (
            [
                peer_auth("STRICT", "istio-system"),
                {
                    **peer_auth("PERMISSIVE", "istio-system"),
                    "metadata": {"name": "b", "namespace": "istio-system"},
                },
            ],
            SIDECAR,
            "policies.1.metadata.namespace: policies.0 is the mesh-wide PeerAuthentication",
        ),
        (
            [peer_auth("STRICT", portLevelMtls={"8080": {"mode": "DISABLE"}})],
            SIDECAR,
            "per-port mTLS is not modelled",
        ),
        (
            [peer_auth("STRICT")],
            {**SIDECAR, "mtls_mode": "DISABLE"},
            "policies.0.spec.mtls.mode: STRICT needs mTLS",
        ),
        ([peer_auth("BOTH")], SIDECAR, "policies.0"),
        (
            [peer_auth("STRICT")],
            {"architecture": "per_node", "proxy": PROXY},
            "PeerAuthentication is Istio's",
        ),
    ],
)
def test_bad_peer_authentication(policies, mesh, message):
    data = spec_dict(mesh)
    data["policies"] = policies
    with pytest.raises(ValueError, match=message.replace(".", r"\.").replace("(", r"\(")):
        spec_from_dict(data)


def test_bad_namespace_labels():
    data = spec_dict(SIDECAR)
    data["topology"]["namespaces"] = {"prod": {"labels": {"istio-injection": "not a value"}}}
    with pytest.raises(ValueError, match="namespaces"):
        spec_from_dict(data)


def test_a_plaintext_caller_has_no_identity():
    """Istio's ``principals: ["*"]`` means any authenticated caller: a plaintext one (no
    certificate, so no principal) is refused by the server's sidecar (403), a meshed one is
    let through."""
    allow_any = {
        "apiVersion": "security.istio.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": {"name": "authenticated", "namespace": "prod"},
        "spec": {"action": "ALLOW", "rules": [{"from": [{"source": {"principals": ["*"]}}]}]},
    }
    policies = [peer_auth("PERMISSIVE"), allow_any]
    plain = simulate(partial(SIDECAR, OUTSIDE_DEFAULT, policies=policies))[1]
    assert plain.workload.status_codes == {403: 10}
    meshed = simulate(partial(SIDECAR, {}, policies=policies))[1]
    assert meshed.workload.status_codes == {200: 10}


def test_workloads_of_one_service_agree_on_its_waypoint():
    data = spec_dict({**AMBIENT, "waypoints": "labels"})
    data["topology"]["placement"]["assignments"]["srv-v2-0"] = "node-1"
    services = data["topology"]["call_graph"]["services"]
    services[0]["labels"] = {"istio.io/use-waypoint": "a"}
    services.append(
        {**services[0], "name": "srv-v2", "host": "srv", "labels": {"istio.io/use-waypoint": "b"}}
    )
    message = "workloads 'srv' and 'srv-v2' of service 'srv' give label 'istio.io/use-waypoint'"
    with pytest.raises(ValueError, match=message.replace(".", r"\.")):
        spec_from_dict(data)


def test_a_proxy_crash_spares_a_pod_without_sidecar():
    """A pod without a sidecar has no proxy to crash: its calls go on (a meshed pod's
    sidecar crash takes the pod down: ``test_fault_targets``)."""
    crash = {"kind": "proxy_crash", "start": 0.3, "target": {"pod": "srv-0"}, "restart_delay": 0.5}
    data = partial(SIDECAR, {}, server_labels={"sidecar.istio.io/inject": "false"})
    data["faults"] = [crash]
    spec = spec_from_dict(data)
    sim = Simulation(
        spec.resolve_topology(),
        spec.mesh.resolve(),
        spec.workload,
        seed=3,
        duration_s=spec.duration,
        warmup_s=spec.warmup,
        faults=spec.faults,
    )
    out = sim.run()
    assert out.workload.status_codes == {200: 10}
    assert sim.pods[0].alive
