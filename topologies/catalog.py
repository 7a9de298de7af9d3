"""Ready-made topologies: Istio's bookinfo, synthetic chains, fan-out trees and random DAGs,
and a DeathStarBench-like social network.

Every function returns a validated :class:`TopologySpec` with a sensible default cluster;
:data:`CATALOG` names them and :func:`get_topology` builds one by name. Service times and sizes
are illustrative, chosen to be plausible, not measured.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import numpy as np
from pydantic import ValidationError, validate_call

from .callgraph import MAX_PODS, CallGraphSpec, ServiceSpec, StepSpec
from .cluster import ClusterSpec, flat_cluster, multi_zone_cluster
from .errors import TopologyError
from .placement import PlacementSpec
from .spec import TopologySpec

__all__ = [
    "CATALOG",
    "bookinfo",
    "chain",
    "fanout",
    "get_topology",
    "mesh_scale",
    "random_dag",
    "social_network",
]

_MAX_SERVICES = 10_000


def _exp(mean_s: float) -> dict[str, Any]:
    """An exponential service-time distribution with the given mean, in seconds."""
    return {"kind": "exponential", "mean": mean_s}


def bookinfo(cluster: ClusterSpec | None = None) -> TopologySpec:
    """Istio's bookinfo sample application.

    ``productpage`` (the entry) calls ``details``, then ``reviews`` (two sequential steps).
    ``reviews`` has three versions: ``reviews-v1`` calls nothing, ``reviews-v2`` and
    ``reviews-v3`` call ``ratings``. Each workload has one replica and 4 workers and speaks
    HTTP/1.1. Service times are exponential with illustrative means: productpage 2 ms, details
    1 ms, reviews 1.5 ms, ratings 0.5 ms.

    Routes and identities are Istio's (``samples/bookinfo``): productpage serves
    ``GET /productpage`` (what a workload should send; the workload is the experiment's, not
    the topology's) and calls ``GET /details/0`` and ``GET /reviews/0``
    (``productpage.py``, ``getProductDetails`` and ``getProductReviews`` with product id 0);
    reviews v2 and v3 call ``GET /ratings/0`` (``LibertyRestEndpoint.getRatings``). Each
    service runs under its own service account, ``bookinfo-<service>``, and its pods are
    labelled ``app: <service>`` and ``version: <version>`` (``platform/kube/bookinfo.yaml``),
    so the three versions of reviews are the subsets ``v1``, ``v2``, ``v3`` of host
    ``reviews``.

    Args:
        cluster: The cluster; ``None`` for ``flat_cluster(3)``.

    Returns:
        The topology, named ``bookinfo``.
    """
    common: dict[str, Any] = {"workers": 4, "protocol": "http1"}
    reviews_steps = [StepSpec(calls=[{"service": "ratings", "path": "/ratings/0"}])]
    services = [
        ServiceSpec(
            name="productpage",
            service_time=_exp(0.002),
            request_size_bytes="1KiB",
            response_size_bytes="5KiB",
            steps=[
                StepSpec(calls=[{"service": "details", "path": "/details/0"}]),
                StepSpec(calls=[{"service": "reviews", "path": "/reviews/0"}]),
            ],
            service_account="bookinfo-productpage",
            **common,
        ),
        ServiceSpec(
            name="details",
            service_time=_exp(0.001),
            response_size_bytes="2KiB",
            service_account="bookinfo-details",
            **common,
        ),
        *(
            ServiceSpec(
                name=f"reviews-{version}",
                host="reviews",
                version=version,
                service_time=_exp(0.0015),
                response_size_bytes="3KiB",
                steps=[] if version == "v1" else reviews_steps,
                service_account="bookinfo-reviews",
                **common,
            )
            for version in ("v1", "v2", "v3")
        ),
        ServiceSpec(
            name="ratings",
            service_time=_exp(0.0005),
            response_size_bytes="1KiB",
            service_account="bookinfo-ratings",
            **common,
        ),
    ]
    return TopologySpec(
        name="bookinfo",
        cluster=cluster if cluster is not None else flat_cluster(3),
        call_graph=CallGraphSpec(services=services, entry="productpage"),
    )


def chain(
    n: int = 3,
    service_time: Any = "1ms",
    workers: int = 1,
    cluster: ClusterSpec | None = None,
) -> TopologySpec:
    """A chain of services ``s0 -> s1 -> ... -> s{n-1}``, entry ``s0``.

    Args:
        n: Number of services, 1 to 10 000.
        service_time: CPU work per request of every service, in seconds: a distribution spec
            or mapping, a number, or a duration string such as ``"1ms"``.
        workers: Concurrent requests per pod, at least 1.
        cluster: The cluster; ``None`` for ``flat_cluster(3)``.

    Returns:
        The topology, named ``chain``.

    Raises:
        TopologyError: If ``n`` is not between 1 and 10 000.
    """
    if not 1 <= n <= _MAX_SERVICES:
        raise TopologyError(f"chain: n must be between 1 and {_MAX_SERVICES}, got {n}")
    services = [
        ServiceSpec(
            name=f"s{i}",
            service_time=service_time,
            workers=workers,
            steps=[StepSpec(calls=[{"service": f"s{i + 1}"}])] if i + 1 < n else [],
        )
        for i in range(n)
    ]
    return TopologySpec(
        name="chain",
        cluster=cluster if cluster is not None else flat_cluster(3),
        call_graph=CallGraphSpec(services=services, entry="s0"),
    )


def fanout(
    width: int = 3,
    depth: int = 2,
    service_time: Any = "1ms",
    workers: int = 1,
    cluster: ClusterSpec | None = None,
) -> TopologySpec:
    """A tree of services: each non-leaf calls its ``width`` children in one parallel step.

    Services are named ``t<level>-<index>``: the root (the entry) is ``t0-0``, its children
    ``t1-0`` .. ``t1-{width-1}``, and the children of ``t<l>-<i>`` are
    ``t<l+1>-<i*width>`` .. ``t<l+1>-<i*width+width-1>``.

    Args:
        width: Children per non-leaf service, at least 1.
        depth: Levels below the root, at least 0 (0 = the root alone).
        service_time: CPU work per request of every service, in seconds: a distribution spec
            or mapping, a number, or a duration string such as ``"1ms"``.
        workers: Concurrent requests per pod, at least 1.
        cluster: The cluster; ``None`` for ``flat_cluster(3)``.

    Returns:
        The topology, named ``fanout``.

    Raises:
        TopologyError: If ``width`` or ``depth`` is out of range or the tree would have more
            than 10 000 services.
    """
    if width < 1:
        raise TopologyError(f"fanout: width must be >= 1, got {width}")
    if depth < 0:
        raise TopologyError(f"fanout: depth must be >= 0, got {depth}")
    total = sum(width**level for level in range(depth + 1))
    if total > _MAX_SERVICES:
        raise TopologyError(
            f"fanout: width={width}, depth={depth} makes {total} services (max {_MAX_SERVICES})"
        )
    services = []
    for level in range(depth + 1):
        for i in range(width**level):
            steps = []
            if level < depth:
                children = [f"t{level + 1}-{i * width + k}" for k in range(width)]
                steps = [StepSpec(calls=[{"service": c} for c in children], parallel=True)]
            services.append(
                ServiceSpec(
                    name=f"t{level}-{i}",
                    service_time=service_time,
                    workers=workers,
                    steps=steps,
                )
            )
    return TopologySpec(
        name="fanout",
        cluster=cluster if cluster is not None else flat_cluster(3),
        call_graph=CallGraphSpec(services=services, entry="t0-0"),
    )


def mesh_scale(
    pods: int = 100,
    replicas: int = 2,
    services_per_namespace: int = 10,
    pods_per_node: int = 1,
) -> TopologySpec:
    """A mesh of ``pods`` pods for control-plane experiments (services of ``replicas`` pods).

    Services ``svc-0`` .. are grouped ``services_per_namespace`` to a namespace
    (``ns-0`` ..); ``svc-0`` is the entry and calls ``svc-1``, the rest are called by no one
    (their configuration is what matters here, not their traffic). The cluster has one node
    per ``pods_per_node`` pods, so that a proxy per node and a proxy per pod number alike
    with the default of 1. Pods are packed in order onto the nodes.

    Args:
        pods: Pods in the mesh (at least ``2 x replicas``).
        replicas: Pods per service.
        services_per_namespace: Services per namespace.
        pods_per_node: Pods per node.

    Raises:
        TopologyError: If there are fewer than two services, or more pods than a cluster
            can hold (:data:`topologies.callgraph.MAX_PODS`).
    """
    if pods > MAX_PODS:  # before building a service per pair of them
        raise TopologyError(f"mesh_scale: pods must be at most {MAX_PODS:,}, got {pods:,}")
    n_services = pods // replicas if replicas >= 1 else 0
    if n_services < 2 or replicas < 1 or services_per_namespace < 1 or pods_per_node < 1:
        raise TopologyError(
            f"mesh_scale: needs at least 2 services of {replicas} pods, got {pods} pods"
        )
    services = [
        ServiceSpec(
            name=f"svc-{i}",
            replicas=replicas,
            workers=4,
            service_time="200us",
            namespace=f"ns-{i // services_per_namespace}",
            steps=[StepSpec(calls=[{"service": "svc-1"}])] if i == 0 else [],
        )
        for i in range(n_services)
    ]
    n_nodes = max(1, -(-n_services * replicas // pods_per_node))
    return TopologySpec(
        name=f"mesh-scale-{n_services * replicas}",
        cluster=flat_cluster(n_nodes),
        call_graph=CallGraphSpec(services=services, entry="svc-0"),
        placement=PlacementSpec(strategy="pack", pods_per_node=pods_per_node),
    )


def random_dag(
    n: int = 10,
    edge_probability: float = 0.1,
    seed: int = 0,
    cluster: ClusterSpec | None = None,
    max_callees: int = 3,
    call_probability: float = 0.3,
) -> TopologySpec:
    """A random acyclic call graph over services ``d0`` .. ``d{n-1}``, entry ``d0``.

    Calls only go from lower to higher index, so the graph is acyclic. First every service
    ``dj`` (j >= 1) gets one caller, drawn uniformly from the lower-index services that call
    fewer than ``max_callees`` others, so every service is reachable from ``d0``. Then each
    service calls each higher-index service it does not call yet with probability
    ``edge_probability``, keeping a uniform random choice of them if that would make more than
    ``max_callees`` callees. Each service's calls are split into random steps, each parallel or
    sequential at random; every call is made with probability ``call_probability`` on a given
    request; service times are exponential with a random mean between 0.5 and 3 ms.
    Everything is drawn from one generator seeded by ``seed``, in time linear in ``n``.

    The bound on the work of a request: a service makes at most ``max_callees`` calls, each
    with probability ``call_probability``, so with ``m = max_callees * call_probability < 1``
    a request visits at most ``1 / (1 - m)`` services on average, whatever ``n`` (the
    defaults: ``m = 0.9``, at most 10 visits). With ``m >= 1`` there is no such bound: the
    expected visits can grow like ``m`` to the power of the graph's depth (with every call
    made, at least ``n``, since every service is reachable); see
    :func:`topologies.visits.expected_visits`.

    Args:
        n: Number of services, 1 to 10 000.
        edge_probability: Probability in [0, 1] of each extra forward call.
        seed: Seed of the generator (non-negative).
        cluster: The cluster; ``None`` for ``flat_cluster(3)``.
        max_callees: Most services one service calls, at least 1.
        call_probability: Probability in [0, 1] that a call is made on a given request.

    Returns:
        The topology, named ``random_dag``.

    Raises:
        TopologyError: If a parameter is out of range.
    """
    if not 1 <= n <= _MAX_SERVICES:
        raise TopologyError(f"random_dag: n must be between 1 and {_MAX_SERVICES}, got {n}")
    for name, value in (
        ("edge_probability", edge_probability),
        ("call_probability", call_probability),
    ):
        if not 0.0 <= value <= 1.0:
            raise TopologyError(f"random_dag: {name} must be in [0, 1], got {value}")
    if seed < 0:
        raise TopologyError(f"random_dag: seed must be >= 0, got {seed}")
    if max_callees < 1:
        raise TopologyError(f"random_dag: max_callees must be >= 1, got {max_callees}")
    rng = np.random.default_rng(seed)
    callees = _random_callees(rng, n, edge_probability, max_callees)
    services = []
    for i in range(n):
        targets = sorted(callees[i])
        order = [targets[k] for k in rng.permutation(len(targets))]
        steps = []
        while order:
            size = int(rng.integers(1, len(order) + 1))
            group, order = order[:size], order[size:]
            parallel = len(group) > 1 and bool(rng.random() < 0.5)
            calls = [{"service": f"d{k}", "probability": call_probability} for k in group]
            steps.append(StepSpec(calls=calls, parallel=parallel))
        mean_s = round(float(rng.uniform(0.0005, 0.003)), 6)
        services.append(ServiceSpec(name=f"d{i}", service_time=_exp(mean_s), steps=steps))
    return TopologySpec(
        name="random_dag",
        cluster=cluster if cluster is not None else flat_cluster(3),
        call_graph=CallGraphSpec(services=services, entry="d0"),
    )


def _random_callees(
    rng: np.random.Generator, n: int, edge_probability: float, max_callees: int
) -> list[set[int]]:
    """The callees of each of ``n`` services (see :func:`random_dag`), in linear time."""
    callees: list[set[int]] = [set() for _ in range(n)]
    # A random tree with at most max_callees children per node: each service's caller is a
    # uniform pick among the earlier services with room. ``open_`` lists those services;
    # a full one is swapped out, so each step is O(1).
    open_: list[int] = []
    for j in range(n):
        if j > 0:
            k = int(rng.integers(0, len(open_)))
            caller = open_[k]
            callees[caller].add(j)
            if len(callees[caller]) == max_callees:
                open_[k] = open_[-1]
                open_.pop()
        open_.append(j)
    # Extra calls: of the later services not called yet, each with edge_probability, so their
    # number is binomial and, given it, they are a uniform sample (of at most the room left).
    for i in range(n):
        later = n - 1 - i
        free = later - len(callees[i])
        room = max_callees - len(callees[i])
        if free <= 0 or room <= 0 or edge_probability == 0.0:
            continue
        count = min(room, int(rng.binomial(free, edge_probability)))
        chosen = callees[i]
        wanted = len(chosen) + count
        while len(chosen) < wanted:  # rejection: few draws, as count <= room <= max_callees
            chosen.add(i + 1 + int(rng.integers(0, later)))
    return callees


def _svc(
    name: str,
    mean_ms: float,
    steps: list[Any] | None = None,
    protocol: str = "grpc",
    replicas: int = 1,
    workers: int = 4,
) -> ServiceSpec:
    """A social-network service (steps may use the YAML shorthand of :class:`StepSpec`)."""
    return ServiceSpec(
        name=name,
        service_time=_exp(mean_ms / 1000.0),
        steps=steps or [],
        protocol=protocol,
        replicas=replicas,
        workers=workers,
        request_size_bytes="1KiB",
        response_size_bytes="2KiB",
    )


def _db(name: str, mean_ms: float) -> ServiceSpec:
    """A leaf storage tier (memcached, redis, mongodb), spoken to over TCP."""
    return _svc(name, mean_ms, protocol="tcp", workers=8)


def _cached(cache: str, db: str, miss: float = 0.2) -> list[Any]:
    """Steps that read a cache, then the database on a miss (probability ``miss``)."""
    return [cache, {"calls": [{"service": db, "probability": miss}]}]


def social_network(cluster: ClusterSpec | None = None) -> TopologySpec:
    """A social network shaped like DeathStarBench's (24 services).

    ``nginx-web-server`` (the entry, HTTP/1.1) serves a mix of requests, approximated by
    independent calls: compose a post (p=0.1), read the home timeline (p=0.6), read a user
    timeline (p=0.3). ``compose-post-service`` fans out in parallel to the text, user, media,
    unique-id, url-shorten and user-mention services, then stores the post, then updates the
    timelines in parallel. Logic services speak gRPC (standing in for Thrift); the
    memcached, redis and mongodb tiers are TCP leaves, and a cache read goes to mongodb on a
    miss with probability 0.2. Service times are exponential with illustrative means.

    Args:
        cluster: The cluster; ``None`` for ``multi_zone_cluster(3, 2)``.

    Returns:
        The topology, named ``social_network``.
    """
    fan_out = [
        "text-service",
        "user-service",
        "media-service",
        "unique-id-service",
        "url-shorten-service",
        "user-mention-service",
    ]
    services = [
        _svc(
            "nginx-web-server",
            0.3,
            protocol="http1",
            replicas=2,
            workers=8,
            steps=[
                {"calls": [{"service": "compose-post-service", "probability": 0.1}]},
                {"calls": [{"service": "home-timeline-service", "probability": 0.6}]},
                {"calls": [{"service": "user-timeline-service", "probability": 0.3}]},
            ],
        ),
        _svc(
            "compose-post-service",
            0.5,
            replicas=2,
            steps=[
                fan_out,
                "post-storage-service",
                ["user-timeline-service", "write-home-timeline-service"],
            ],
        ),
        _svc("text-service", 0.3),
        _svc("user-service", 0.3, steps=_cached("user-memcached", "user-mongodb")),
        _svc("media-service", 0.2, steps=["media-mongodb"]),
        _svc("unique-id-service", 0.1),
        _svc("url-shorten-service", 0.2, steps=["url-shorten-mongodb"]),
        _svc("user-mention-service", 0.2, steps=_cached("user-memcached", "user-mongodb")),
        _svc(
            "post-storage-service",
            0.3,
            replicas=2,
            steps=_cached("post-storage-memcached", "post-storage-mongodb"),
        ),
        _svc(
            "user-timeline-service",
            0.3,
            steps=[
                *_cached("user-timeline-redis", "user-timeline-mongodb"),
                "post-storage-service",
            ],
        ),
        _svc(
            "home-timeline-service",
            0.3,
            replicas=2,
            steps=["home-timeline-redis", "post-storage-service"],
        ),
        _svc(
            "write-home-timeline-service",
            0.2,
            steps=["social-graph-service", "home-timeline-redis"],
        ),
        _svc(
            "social-graph-service",
            0.3,
            steps=_cached("social-graph-redis", "social-graph-mongodb"),
        ),
        _db("user-memcached", 0.1),
        _db("user-mongodb", 1.0),
        _db("media-mongodb", 1.0),
        _db("url-shorten-mongodb", 1.0),
        _db("post-storage-memcached", 0.1),
        _db("post-storage-mongodb", 1.0),
        _db("user-timeline-redis", 0.1),
        _db("user-timeline-mongodb", 1.0),
        _db("home-timeline-redis", 0.1),
        _db("social-graph-redis", 0.1),
        _db("social-graph-mongodb", 1.0),
    ]
    return TopologySpec(
        name="social_network",
        cluster=cluster if cluster is not None else multi_zone_cluster(3, 2),
        call_graph=CallGraphSpec(services=services, entry="nginx-web-server"),
    )


CATALOG: dict[str, Callable[..., TopologySpec]] = {
    "bookinfo": bookinfo,
    "chain": chain,
    "fanout": fanout,
    "mesh_scale": mesh_scale,
    "random_dag": random_dag,
    "social_network": social_network,
}
"""The shipped topologies by name."""


def get_topology(name: str, **params: Any) -> TopologySpec:
    """Build a catalog topology by name.

    Args:
        name: A key of :data:`CATALOG`.
        **params: Keyword parameters of that topology's function.

    Returns:
        The topology.

    Raises:
        TopologyError: If the name is unknown, a parameter is unknown or has a bad value.
    """
    try:
        factory = CATALOG[name]
    except KeyError:
        raise TopologyError(
            f"unknown topology {name!r}; known: {', '.join(sorted(CATALOG))}"
        ) from None
    accepted = list(inspect.signature(factory).parameters)
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise TopologyError(
            f"topology {name!r} has no parameter {', '.join(repr(p) for p in unknown)}; "
            f"parameters: {', '.join(accepted) or '(none)'}"
        )
    try:
        # validate_call checks each parameter against its annotation, so a bad value is
        # reported with the parameter's name.
        return validate_call(factory)(**params)
    except TopologyError:
        raise
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in err['loc']) or '(input)'}: {err['msg']}"
            for err in exc.errors()
        )
        raise TopologyError(f"topology {name!r}: invalid parameter {problems}") from None
    except TypeError as exc:
        raise TopologyError(f"topology {name!r}: bad parameter: {exc}") from None
