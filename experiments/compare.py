"""``meshsim compare``: the same application and arrivals under every architecture.

Each profile runs the same topology, workload and seed, so every architecture sees the same
arrivals and the same service times (common random numbers); differences between rows are
the mesh's, not the dice's. The profile ``none`` is the baseline for "added latency".
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from experiments.profiles import list_profiles
from experiments.results import RunResult
from experiments.runner import run_experiment
from experiments.spec import SpecError, spec_from_dict
from experiments.tables import fmt, format_table

__all__ = ["Comparison", "compare", "DEFAULT_PROFILES"]

BASELINE = "none"
DEFAULT_PROFILES = ("none", "istio-1.8", "linkerd2", "maesh", "istio-ambient", "proxyless-grpc")


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


def compare(
    *,
    topology: str = "bookinfo",
    topology_params: dict[str, Any] | None = None,
    rate_rps: float = 200.0,
    profiles: list[str] | None = None,
    duration_s: float = 20.0,
    warmup_s: float = 2.0,
    seed: int = 1,
    replications: int = 1,
    nodes: int | None = None,
    out_dir: Path | None = None,
) -> Comparison:
    """Run ``topology`` under each profile with the same arrivals; see the module docstring.

    Args:
        topology: a catalog name.
        topology_params: parameters of the catalog entry.
        rate_rps: open-loop arrival rate, requests per second.
        profiles: the profiles to compare (default: every built-in one); ``none`` is added
            first as the baseline.
        duration_s: simulated seconds per run, warm-up included.
        warmup_s: seconds cut from the statistics.
        seed: the root seed shared by every run.
        replications: replications per profile.
        nodes: override the catalog's cluster size (a flat cluster of this many nodes).
        out_dir: where to write ``comparison.json`` (and the HTML report); None = nowhere.
    """
    names = list(profiles) if profiles else list(DEFAULT_PROFILES)
    unknown = [p for p in names if p not in list_profiles()]
    if unknown:
        raise SpecError(
            f"unknown profile(s) {', '.join(unknown)}; known: {', '.join(list_profiles())}"
        )
    if BASELINE not in names:
        names.insert(0, BASELINE)
    params = dict(topology_params or {})
    if nodes is not None:
        params["cluster"] = {"nodes": [{"name": f"node-{i}"} for i in range(nodes)]}
    base = {
        "topology": {"catalog": topology, "params": params},
        "workload": {"kind": "open_loop", "rate_rps": rate_rps},
        "duration": duration_s,
        "warmup": warmup_s,
        "seed": seed,
        "replications": replications,
    }
    comparison = Comparison(results={})
    for name in names:
        spec = spec_from_dict({**base, "name": f"{topology}@{rate_rps:g}rps", "mesh": name})
        try:
            comparison.results[name] = run_experiment(spec)
        except Exception as error:  # one architecture failing must not lose the others
            comparison.failures[name] = f"{type(error).__name__}: {error}"
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        comparison.json_path = out_dir / "comparison.json"
        payload = {name: r.model_dump(mode="json") for name, r in comparison.results.items()}
        payload["_failures"] = comparison.failures  # type: ignore[assignment]
        comparison.json_path.write_text(json.dumps(payload, indent=1), encoding="utf-8")
        from experiments.report import write_report  # plotly loads only when a report is due

        comparison.report_path = write_report(comparison, out_dir / "report.html")
    return comparison
