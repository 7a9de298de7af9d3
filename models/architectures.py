"""The registry line of every architecture: its spec joins the ``MeshSpec`` union here."""

from __future__ import annotations

from typing import Annotated, Union

from pydantic import Field

from models.ambient import AmbientSpec
from models.no_mesh import NoMeshSpec
from models.per_node import PerNodeSpec
from models.proxyless import ProxylessSpec
from models.sidecar import SidecarSpec

__all__ = ["MeshSpec", "ARCHITECTURES"]

MeshSpec = Annotated[
    Union[NoMeshSpec, SidecarSpec, PerNodeSpec, AmbientSpec, ProxylessSpec],  # noqa: UP007
    Field(discriminator="architecture"),
]

ARCHITECTURES: tuple[str, ...] = ("none", "sidecar", "per_node", "ambient", "proxyless")
