"""Load balancers: strategy objects that pick one endpoint of a destination (Ciw-style).

Each balancer belongs to one caller (a pod, a proxy) and one destination, like an Envoy
cluster in one proxy. Endpoints are kept in a stable (sorted) order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Generic, Literal, TypeVar

__all__ = ["Balancer", "RoundRobin", "RandomChoice", "LeastRequest", "make_balancer", "LbPolicy"]

E = TypeVar("E")
LbPolicy = Literal["round_robin", "random", "least_request"]


class Balancer(Generic[E]):
    """Picks an endpoint; ``started``/``finished`` let it track requests in flight."""

    def __init__(self, endpoints: Sequence[E]) -> None:
        if not endpoints:
            raise ValueError("a balancer needs at least one endpoint")
        self.endpoints = list(endpoints)

    def pick(self) -> E:
        raise NotImplementedError

    def started(self, endpoint: E) -> None:
        """A request to ``endpoint`` begins (only least-request cares)."""

    def finished(self, endpoint: E) -> None:
        """A request to ``endpoint`` ends."""


class RoundRobin(Balancer[E]):
    """Envoy's ROUND_ROBIN: endpoints in turn."""

    def __init__(self, endpoints: Sequence[E]) -> None:
        super().__init__(endpoints)
        self._next = 0

    def pick(self) -> E:
        i = self._next
        self._next = (i + 1) % len(self.endpoints)
        return self.endpoints[i]


class RandomChoice(Balancer[E]):
    """RANDOM (and kube-proxy's iptables mode): a uniform choice.

    Args:
        uniform: a zero-argument callable returning a uniform draw in [0, 1).
    """

    def __init__(self, endpoints: Sequence[E], uniform: Callable[[], float]) -> None:
        super().__init__(endpoints)
        self._uniform = uniform

    def pick(self) -> E:
        return self.endpoints[int(self._uniform() * len(self.endpoints))]


class LeastRequest(Balancer[E]):
    """Envoy's LEAST_REQUEST: the less loaded of ``choice_count`` random endpoints.

    Args:
        active: requests in flight per endpoint (by ``id``), shared by every balancer of
            one caller, so that the counts survive a rebuild on a new configuration.
    """

    def __init__(
        self,
        endpoints: Sequence[E],
        uniform: Callable[[], float],
        choice_count: int = 2,
        active: dict[int, int] | None = None,
    ) -> None:
        super().__init__(endpoints)
        self._uniform = uniform
        self._choices = choice_count
        self._active = active if active is not None else {}

    def pick(self) -> E:
        endpoints = self.endpoints
        n = len(endpoints)
        active = self._active
        best = endpoints[int(self._uniform() * n)]
        for _ in range(self._choices - 1):
            other = endpoints[int(self._uniform() * n)]
            if active.get(id(other), 0) < active.get(id(best), 0):
                best = other
        return best

    def started(self, endpoint: E) -> None:
        key = id(endpoint)
        self._active[key] = self._active.get(key, 0) + 1

    def finished(self, endpoint: E) -> None:
        self._active[id(endpoint)] -= 1


def make_balancer(
    policy: LbPolicy,
    endpoints: Sequence[E],
    uniform: Callable[[], float],
    active: dict[int, int] | None = None,
) -> Balancer[E]:
    """The balancer for ``policy`` over ``endpoints`` (``active``: see LeastRequest)."""
    if policy == "round_robin":
        return RoundRobin(endpoints)
    if policy == "random":
        return RandomChoice(endpoints, uniform)
    if policy == "least_request":
        return LeastRequest(endpoints, uniform, active=active)
    raise ValueError(f"unknown load-balancing policy {policy!r}")
