"""How long meshsim takes to build a large simulation, and whether building is linear.

Two measurements, in CPU time (``time.process_time``), every case interleaved with the others
in each repeat so that they share the machine's noise, the median of ``--repeat`` kept:

* ``build``: a chain of ``n`` services (one replica each, on the catalog's default cluster)
  for each size: the time to build and validate the topology (``topologies.chain``, which
  validates the call graph and places the pods), then the time to build a
  ``models.simulation.Simulation`` from it (pods, proxies, control plane; nothing runs),
  without a mesh and with Istio 1.8's sidecars. The time per service is printed: if building
  is linear in services, it stays flat from 1,000 to 10,000. Each case is also built with
  the cyclic garbage collector paused (``gc.disable()``), which separates the work the build
  does from the collector's full collections, whose cost grows with everything built so far.
* ``gc.freeze``: ``mesh_scale`` with 10,000 pods under Istio 1.8's sidecars (10,000 proxies
  and istiod), built, then run for a short simulated time, with and without ``gc.freeze()``
  right after the build (it moves every object the build made out of the cyclic garbage
  collector's reach, so later collections do not walk them again). Where ``Simulation`` has
  ``gc_tuning`` (it pauses the collector while building and freezes while running), "without"
  turns it off and "with" is meshsim's default; in older checkouts, "with" freezes here.

The ``build`` rows with the collector "on" are meshsim's default: where ``Simulation`` has
``gc_tuning``, it pauses the collector while it builds, whatever the caller's setting.

Run with ``python -m benchmarks.build [--sizes 1000 3000 10000] [--repeat 5] [--json]
[--no-gc-freeze] [--no-gc-paused]``. It uses only public API that older versions have too, so copying this
file into another checkout measures that checkout (``cd OTHER && python -m benchmarks.build``).
"""

from __future__ import annotations

import argparse
import gc
import inspect
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

from experiments.profiles import resolve_mesh
from models.simulation import Simulation
from models.workload import OpenLoopSpec
from topologies import chain
from topologies.catalog import mesh_scale

MESHES = ("none", "istio-1.8")
SEED = 1


def _cpu(action: Callable[[], Any]) -> tuple[float, Any]:
    """CPU seconds of ``action()`` and its value."""
    started = time.process_time()
    value = action()
    return time.process_time() - started, value


def _clean() -> None:
    """Free what the last case built, outside any timed section."""
    gc.unfreeze()
    gc.collect()


def build_case(n: int, mesh_name: str, gc_paused: bool = False) -> dict[str, float]:
    """Build and validate a chain of ``n`` services, then a Simulation of it (no run); with
    ``gc_paused``, the cyclic garbage collector is off while it builds."""
    mesh = resolve_mesh(mesh_name, {})
    workload = OpenLoopSpec(kind="open_loop", rate_rps=10)
    if gc_paused:
        gc.disable()
    try:
        topology_s, topology = _cpu(lambda: chain(n))
        simulation_s, _ = _cpu(lambda: Simulation(topology, mesh, workload, SEED, 10.0))
    finally:
        gc.enable()
    return {"topology_s": topology_s, "simulation_s": simulation_s}


def freeze_case(pods: int, freeze: bool, duration_s: float) -> dict[str, float]:
    """Build ``mesh_scale(pods)`` with sidecars and run it briefly; ``gc.freeze()`` after the
    build if ``freeze``."""
    mesh = resolve_mesh("istio-1.8", {})
    workload = OpenLoopSpec(kind="open_loop", rate_rps=100)

    tuned = "gc_tuning" in inspect.signature(Simulation).parameters
    options = {"gc_tuning": freeze} if tuned else {}

    def build() -> Simulation:
        simulation = Simulation(mesh_scale(pods=pods), mesh, workload, SEED, duration_s, **options)
        if freeze and not tuned:
            gc.freeze()
        return simulation

    build_s, simulation = _cpu(build)
    run_s, out = _cpu(simulation.run)
    completed = out.workload.completed
    del simulation, out
    return {"build_s": build_s, "run_s": run_s, "total_s": build_s + run_s, "completed": completed}


def _median(rows: list[dict[str, float]], key: str) -> float:
    return statistics.median(row[key] for row in rows)


def run(
    sizes: list[int],
    repeat: int,
    freeze_pods: int,
    freeze_duration_s: float,
    gc_freeze: bool,
    gc_paused: bool,
) -> dict[str, Any]:
    """Every case, interleaved, ``repeat`` times; the medians."""
    builds: dict[tuple[int, str, bool], list[dict[str, float]]] = {}
    freezes: dict[bool, list[dict[str, float]]] = {}
    cases = [
        (n, m, p) for n in sizes for m in MESHES for p in ((False, True) if gc_paused else (False,))
    ]
    for r in range(repeat):
        # Alternate the order from one repeat to the next, so no case always runs first.
        for n, mesh_name, paused in cases if r % 2 == 0 else cases[::-1]:
            _clean()
            builds.setdefault((n, mesh_name, paused), []).append(build_case(n, mesh_name, paused))
        if gc_freeze:
            for freeze in (False, True) if r % 2 == 0 else (True, False):
                _clean()
                freezes.setdefault(freeze, []).append(
                    freeze_case(freeze_pods, freeze, freeze_duration_s)
                )
    _clean()
    build_rows = []
    for n, mesh_name, paused in cases:
        rows = builds[n, mesh_name, paused]
        topology_s, simulation_s = _median(rows, "topology_s"), _median(rows, "simulation_s")
        build_rows.append(
            {
                "services": n,
                "mesh": mesh_name,
                "gc_paused": paused,
                "topology_s": topology_s,
                "simulation_s": simulation_s,
                "topology_us_per_service": topology_s / n * 1e6,
                "simulation_us_per_service": simulation_s / n * 1e6,
            }
        )
    result: dict[str, Any] = {"repeat": repeat, "build": build_rows}
    if gc_freeze:
        off, on = freezes[False], freezes[True]
        keys = ("build_s", "run_s", "total_s", "completed")
        result["gc_freeze"] = {
            "pods": freeze_pods,
            "simulated_s": freeze_duration_s,
            "without": {k: _median(off, k) for k in keys},
            "with": {k: _median(on, k) for k in keys},
            "run_speedup": _median(off, "run_s") / _median(on, "run_s"),
            "total_speedup": _median(off, "total_s") / _median(on, "total_s"),
        }
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 3000, 10_000])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--freeze-pods", type=int, default=10_000)
    parser.add_argument("--freeze-duration", type=float, default=10.0, help="simulated seconds")
    parser.add_argument("--no-gc-freeze", action="store_true", help="skip the gc.freeze case")
    parser.add_argument(
        "--no-gc-paused", action="store_true", help="skip the builds with the collector off"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    result = run(
        args.sizes,
        args.repeat,
        args.freeze_pods,
        args.freeze_duration,
        gc_freeze=not args.no_gc_freeze,
        gc_paused=not args.no_gc_paused,
    )
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"Build, CPU seconds, median of {result['repeat']} interleaved runs")
    print(f"{'services':>9} {'mesh':<10} {'collector':<9} {'topology':>9} {'us/svc':>7}", end="")
    print(f" {'simulation':>11} {'us/svc':>7}")
    for row in result["build"]:
        print(
            f"{row['services']:>9,} {row['mesh']:<10} {'paused' if row['gc_paused'] else 'on':<9} "
            f"{row['topology_s']:>8.3f}s {row['topology_us_per_service']:>7.0f} "
            f"{row['simulation_s']:>10.3f}s {row['simulation_us_per_service']:>7.0f}"
        )
    freeze = result.get("gc_freeze")
    if freeze is not None:
        print(
            f"\nmesh_scale({freeze['pods']:,} pods) with istio-1.8 sidecars, "
            f"{freeze['simulated_s']:g} s simulated, without and with meshsim's collector "
            "handling (paused while building, gc.freeze() while running; CPU seconds, medians):"
        )
        for label in ("without", "with"):
            row = freeze[label]
            print(
                f"  {label:<8} build {row['build_s']:.2f} s, run {row['run_s']:.2f} s, "
                f"total {row['total_s']:.2f} s ({row['completed']:,.0f} requests completed)"
            )
        print(f"  speed-up: run x{freeze['run_speedup']:.2f}, total x{freeze['total_speedup']:.2f}")


if __name__ == "__main__":
    main()
