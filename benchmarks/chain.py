"""How fast meshsim simulates, measured like with like: CPU time, interleaved runs, medians.

Two groups of cases run in ONE process. Every repeat runs every case once, in a fixed order
(case A rep 1, case B rep 1, ..., case A rep 2, ...), so slow phases of a shared machine hit
every case alike; each case's figure is the median of its repeats. The clock is
``time.process_time`` (CPU seconds of this process): other processes on the machine do not
count. Before each timed section the garbage of the previous run is collected (outside the
timing).

**The chain (per service visit).** A tandem of ``--services`` single-worker FIFO services on
one node, zero network, exponential service times (mean ``--service-ms``), Poisson arrivals
at ``utilisation / service mean``. It is a Jackson network: the mean response time is
``k / (mu - lambda)``, printed next to what each model measured, so a reader sees that the
four simulate the same system. Four models:

* ``meshsim``: the chain as an inline topology, no mesh, through the public API
  (``spec_from_dict``, then ``models.simulation.Simulation(...).run()``, which is what
  ``simulate`` does). Validating and building are outside the timed section; the run and the
  collection of its output are inside.
* ``simpy-exact``: the textbook exact-FIFO SimPy model, as meshsim's servers work: one process
  per request and one ``env.timeout`` per visit, its departure booked at arrival as
  ``max(now, server free) + service``.
* ``simpy-resource``: the Resource-based SimPy model: per visit ``request``, grant,
  ``timeout``, release.
* ``heapq``: a hand-rolled event loop on ``heapq`` (no SimPy): one heap entry per arrival and
  per visit, the same exact-FIFO booking.

The three references draw from numpy in batches of 512 (as meshsim's samplers do), one stream
for the arrivals and one per service, each spawned from one seed: they draw the same values in
the same order and so simulate the same sample path (their mean latencies agree to rounding).
meshsim draws from its own streams: its mean differs by sampling noise only. The work counted
is the service visits of the requests completed (requests x services): the same for all four.

**Bookinfo (per request).** The catalog topology ``bookinfo`` with every shipped mesh profile
(``experiments/profiles``), open loop at ``--bookinfo-rate``, built outside the timed section.
Reported: simulated requests completed per CPU-second and SimPy events per request.

**Events.** Events are counted in one extra run of each case before the timed repeats (it also
warms caches up): the environment's ``step`` is wrapped, on that instance only, to count the
events it processes (the end-of-run event excluded); the heapq loop counts its pops. Counting
does not change results: every run of a case, counted or timed, must give the same requests and
mean latency (same seed), and the output says whether they did.

**The normalised figure.** Bookinfo with istio-1.8 sidecars, requests per CPU-second, over the
exact-FIFO SimPy model's visits per CPU-second in the same run. Both move with the machine and
the Python build, their ratio much less: that is how before and after are compared across
machines and sessions. Ratios (this one, and meshsim's over each reference on the chain) are
the median of the ratios of the two runs in each repeat: those two ran close in time, so a
slow phase of the machine hits both and cancels out.

Run with ``python -m benchmarks.chain [--quick] [--repeats 5] [--json] [--case NAME]``; to
profile one case::

    python -m cProfile -s tottime -m benchmarks.chain --case bookinfo:istio-1.8 --repeats 1
"""

from __future__ import annotations

import argparse
import gc
import heapq
import itertools
import json
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import simpy

from experiments import runner
from experiments.profiles import list_profiles
from experiments.spec import ExperimentSpec, spec_from_dict
from models.simulation import Simulation, SimulationOutput

SEED = 1
BATCH = 512  # values per numpy draw, as meshsim's samplers (sim.distributions)
ZERO_NETWORK = {"same_node": 0, "same_zone": 0, "cross_zone": 0, "bandwidth": "1000Gbps"}
NORMALISED = "bookinfo_istio_1_8_requests_over_simpy_exact_visits"


@dataclass(frozen=True)
class Params:
    """What the cases simulate, and how often.

    Attributes:
        services: services in the chain (k).
        utilisation: each chain service's utilisation (arrival rate x service mean).
        service_ms: mean service time of a chain service, ms.
        chain_duration_s: simulated seconds of a chain run.
        bookinfo_rate_rps: Bookinfo's open-loop arrival rate, requests per second.
        bookinfo_duration_s: simulated seconds of a Bookinfo run.
        repeats: timed runs per case; the median is reported.
    """

    services: int
    utilisation: float
    service_ms: float
    chain_duration_s: float
    bookinfo_rate_rps: float
    bookinfo_duration_s: float
    repeats: int

    @property
    def chain_rate_rps(self) -> float:
        """The chain's arrival rate, requests per second."""
        return self.utilisation / (self.service_ms / 1e3)

    @property
    def jackson_mean_ms(self) -> float:
        """The chain's mean response time by Jackson's formula, ``k / (mu - lambda)``, ms."""
        mu = 1e3 / self.service_ms
        return 1e3 * self.services / (mu - self.chain_rate_rps)


@dataclass(frozen=True)
class Sample:
    """One run of a case.

    Attributes:
        cpu_s: CPU seconds of the timed section.
        requests: requests completed.
        mean_ms: their mean latency, ms.
        events: events processed (None when the run did not count them).
    """

    cpu_s: float
    requests: int
    mean_ms: float
    events: int | None = None


@dataclass(frozen=True)
class Case:
    """A benchmark case: ``run(params, count_events)`` does one run and times it.

    Attributes:
        name: ``group:model`` (``chain:meshsim``, ``bookinfo:istio-1.8``).
        group: ``chain`` or ``bookinfo``.
        run: the run; it builds what it needs outside its timed section.
    """

    name: str
    group: str
    run: Callable[[Params, bool], Sample]


# --- helpers ------------------------------------------------------------------------------


def _batched_exponential(rng: np.random.Generator, mean_s: float) -> Callable[[], float]:
    """One exponential value per call, drawn ``BATCH`` at a time (meshsim's way)."""

    def values() -> Iterator[float]:
        while True:
            yield from rng.exponential(mean_s, BATCH).tolist()

    return values().__next__


def _reference_streams(p: Params) -> tuple[Callable[[], float], list[Callable[[], float]]]:
    """The references' draws: inter-arrival gaps, and service times per service."""
    gap_rng, *work_rngs = (
        np.random.default_rng(s) for s in np.random.SeedSequence(SEED).spawn(p.services + 1)
    )
    gap = _batched_exponential(gap_rng, 1.0 / p.chain_rate_rps)
    work = [_batched_exponential(rng, p.service_ms / 1e3) for rng in work_rngs]
    return gap, work


def _count_steps(env: simpy.Environment) -> list[int]:
    """Count the events ``env`` processes: wrap its ``step`` on this instance only.

    ``Environment.run`` calls ``self.step()`` once per event; the count goes up after a step
    returns, so the end-of-run event (whose callback stops the run) is not counted.

    Returns:
        A one-element list holding the count, updated as the run goes.
    """
    counter = [0]
    step = env.step

    def counting_step() -> None:
        step()
        counter[0] += 1

    env.step = counting_step  # type: ignore[method-assign]
    return counter


def _timed(env: simpy.Environment, count: bool, run: Callable[[], tuple[int, float]]) -> Sample:
    """Time ``run()`` (which returns requests and mean latency, ms) in CPU seconds."""
    counter = _count_steps(env) if count else None
    gc.collect()
    started = time.process_time()
    requests, mean_ms = run()
    cpu_s = time.process_time() - started
    return Sample(cpu_s, requests, mean_ms, counter[0] if counter is not None else None)


# --- the chain: meshsim and three references ----------------------------------------------


def chain_spec(p: Params) -> ExperimentSpec:
    """The chain as a meshsim experiment: s0 -> s1 -> ... on one node, no mesh."""
    k = p.services
    services = [
        {
            "name": f"s{i}",
            "workers": 1,
            "service_time": {"kind": "exponential", "mean": p.service_ms / 1e3},
            # The references have no network: no delay and no bytes.
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
            "workload": {"kind": "open_loop", "rate_rps": p.chain_rate_rps},
            "duration": p.chain_duration_s,
            "warmup": 0,
            "seed": SEED,
        }
    )


def build_simulation(spec: ExperimentSpec) -> Simulation:
    """The simulation ``simulate`` would run for ``spec`` (one replication, seed ``SEED``):
    the runner's own build, so the benchmark times what users run."""
    return runner.build_simulation(spec, SEED)


def _outcome(out: SimulationOutput) -> tuple[int, float]:
    """Requests completed and their mean latency (ms), as the load generator saw them."""
    return out.workload.measured, out.workload.latency.mean * 1e3


def _meshsim(spec: ExperimentSpec, count: bool) -> Sample:
    simulation = build_simulation(spec)
    return _timed(simulation.env, count, lambda: _outcome(simulation.run()))


def chain_meshsim(p: Params, count: bool) -> Sample:
    """The chain through meshsim's public API (validating and building not timed)."""
    return _meshsim(chain_spec(p), count)


def chain_simpy_exact(p: Params, count: bool) -> Sample:
    """The exact-FIFO SimPy model: one process per request, one timeout per visit."""
    env = simpy.Environment()
    gap, work = _reference_streams(p)
    free = [0.0] * p.services  # when each server finishes its last booked visit
    completed, latency_s = [0], [0.0]  # requests completed, the sum of their latencies

    def request() -> Generator[simpy.Event, Any, None]:
        start = env.now
        for i, service in enumerate(work):
            # FIFO, one worker: the departure is known at arrival (Lindley's recursion).
            now = env.now
            departure = free[i] = (free[i] if free[i] > now else now) + service()
            yield env.timeout(departure - now)
        completed[0] += 1
        latency_s[0] += env.now - start

    def arrivals() -> Generator[simpy.Event, Any, None]:
        while True:
            yield env.timeout(gap())
            env.process(request())

    def run() -> tuple[int, float]:
        env.process(arrivals())
        env.run(until=p.chain_duration_s)
        return completed[0], 1e3 * latency_s[0] / completed[0]

    return _timed(env, count, run)


def chain_simpy_resource(p: Params, count: bool) -> Sample:
    """The Resource-based SimPy model: per visit request, grant, timeout, release."""
    env = simpy.Environment()
    gap, work = _reference_streams(p)
    servers = [simpy.Resource(env, capacity=1) for _ in range(p.services)]
    completed, latency_s = [0], [0.0]

    def request() -> Generator[simpy.Event, Any, None]:
        start = env.now
        for server, service in zip(servers, work, strict=True):
            with server.request() as granted:
                yield granted
                yield env.timeout(service())
        completed[0] += 1
        latency_s[0] += env.now - start

    def arrivals() -> Generator[simpy.Event, Any, None]:
        while True:
            yield env.timeout(gap())
            env.process(request())

    def run() -> tuple[int, float]:
        env.process(arrivals())
        env.run(until=p.chain_duration_s)
        return completed[0], 1e3 * latency_s[0] / completed[0]

    return _timed(env, count, run)


def chain_heapq(p: Params, count: bool) -> Sample:
    """A hand-rolled event loop on heapq: an entry per arrival and per visit (exact FIFO).

    An entry is ``(time, sequence, service, start)``: the departure of a request that started
    at ``start`` from ``service`` (-1: its arrival). The sequence number breaks ties in
    scheduling order, as SimPy's does; pops are the events (pushes minus what is left).
    """
    gap, work = _reference_streams(p)
    k = p.services
    until = p.chain_duration_s

    def run() -> tuple[int, float, int]:
        free = [0.0] * k
        heap = [(gap(), 0, -1, 0.0)]
        sequence = itertools.count(1)
        push, pop = heapq.heappush, heapq.heappop
        completed, total = 0, 0.0
        while heap and heap[0][0] < until:
            now, _, service, start = pop(heap)
            if service < 0:  # an arrival: the next one, and the request's first visit
                push(heap, (now + gap(), next(sequence), -1, 0.0))
                start = now
            service += 1
            if service == k:
                completed += 1
                total += now - start
                continue
            booked = free[service]
            departure = free[service] = (booked if booked > now else now) + work[service]()
            push(heap, (departure, next(sequence), service, start))
        return completed, 1e3 * total / completed, next(sequence) - len(heap)

    gc.collect()
    started = time.process_time()
    requests, mean_ms, events = run()
    cpu_s = time.process_time() - started
    return Sample(cpu_s, requests, mean_ms, events if count else None)


# --- Bookinfo with every profile ----------------------------------------------------------


def bookinfo_spec(p: Params, profile: str) -> ExperimentSpec:
    """Bookinfo with ``profile``'s mesh, open loop."""
    return spec_from_dict(
        {
            "name": f"bench-bookinfo-{profile}",
            "topology": "bookinfo",
            "mesh": profile,
            "workload": {"kind": "open_loop", "rate_rps": p.bookinfo_rate_rps},
            "duration": p.bookinfo_duration_s,
            "warmup": 0,
            "seed": SEED,
        }
    )


def bookinfo_case(profile: str) -> Case:
    """The Bookinfo case of one profile."""

    def run(p: Params, count: bool) -> Sample:
        return _meshsim(bookinfo_spec(p, profile), count)

    run.__doc__ = f"Bookinfo with the {profile} profile, through meshsim's public API."
    return Case(f"bookinfo:{profile}", "bookinfo", run)


CHAIN_CASES = [
    Case("chain:meshsim", "chain", chain_meshsim),
    Case("chain:simpy-exact", "chain", chain_simpy_exact),
    Case("chain:simpy-resource", "chain", chain_simpy_resource),
    Case("chain:heapq", "chain", chain_heapq),
]


def all_cases() -> list[Case]:
    """Every case, in the order each repeat runs them."""
    return [*CHAIN_CASES, *(bookinfo_case(profile) for profile in list_profiles())]


# --- running and reporting ----------------------------------------------------------------


def run_cases(p: Params, cases: list[Case], progress: bool) -> dict[str, list[Sample]]:
    """One counting run of each case, then ``p.repeats`` timed rounds of all cases.

    Returns:
        Per case, its samples: the counting run first, then the timed runs in order.
    """
    samples: dict[str, list[Sample]] = {case.name: [] for case in cases}
    for round_ in range(p.repeats + 1):
        count = round_ == 0
        for case in cases:
            sample = case.run(p, count)
            if count and not sample.events:
                raise RuntimeError(
                    f"{case.name}: no events counted; does the simulation still run its "
                    "environment with Environment.run (which calls env.step)?"
                )
            samples[case.name].append(sample)
            if progress:
                label = "counting" if count else f"repeat {round_}/{p.repeats}"
                print(f"  {label:<12} {case.name:<26} {sample.cpu_s:7.3f} CPU s", file=sys.stderr)
    return samples


def _summary(samples: list[Sample], per_request: int, unit: str) -> dict[str, Any]:
    """A case's figures, from its counting run and its timed runs.

    Args:
        samples: the counting run, then the timed runs.
        per_request: units of work per request completed (services visited, or 1).
        unit: the unit of work, ``visit`` or ``request``.
    """
    counted, timed = samples[0], samples[1:]
    assert counted.events is not None  # run_cases checked it
    cpu_s = statistics.median(s.cpu_s for s in timed)
    work = counted.requests * per_request
    return {
        "requests": counted.requests,
        f"{unit}s": work,
        "mean_ms": counted.mean_ms,
        f"{unit}s_per_cpu_s": work / cpu_s,
        f"events_per_{unit}": counted.events / work,
        "events": counted.events,
        "cpu_s_median": cpu_s,
        "cpu_s": [s.cpu_s for s in timed],
        # Counted or timed, every run of the case must give the same result (same seed).
        "same_result_every_run": all(
            (s.requests, s.mean_ms) == (counted.requests, counted.mean_ms) for s in timed
        ),
    }


def _commit() -> str | None:
    """The commit of the code being measured (the current directory's), if it is a git tree."""
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return done.stdout.strip()


def report(p: Params, samples: dict[str, list[Sample]]) -> dict[str, Any]:
    """All the figures, as a JSON-ready dict."""
    chain: dict[str, Any] = {}
    bookinfo: dict[str, Any] = {}
    for name, runs in samples.items():
        group, model = name.split(":", 1)
        if group == "chain":
            chain[model] = _summary(runs, p.services, "visit")
        else:
            bookinfo[model] = _summary(runs, 1, "request")

    def paired(a: dict[str, Any], b: dict[str, Any], a_work: str, b_work: str) -> float:
        # Each round's two runs are close in time: a slow phase of the machine hits both, and
        # their ratio cancels it. The median over the rounds.
        return statistics.median(
            (a[a_work] / a_cpu) / (b[b_work] / b_cpu)
            for a_cpu, b_cpu in zip(a["cpu_s"], b["cpu_s"], strict=True)
        )

    ratios = {}
    if "meshsim" in chain:
        ratios = {
            f"meshsim_over_{ref}": paired(chain["meshsim"], row, "visits", "visits")
            for ref, row in chain.items()
            if ref != "meshsim"
        }
    normalised = None
    if "simpy-exact" in chain and "istio-1.8" in bookinfo:
        normalised = paired(bookinfo["istio-1.8"], chain["simpy-exact"], "requests", "visits")
    return {
        "commit": _commit(),
        "python": platform.python_version(),
        "simpy": simpy.__version__,
        "numpy": np.__version__,
        "machine": platform.machine(),
        "clock": "time.process_time; cases interleaved; medians of the timed repeats; ratios: "
        "medians of the per-repeat ratios",
        "repeats": p.repeats,
        "chain": {
            "services": p.services,
            "utilisation": p.utilisation,
            "service_mean_ms": p.service_ms,
            "rate_rps": p.chain_rate_rps,
            "duration_s": p.chain_duration_s,
            "jackson_mean_ms": p.jackson_mean_ms,
            "models": chain,
            "ratios": ratios,
        },
        "bookinfo": {
            "rate_rps": p.bookinfo_rate_rps,
            "duration_s": p.bookinfo_duration_s,
            "profiles": bookinfo,
        },
        NORMALISED: normalised,
    }


def print_table(out: dict[str, Any]) -> None:
    """The figures as text tables."""
    c, b = out["chain"], out["bookinfo"]
    print(
        f"meshsim {out['commit'] or '?'}, Python {out['python']}, SimPy {out['simpy']}; "
        f"CPU time, median of {out['repeats']} interleaved repeats"
    )
    if c["models"]:
        print(
            f"\nchain of {c['services']} single-worker FIFO services, service mean "
            f"{c['service_mean_ms']:g} ms, utilisation {c['utilisation']:g} "
            f"({c['rate_rps']:g} rps), {c['duration_s']:g} s simulated, one node, no network"
        )
        print(
            f"{'model':<16}{'requests':>9}{'mean ms':>9}{'visits/CPU s':>14}"
            f"{'events/visit':>14}{'CPU s':>8}{'meshsim/it':>12}"
        )
        for model, r in c["models"].items():
            ratio = c["ratios"].get(f"meshsim_over_{model}")
            print(
                f"{model:<16}{r['requests']:>9}{r['mean_ms']:>9.3f}{r['visits_per_cpu_s']:>14,.0f}"
                f"{r['events_per_visit']:>14.2f}{r['cpu_s_median']:>8.3f}"
                f"{'' if ratio is None else f'{ratio:.2f}':>12}"
            )
        print(f"{'Jackson formula':<16}{'':>9}{c['jackson_mean_ms']:>9.3f}")
    if b["profiles"]:
        print(f"\nBookinfo, open loop at {b['rate_rps']:g} rps, {b['duration_s']:g} s simulated")
        print(f"{'profile':<16}{'requests':>9}{'mean ms':>9}{'req/CPU s':>12}{'events/req':>12}")
        for profile, r in b["profiles"].items():
            print(
                f"{profile:<16}{r['requests']:>9}{r['mean_ms']:>9.3f}"
                f"{r['requests_per_cpu_s']:>12,.0f}{r['events_per_request']:>12.1f}"
            )
    if out[NORMALISED] is not None:
        print(
            f"\nBookinfo istio-1.8 requests per CPU s / simpy-exact visits per CPU s "
            f"(same run): {out[NORMALISED]:.5f}"
        )
    rows = [*c["models"].items(), *b["profiles"].items()]
    unstable = [name for name, r in rows if not r["same_result_every_run"]]
    if unstable:
        print(f"WARNING: runs of {', '.join(unstable)} did not all give the same result")


def parse_args(argv: list[str] | None = None) -> tuple[Params, argparse.Namespace]:
    """The command line: parameters of the cases, and which cases to run."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short runs, 3 repeats")
    parser.add_argument("--repeats", type=int, help="timed runs per case (default 5; quick 3)")
    parser.add_argument("--services", type=int, default=6, help="services in the chain")
    parser.add_argument("--utilisation", type=float, default=0.5, help="of each chain service")
    parser.add_argument("--service-ms", type=float, default=1.0, help="chain service mean, ms")
    parser.add_argument("--chain-duration", type=float, help="s simulated (default 60; quick 10)")
    parser.add_argument("--bookinfo-rate", type=float, default=500.0, help="Bookinfo rps")
    parser.add_argument("--bookinfo-duration", type=float, help="s simulated (default 10; quick 2)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument(
        "--case",
        action="append",
        metavar="NAME",
        help="run only this case (repeatable): chain:meshsim, chain:simpy-exact, "
        "chain:simpy-resource, chain:heapq, bookinfo:<profile>",
    )
    args = parser.parse_args(argv)
    quick = args.quick
    p = Params(
        services=args.services,
        utilisation=args.utilisation,
        service_ms=args.service_ms,
        chain_duration_s=args.chain_duration or (10.0 if quick else 60.0),
        bookinfo_rate_rps=args.bookinfo_rate,
        bookinfo_duration_s=args.bookinfo_duration or (2.0 if quick else 10.0),
        repeats=args.repeats or (3 if quick else 5),
    )
    if p.services < 1 or p.repeats < 1:
        parser.error("--services and --repeats must be >= 1")
    if not 0 < p.utilisation < 1:
        parser.error("--utilisation must be in (0, 1): the chain must be stable")
    if min(p.service_ms, p.chain_duration_s, p.bookinfo_rate_rps, p.bookinfo_duration_s) <= 0:
        parser.error("--service-ms, --chain-duration, --bookinfo-rate, --bookinfo-duration > 0")
    known = {case.name for case in all_cases()}
    unknown = sorted(set(args.case or []) - known)
    if unknown:
        parser.error(f"--case: unknown {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return p, args


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print its figures."""
    p, args = parse_args(argv)
    cases = [case for case in all_cases() if not args.case or case.name in args.case]
    out = report(p, run_cases(p, cases, progress=True))
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print_table(out)


if __name__ == "__main__":
    main()
