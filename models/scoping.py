"""What configuration a proxy must hold: Istio's scoping (the ``Sidecar`` resource).

* ``mesh``: every service of the mesh (Istio's default without a Sidecar resource).
* ``namespace``: the services of the proxy's own namespace, and its dependencies elsewhere.
* ``dependencies``: only the services the workload calls (and its own).

The counts are Envoy clusters (one per service, one for inbound) and endpoints (pods).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from typing import Literal

__all__ = ["Scoping", "ConfigIndex", "known_config"]

Scoping = Literal["mesh", "namespace", "dependencies"]


@dataclass(frozen=True)
class ConfigIndex:
    """What the mesh holds, indexed once so that each proxy's share is cheap to count.

    Attributes:
        pods_per_host: endpoints per service host.
        hosts_by_namespace: the service hosts of each namespace.
    """

    pods_per_host: dict[str, int]
    hosts_by_namespace: dict[str, frozenset[str]]

    @property
    def total_endpoints(self) -> int:
        return sum(self.pods_per_host.values())

    @cached_property
    def endpoints_by_namespace(self) -> dict[str, int]:
        """The endpoints of the hosts of each namespace (counted once, for every proxy)."""
        pods = self.pods_per_host
        return {
            namespace: sum(pods.get(h, 0) for h in hosts)
            for namespace, hosts in self.hosts_by_namespace.items()
        }

    @classmethod
    def build(cls, hosts: Iterable[tuple[str, str, int]]) -> ConfigIndex:
        """From (host, namespace, pods) triples."""
        pods: dict[str, int] = {}
        by_ns: dict[str, set[str]] = {}
        for host, namespace, count in hosts:
            pods[host] = pods.get(host, 0) + count
            by_ns.setdefault(namespace, set()).add(host)
        return cls(pods, {ns: frozenset(h) for ns, h in by_ns.items()})


def known_config(
    index: ConfigIndex,
    scoping: Scoping,
    own_hosts: set[str],
    callees: set[str],
    namespaces: set[str],
    total_endpoints: int | None = None,
) -> tuple[int, int, frozenset[str] | None]:
    """(clusters, endpoints, hosts) a proxy serving ``own_hosts`` and calling ``callees``
    holds; ``hosts`` is None when it is every service of the mesh.

    Args:
        index: the mesh's services.
        scoping: see the module docstring.
        own_hosts: the hosts of the workloads behind the proxy (none for a client).
        callees: the hosts those workloads call.
        namespaces: the namespaces of those workloads.
        total_endpoints: ``index.total_endpoints``, when the caller has it (many proxies).
    """
    inbound = 1 if own_hosts else 0
    if scoping == "mesh":
        total = index.total_endpoints if total_endpoints is None else total_endpoints
        return len(index.pods_per_host) + inbound, total, None
    hosts = set(callees) | own_hosts
    if scoping == "namespace" and len(namespaces) == 1:
        # The usual case: a proxy knows its namespace and a few hosts beyond it. The
        # namespace's hosts and endpoints are shared by its proxies, not copied and summed per
        # proxy (with every service in one namespace that was quadratic in services).
        (namespace,) = namespaces
        in_namespace = index.hosts_by_namespace.get(namespace, frozenset())
        beyond = hosts - in_namespace
        endpoints = index.endpoints_by_namespace.get(namespace, 0)
        endpoints += sum(index.pods_per_host.get(h, 0) for h in beyond)
        known = in_namespace | beyond if beyond else in_namespace
        return len(in_namespace) + len(beyond) + inbound, endpoints, known
    if scoping == "namespace":
        for namespace in namespaces:
            hosts |= index.hosts_by_namespace.get(namespace, frozenset())
    endpoints = sum(index.pods_per_host.get(h, 0) for h in hosts)
    return len(hosts) + inbound, endpoints, frozenset(hosts)
