"""What configuration a proxy must hold: Istio's scoping (the ``Sidecar`` resource).

* ``mesh``: every service of the mesh (Istio's default without a Sidecar resource).
* ``namespace``: the services of the proxy's own namespace, and its dependencies elsewhere.
* ``dependencies``: only the services the workload calls (and its own).

The counts are Envoy clusters (one per service, one for inbound) and endpoints (pods).
"""

from __future__ import annotations

from typing import Literal

from topologies import CallGraphSpec

__all__ = ["Scoping", "known_config"]

Scoping = Literal["mesh", "namespace", "dependencies"]


def known_config(
    graph: CallGraphSpec,
    pods_per_host: dict[str, int],
    scoping: Scoping,
    own_hosts: set[str],
    callees: set[str],
    namespaces: set[str],
) -> tuple[int, int]:
    """(clusters, endpoints) a proxy serving ``own_hosts`` and calling ``callees`` holds.

    Args:
        graph: the call graph.
        pods_per_host: pods per service host.
        scoping: see the module docstring.
        own_hosts: the hosts of the workloads behind the proxy (none for a client).
        callees: the hosts those workloads call.
        namespaces: the namespaces of those workloads.
    """
    if scoping == "mesh":
        hosts = set(pods_per_host)
    elif scoping == "namespace":
        hosts = {s.host_name for s in graph.services if s.namespace in namespaces} | callees
    else:
        hosts = set(callees)
    hosts |= own_hosts
    endpoints = sum(pods_per_host.get(h, 0) for h in hosts)
    inbound = 1 if own_hosts else 0
    return len(hosts) + inbound, endpoints
