"""The registry line of every architecture: its spec joins the ``MeshSpec`` union here."""

from __future__ import annotations

from typing import Annotated, Union

from pydantic import Field

from models.no_mesh import NoMeshSpec

__all__ = ["MeshSpec", "ARCHITECTURES"]

MeshSpec = Annotated[Union[NoMeshSpec], Field(discriminator="architecture")]  # noqa: UP007

ARCHITECTURES: tuple[str, ...] = ("none",)
