"""The router of an Envoy cluster: which endpoint a request goes to, and its retries.

One :class:`Router` per (proxy, destination host), made when the proxy first routes to that
host on its current configuration: the endpoints it knows, the load balancer that picks among
them, and the retry policy. It is the place where per-destination traffic policy plugs in
(timeouts, circuit breakers, outlier detection), each with a do-nothing default, so a mesh
without policies pays nothing for them.
"""

from __future__ import annotations

from typing import Any

from models.loadbalancer import Balancer

__all__ = ["Router"]


class Router:
    """Endpoint choice and retries for one destination of one proxy.

    Args:
        proxy: the proxy whose router this is (its random streams, node, network; a
            ``models.proxy.Proxy``, not imported here: the proxy module imports this one).
        host: the destination service.
        balancer: the load balancer over the endpoints the proxy knows.
        retry: the retry policy (``attempts``, ``backoff_base``).
    """

    __slots__ = ("proxy", "host", "balancer", "retry", "pick", "started", "finished")

    def __init__(self, proxy: Any, host: str, balancer: Balancer, retry: Any) -> None:
        self.proxy = proxy
        self.host = host
        self.balancer = balancer
        self.retry = retry
        # The balancer's methods, bound once: they are on every request's path.
        self.pick = balancer.pick
        self.started = balancer.started
        self.finished = balancer.finished

    def pick_untried(self, tried: list[Any]) -> Any:
        """Envoy's previous-hosts predicate: a few picks to find a host not tried yet."""
        for _ in range(3):
            candidate = self.pick()
            if candidate not in tried:
                return candidate
        return candidate
