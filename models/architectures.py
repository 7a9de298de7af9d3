"""The table of architectures: each one's name, spec and mesh, in one place.

The ``MeshSpec`` union (a pydantic discriminated union on ``architecture``), the list of
names and :func:`mesh_class` are all derived from :data:`TABLE`; adding an architecture is a
new module and one row here.
"""

from __future__ import annotations

from typing import Annotated, Any, Union

from pydantic import BaseModel, Field

from models.ambient import AmbientMesh, AmbientSpec
from models.mesh import Mesh
from models.no_mesh import NoMesh, NoMeshSpec
from models.per_node import PerNodeMesh, PerNodeSpec
from models.proxyless import ProxylessMesh, ProxylessSpec
from models.sidecar import SidecarMesh, SidecarSpec

__all__ = ["MeshSpec", "ARCHITECTURES", "TABLE", "mesh_class"]

# name -> (spec, mesh); the name is also the spec's ``architecture`` literal.
TABLE: dict[str, tuple[type[BaseModel], type[Mesh]]] = {
    "none": (NoMeshSpec, NoMesh),
    "sidecar": (SidecarSpec, SidecarMesh),
    "per_node": (PerNodeSpec, PerNodeMesh),
    "ambient": (AmbientSpec, AmbientMesh),
    "proxyless": (ProxylessSpec, ProxylessMesh),
}

ARCHITECTURES: tuple[str, ...] = tuple(TABLE)

MeshSpec: Any = Annotated[
    Union[tuple(spec for spec, _ in TABLE.values())],  # type: ignore[valid-type]  # noqa: UP007
    Field(discriminator="architecture"),
]


def mesh_class(architecture: str) -> type[Mesh]:
    """The :class:`Mesh` subclass for an architecture name."""
    try:
        return TABLE[architecture][1]
    except KeyError:
        known = ", ".join(sorted(TABLE))
        raise ValueError(f"unknown architecture {architecture!r}; known: {known}") from None


def _check() -> None:
    """Each row's name is its spec's ``architecture`` and its mesh's (caught at import)."""
    for name, (spec, mesh) in TABLE.items():
        default = spec.model_fields["architecture"].default
        if default != name or mesh.architecture != name:
            raise AssertionError(f"architecture table row {name!r} names {default!r}")


_check()
