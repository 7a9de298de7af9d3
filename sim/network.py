"""Network delays between pods: one-way propagation by link class plus serialisation.

A message of ``size_bytes`` from one pod to another takes a propagation delay drawn from the
distribution of its link class (same node, same zone, across zones) plus ``size_bytes /
bandwidth`` to serialise.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from enum import Enum

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from sim.distributions import DistributionSpec
from sim.units import Bandwidth

__all__ = ["LinkClass", "NetworkPort", "NetworkSpec", "link_class", "FaultedLink", "NEVER"]


class LinkClass(str, Enum):
    """Where two pods sit relative to each other."""

    SAME_NODE = "same_node"
    SAME_ZONE = "same_zone"
    CROSS_ZONE = "cross_zone"

    # Enum hashes by member name in Python code; hashing as the plain string is C-fast (it sits
    # on the delay hot path as a dict key) and lets "same_zone" and SAME_ZONE share a slot.
    __hash__ = str.__hash__


NEVER = math.inf
"""The delay of a message that never arrives (a partitioned link, a failed node): whoever
books it drops it (``sim.servers``), and whoever waits for it waits past the end of the run."""


class FaultedLink:
    """A link under a fault: ``base``'s propagation plus ``extra`` seconds, and each message
    lost with probability ``loss`` is sent again after a retransmission timeout (``rto``,
    doubling, as TCP backs off); ``cut`` loses everything (a partition) until ``heals_at``:
    a message sent into it arrives with TCP's first retransmission after the heal (the
    timeout doubling from ``rto`` up to 120 s), read on ``clock``; one that never heals
    delays it :data:`NEVER`. Each fault makes its own object, so a port's cached sampler for
    it is its own and the link class's is untouched.
    """

    __slots__ = ("base", "extra", "loss", "cut", "rto", "heals_at", "clock")

    def __init__(
        self,
        base: LinkClass,
        extra: float = 0.0,
        loss: float = 0.0,
        cut: bool = False,
        rto: float = 0.2,
        heals_at: float = math.inf,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.base = LinkClass(base)
        self.extra = extra
        self.loss = loss
        self.cut = cut
        self.rto = rto
        self.heals_at = heals_at
        self.clock = clock

    def __repr__(self) -> str:
        what = "cut" if self.cut else f"+{self.extra:g} s, loss {self.loss:g}"
        return f"FaultedLink({self.base.value}, {what})"


class NetworkSpec(BaseModel):
    """Network delay model.

    Attributes:
        same_node: One-way propagation between pods on one node (seconds).
        same_zone: One-way propagation between nodes in one zone (seconds).
        cross_zone: One-way propagation between zones (seconds).
        bandwidth: Link bandwidth (bytes per second; accepts ``"10Gbps"``), > 0.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    same_node: DistributionSpec = Field(default="20us", validate_default=True)
    same_zone: DistributionSpec = Field(default="100us", validate_default=True)
    cross_zone: DistributionSpec = Field(default="500us", validate_default=True)
    bandwidth: Bandwidth = Field(default="10Gbps", validate_default=True, gt=0)

    def propagation(self, link: LinkClass) -> DistributionSpec:
        """Return the propagation distribution of a link class.

        Args:
            link: The link class.
        """
        spec: DistributionSpec = getattr(self, LinkClass(link).value)
        return spec


class NetworkPort:
    """A sender's view of the network, drawing from the sender's own random stream.

    Samplers are created lazily per link class, so a sender that never crosses a zone never
    draws for it; constant propagation delays never touch the generator.

    Args:
        spec: The network spec.
        rng: The sender's generator.
    """

    __slots__ = ("_inv_bandwidth", "_rng", "_samplers", "spec")

    def __init__(self, spec: NetworkSpec, rng: np.random.Generator) -> None:
        self.spec = spec
        self._rng = rng
        self._inv_bandwidth = 1.0 / spec.bandwidth
        self._samplers: dict[LinkClass, Callable[[], float]] = {}

    def _sampler(self, link: LinkClass | FaultedLink) -> Callable[[], float]:
        sampler = self._samplers.get(link)  # type: ignore[arg-type]
        if sampler is None:
            if isinstance(link, FaultedLink):
                sampler = self._faulted(link)
                self._samplers[link] = sampler  # type: ignore[index]
                return sampler
            link = LinkClass(link)
            sampler = self.spec.propagation(link).sampler(self._rng)
            self._samplers[link] = sampler
        return sampler

    def _faulted(self, link: FaultedLink) -> Callable[[], float]:
        base = self._sampler(link.base)
        if link.cut:
            if link.heals_at == NEVER or link.clock is None:
                return _never
            heals_at, clock, first_rto = link.heals_at, link.clock, link.rto

            def resent() -> float:
                # Lost, and resent at each retransmission timeout until one is after the heal.
                now = clock()
                at, rto = now, first_rto
                while at < heals_at:
                    at += rto
                    rto = min(rto * 2.0, 120.0)
                return at - now + base()

            return resent
        extra = link.extra
        if link.loss <= 0.0:
            return lambda: base() + extra
        loss, rto, rng = link.loss, link.rto, self._rng

        def lossy() -> float:
            # Each try of the message is lost with probability ``loss``; a lost one is sent
            # again after the retransmission timeout, which doubles each time.
            delay = base() + extra
            wait = rto
            while rng.random() < loss:
                delay += wait
                wait *= 2.0
            return delay

        return lossy

    def delay(self, link: LinkClass, size_bytes: int) -> float:
        """Return the one-way delay of a message.

        Args:
            link: The link class between sender and receiver.
            size_bytes: Message size (bytes).

        Returns:
            Propagation draw plus ``size_bytes / bandwidth`` (seconds).
        """
        sampler = self._samplers.get(link) or self._sampler(link)
        return sampler() + size_bytes * self._inv_bandwidth

    def rtt(self, link: LinkClass) -> float:
        """Return a round-trip propagation time (two draws), e.g. for a handshake.

        Args:
            link: The link class between the two ends.

        Returns:
            The round-trip time (seconds), without serialisation.
        """
        sampler = self._samplers.get(link) or self._sampler(link)
        return sampler() + sampler()


def _never() -> float:
    return NEVER


def link_class(node_a: str, zone_a: str, node_b: str, zone_b: str) -> LinkClass:
    """Classify the link between two pods from their nodes and zones.

    Args:
        node_a: Node of the first pod.
        zone_a: Zone of the first pod's node.
        node_b: Node of the second pod.
        zone_b: Zone of the second pod's node.

    Returns:
        ``SAME_NODE`` if the nodes are equal, else ``SAME_ZONE`` if the zones are equal,
        else ``CROSS_ZONE``.
    """
    if node_a == node_b:
        return LinkClass.SAME_NODE
    if zone_a == zone_b:
        return LinkClass.SAME_ZONE
    return LinkClass.CROSS_ZONE
