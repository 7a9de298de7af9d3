"""How long meshsim takes to simulate one configuration change reaching 10,000 sidecars.

The mesh is ``mesh_scale`` (10,000 pods, 5,000 services of 2 pods, one pod per node) under
Istio 1.8's profile with istiod; one change (``svc-1`` scaled from 2 to 3 pods) is pushed to
every proxy that knows ``svc-1``. With ``--scoping mesh`` that is every proxy, and each push
grows with the mesh; with the profile's namespace scoping, only svc-1's namespace.

Reported: the wall time to build the simulation (pods, sidecars, the control plane) and to
run it, the simulated convergence (p50, p99, max over proxies) and the pushes sent.

Run with ``python -m benchmarks.convergence [--pods 10000] [--scoping mesh|namespace]``.
"""

from __future__ import annotations

import argparse
import json
import time

from experiments.spec import spec_from_dict
from models.control_plane import convergence_summary
from models.simulation import Simulation


def run(pods: int, scoping: str, duration_s: float) -> dict:
    spec = spec_from_dict(
        {
            "topology": {"catalog": "mesh_scale", "params": {"pods": pods}},
            "mesh": {"profile": "istio-1.8", "overrides": {"scoping": scoping}},
            "workload": {"kind": "open_loop", "rate_rps": 20},
            "duration": duration_s,
            "warmup": 30.0,
            "changes": [{"at": 35.0, "kind": "scale", "service": "svc-1", "replicas": 3}],
        }
    )
    started = time.perf_counter()
    simulation = Simulation(
        spec.resolve_topology(),
        spec.mesh.resolve(),
        spec.workload,
        spec.seed,
        spec.duration,
        spec.warmup,
        changes=spec.changes,
    )
    built = time.perf_counter()
    out = simulation.run()
    done = time.perf_counter()
    summary = out.extras["control_plane"]
    change = summary["changes"][0]
    return {
        "pods": pods,
        "sidecars": summary["proxies"],
        "scoping": scoping,
        "simulated_s": duration_s,
        "build_wall_s": built - started,
        "run_wall_s": done - built,
        "total_wall_s": done - started,
        "pushes": summary["pushes"],
        **convergence_summary(change["convergence_s"], change["affected"]),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pods", type=int, default=10_000)
    parser.add_argument("--scoping", choices=["mesh", "namespace"], default="mesh")
    parser.add_argument("--duration", type=float, default=250.0, help="simulated seconds")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    row = run(args.pods, args.scoping, args.duration)
    if args.json:
        print(json.dumps(row, indent=2))
        return
    print(
        f"{row['sidecars']:,} sidecars ({row['pods']:,} pods, scoping {row['scoping']}), "
        f"one change pushed by istiod, {row['simulated_s']:g} s simulated"
    )
    print(
        f"wall: {row['build_wall_s']:.1f} s to build, {row['run_wall_s']:.1f} s to run, "
        f"{row['total_wall_s']:.1f} s in all"
    )
    print(
        f"convergence over {row['converged']:,} of {row['affected']:,} proxies: "
        f"p50 {row['p50_s']:.2f} s, p99 {row['p99_s']:.2f} s, max {row['max_s']:.2f} s; "
        f"{row['pushes']:,} pushes"
    )


if __name__ == "__main__":
    main()
