"""The result of ``meshsim compare``: every profile's run, the baseline first, and failures.

It has a module of its own so that the comparison (``experiments.compare``, which writes the
report) and the report (``experiments.report``, which reads a comparison) both depend on it
and not on each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from experiments.results import RunResult
from experiments.tables import fmt, format_table

__all__ = ["BASELINE", "Comparison"]

#: The profile every other one is measured against ("added latency").
BASELINE = "none"


@dataclass
class Comparison:
    """The results of one comparison, the baseline first, and any failures."""

    results: dict[str, RunResult]
    failures: dict[str, str] = field(default_factory=dict)
    report_path: Path | None = None
    json_path: Path | None = None

    @property
    def baseline(self) -> RunResult | None:
        return self.results.get(BASELINE)

    def added_ms(self, profile: str, quantile: str) -> float | None:
        """Latency added over no mesh at ``quantile`` (``p50_ms``, ``p90_ms``, ``p99_ms``)."""
        base = self.baseline
        if base is None or profile not in self.results:
            return None
        mine = getattr(self.results[profile].end_to_end.latency, quantile)
        return float(mine - getattr(base.end_to_end.latency, quantile))

    def table(self) -> str:
        """The comparison as terminal tables."""
        headers = ["profile", "rps", "err %", "p50 ms", "p90 ms", "p99 ms", "+p50", "+p90", "+p99"]
        rows = []
        for name, r in self.results.items():
            lat = r.end_to_end.latency
            rows.append(
                [
                    name,
                    fmt(r.end_to_end.throughput_rps, 1),
                    fmt(r.end_to_end.error_rate * 100, 2),
                    fmt(lat.p50_ms, 3),
                    fmt(lat.p90_ms, 3),
                    fmt(lat.p99_ms, 3),
                    fmt(self.added_ms(name, "p50_ms"), 3),
                    fmt(self.added_ms(name, "p90_ms"), 3),
                    fmt(self.added_ms(name, "p99_ms"), 3),
                ]
            )
        first = next(iter(self.results.values()), None)
        title = "Latency, end to end (+ = added over no mesh)"
        if first is not None:
            title += f": {first.spec['name']}"
        blocks = [format_table(headers, rows, title)]

        # Kinds that did something (a control plane that only signed certificates during
        # the warm-up would show 0 everywhere).
        kinds = sorted(
            {k for r in self.results.values() for k, v in r.cpu.by_kind.items() if v >= 0.0005}
        )
        cpu_rows = []
        for name, r in self.results.items():
            cpu_rows.append(
                [name]
                + [fmt(r.cpu.by_kind.get(k, 0.0) * 1e3, 0) for k in kinds]
                + [fmt(sum(r.cpu.by_kind.values()) * 1e3, 0), fmt(r.memory_total_bytes / 2**20, 1)]
            )
        blocks.append(
            format_table(
                ["profile", *[f"{k} mCPU" for k in kinds], "total mCPU", "mesh MiB"],
                cpu_rows,
                "CPU by component kind (millicores) and modelled mesh memory",
            )
        )
        for name, message in self.failures.items():
            blocks.append(f"FAILED {name}: {message}")
        return "\n\n".join(blocks)
