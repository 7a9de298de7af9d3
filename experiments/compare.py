"""``meshsim compare``: the same application and arrivals under every architecture.

Each profile runs the same topology, workload and seed, so every architecture sees the same
arrivals and the same service times (common random numbers); differences between rows are
the mesh's, not the dice's. The profile ``none`` is the baseline for "added latency".
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from experiments.budget import Budget, check_budget, estimate_experiment, total
from experiments.comparison import BASELINE, Comparison
from experiments.profiles import list_profiles
from experiments.runner import run_experiment
from experiments.spec import SpecError, spec_from_dict
from topologies.callgraph import MAX_PODS

__all__ = ["Comparison", "compare", "DEFAULT_PROFILES"]

DEFAULT_PROFILES = (
    "none",
    "istio-1.8",
    "istio-1.24",
    "linkerd2",
    "maesh",
    "istio-ambient",
    "proxyless-grpc",
)


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
    budget: Budget | None = None,
    workload: dict[str, Any] | None = None,
    base_spec: dict[str, Any] | None = None,
) -> Comparison:
    """Run ``topology`` under each profile with the same arrivals; see the module docstring.

    Args:
        topology: a catalog name, or a topology file (``.yaml``).
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
        budget: what the runs together may cost (:mod:`experiments.budget`); None for the
            default budget. Checked before the first run.
        workload: the workload as a spec gives it (a closed loop:
            ``{"kind": "closed_loop", "connections": 16, "qps": 1000}``); None for an open
            loop at ``rate_rps``.
        base_spec: an experiment spec's data to run under each profile (its ``mesh`` is
            replaced, its ``sweep`` refused); the other arguments but ``profiles``,
            ``out_dir`` and ``budget`` are then not used.

    Raises:
        SpecError: for an unknown profile or a run that does not validate (before any run).
        experiments.budget.BudgetError: if the runs together exceed the budget.
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
        if not 1 <= nodes <= MAX_PODS:  # a node per pod at most; before listing them
            raise SpecError(f"nodes must be between 1 and {MAX_PODS:,}, got {nodes:,}")
        params["cluster"] = {"nodes": [{"name": f"node-{i}"} for i in range(nodes)]}
    if base_spec is not None:
        if base_spec.get("sweep") is not None:
            raise SpecError("compare runs one experiment per profile: give a spec without a sweep")
        base = {k: v for k, v in base_spec.items() if k != "mesh"}
        label = str(base.get("name", "experiment"))
    else:
        is_file = topology.endswith((".yaml", ".yml"))
        if is_file and params:
            raise SpecError("a topology file takes no catalog parameters (nodes)")
        load = workload or {"kind": "open_loop", "rate_rps": rate_rps}
        base = {
            "topology": topology if is_file else {"catalog": topology, "params": params},
            "workload": load,
            "duration": duration_s,
            "warmup": warmup_s,
            "seed": seed,
            "replications": replications,
        }
        shown = Path(topology).stem if is_file else topology
        if load["kind"] == "closed_loop":
            label = f"{shown}@{load['connections']}x{load.get('qps', 0):g}qps"
        else:
            label = f"{shown}@{rate_rps:g}rps"
    specs = {}
    for name in names:
        data = {**base, "name": label, "mesh": name}
        if name == BASELINE and data.get("policies"):
            # No mesh runs no traffic policy: the baseline is the same load without them.
            data["policies"] = []
        specs[name] = spec_from_dict(data)
    estimates = (estimate_experiment(spec, label=name) for name, spec in specs.items())
    check_budget(total(estimates), budget, command="meshsim compare")
    comparison = Comparison(results={})
    for name, spec in specs.items():
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
