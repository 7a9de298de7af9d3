"""The fault schedule of an experiment: what breaks, when, and for how long."""

from __future__ import annotations

from collections.abc import Generator
from typing import Annotated, Any, Literal

import simpy
from pydantic import BaseModel, ConfigDict, Field

from models.mesh import Mesh
from sim.units import Duration

__all__ = ["FaultSpec", "FaultKind", "schedule_faults"]

FaultKind = Literal["mixer_outage", "control_plane_outage"]


class FaultSpec(BaseModel):
    """One fault: ``kind`` from ``start`` for ``duration`` (seconds of simulated time).

    Kinds: ``mixer_outage`` (every Mixer pod down: checks fail, reports are lost) and
    ``control_plane_outage`` (no pushes, no certificate signatures). Faults of one kind must
    not overlap (the spec checks it).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: FaultKind
    start: Duration
    duration: Annotated[Duration, Field(gt=0)]


def schedule_faults(env: simpy.Environment, mesh: Mesh, faults: list[FaultSpec]) -> None:
    """Start a process per fault that switches it on and off on ``mesh``."""
    for fault in faults:
        env.process(_fault(env, mesh, fault))


def _fault(
    env: simpy.Environment, mesh: Mesh, fault: FaultSpec
) -> Generator[simpy.Event, Any, None]:
    if fault.start > env.now:
        yield env.timeout(fault.start - env.now)
    mesh.set_fault(fault.kind, True)
    yield env.timeout(fault.duration)
    mesh.set_fault(fault.kind, False)
