"""How long meshsim takes to simulate configuration changes reaching 10,000 proxies.

The mesh is ``mesh_scale`` (10,000 pods, 5,000 services of 2 pods, one pod per node).

``--mesh istio`` (the default): Istio 1.8's profile with istiod; one change (``svc-1``
scaled from 2 to 3 pods) is pushed to every proxy that knows ``svc-1``, as an incremental
EDS push (svc-1's endpoints only; ``--modes`` shows it as a full push too). With
``--scoping mesh`` that is every proxy; with the profile's namespace scoping, only svc-1's
namespace. Reported: the wall time to build the simulation (pods,
sidecars, the control plane) and to run it, the simulated convergence (p50, p99, max over
proxies) and the pushes sent.

``--mesh maesh``: the Maesh profile, a proxy per node (10,000) polling the controller every
5 s (Traefik's default), for 400 simulated seconds with three changes (``svc-1`` scaled at 35 s, a route
change of ``svc-2`` at 35.4 s, ``svc-3`` deployed at 200 s). Reported: the SimPy events
processed, the CPU time (``time.process_time``) to build and to run, the polls (and those
that found nothing new) and, per change, the convergence (p50, p99, max) and a digest of
every proxy's convergence time, so that two versions of the code can be shown to give the
same figures to the last bit.

``--modes``: Istio's push semantics side by side (see models/control_plane.py): for 100,
1,000 and 10,000 pods (``--sizes``), Istio 1.8's profile with mesh scoping under three modes,
``full`` (every change regenerates every proxy's configuration: no incremental EDS, state of
the world), ``eds`` (incremental EDS, state of the world: Istio 1.1 to 1.21) and ``delta``
(incremental EDS and delta xDS: Istio 1.22 on), and two changes, each in a run of its own:
``scale`` (svc-1 from 2 to 3 pods: endpoints only) and ``add_service`` (a new service of 2
pods). Reported per run: the pushes by kind, the convergence (p50, p99, max over proxies),
the control plane's CPU for the change (push contexts and pushes, simulated seconds), the
bytes pushed, and the CPU time meshsim took to build and run it (``time.process_time``).

Run with ``python -m benchmarks.convergence [--mesh istio|maesh] [--pods 10000]
[--scoping mesh|namespace] [--duration S]`` or ``python -m benchmarks.convergence --modes
[--sizes 100,1000,10000] [--duration S]``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time

from experiments.runner import build_simulation
from experiments.spec import spec_from_dict
from models.control_plane import convergence_summary


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
    simulation = build_simulation(spec)
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


MODES: dict[str, dict[str, object]] = {
    "full": {"incremental_eds": False, "xds": "sotw"},
    "eds": {"incremental_eds": True, "xds": "sotw"},
    "delta": {"incremental_eds": True, "xds": "delta"},
}
MODE_CHANGES: dict[str, dict[str, object]] = {
    "scale": {"at": 35.0, "kind": "scale", "service": "svc-1", "replicas": 3},
    "add_service": {"at": 35.0, "kind": "add_service", "service": "svc-new", "replicas": 2},
}


def run_mode(pods: int, mode: str, change: str, duration_s: float) -> dict:
    """One change under one push mode, Istio 1.8's profile with mesh scoping."""
    spec = spec_from_dict(
        {
            "topology": {"catalog": "mesh_scale", "params": {"pods": pods}},
            "mesh": {
                "profile": "istio-1.8",
                "overrides": {"scoping": "mesh", "control_plane": MODES[mode]},
            },
            "workload": {"kind": "open_loop", "rate_rps": 20},
            "duration": duration_s,
            "warmup": 30.0,
            "changes": [MODE_CHANGES[change]],
        }
    )
    started = time.process_time()
    out = build_simulation(spec).run()
    cpu = time.process_time() - started
    summary = out.extras["control_plane"]
    record = summary["changes"][0]
    return {
        "pods": pods,
        "proxies": summary["proxies"],
        "mode": mode,
        "change": change,
        "push_counts": summary["push_counts"],
        "cpu_s": summary["push_cpu_s"] + summary["push_context_cpu_s"],
        "push_bytes": summary["push_bytes"],
        "sim_cpu_s": cpu,
        **convergence_summary(record["convergence_s"], record["affected"]),
    }


def print_modes(rows: list[dict]) -> None:
    print(
        f"{'pods':>6} {'change':<11} {'mode':<5} {'pushes (full/eds/delta)':>23} "
        f"{'p50 s':>7} {'p99 s':>7} {'max s':>7} {'CPU s':>8} {'MB':>8} {'sim CPU s':>9}"
    )
    for r in rows:
        counts = r["push_counts"]
        pushes = f"{counts['full']}/{counts['eds']}/{counts['delta']}"
        converged = "" if r["converged"] == r["affected"] else f" ({r['converged']} conv.)"
        print(
            f"{r['pods']:>6} {r['change']:<11} {r['mode']:<5} {pushes:>23} "
            f"{r['p50_s']:>7.3f} {r['p99_s']:>7.3f} {r['max_s']:>7.3f} {r['cpu_s']:>8.2f} "
            f"{r['push_bytes'] / 1e6:>8.1f} {r['sim_cpu_s']:>9.1f}{converged}"
        )


MAESH_CHANGES = [
    {"at": 35.0, "kind": "scale", "service": "svc-1", "replicas": 3},
    {"at": 35.4, "kind": "route_weights", "service": "svc-2"},
    {"at": 200.0, "kind": "deploy", "service": "svc-3"},
]


def run_maesh(pods: int, duration_s: float) -> dict:
    """Maesh at ``pods`` proxies (one per node): events, CPU time, polls, convergence."""
    spec = spec_from_dict(
        {
            "topology": {"catalog": "mesh_scale", "params": {"pods": pods}},
            "mesh": {"profile": "maesh"},
            "workload": {"kind": "open_loop", "rate_rps": 20},
            "duration": duration_s,
            "warmup": 30.0,
            "changes": [c for c in MAESH_CHANGES if c["at"] < duration_s],
        }
    )
    started = time.process_time()
    simulation = build_simulation(spec)
    built = time.process_time()
    events = 0
    step = simulation.env.step

    def counted() -> None:  # the benchmark's own count: every event the clock processes
        nonlocal events
        events += 1
        step()

    simulation.env.step = counted  # type: ignore[method-assign]
    out = simulation.run()
    done = time.process_time()
    summary = out.extras["control_plane"]
    changes = []
    for change in summary["changes"]:
        samples = change["convergence_s"]
        digest = hashlib.sha256(repr(samples).encode()).hexdigest()[:16]
        stats = convergence_summary(samples, change["affected"])
        changes.append({"at_s": change["at_s"], "kind": change["kind"], **stats, "digest": digest})
    return {
        "pods": pods,
        "proxies": summary["proxies"],
        "simulated_s": duration_s,
        "events": events,
        "build_cpu_s": built - started,
        "run_cpu_s": done - built,
        "pushes": summary["pushes"],
        # Absent before polls were counted (the code this is compared against).
        "polls": summary.get("polls"),
        "empty_polls": summary.get("empty_polls"),
        "changes": changes,
    }


def print_maesh(row: dict) -> None:
    print(
        f"Maesh: {row['proxies']:,} node proxies ({row['pods']:,} pods), "
        f"{row['simulated_s']:g} s simulated, {len(row['changes'])} changes"
    )
    print(
        f"{row['events']:,} SimPy events; CPU {row['build_cpu_s']:.2f} s to build, "
        f"{row['run_cpu_s']:.2f} s to run"
    )
    polls = "not counted" if row["polls"] is None else f"{row['polls']:,}"
    empty = "" if row["empty_polls"] is None else f" ({row['empty_polls']:,} found nothing new)"
    print(f"{row['pushes']:,} configurations fetched; polls: {polls}{empty}")
    for c in row["changes"]:
        print(
            f"  {c['kind']} at {c['at_s']:g} s: {c['converged']:,} of {c['affected']:,} "
            f"proxies, p50 {c['p50_s']!r} s, p99 {c['p99_s']!r} s, max {c['max_s']!r} s, "
            f"digest {c['digest']}"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mesh", choices=["istio", "maesh"], default="istio")
    parser.add_argument("--pods", type=int, default=10_000)
    parser.add_argument("--scoping", choices=["mesh", "namespace"], default="mesh")
    parser.add_argument("--duration", type=float, help="simulated seconds (istio: 250, maesh: 400)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--modes", action="store_true", help="full push vs incremental EDS vs delta"
    )
    parser.add_argument("--sizes", default="100,1000,10000", help="--modes: pods, comma-separated")
    args = parser.parse_args(argv)
    if args.modes:
        rows = [
            run_mode(int(pods), mode, change, args.duration or 200.0)
            for pods in args.sizes.split(",")
            for change in MODE_CHANGES
            for mode in MODES
        ]
        if args.json:
            print(json.dumps(rows, indent=2))
        else:
            print_modes(rows)
        return
    if args.mesh == "maesh":
        found = run_maesh(args.pods, args.duration or 400.0)
        if args.json:
            print(json.dumps(found, indent=2))
        else:
            print_maesh(found)
        return
    args.duration = args.duration or 250.0
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
