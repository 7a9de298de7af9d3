"""Built-in mesh profiles, shipped as YAML data files, each with its sources."""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, TypeAdapter

from experiments.overrides import deep_merge
from models.architectures import MeshSpec

__all__ = [
    "Profile",
    "list_profiles",
    "load_profile",
    "resolve_mesh",
    "validate_mesh",
    "ProfileError",
]


class ProfileError(ValueError):
    """An unknown profile, or a profile whose data does not validate."""


class Profile(BaseModel):
    """A built-in profile: a mesh spec plus where its numbers come from.

    Attributes:
        name: the profile's name (``istio-1.8``).
        description: one line for ``meshsim list``.
        sources: the published material the numbers come from.
        assumptions: numbers that nobody published, said plainly.
        mesh: the mesh spec, as data (validated by :func:`resolve_mesh`).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str
    sources: list[str]
    assumptions: list[str] = []
    calibration: dict[str, Any] = {}
    mesh: dict[str, Any]


def _files() -> dict[str, Any]:
    folder = resources.files(__package__)
    return {
        entry.name.removesuffix(".yaml"): entry
        for entry in folder.iterdir()
        if entry.name.endswith(".yaml")
    }


def list_profiles() -> list[str]:
    """The names of the built-in profiles, sorted."""
    return sorted(_files())


@cache
def load_profile(name: str) -> Profile:
    """A built-in profile by name."""
    files = _files()
    if name not in files:
        raise ProfileError(f"unknown profile {name!r}; known: {', '.join(sorted(files))}")
    data = yaml.safe_load(files[name].read_text(encoding="utf-8"))
    return Profile.model_validate(data)


_MESH = TypeAdapter(MeshSpec)


def validate_mesh(data: dict[str, Any]) -> Any:
    """A mesh spec from data (raises pydantic's ValidationError)."""
    return _MESH.validate_python(data)


def resolve_mesh(profile: str, overrides: dict[str, Any] | None = None) -> Any:
    """The validated mesh spec of ``profile`` with ``overrides`` merged in."""
    return validate_mesh(deep_merge(load_profile(profile).mesh, overrides or {}))
