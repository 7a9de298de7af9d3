"""Requests carry a method, a path and headers; pods carry their identity; workloads draw
their requests from a weighted mix."""

from __future__ import annotations

import math
from collections import Counter
from types import MappingProxyType

import pytest
from pydantic import ValidationError

from experiments.runner import build_simulation
from experiments.spec import SpecError, spec_from_dict
from models.messages import NO_HEADERS, Request
from models.no_mesh import NoMeshSpec
from models.service import Call, ClientPod, ServicePod, Visit
from models.simulation import Simulation
from models.workload import ClosedLoopSpec, OpenLoopSpec, RequestMixEntry
from topologies import CallSpec, bookinfo


def test_a_request_is_still_built_positionally_with_get_slash_and_no_headers():
    trace: list = []
    request = Request("details", 100, 200, "http2", 1.5, trace)
    assert (request.host, request.size_bytes, request.response_size_bytes) == ("details", 100, 200)
    assert (request.protocol, request.start_s, request.trace) == ("http2", 1.5, trace)
    assert (request.method, request.path) == ("GET", "/")
    assert request.headers is NO_HEADERS
    assert isinstance(NO_HEADERS, MappingProxyType) and len(NO_HEADERS) == 0
    short = Request("details", 1, 2, "http1", 0.0)
    assert short.trace is None and short.headers is NO_HEADERS
    full = Request("a", 1, 2, "http1", 0.0, None, "POST", "/x", MappingProxyType({"k": "v"}))
    assert (full.method, full.path, dict(full.headers)) == ("POST", "/x", {"k": "v"})
    with pytest.raises(AttributeError):  # slots: no stray attributes on the hot path
        short.extra = 1  # type: ignore[attr-defined]


def test_a_call_inherits_the_incoming_headers_and_sets_its_own_method_and_path():
    headers = MappingProxyType({"end-user": "jason", "x-request-id": "abc"})
    trace: list = []
    incoming = Request("productpage", 1, 2, "http1", 0.0, trace, "GET", "/productpage", headers)
    call = Call("reviews", 1.0, 10, 20, "http2", "POST", "/reviews/0")
    out = call.request(2.5, incoming)
    assert out.headers is headers  # the same mapping, not a copy
    assert out.trace is trace
    assert (out.host, out.method, out.path, out.start_s) == ("reviews", "POST", "/reviews/0", 2.5)
    assert (out.size_bytes, out.response_size_bytes, out.protocol) == (10, 20, "http2")


def _served(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[Request]]:
    """Record the requests each workload's pods serve: every mesh hands a request to a pod
    as a Visit (or a subclass of it), whose constructor is wrapped here."""
    seen: dict[str, list[Request]] = {}
    init = Visit.__init__

    def record(self, pod, request, parent):
        seen.setdefault(pod.spec.name, []).append(request)
        init(self, pod, request, parent)

    monkeypatch.setattr(Visit, "__init__", record)
    return seen


@pytest.mark.parametrize("mesh", ["none", "istio-1.8", "maesh", "istio-ambient"])
def test_bookinfo_routes_and_propagated_headers_through_each_mesh(mesh, monkeypatch):
    spec = spec_from_dict(
        {
            "topology": "bookinfo",
            "mesh": mesh,
            "workload": {
                "kind": "closed_loop",
                "connections": 2,
                "qps": 200,
                "requests": [
                    {"path": "/productpage", "headers": {"End-User": "jason"}},
                    {"path": "/productpage", "weight": 3},
                ],
            },
            "duration": 1.0,
            "warmup": 0,
            "seed": 3,
        }
    )
    sim = build_simulation(spec)
    seen = _served(monkeypatch)
    sim.run()
    entry = seen["productpage"]
    assert len(entry) > 100
    assert {(r.method, r.path) for r in entry} == {("GET", "/productpage")}
    jason = [r for r in entry if r.headers]
    assert 0 < len(jason) < len(entry)
    assert all(dict(r.headers) == {"end-user": "jason"} for r in jason)
    shared = {id(r.headers) for r in jason}
    assert len(shared) == 1  # one mapping per mix entry, shared by its requests
    assert {(r.method, r.path) for r in seen["details"]} == {("GET", "/details/0")}
    reviews = seen["reviews-v1"] + seen["reviews-v2"] + seen["reviews-v3"]
    assert {(r.method, r.path) for r in reviews} == {("GET", "/reviews/0")}
    assert {(r.method, r.path) for r in seen["ratings"]} == {("GET", "/ratings/0")}
    # Every hop forwards its caller's headers, the very same object.
    for name in ("details", "ratings"):
        ids = {id(r.headers) for r in seen[name] if r.headers}
        assert ids == shared
    assert any(r.headers is NO_HEADERS for r in seen["ratings"])


def test_a_bookinfo_pod_and_the_load_generator_have_their_identities():
    sim = Simulation(bookinfo(), NoMeshSpec(), OpenLoopSpec(rate_rps=1), seed=1, duration_s=1.0)
    pod = next(p for p in sim.pods if p.spec.name == "reviews-v2")
    assert isinstance(pod, ServicePod)
    assert pod.name == "reviews-v2-0"
    assert pod.workload == "reviews-v2"
    assert pod.namespace == "default"
    assert pod.service_account == "bookinfo-reviews"
    assert pod.principal == "cluster.local/ns/default/sa/bookinfo-reviews"
    assert dict(pod.labels) == {"app": "reviews", "version": "v2"}
    with pytest.raises(TypeError):  # shared by the workload's pods: read-only
        pod.labels["app"] = "x"  # type: ignore[index]
    product = next(p for p in sim.pods if p.spec.name == "productpage")
    assert product.principal == "cluster.local/ns/default/sa/bookinfo-productpage"
    assert dict(product.labels) == {"app": "productpage", "version": "v1"}
    client = sim.client
    assert isinstance(client, ClientPod)
    assert (client.workload, client.namespace, client.service_account) == (
        "loadgen",
        "default",
        "loadgen",
    )
    assert client.principal == "cluster.local/ns/default/sa/loadgen"
    assert dict(client.labels) == {"app": "loadgen"}


def test_a_workloads_own_labels_namespace_and_account_reach_its_pods():
    topology = bookinfo()
    services = [
        s.model_copy(
            update={
                "labels": {"team": "books", "version": "canary"},
                "namespace": "shop",
                "service_account": None,
            }
        )
        if s.name == "details"
        else s
        for s in topology.call_graph.services
    ]
    graph = topology.call_graph.model_copy(update={"services": services})
    topology = topology.model_copy(update={"call_graph": graph})
    sim = Simulation(topology, NoMeshSpec(), OpenLoopSpec(rate_rps=1), seed=1, duration_s=1.0)
    pod = next(p for p in sim.pods if p.spec.name == "details")
    assert dict(pod.labels) == {"app": "details", "version": "canary", "team": "books"}
    assert pod.principal == "cluster.local/ns/shop/sa/default"  # Kubernetes' default account


def _mix_sim(requests: list[dict], seed: int = 7) -> Simulation:
    workload = ClosedLoopSpec(connections=1, qps=10, requests=requests)
    return Simulation(bookinfo(), NoMeshSpec(), workload, seed=seed, duration_s=1.0)


def test_the_workload_mix_shares_are_within_sampling_error():
    weights = [1.0, 2.0, 7.0]
    sim = _mix_sim(
        [
            {"weight": weights[0], "path": "/a"},
            {"weight": weights[1], "method": "POST", "path": "/b"},
            {"weight": weights[2], "path": "/c", "headers": {"end-user": "jason"}},
        ]
    )
    n = 20_000
    drawn = [sim.workload.new_request() for _ in range(n)]
    counts = Counter((r.method, r.path) for r in drawn)
    total = sum(weights)
    for key, weight in zip([("GET", "/a"), ("POST", "/b"), ("GET", "/c")], weights, strict=True):
        p = weight / total
        sigma = math.sqrt(n * p * (1 - p))
        assert abs(counts[key] - n * p) < 5 * sigma, (key, counts[key], n * p)
    headers = {id(r.headers) for r in drawn if r.path == "/c"}
    assert len(headers) == 1  # built once per entry
    assert all(r.headers is NO_HEADERS for r in drawn if r.path != "/c")
    assert "workload.requests" in sim.world.streams
    # Same seed, same sequence; the mix is drawn on its own stream.
    paths = ["/a", "/b", "/c"]
    again = _mix_sim([{"weight": w, "path": p} for w, p in zip(weights, paths, strict=True)])
    assert [r.path for r in drawn[:200]] == [again.workload.new_request().path for _ in range(200)]


@pytest.mark.parametrize(
    "requests",
    [[], [{"path": "/productpage", "headers": {"end-user": "jason"}}]],
    ids=["no mix", "one entry"],
)
def test_a_workload_without_a_choice_makes_no_mix_stream(requests):
    sim = _mix_sim(requests)
    drawn = [sim.workload.new_request() for _ in range(10)]
    assert "workload.requests" not in sim.world.streams
    if not requests:
        assert all((r.method, r.path, r.headers) == ("GET", "/", NO_HEADERS) for r in drawn)
    else:
        assert {(r.path, r.headers["end-user"]) for r in drawn} == {("/productpage", "jason")}
        assert len({id(r.headers) for r in drawn}) == 1


def test_header_names_are_lower_cased_and_weights_default_to_one():
    entry = RequestMixEntry(headers={"End-User": "jason", "X-B3-Sampled": "1"})
    assert entry.headers == {"end-user": "jason", "x-b3-sampled": "1"}
    assert (entry.weight, entry.method, entry.path) == (1.0, "GET", "/")
    assert CallSpec(service="x").method == "GET" and CallSpec(service="x").path == "/"


@pytest.mark.parametrize(
    ("entry", "where", "says"),
    [
        ({"headers": ["end-user", "jason"]}, "requests.0.headers", "valid dictionary"),
        ({"headers": "end-user: jason"}, "requests.0.headers", "valid dictionary"),
        ({"method": "get me"}, "requests.0.method", "pattern"),
        ({"path": "productpage"}, "requests.0.path", "pattern"),
        ({"path": "/" + "a" * 2048}, "requests.0.path", "at most 2048"),
        ({"weight": 0}, "requests.0.weight", "greater than 0"),
        ({"weight": "inf"}, "requests.0.weight", "finite"),
        ({"headers": {"A": "1", "a": "2"}}, "requests.0.headers", "given twice"),
        ({"headers": {"bad name": "1"}}, "requests.0.headers.bad name.[key]", "pattern"),
        ({"headers": {"x": "a\r\nb"}}, "requests.0.headers.x", "pattern"),
        ({"headers": {f"h{i}": "v" for i in range(33)}}, "requests.0.headers", "at most 32"),
        ({"hedaers": {}}, "requests.0.hedaers", "Extra inputs"),
    ],
)
def test_a_bad_request_mix_is_a_validation_error_naming_the_field(entry, where, says):
    with pytest.raises(ValidationError) as info:
        OpenLoopSpec(rate_rps=1, requests=[entry])
    errors = info.value.errors()
    assert len(errors) == 1
    assert ".".join(str(part) for part in errors[0]["loc"]) == where
    assert says in errors[0]["msg"]


def test_too_many_mix_entries_and_a_bad_mix_in_an_experiment_spec_are_refused():
    with pytest.raises(ValidationError, match="at most 1000"):
        ClosedLoopSpec(requests=[{}] * 1001)
    with pytest.raises(SpecError) as info:
        spec_from_dict(
            {
                "topology": "bookinfo",
                "mesh": "none",
                "workload": {
                    "kind": "open_loop",
                    "rate_rps": 10,
                    "requests": [{"method": "get me"}],
                },
                "duration": 1.0,
            }
        )
    assert str(info.value).startswith("workload.requests.0.method: String should match pattern")
