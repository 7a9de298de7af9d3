"""Bookinfo's routes and identities as in Istio's samples, and the new fields of a service
and a call (labels, annotations, service account, method, path) with their validation."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from topologies import (
    CallGraphSpec,
    CallSpec,
    ServiceSpec,
    bookinfo,
    load_topology,
    save_topology,
    topology_from_dict,
)

# samples/bookinfo/platform/kube/bookinfo.yaml: the deployments' labels and service accounts.
ISTIO_BOOKINFO = {
    "productpage": ("productpage", "v1", "bookinfo-productpage"),
    "details": ("details", "v1", "bookinfo-details"),
    "reviews-v1": ("reviews", "v1", "bookinfo-reviews"),
    "reviews-v2": ("reviews", "v2", "bookinfo-reviews"),
    "reviews-v3": ("reviews", "v3", "bookinfo-reviews"),
    "ratings": ("ratings", "v1", "bookinfo-ratings"),
}


def _calls(svc: ServiceSpec) -> list[tuple[str, str, str]]:
    return [(c.service, c.method, c.path) for step in svc.steps for c in step.calls]


def test_bookinfo_calls_istios_routes():
    graph = bookinfo().call_graph
    assert graph.entry == "productpage"
    assert _calls(graph.service("productpage")) == [
        ("details", "GET", "/details/0"),
        ("reviews", "GET", "/reviews/0"),
    ]
    assert _calls(graph.service("reviews-v1")) == []
    for version in ("v2", "v3"):
        assert _calls(graph.service(f"reviews-{version}")) == [("ratings", "GET", "/ratings/0")]
    assert _calls(graph.service("details")) == _calls(graph.service("ratings")) == []


def test_bookinfo_identities_and_labels_are_istios():
    graph = bookinfo().call_graph
    assert sorted(s.name for s in graph.services) == sorted(ISTIO_BOOKINFO)
    for name, (app, version, account) in ISTIO_BOOKINFO.items():
        svc = graph.service(name)
        assert svc.host_name == app
        assert dict(svc.pod_labels()) == {"app": app, "version": version}
        assert svc.service_account == account
        assert svc.principal == f"cluster.local/ns/default/sa/{account}"
    assert [s.name for s in graph.workloads_of("reviews")] == [
        "reviews-v1",
        "reviews-v2",
        "reviews-v3",
    ]


def test_bookinfo_timings_and_sizes_are_unchanged():
    """Published results depend on them: the values of the catalog before routes came."""
    graph = bookinfo().call_graph
    expected = {
        "productpage": (0.002, 1024, 5120),
        "details": (0.001, 1024, 2048),
        "reviews-v1": (0.0015, 1024, 3072),
        "ratings": (0.0005, 1024, 1024),
    }
    for name, (mean, request, response) in expected.items():
        svc = graph.service(name)
        assert svc.service_time.kind == "exponential" and svc.service_time.mean() == mean
        assert (svc.request_size_bytes, svc.response_size_bytes) == (request, response)
        assert (svc.workers, svc.replicas, svc.protocol) == (4, 1, "http1")
        assert svc.misbehaviour is None and svc.annotations == {} and svc.labels == {}


def test_the_new_fields_round_trip_through_yaml(tmp_path):
    data = bookinfo().model_dump(mode="json")
    reviews = next(s for s in data["call_graph"]["services"] if s["name"] == "reviews-v3")
    reviews["labels"] = {"app.kubernetes.io/part-of": "bookinfo", "track": ""}
    reviews["annotations"] = {"mesh.traefik.io/retry-attempts": "2"}
    reviews["misbehaviour"] = {"error_ratio": 0.2, "extra_latency": "5ms"}
    reviews["steps"][0]["calls"][0]["method"] = "POST"
    topology = topology_from_dict(data)
    path = tmp_path / "bookinfo.yaml"
    save_topology(topology, path)
    again = load_topology(path)
    assert again == topology
    svc = again.call_graph.service("reviews-v3")
    assert svc.annotations == {"mesh.traefik.io/retry-attempts": "2"}
    assert svc.misbehaviour is not None and svc.misbehaviour.extra_latency.mean() == 0.005
    assert dict(svc.pod_labels())["track"] == ""
    assert svc.steps[0].calls[0].method == "POST"


def test_a_workloads_labels_win_over_app_and_version():
    svc = ServiceSpec(name="reviews-v2", host="reviews", version="v2", labels={"version": "x"})
    assert dict(svc.pod_labels()) == {"app": "reviews", "version": "x"}
    assert svc.pod_labels() == svc.pod_labels()
    assert ServiceSpec(name="a").service_account is None
    assert ServiceSpec(name="a").service_account_name == "default"


@pytest.mark.parametrize(
    ("fields", "where", "says"),
    [
        ({"labels": {"app": "x" * 64}}, "labels.app", "at most 63"),
        ({"labels": {"bad key!": "x"}}, "labels.bad key!.[key]", "pattern"),
        ({"labels": {"-app": "x"}}, "labels.-app.[key]", "pattern"),
        ({"labels": {"app": "no spaces"}}, "labels.app", "pattern"),
        ({"labels": {"app": 3}}, "labels.app", "valid string"),
        ({"labels": ["app=x"]}, "labels", "valid dictionary"),
        ({"labels": {f"k{i}": "v" for i in range(65)}}, "labels", "at most 64"),
        (
            {"annotations": {f"a{i}": "v" for i in range(10_000)}},
            "annotations",
            "at most 64",
        ),
        ({"annotations": {"a": "v" * 4097}}, "annotations.a", "at most 4096"),
        ({"annotations": {"": "v"}}, "annotations..[key]", "at least 1"),
        ({"annotations": {"a": 2}}, "annotations.a", "valid string"),
        ({"service_account": "Bookinfo_Reviews"}, "service_account", "pattern"),
        ({"service_account": "a" * 254}, "service_account", "at most 253"),
    ],
)
def test_bad_service_fields_are_validation_errors_naming_the_field(fields, where, says):
    with pytest.raises(ValidationError) as info:
        ServiceSpec(name="reviews-v3", **fields)
    errors = info.value.errors()
    assert len(errors) == 1
    assert ".".join(str(part) for part in errors[0]["loc"]) == where
    assert says in errors[0]["msg"]


@pytest.mark.parametrize(
    ("fields", "where", "says"),
    [
        ({"method": "get me"}, "method", "pattern"),
        ({"method": "get"}, "method", "pattern"),
        ({"method": "G" * 33}, "method", "at most 32"),
        ({"path": "ratings/0"}, "path", "pattern"),
        ({"path": "/ratings/ 0"}, "path", "pattern"),
        ({"path": "/" + "a" * 2048}, "path", "at most 2048"),
    ],
)
def test_bad_call_fields_are_validation_errors_naming_the_field(fields, where, says):
    with pytest.raises(ValidationError) as info:
        CallSpec(service="ratings", **fields)
    errors = info.value.errors()
    assert len(errors) == 1
    assert ".".join(str(part) for part in errors[0]["loc"]) == where
    assert says in errors[0]["msg"]


def test_a_call_graph_error_points_into_the_service():
    with pytest.raises(ValidationError) as info:
        CallGraphSpec(
            services=[
                {"name": "a", "steps": [{"calls": [{"service": "b", "method": "get me"}]}]},
                {"name": "b", "misbehaviour": {"error_ratio": 0.6, "hang_ratio": 0.6}},
            ],
            entry="a",
        )
    where = sorted(".".join(str(p) for p in e["loc"]) for e in info.value.errors())
    assert where == ["services.0.steps.0.calls.0.method", "services.1.misbehaviour"]
    assert "error_ratio + hang_ratio must be at most 1" in str(info.value)
