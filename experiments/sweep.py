"""Sweeps: one experiment over a grid of parameter values, given by dotted path.

A spec with ``sweep: {grid: {path: [values], ...}}`` stands for the cross product of the
grid: each point is the spec with those fields set (``mesh`` or ``workload.rate_rps``,
``topology.params.pods``...), validated like any spec. ``experiments.store.run_sweep`` runs
the points one after another; a point that fails keeps its error and the others their
results.
"""

from __future__ import annotations

import copy
import itertools
import math
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator

from experiments.overrides import set_path, value_label
from experiments.results import RunResult
from experiments.tables import fmt, format_table

__all__ = [
    "MAX_SWEEP_POINTS",
    "NOT_RUN",
    "SweepSpec",
    "SweepPoint",
    "sweep_points",
    "sweep_table",
]

MAX_SWEEP_POINTS = 10_000
"""The most points of a grid. Every point is validated as a spec of its own (about 2 ms for
Bookinfo), so the count is checked first: a grid of a million points is refused at once, not
after half an hour of validation. What the points cost to run is ``experiments.budget``'s."""


class SweepSpec(BaseModel):
    """A grid: every combination of the values, by dotted path into the spec."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    grid: dict[str, list[Any]]

    @field_validator("grid")
    @classmethod
    def _values(cls, grid: dict[str, list[Any]]) -> dict[str, list[Any]]:
        if not grid:
            raise ValueError("give at least one field to sweep, with its values")
        for path, values in grid.items():
            if not values:
                raise ValueError(f"grid.{path}: give at least one value")
            if path.split(".")[0] in ("sweep", "name"):
                raise ValueError(f"grid.{path}: this field cannot be swept")
        points = math.prod(len(values) for values in grid.values())
        if points > MAX_SWEEP_POINTS:
            sizes = " x ".join(f"{len(v):,} ({p})" for p, v in grid.items())
            raise ValueError(
                f"{sizes} = {points:,} points, more than the {MAX_SWEEP_POINTS:,} a sweep "
                "may have; split it into several sweeps"
            )
        return grid


NOT_RUN = "not run yet"
"""The error of a point a store does not hold yet (``meshsim report`` on a partial sweep)."""


@dataclass
class SweepPoint:
    """One point of a sweep: its assignments, and its result or its error."""

    assignments: dict[str, Any]
    result: RunResult | None = None
    error: str | None = None


def sweep_points(
    base: dict[str, Any], sweep: SweepSpec
) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(assignments, spec data) for every point of the grid, in grid order."""
    paths = list(sweep.grid)
    points = []
    for values in itertools.product(*(sweep.grid[p] for p in paths)):
        data = copy.deepcopy(base)
        data.pop("sweep", None)
        assignments = dict(zip(paths, values, strict=True))
        for path, value in assignments.items():
            set_path(data, path.split("."), value)
        points.append((assignments, data))
    return points


def sweep_table(points: list[SweepPoint]) -> str:
    """One row per point: its values, latency, errors, CPU by kind, memory, and when the
    mesh has a control plane, the first change's convergence and stale-routing failures."""
    paths = list(points[0].assignments) if points else []
    results = [p.result for p in points if p.result is not None]
    # Kinds that did something: a control plane that only signed a few certificates during
    # the warm-up shows 0 everywhere and would only widen the table.
    kinds = sorted({k for r in results for k, v in r.cpu.by_kind.items() if v >= 0.0005})
    has_cp = any(r.control_plane is not None and r.control_plane.changes for r in results)
    has_mixer = any("mixer" in r.extras for r in results)
    headers = [p.split(".")[-1] for p in paths] + ["rps", "err %", "p50 ms", "p90 ms", "p99 ms"]
    headers += [f"{k} mCPU" for k in kinds] + ["mesh MiB"]
    if has_cp:
        headers += ["proxies", "pushes", "conv p50 s", "conv p99 s", "conv max s", "stale fails"]
    if has_mixer:
        headers += ["checks failed", "denied"]
    rows = []
    for point in points:
        row = [value_label(point.assignments[p]) for p in paths]
        r = point.result
        if r is None:
            rows.append(row + [point.error if point.error == NOT_RUN else f"FAILED: {point.error}"])
            continue
        lat = r.end_to_end.latency
        row += [
            fmt(r.end_to_end.throughput_rps, 1),
            fmt(r.end_to_end.error_rate * 100, 2),
            fmt(lat.p50_ms, 3),
            fmt(lat.p90_ms, 3),
            fmt(lat.p99_ms, 3),
        ]
        row += [fmt(r.cpu.by_kind.get(k, 0.0) * 1e3, 0) for k in kinds]
        row.append(fmt(r.memory_total_bytes / 2**20, 1))
        if has_cp:
            cp = r.control_plane
            if cp is not None and cp.changes:
                change = cp.changes[0]
                row += [
                    fmt(cp.proxies),
                    "/".join(f"{n} {k}" for k, n in sorted(cp.push_counts.items()) if n)
                    or fmt(cp.pushes),
                    fmt(change.p50_s, 3),
                    fmt(change.p99_s, 3),
                    fmt(change.max_s, 3),
                    fmt(cp.stale_failures),
                ]
            else:
                row += ["-"] * 6
        if has_mixer:
            mixer = r.extras.get("mixer", {})
            row += [fmt(mixer.get("check_failures")), fmt(mixer.get("denied"))]
        rows.append(row)
    return format_table(headers, rows, f"Sweep: {len(points)} points")
