"""A sweep serially against a pool of worker processes: the wall time of each, and the speed-up.

Parallel points save wall time, not CPU time, so this benchmark measures wall time
(``time.perf_counter``): run it on an otherwise idle machine. Runs are interleaved (serial,
parallel, serial, parallel...) and the medians compared; each run starts from an empty store
so that nothing is reused. The points' results are checked equal across backends (wall times
aside), so the comparison is of the same work.

    python -m benchmarks.sweep                      # the shipped convergence sweep, 2 workers
    python -m benchmarks.sweep --spec experiments/specs/mixer-cost.yaml --workers 2 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from experiments.spec import load_spec
from experiments.store import SweepStore, run_sweep_points

DEFAULT_SPEC = Path("experiments/specs/convergence-vs-mesh-size.yaml")


def _figures(points: list[Any]) -> list[Any]:
    out = []
    for point in points:
        if point.result is None:
            out.append(point.error)
            continue
        data = point.result.model_dump(mode="json")
        data.pop("wall_time_s")
        if data.get("intervals"):
            data["intervals"].pop("wall_time_s", None)
        out.append(data)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, default=DEFAULT_SPEC)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", action="store_true", help="Print the figures as JSON.")
    args = parser.parse_args(argv)
    spec = load_spec(args.spec)
    if spec.sweep is None:
        parser.error(f"{args.spec} has no sweep")
    walls: dict[str, list[float]] = {"serial": [], "process": []}
    figures: dict[str, list[Any]] = {}
    for _ in range(args.repeats):
        for backend in ("serial", "process"):
            with tempfile.TemporaryDirectory() as tmp:
                started = time.perf_counter()
                run = run_sweep_points(
                    spec,
                    backend=backend,  # type: ignore[arg-type]
                    workers=args.workers,
                    store=SweepStore(Path(tmp)),
                )
                walls[backend].append(time.perf_counter() - started)
            figures[backend] = _figures(run.points)
    if figures["serial"] != figures["process"]:
        raise SystemExit("the backends gave different results: the comparison is void")
    serial, parallel = statistics.median(walls["serial"]), statistics.median(walls["process"])
    summary = {
        "spec": str(args.spec),
        "points": len(figures["serial"]),
        "workers": args.workers,
        "repeats": args.repeats,
        "serial_wall_s": walls["serial"],
        "process_wall_s": walls["process"],
        "speedup": serial / parallel,
    }
    if args.json:
        print(json.dumps(summary, indent=1))
        return
    print(
        f"{args.spec} ({summary['points']} points): serial {serial:.1f} s, "
        f"{args.workers} worker processes {parallel:.1f} s (wall, medians of {args.repeats}, "
        f"interleaved): {summary['speedup']:.2f} times as fast; same results"
    )


if __name__ == "__main__":
    main()
