"""How fast meshsim simulates, against a bare SimPy model of the same system.

The system is a tandem of ``k`` single-worker FIFO queues with exponential service times,
fed by Poisson arrivals (a Jackson network: its mean response time is
``sum(1 / (mu - lam))``). It is simulated twice, in one process, alternately in each repeat
so that both runs share the machine's noise:

* ``bare``: the textbook SimPy model, one process per request and, per hop,
  ``with res.request() as req: yield req; yield env.timeout(service_time)``; random numbers
  from numpy, drawn in batches of 4096 (meshsim draws in batches too). It keeps only a
  running sum of latencies.
* ``meshsim``: the same chain as an inline topology (one node, zero network delay, no mesh),
  run through the public API (``spec_from_dict`` + ``run_experiment``). Building and
  validating the spec is outside the timed section; the run and the merge of its statistics
  are inside.

Reported per case: simulated requests completed per wall-clock second, simulated hops per
wall second (requests x hops) and the mean latency each model measured, next to the formula,
so a reader sees that both simulate the same system. The best wall time of ``--repeat`` runs
is kept.

More cases: write a function ``(args) -> CaseResult`` and append it to :data:`CASES` (for
example Bookinfo with sidecars at 1000 rps); it is then timed, repeated and printed like the
others. Only ``bare`` and ``meshsim`` of the chain are compared in the ratio line.

Run with ``python -m benchmarks.chain [--hops 5] [--rate 500] [--duration 200] [--repeat 3]
[--json] [--case meshsim_chain]``; to profile one case::

    python -m cProfile -s tottime -m benchmarks.chain --case meshsim_chain --repeat 1
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import numpy as np
import simpy

from experiments.runner import run_experiment
from experiments.spec import spec_from_dict
from models.simulation import Simulation

BATCH = 4096
SEED = 1
ZERO_NETWORK = {"same_node": 0, "same_zone": 0, "cross_zone": 0, "bandwidth": "1000Gbps"}


class CaseResult(NamedTuple):
    """What one timed run of a case reports."""

    name: str
    requests: int
    hops: int
    wall_s: float
    mean_ms: float | None = None


Case = Callable[[argparse.Namespace], CaseResult]


def _batched_exponential(rng: np.random.Generator, mean: float) -> Callable[[], float]:
    """One exponential value per call, drawn ``BATCH`` at a time."""

    def values() -> Iterator[float]:
        while True:
            yield from rng.exponential(mean, BATCH).tolist()

    return values().__next__


def bare_chain(args: argparse.Namespace) -> CaseResult:
    """The chain in plain SimPy: a Resource(capacity=1) and a timeout per hop."""
    env = simpy.Environment()
    rng = np.random.default_rng(SEED)
    gap = _batched_exponential(rng, 1.0 / args.rate)
    work = _batched_exponential(rng, args.service_ms / 1e3)
    hops = [simpy.Resource(env, capacity=1) for _ in range(args.hops)]
    done = [0, 0.0]  # requests completed, sum of their latencies

    def request() -> Iterator[simpy.Event]:
        start = env.now
        for res in hops:
            with res.request() as req:
                yield req
                yield env.timeout(work())
        done[0] += 1
        done[1] += env.now - start

    def arrivals() -> Iterator[simpy.Event]:
        while True:
            yield env.timeout(gap())
            env.process(request())

    started = time.perf_counter()
    env.process(arrivals())
    env.run(until=args.duration)
    wall = time.perf_counter() - started
    n = done[0]
    return CaseResult("bare", n, n * args.hops, wall, 1e3 * done[1] / n if n else None)


def chain_spec(args: argparse.Namespace) -> Any:
    """The chain as a meshsim experiment: s0 -> s1 -> ... on one node, no mesh."""
    k = args.hops
    services = [
        {
            "name": f"s{i}",
            "workers": 1,
            "service_time": {"kind": "exponential", "mean": args.service_ms / 1e3},
            # The bare model has no network: no delay and no bytes, so no network events.
            "request_size_bytes": 0,
            "response_size_bytes": 0,
            "steps": [f"s{i + 1}"] if i + 1 < k else [],
        }
        for i in range(k)
    ]
    return spec_from_dict(
        {
            "name": "bench-chain",
            "topology": {
                "cluster": {"nodes": [{"name": "node-0"}], "network": ZERO_NETWORK},
                "call_graph": {"services": services, "entry": "s0"},
            },
            "mesh": "none",
            "workload": {"kind": "open_loop", "rate_rps": args.rate},
            "duration": args.duration,
            "warmup": 0,
            "seed": SEED,
            "replications": 1,
        }
    )


def meshsim_chain(args: argparse.Namespace) -> CaseResult:
    """The chain through meshsim's public API (spec building not timed)."""
    spec = chain_spec(args)
    started = time.perf_counter()
    result = run_experiment(spec)
    wall = time.perf_counter() - started
    n = result.end_to_end.requests
    return CaseResult("meshsim", n, n * args.hops, wall, result.end_to_end.latency.mean_ms)


def bookinfo_sidecars(args: argparse.Namespace) -> CaseResult:
    """Bookinfo with Istio 1.8 sidecars at ``--sidecar-rate`` (open loop), through the
    simulation API so that every queue visit (apps and sidecar passes) can be counted as a
    hop, like the bare model's."""
    spec = spec_from_dict(
        {
            "topology": "bookinfo",
            "mesh": "istio-1.8",
            "workload": {"kind": "open_loop", "rate_rps": args.sidecar_rate},
            "duration": args.sidecar_duration,
            "warmup": 0,
            "seed": SEED,
        }
    )
    simulation = Simulation(
        spec.resolve_topology(), spec.mesh.resolve(), spec.workload, SEED, spec.duration, 0.0
    )
    started = time.perf_counter()
    out = simulation.run()
    wall = time.perf_counter() - started
    hops = sum(server.visits for server in out.servers)
    return CaseResult(
        "sidecars", out.workload.measured, hops, wall, out.workload.latency.mean * 1e3
    )


# The cases, timed in this order in every repeat.
CASES: list[Case] = [bare_chain, meshsim_chain, bookinfo_sidecars]


def tandem_mean_ms(args: argparse.Namespace) -> float:
    """Jackson: the mean response time of k M/M/1 queues in tandem."""
    mu = 1e3 / args.service_ms
    if args.rate >= mu:
        return float("inf")
    return 1e3 * args.hops / (mu - args.rate)


def run_cases(args: argparse.Namespace, cases: list[Case]) -> list[CaseResult]:
    """Run every case ``args.repeat`` times, alternately; keep each case's best wall time."""
    best: dict[str, CaseResult] = {}
    for _ in range(args.repeat):
        for case in cases:
            res = case(args)
            if res.name not in best or res.wall_s < best[res.name].wall_s:
                best[res.name] = res
    return list(best.values())


def report(args: argparse.Namespace, results: list[CaseResult]) -> dict[str, Any]:
    rows = [
        {
            **r._asdict(),
            "requests_per_wall_s": r.requests / r.wall_s,
            "hops_per_wall_s": r.hops / r.wall_s,
            "us_per_hop": 1e6 * r.wall_s / r.hops if r.hops else None,
        }
        for r in results
    ]
    by_name = {row["name"]: row for row in rows}
    ratio = sidecar_ratio = None
    if "bare" in by_name and "meshsim" in by_name:
        ratio = by_name["meshsim"]["hops_per_wall_s"] / by_name["bare"]["hops_per_wall_s"]
    if "bare" in by_name and "sidecars" in by_name:
        sidecar_ratio = by_name["sidecars"]["hops_per_wall_s"] / by_name["bare"]["hops_per_wall_s"]
    return {
        "params": {
            "hops": args.hops,
            "rate_rps": args.rate,
            "service_mean_ms": args.service_ms,
            "duration_s": args.duration,
            "repeat": args.repeat,
            "sidecar_rate_rps": args.sidecar_rate,
            "sidecar_duration_s": args.sidecar_duration,
        },
        "theory_mean_ms": tandem_mean_ms(args),
        "cases": rows,
        "meshsim_over_bare_hops_per_s": ratio,
        "sidecars_over_bare_hops_per_s": sidecar_ratio,
    }


def print_table(out: dict[str, Any]) -> None:
    p = out["params"]
    print(
        f"chain of {p['hops']} M/M/1 queues, service mean {p['service_mean_ms']:g} ms, "
        f"{p['rate_rps']:g} rps, {p['duration_s']:g} s simulated, best of {p['repeat']}"
    )
    print("meshsim wall time: run_experiment only (spec building excluded)")
    head = f"{'case':<10}{'requests':>10}{'wall s':>9}{'req/wall s':>12}"
    head += f"{'hops/wall s':>13}{'us/hop':>9}{'mean ms':>10}"
    print(head)
    for r in out["cases"]:
        mean = f"{r['mean_ms']:.3f}" if r["mean_ms"] is not None else "-"
        print(
            f"{r['name']:<10}{r['requests']:>10}{r['wall_s']:>9.3f}"
            f"{r['requests_per_wall_s']:>12.0f}{r['hops_per_wall_s']:>13.0f}"
            f"{r['us_per_hop']:>9.2f}{mean:>10}"
        )
    print(f"{'theory':<10}{'':>53}{out['theory_mean_ms']:>10.3f}")
    if out["meshsim_over_bare_hops_per_s"] is not None:
        ratio = out["meshsim_over_bare_hops_per_s"]
        print(f"meshsim/bare hops per wall second: {ratio:.2f} (cost per hop x{1 / ratio:.2f})")
    if out["sidecars_over_bare_hops_per_s"] is not None:
        ratio = out["sidecars_over_bare_hops_per_s"]
        print(
            f"sidecars: Bookinfo with istio-1.8 at {p['sidecar_rate_rps']:g} rps, "
            f"{p['sidecar_duration_s']:g} s simulated; a hop is one queue visit (an app or a "
            f"sidecar pass); its cost per hop is x{1 / ratio:.2f} the bare model's"
        )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hops", type=int, default=5, help="queues in the chain (k)")
    parser.add_argument("--rate", type=float, default=500.0, help="arrival rate, rps")
    parser.add_argument("--service-ms", type=float, default=1.0, help="mean service time")
    parser.add_argument("--duration", type=float, default=200.0, help="simulated seconds")
    parser.add_argument("--repeat", type=int, default=3, help="runs per case; best kept")
    parser.add_argument("--sidecar-rate", type=float, default=1000.0, help="Bookinfo rps")
    parser.add_argument("--sidecar-duration", type=float, default=30.0, help="Bookinfo s")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument(
        "--case",
        action="append",
        choices=[case.__name__ for case in CASES],
        help="run only this case (repeatable; default: all), e.g. to profile one",
    )
    args = parser.parse_args(argv)
    if args.hops < 1 or args.repeat < 1 or args.rate <= 0 or args.duration <= 0:
        parser.error("--hops and --repeat must be >= 1, --rate and --duration > 0")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    cases = [case for case in CASES if not args.case or case.__name__ in args.case]
    out = report(args, run_cases(args, cases))
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print_table(out)


if __name__ == "__main__":
    main()
