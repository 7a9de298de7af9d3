"""The router of one proxy for one destination host: which route, which cluster, which endpoint.

One :class:`Router` per (proxy, destination host) and configuration version, made when the
proxy first routes to that host on its current configuration. It holds the host's routes (a
VirtualService's or a TrafficSplit's rules; None without any) and finds the proxy's
:class:`~models.routing.Cluster` of each (host, subset) a route sends to. Clusters belong to
the proxy and outlive configurations (their outlier detection, circuit-breaker counts and
connection pools carry over, as Envoy keeps a cluster whose endpoints change); a new
configuration gives them their new endpoints.

A host without policies has a plain router: one cluster over every endpoint, the mesh's load
balancer and retries, nothing else, which is what a mesh without policies runs.
"""

from __future__ import annotations

from typing import Any

from models.routing import Action, Cluster, ClusterPolicy, Counters, HostRoutes, RetryPolicy

__all__ = ["Router"]

PLAIN = ClusterPolicy()


class Router:
    """Routes and clusters for one destination of one proxy.

    Args:
        proxy: the proxy whose router this is (a ``models.proxy.Proxy``, not imported here:
            the proxy module imports this one).
        host: the destination service.
        retry: the mesh's retry policy (a route's own ``retries`` replace it).
        routes: the host's compiled routes, or None.
        traefik: the host's Traefik Mesh service state (breaker, rate limits), or None.
    """

    __slots__ = ("proxy", "host", "retry", "routes", "default", "action", "traefik", "plain")

    def __init__(
        self,
        proxy: Any,
        host: str,
        retry: RetryPolicy,
        routes: HostRoutes | None,
        traefik: Any = None,
    ) -> None:
        self.proxy = proxy
        self.host = host
        self.retry = retry
        self.routes = routes
        self.traefik = traefik
        self.action = Action(((host, None),), (1.0,))
        # The cluster of the host itself, made now: every request without a route to
        # another cluster uses it (None when the proxy knows no endpoint of the host).
        self.default: Cluster | None = proxy.cluster(host, None)
        self.plain = (
            routes is None
            and traefik is None
            and self.default is not None
            and self.default.policy is PLAIN
            and proxy.policies.acl is None
        )

    def cluster(self, host: str, subset: str | None) -> Cluster | None:
        """The proxy's cluster of (host, subset) on its current configuration."""
        if subset is None and host == self.host:
            return self.default
        return self.proxy.cluster(host, subset)

    def stats(self) -> Counters:
        """The counters of the host's own cluster (where requests that find no cluster are
        counted)."""
        return self.proxy.host_counters(self.host)
