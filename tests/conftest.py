"""Shared fixtures: small topologies and specs built through the public API."""

from __future__ import annotations

from typing import Any

import pytest

ZERO_NETWORK = {"same_node": 0, "same_zone": 0, "cross_zone": 0, "bandwidth": "1000Gbps"}


def single_node_topology(
    services: list[dict[str, Any]], entry: str, network: dict | None = None
) -> dict:
    """An inline topology on one node; no network delay unless ``network`` says otherwise."""
    return {
        "cluster": {"nodes": [{"name": "node-0"}], "network": network or ZERO_NETWORK},
        "call_graph": {"services": services, "entry": entry},
    }


@pytest.fixture
def make_topology():
    return single_node_topology
