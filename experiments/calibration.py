"""Calibration: Istio's own benchmark, run for each profile, against what was published.

The set-up is the one Istio describes on its "Performance and Scalability" pages
(REFERENCE.md section 6): fortio as a closed loop, HTTP/1.1, 1 KiB payloads, 1000 rps over 16
connections, proxies with 2 worker threads, mTLS where the mesh has it, and one client and
one server service on two nodes. Each profile runs it with the same seed and the same fortio
flags as ``none``; the added latency is the difference of the two at p90 and p99, and the
proxy CPU is the proxies' cores per 1000 rps through each of them.

fortio's pacing flags are those Istio's benchmark (github.com/istio/tools, perf/benchmark/
runner/runner.py, ``Fortio.run`` / ``generate_fortio_cmd``) ran when each profile's figures
were published (:data:`FORTIO_FLAGS`): fortio's defaults (every connection starts at once,
no jitter, catching up), except where noted there.

Proxy memory is evaluated on Istio's load-test mesh (1000 services, 2000 sidecars), built with
the same code as any simulation (no requests are needed: memory depends on configuration).
How many services share a namespace there was not published; we take 10.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from experiments.profiles import list_profiles, load_profile, resolve_mesh
from experiments.results import RunResult
from experiments.runner import run_experiment
from experiments.spec import ExperimentSpec, spec_from_dict
from experiments.tables import fmt, format_table
from models.simulation import CLIENT_POD, Simulation
from models.workload import ClosedLoopSpec
from topologies import TopologySpec

__all__ = [
    "CalibrationRow",
    "benchmark_spec",
    "benchmark_memory_mb",
    "calibrate",
    "format_calibration",
    "loadtest_memory_mb",
    "LOADTEST",
    "FORTIO_FLAGS",
]

# Istio's load-test mesh: 1000 services, 2 pods each; namespaces of 10 services (assumed).
LOADTEST = {"services": 1000, "replicas": 2, "services_per_namespace": 10, "nodes": 50}

# fortio's echo server: a tiny, fast service (its own time is not published; ours).
FORTIO_SERVER = {
    "name": "fortio-server",
    "workers": 64,
    "service_time": {"kind": "lognormal", "mean": "60us", "p99": "200us"},
    "request_size_bytes": "1KiB",
    "response_size_bytes": "1KiB",
    "protocol": "http1",
}

FORTIO_FLAGS: dict[str, dict[str, bool]] = {
    # Istio 1.1 and 1.4 (2019): runner.py ran `fortio load -c {conn} -qps {qps} -t
    # {duration}s -a -r {r} -httpbufferkb=128 -labels {labels}` (commits c78e12c648 to
    # 18e3984f85): no pacing flag, fortio's defaults.
    # Istio 1.8 to 1.15: the pages give 2.65 ms (p90) and 2.91 ms (p99) for the default set-up
    # and, apart, 1.7 ms and 2.69 ms "with jitter": the figures fitted are the defaults'.
    # Istio ambient (2024): runner.py passes `-jitter={jitter} -uniform={uniform}
    # -nocatchup={nocatchup}` (since 52d01c2930) and its latency configs
    # (configs/istio/telemetryv2_stats/latency.yaml and configs/istio/none/latency.yaml, since
    # ac541177b8, January 2024) set `uniform: true` and `nocatchup: true`; the ambient install
    # profile joined the pipeline in October 2024 (2ee663f31d).
    "istio-ambient": {"uniform": True, "nocatchup": True},
    # Istio 1.24's page (2024, the same pipeline and configs): CPU and memory are calibrated.
    "istio-1.24": {"uniform": True, "nocatchup": True},
    "istio-1.24-ambient": {"uniform": True, "nocatchup": True},
}
"""fortio's pacing flags (``ClosedLoopSpec`` fields) per profile, where Istio's benchmark did
not run fortio's defaults; the ``none`` baseline of a profile runs with the same flags."""

# What each architecture's proxies are called in a mesh spec (for "2 worker threads").
_WORKER_OVERRIDES: dict[str, dict[str, Any]] = {
    "sidecar": {"proxy": {"concurrency": 2}},
    "per_node": {"proxy": {"concurrency": 2}},
    "ambient": {"ztunnel": {"concurrency": 2}, "waypoint": {"concurrency": 2}},
}


@dataclass(frozen=True)
class CalibrationRow:
    """One published figure against its simulated counterpart."""

    profile: str
    metric: str
    published: float | None
    simulated: float
    tolerance: float | None

    @property
    def error(self) -> float | None:
        if self.published is None:
            return None
        return (self.simulated - self.published) / self.published

    @property
    def within(self) -> bool | None:
        if self.published is None or self.tolerance is None:
            return None
        return abs(self.error or 0.0) <= self.tolerance


def benchmark_spec(
    profile: str,
    duration_s: float = 30.0,
    seed: int = 1,
    fortio: dict[str, bool] | None = None,
) -> ExperimentSpec:
    """Istio's benchmark set-up for ``profile`` (see the module docstring).

    Args:
        profile: the mesh profile.
        duration_s: simulated time (seconds), warm-up included.
        seed: the root seed.
        fortio: fortio's pacing flags; None = the profile's (:data:`FORTIO_FLAGS`).
    """
    architecture = load_profile(profile).mesh["architecture"]
    flags = FORTIO_FLAGS.get(profile, {}) if fortio is None else fortio
    return spec_from_dict(
        {
            "name": f"istio-benchmark/{profile}",
            "topology": {
                "cluster": {"nodes": [{"name": "node-0"}, {"name": "node-1"}]},
                "call_graph": {"services": [FORTIO_SERVER], "entry": "fortio-server"},
                "placement": {
                    "strategy": "explicit",
                    "assignments": {"fortio-server-0": "node-1"},
                },
            },
            "mesh": {"profile": profile, "overrides": _WORKER_OVERRIDES.get(architecture, {})},
            "workload": {
                "kind": "closed_loop",
                "connections": 16,
                "qps": 1000,
                "payload_bytes": "1KiB",
                **flags,
            },
            "client_node": "node-0",
            "duration": duration_s,
            "warmup": min(2.0, duration_s / 5),
            "seed": seed,
        }
    )


def loadtest_topology() -> TopologySpec:
    """Istio's load-test mesh, for the memory model (no calls: memory is configuration)."""
    n, per_ns = LOADTEST["services"], LOADTEST["services_per_namespace"]
    services = [
        {"name": f"svc-{i}", "replicas": LOADTEST["replicas"], "namespace": f"ns-{i // per_ns}"}
        for i in range(n)
    ]
    return TopologySpec.model_validate(
        {
            "name": "istio-loadtest",
            "cluster": {"nodes": [{"name": f"node-{i}"} for i in range(LOADTEST["nodes"])]},
            "call_graph": {"services": services, "entry": "svc-0"},
        }
    )


def loadtest_memory_mb(profile: str, overrides: dict[str, Any] | None = None) -> float:
    """Mean modelled memory per proxy (MB, 10^6 bytes) in Istio's load-test mesh."""
    mesh = resolve_mesh(profile, overrides)
    simulation = Simulation(
        loadtest_topology(), mesh, ClosedLoopSpec(connections=1), seed=1, duration_s=1.0
    )
    # The load test's 2000 sidecars are the services'; our load generator's is not one of them.
    memory = {k: v for k, v in simulation.mesh.memory_bytes().items() if CLIENT_POD not in k}
    return sum(memory.values()) / len(memory) / 1e6 if memory else 0.0


def calibrate(
    profiles: list[str] | None = None, duration_s: float = 30.0, seed: int = 1
) -> tuple[list[CalibrationRow], dict[str, RunResult]]:
    """Run the benchmark for each profile and ``none``; compare with the published figures."""
    names = [p for p in (profiles or list_profiles()) if p != "none"]
    results = {"none": run_experiment(benchmark_spec("none", duration_s, seed, {}))}
    bases: dict[tuple[tuple[str, bool], ...], RunResult] = {(): results["none"]}  # per flags
    rows: list[CalibrationRow] = []
    for name in names:
        profile = load_profile(name)
        targets = profile.calibration
        tolerance = targets.get("tolerance")
        flags = FORTIO_FLAGS.get(name, {})
        key = tuple(sorted(flags.items()))
        if key not in bases:
            bases[key] = run_experiment(benchmark_spec("none", duration_s, seed, flags))
        base = bases[key].end_to_end.latency
        result = results[name] = run_experiment(benchmark_spec(name, duration_s, seed))
        lat = result.end_to_end.latency
        rows.append(
            CalibrationRow(
                name,
                "added p90 (ms)",
                targets.get("added_p90_ms"),
                lat.p90_ms - base.p90_ms,
                tolerance,
            )
        )
        rows.append(
            CalibrationRow(
                name,
                "added p99 (ms)",
                targets.get("added_p99_ms"),
                lat.p99_ms - base.p99_ms,
                tolerance,
            )
        )
        per_proxy = result.cpu.per_proxy_per_1000_rps
        vcpu_targets = _per_kind(targets.get("vcpu_per_1000_rps_per_proxy"), per_proxy)
        for kind, vcpu in per_proxy.items():
            rows.append(
                CalibrationRow(
                    name, f"{kind} vCPU per 1000 rps", vcpu_targets.get(kind), vcpu, tolerance
                )
            )
        for kind, published in (targets.get("benchmark_memory_mb") or {}).items():
            rows.append(
                CalibrationRow(
                    name,
                    f"{kind} memory in the benchmark (MB)",
                    published,
                    benchmark_memory_mb(result, kind),
                    tolerance,
                )
            )
        if "mixer_telemetry" in result.cpu.per_1000_rps:
            rows.append(
                CalibrationRow(
                    name,
                    "Mixer telemetry vCPU per 1000 mesh rps",
                    targets.get("mixer_telemetry_vcpu_per_1000_rps"),
                    result.cpu.per_1000_rps["mixer_telemetry"],
                    tolerance,
                )
            )
        if result.memory_bytes:
            rows.append(
                CalibrationRow(
                    name,
                    "memory per proxy, load-test mesh (MB)",
                    targets.get("memory_mb_per_proxy"),
                    loadtest_memory_mb(name),
                    tolerance,
                )
            )
    return rows, results


def _per_kind(target: Any, measured: Mapping[str, Any]) -> dict[str, float]:
    """A profile's published figure per proxy kind: a mapping of kind to figure, or one
    figure for a profile whose path has one kind of proxy (None: not published)."""
    if target is None:
        return {}
    if isinstance(target, Mapping):
        return {str(kind): float(value) for kind, value in target.items()}
    return {kind: float(target) for kind in measured} if len(measured) == 1 else {}


def benchmark_memory_mb(result: RunResult, kind: str) -> float:
    """Mean modelled memory (MB, 10^6 bytes) of the proxies of ``kind`` in a benchmark run:
    what Istio 1.24's page gives per proxy (its mesh is the benchmark's, not the load test's).
    NaN when the run has no proxy of that kind."""
    memory = [float(p.memory_bytes) for p in result.proxies.values() if p.kind == kind]
    return sum(memory) / len(memory) / 1e6 if memory else float("nan")


def format_calibration(rows: list[CalibrationRow]) -> str:
    """The calibration table: published, simulated, error, and whether within tolerance."""
    table = []
    for row in rows:
        within = {True: "yes", False: "NO", None: "-"}[row.within]
        table.append(
            [
                row.profile,
                row.metric,
                fmt(row.published, 3) if row.published is not None else "not published",
                fmt(row.simulated, 3),
                f"{row.error * 100:+.1f} %" if row.error is not None else "-",
                f"±{row.tolerance * 100:.0f} %"
                if row.tolerance and row.published is not None
                else "-",
                within,
            ]
        )
    return format_table(
        ["profile", "metric", "published", "simulated", "error", "tolerance", "within"],
        table,
        "Istio's benchmark (fortio, HTTP/1.1, 1 KiB, 1000 rps, 16 connections, 2 workers, mTLS)",
    )
