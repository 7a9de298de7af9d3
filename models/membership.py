"""Which pods are in a partial mesh, and what each meshed pod's proxy accepts.

Istio decides membership per pod: a sidecar is injected (``models.sidecar.injected``) or a
pod is enrolled in ambient (``models.ambient.enrolled``). A pod outside the mesh calls in
plaintext with no proxy of its own; a meshed pod's proxy accepts what its
PeerAuthentication says (``models.policies.peer_authentication_mode``): ``STRICT`` only
mTLS, ``PERMISSIVE`` both, ``DISABLE`` plaintext only. A meshed client sends mTLS only to a
meshed pod whose mode is not ``DISABLE`` (Istio's auto mTLS), plaintext otherwise.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from models.defaults import ISTIO
from models.policies import PeerAuthentication, peer_authentication_mode
from models.world import PodBase

__all__ = ["Membership", "Plaintext"]


class _Anonymous:
    """A peer seen over plaintext: the pod, without the identity mTLS would have carried
    (no principal, no namespace: Istio reads both from the peer's certificate)."""

    principal = ""
    namespace = ""

    def __init__(self, pod: PodBase) -> None:
        self._pod = pod

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pod, name)


class Plaintext:
    """An inbound proxy's local responder (authorization, rate limit) for connections that
    arrive in plaintext: it sees the caller without an identity, so a rule that names
    principals or namespaces (even ``*``) does not match it."""

    __slots__ = ("inner", "_peers")

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self._peers: dict[str, _Anonymous] = {}

    def local_reply(self, proxy: Any, src: PodBase, host: str, request: Any) -> Any:
        peer = self._peers.get(src.name)
        if peer is None:
            peer = self._peers[src.name] = _Anonymous(src)
        return self.inner.local_reply(proxy, peer, host, request)


class Membership:
    """The pods of a mesh and their mTLS modes, decided when pods are attached or added and
    when the policies change (never per request).

    Args:
        default_mode: the mode where no PeerAuthentication sets one (the mesh's
            ``mtls_mode``).
    """

    def __init__(self, default_mode: str) -> None:
        self.default_mode = default_mode
        self.root = ISTIO["authorization.rootNamespace"]
        self.outside: set[str] = set()  # pods without a proxy of their own
        self.modes: dict[str, str] = {}  # meshed pods: their proxy's PeerAuthentication mode
        self._meshed: dict[str, PodBase] = {}
        self._policies: tuple[PeerAuthentication, ...] = ()

    def add(self, pod: PodBase, inside: bool) -> None:
        """A pod, in the mesh or not."""
        if not inside:
            self.outside.add(pod.name)
            return
        self._meshed[pod.name] = pod
        self.modes[pod.name] = self._mode(pod)

    def use(self, policies: Sequence[PeerAuthentication]) -> bool:
        """New PeerAuthentications; whether any pod's mode changed."""
        self._policies = tuple(policies)
        changed = False
        for name, pod in self._meshed.items():
            mode = self._mode(pod)
            if mode != self.modes[name]:
                self.modes[name] = mode
                changed = True
        return changed

    def _mode(self, pod: PodBase) -> str:
        if not self._policies:
            return self.default_mode
        return peer_authentication_mode(
            self._policies, pod.namespace, pod.labels, self.default_mode, self.root
        )

    def accepts_mtls(self, name: str) -> bool:
        """Whether a meshed client sends mTLS to the pod ``name`` (auto mTLS)."""
        mode = self.modes.get(name)
        return mode is not None and mode != "DISABLE"

    def plain_hosts(self, endpoints: dict[str, list[Any]]) -> set[str]:
        """The hosts none of whose endpoints a meshed client reaches over mTLS: its
        outbound listener's request and response sides run without the ``tls`` filter.
        (A host with both kinds of endpoints is charged the ``tls`` filter; its connections
        to the plaintext ones open without a TLS handshake all the same.)"""
        return {
            host
            for host, pods in endpoints.items()
            if pods and not any(self.accepts_mtls(pod.name) for pod in pods)
        }

    def outside_hosts(self, endpoints: dict[str, list[Any]]) -> set[str]:
        """The hosts all of whose endpoints are outside the mesh."""
        outside = self.outside
        return {
            host
            for host, pods in endpoints.items()
            if pods and all(pod.name in outside for pod in pods)
        }

    @property
    def partial(self) -> bool:
        """Whether some pod is outside the mesh or some mode is not the mesh's default."""
        return bool(self.outside) or any(m != self.default_mode for m in self.modes.values())

    def names(self, pods: Iterable[PodBase]) -> list[str]:
        """The names of those of ``pods`` that are in the mesh."""
        return [pod.name for pod in pods if pod.name not in self.outside]
