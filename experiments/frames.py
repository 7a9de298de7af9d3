"""Tidy tables of results for notebooks: one row per figure (pandas, an optional extra).

A run's figures become rows of ``(scope, metric, value)``: ``scope`` is ``end-to-end``, a
workload's name, a component kind (CPU) or a proxy kind (memory), and ``metric`` names the
figure with its unit (``p99_ms``, ``throughput_rps``, ``cpu_cores``). A sweep's table adds a
column per swept field, so that ``frame.pivot_table(index="workload.rate_rps",
columns="mesh", values="value")`` on one metric is a plot away. With replications, each
replication's own end-to-end figures come too, under ``replication`` (``None`` marks the
merged run).

``pip install 'meshsim[frames]'`` brings pandas and pyarrow (for Parquet).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from experiments.overrides import value_label

if TYPE_CHECKING:
    import pandas as pd

# Results and sweep points are read by attribute (``RunResult``, ``ServiceResult``,
# ``SweepPoint``), not imported: ``RunResult.to_frame`` calls this module.
RunResult = ServiceResult = SweepPoint = Any


class FrameError(ValueError):
    """A table that cannot be made or written: pandas or pyarrow missing, an unknown format."""


__all__ = ["FrameError", "FORMATS", "result_rows", "run_frame", "sweep_frame", "write_frame"]

FORMATS = ("csv", "parquet")

COLUMNS = ["run", "seed", "replication", "scope", "metric", "value"]

_FIGURES = ("requests", "throughput_rps", "error_rate", "mean_ms", "p50_ms", "p90_ms", "p99_ms")
_FIGURES += ("p999_ms",)
"""A replication's own end-to-end figures (``experiments.results.Figures``' fields; a test
checks they are the same)."""


def _pandas() -> Any:
    try:
        import pandas
    except ImportError:
        raise FrameError("tables of results need pandas: pip install 'meshsim[frames]'") from None
    return pandas


def _service_rows(service: ServiceResult, scope: str) -> list[tuple[str, str, float]]:
    lat = service.latency
    return [
        (scope, "requests", float(service.requests)),
        (scope, "throughput_rps", service.throughput_rps),
        (scope, "error_rate", service.error_rate),
        (scope, "mean_ms", lat.mean_ms),
        (scope, "p50_ms", lat.p50_ms),
        (scope, "p90_ms", lat.p90_ms),
        (scope, "p99_ms", lat.p99_ms),
        (scope, "p999_ms", lat.p999_ms),
        (scope, "max_ms", lat.max_ms),
    ]


def result_rows(result: RunResult) -> list[dict[str, Any]]:
    """A run's figures as tidy rows (see the module docstring)."""
    rows: list[tuple[str, str, float]] = _service_rows(result.end_to_end, "end-to-end")
    for name, service in sorted(result.services.items()):
        rows += _service_rows(service, name)
    rows += [("end-to-end", f"hop_{kind}_ms", v) for kind, v in sorted(result.hops_ms.items())]
    rows += [(kind, "cpu_cores", v) for kind, v in sorted(result.cpu.by_kind.items())]
    memory: dict[str, float] = {}
    for proxy in result.proxies.values():
        memory[proxy.kind] = memory.get(proxy.kind, 0.0) + float(proxy.memory_bytes)
    rows += [(kind, "memory_bytes", v) for kind, v in sorted(memory.items())]
    out = [
        {
            "run": result.name,
            "seed": result.seed,
            "replication": None,
            "scope": s,
            "metric": m,
            "value": float(v),
        }
        for s, m, v in rows
    ]
    if len(result.replications) > 1:
        for i, replication in enumerate(result.replications):
            for metric in _FIGURES:
                value = getattr(replication, metric)
                out.append(
                    {
                        "run": result.name,
                        "seed": replication.seed,
                        "replication": i,
                        "scope": "end-to-end",
                        "metric": metric,
                        "value": float(value),
                    }
                )
    return out


def run_frame(result: RunResult) -> pd.DataFrame:
    """A run's figures as a tidy DataFrame."""
    return _pandas().DataFrame(result_rows(result), columns=COLUMNS)


def sweep_frame(points: list[SweepPoint]) -> pd.DataFrame:
    """A sweep's figures as one tidy DataFrame: a column per swept field (a mesh by its
    profile's name), then the run's columns; failed or missing points are left out."""
    paths = list(points[0].assignments) if points else []
    rows = []
    for point in points:
        if point.result is None:
            continue
        labels = {path: _cell(point.assignments[path]) for path in paths}
        rows += [{**labels, **row} for row in result_rows(point.result)]
    return _pandas().DataFrame(rows, columns=[*paths, *COLUMNS])


def _cell(value: Any) -> Any:
    """A swept value in a table: numbers and names as they are, a mesh by its profile."""
    return value if isinstance(value, int | float | str | bool) else value_label(value)


def write_frame(frame: pd.DataFrame, path: Path, fmt: str | None = None) -> Path:
    """Write ``frame`` as CSV or Parquet (``fmt``, or the file's suffix) and return the path."""
    fmt = fmt or path.suffix.lstrip(".").lower()
    if fmt not in FORMATS:
        raise FrameError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "csv":
        frame.to_csv(path, index=False)
    else:
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise FrameError("Parquet needs pyarrow: pip install 'meshsim[frames]'") from None
        # Swept values of mixed types (numbers and names) are written as text.
        frame = frame.astype(
            {c: str for c in frame.columns if frame[c].dtype == object and c != "replication"}
        )
        frame.to_parquet(path, index=False)
    return path
