"""Run an experiment: every replication, merged into one :class:`RunResult`."""

from __future__ import annotations

import functools
import math
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from experiments.operations import operations
from experiments.results import (
    ChangeResult,
    Conservation,
    ControlPlaneResult,
    CpuResult,
    FaultResult,
    FigureIntervals,
    Figures,
    Interval,
    Intervals,
    LatencySummary,
    ProxyResult,
    ReplicationResult,
    RunResult,
    ServiceResult,
    ThrottlingResult,
    TimeSeriesResult,
    TrafficResult,
)
from experiments.spec import ExperimentSpec
from experiments.timeseries import fault_results, merge_series, series_result
from models.control_plane import convergence_summary
from models.routing import Counters
from models.simulation import Simulation, SimulationOutput
from models.telemetry import IstioTelemetry
from sim.random import replication_seeds
from sim.stats import LatencyHistogram, mean_half_width

__all__ = ["run_experiment", "meshsim_version"]


def meshsim_version() -> str:
    try:
        return version("meshsim")
    except PackageNotFoundError:  # running from a source tree that is not installed
        return "0+unknown"


class RunInterrupted(Exception):
    """A run stopped (Ctrl-C) before it measured anything: there is no result to give."""


ReplicationProgress = Callable[[int, float, int], bool]
"""Called during a run with (replication index, simulated seconds, requests sent); returns
True to stop the run there (see ``models.simulation.Progress``)."""


def run_experiment(spec: ExperimentSpec, progress: ReplicationProgress | None = None) -> RunResult:
    """Run every replication of ``spec`` and merge their statistics.

    Replication ``i`` runs with the ``i``-th seed spawned from ``spec.seed``, so the result
    depends only on the spec.

    With ``progress``, the run reports as it goes and stops when it returns True. What was
    measured is kept, marked ``interrupted``: the replications that finished, or the first
    replication until it stopped when none did. Stopped before anything was measured, it
    raises :class:`RunInterrupted`.
    """
    started = time.perf_counter()
    run = run_replications(spec, progress)
    return run.summarise(time.perf_counter() - started)


@dataclass
class Replications:
    """The raw outputs of a run's replications, and where it stopped if it was stopped.

    Attributes:
        spec: the experiment.
        seeds: every replication's seed.
        outputs: the outputs kept: every replication's, or those that finished before a
            stop, or the first replication's part when it was stopped in its measured time.
        stopped: (replication index, its output) when the run was stopped.
    """

    spec: ExperimentSpec
    seeds: list[int]
    outputs: list[SimulationOutput]
    stopped: tuple[int, SimulationOutput] | None = None

    def summarise(self, wall_time_s: float) -> RunResult:
        """The result, marked ``interrupted`` with a first warning saying what it covers
        when the run was stopped."""
        result = summarise(self.spec, self.seeds[: len(self.outputs)], self.outputs, wall_time_s)
        precision = self.spec.precision
        if (
            precision is not None
            and result.intervals is not None
            and not precision.reached(result.intervals.end_to_end)
        ):
            widths = ", ".join(
                f"{name} ±{_relative(getattr(result.intervals.end_to_end, name))}"
                for name in precision.figures
            )
            note = (
                f"precision: ±{precision.relative:.1%} not reached after "
                f"{len(self.outputs)} replications ({widths}); raise "
                "precision.max_replications or lengthen the runs"
            )
            result = result.model_copy(update={"warnings": [note, *result.warnings]})
        if self.stopped is None:
            return result
        index, out = self.stopped
        kept = (
            f"the first {out.measured_s:g} s measured of replication 1"
            if self.outputs[-1] is out
            else f"the {len(self.outputs)} finished replication(s) of {len(self.seeds)}"
        )
        note = (
            f"interrupted at {out.interrupted_at_s:g} s of {self.spec.duration:g} s in "
            f"replication {index + 1} of {len(self.seeds)}: the figures cover {kept}"
        )
        warnings = [note, *result.warnings]
        return result.model_copy(update={"interrupted": True, "warnings": warnings})


def run_replications(
    spec: ExperimentSpec,
    progress: ReplicationProgress | None = None,
    telemetry: Callable[[], IstioTelemetry] | None = None,
) -> Replications:
    """Run ``spec``'s replications one after another (see :func:`run_experiment`).

    Args:
        spec: the experiment (not a sweep).
        progress: told of each slice of the run; True stops it.
        telemetry: makes each replication's collector of Istio's metrics (exports).
    """
    seeds = replication_seeds(spec.seed, spec.most_replications)
    outputs: list[SimulationOutput] = []
    for i, seed in enumerate(seeds):
        if _precise(spec, seeds, outputs):
            break
        report = None if progress is None else functools.partial(progress, i)
        collector = None if telemetry is None else telemetry()
        out = build_simulation(spec, seed, telemetry=collector).run(report)
        if out.interrupted_at_s is not None:
            # A replication cut short measured less time than the others: kept only alone.
            if not outputs and out.measured_s > 0:
                outputs.append(out)
            if not outputs:
                raise RunInterrupted("the run was stopped during its warm-up: nothing was measured")
            return Replications(spec, seeds, outputs, (i, out))
        outputs.append(out)
    return Replications(spec, seeds[: len(outputs)], outputs)


def _relative(interval: Interval) -> str:
    if interval.n < 2 or math.isnan(interval.half_width) or not interval.mean:
        return "?"
    return f"{interval.half_width / abs(interval.mean):.1%}"


def _precise(spec: ExperimentSpec, seeds: list[int], outputs: list[SimulationOutput]) -> bool:
    """Enough replications: ``spec.replications`` of them without a precision target; with
    one, at least ``replications`` (and 2), then until its figures are precise enough."""
    done = len(outputs)
    if spec.precision is None:
        return done >= spec.replications
    if done < max(2, spec.replications):
        return False
    figures = _replications(seeds[:done], outputs)
    return spec.precision.reached(_figure_intervals(list(figures)))


def build_simulation(
    spec: ExperimentSpec, seed: int | None = None, telemetry: IstioTelemetry | None = None
) -> Simulation:
    """The simulation of one replication of ``spec``, built and not run (the spec's own
    seed by default; :func:`run_experiment` gives each replication a spawned one).

    Benchmarks and tools use it to time or instrument a run (``simulation.env``);
    ``telemetry`` collects Istio's metrics (``experiments.exports``).
    """
    return Simulation(
        spec.resolve_topology(),
        spec.mesh.resolve(),
        spec.workload,
        spec.seed if seed is None else seed,
        spec.duration,
        spec.warmup,
        client_node=spec.client_node,
        trace_every=spec.trace_every,
        faults=spec.faults,
        changes=spec.changes,
        policies=list(spec.policies),
        telemetry=telemetry,
        timeseries_window_s=None if spec.timeseries is None else spec.timeseries.window,
    )


def summarise(
    spec: ExperimentSpec, seeds: list[int], outputs: list[SimulationOutput], wall_time_s: float
) -> RunResult:
    """Merge the raw outputs of the replications into a result."""
    measured_s = outputs[0].measured_s
    total_s = measured_s * len(outputs)

    e2e = LatencyHistogram()
    measured = errors = sent = completed = failed = in_flight = 0
    in_flight_area = 0.0
    codes: dict[str, int] = defaultdict(int)
    flags: dict[str, int] = defaultdict(int)
    for out in outputs:
        w = out.workload
        e2e.merge(w.latency)
        measured += w.measured
        errors += w.measured_errors
        sent += w.sent
        completed += w.completed
        failed += w.failed
        in_flight += w.in_flight_now
        in_flight_area += w.in_flight.mean(out.measured_s + spec.warmup) * out.measured_s
        for code, n in w.status_codes.items():
            codes[str(code)] += n
        for flag, n in w.flags.items():
            flags[flag] += n
    end_to_end = ServiceResult(
        name="end-to-end",
        requests=measured,
        throughput_rps=measured / total_s,
        error_rate=errors / measured if measured else 0.0,
        latency=LatencySummary.from_histogram(e2e),
        error_codes={code: n for code, n in sorted(codes.items()) if int(code) >= 400},
    )

    services = {}
    for name in outputs[0].services:
        histogram = LatencyHistogram()
        count = errs = injected = hangs = 0
        error_codes: dict[int, int] = defaultdict(int)
        for out in outputs:
            stats = out.services[name]
            histogram.merge(stats.latency)
            count += stats.count
            errs += stats.errors
            injected += stats.injected_errors
            hangs += stats.hangs
            for status, n in stats.error_codes.items():
                error_codes[status] += n
        services[name] = ServiceResult(
            name=name,
            requests=count,
            throughput_rps=count / total_s,
            error_rate=errs / count if count else 0.0,
            latency=LatencySummary.from_histogram(histogram),
            error_codes={str(status): n for status, n in sorted(error_codes.items())},
            injected_errors=injected,
            hangs=hangs,
        )

    hop_totals: dict[str, float] = defaultdict(float)
    for out in outputs:
        for kind, seconds in _hop_kinds(out).items():
            hop_totals[kind] += seconds
    hops_ms = {k: v * 1e3 / measured if measured else 0.0 for k, v in sorted(hop_totals.items())}
    traffic = _traffic(outputs)
    timeseries, faults = _over_time(spec, outputs, measured, traffic)
    replications = _replications(seeds, outputs)

    return RunResult(
        name=spec.name,
        spec=spec.model_dump(mode="json"),
        effective_spec=spec.effective().model_dump(mode="json"),
        seed=spec.seed,
        replication_seeds=seeds,
        version=meshsim_version(),
        wall_time_s=wall_time_s,
        measured_s=measured_s,
        end_to_end=end_to_end,
        services=services,
        hops_ms=hops_ms,
        cpu=_cpu(outputs, total_s, end_to_end.throughput_rps),
        memory_bytes=_mean_memory(outputs),
        proxies=_proxies(outputs, total_s),
        conservation=Conservation(
            sent=sent, completed=completed, failed=failed, in_flight=in_flight
        ),
        in_flight_mean=in_flight_area / total_s,
        status_codes=dict(sorted(codes.items())),
        response_flags=dict(sorted(flags.items())),
        traffic=traffic,
        latency_histogram=e2e.to_dict(),
        timeseries=timeseries,
        faults=faults,
        control_plane=_control_plane(outputs),
        extras=_merge_extras(outputs),
        warnings=_warnings(outputs, measured),
        replications=replications,
        intervals=_intervals(replications),
        operations=operations(spec.resolve_topology(), spec.mesh.resolve(), list(spec.policies)),
    )


def _hop_kinds(out: SimulationOutput) -> dict[str, float]:
    """Seconds per hop kind, a proxy kind's io by its components (``sidecar_io_ipc``,
    ``sidecar_io_read_write``, ``sidecar_io_epoll``) where its spec gives them."""
    totals = out.recorder.total_by_kind()
    for io_kind, parts in out.extras.get("io_breakdown", {}).items():
        # Any io of the kind that the split does not cover stays under the kind's own name.
        rest = totals.pop(io_kind, 0.0) - sum(parts.values())
        for kind, seconds in parts.items():
            totals[kind] = totals.get(kind, 0.0) + seconds
        if abs(rest) > 1e-12:
            totals[io_kind] = totals.get(io_kind, 0.0) + rest
    return totals


def _replications(seeds: list[int], outputs: list[SimulationOutput]) -> list[ReplicationResult]:
    """Each replication's own figures, end to end and per service."""
    found = []
    for seed, out in zip(seeds, outputs, strict=True):
        w = out.workload
        e2e = Figures.of(w.measured, w.measured_errors, out.measured_s, w.latency)
        services = {
            name: Figures.of(stats.count, stats.errors, out.measured_s, stats.latency)
            for name, stats in out.services.items()
        }
        found.append(ReplicationResult(seed=seed, services=services, **e2e.model_dump()))
    return found


_INTERVAL_FIELDS = tuple(FigureIntervals.model_fields)


def _figure_intervals(figures: list[Figures]) -> FigureIntervals:
    intervals = {}
    for field in _INTERVAL_FIELDS:
        mean, half_width, n = mean_half_width(getattr(f, field) for f in figures)
        intervals[field] = Interval(mean=mean, half_width=half_width, n=n)
    return FigureIntervals(**intervals)


def _intervals(replications: list[ReplicationResult]) -> Intervals:
    """Means over the replications with their 95 % confidence half-widths (Student t; the
    method of independent replications: each replication one sample of each figure)."""
    names = replications[0].services if replications else {}
    return Intervals(
        replications=len(replications),
        end_to_end=_figure_intervals(list(replications)),
        services={
            name: _figure_intervals([r.services[name] for r in replications]) for name in names
        },
    )


def _over_time(
    spec: ExperimentSpec,
    outputs: list[SimulationOutput],
    measured: int,
    traffic: TrafficResult | None,
) -> tuple[TimeSeriesResult | None, list[FaultResult] | None]:
    """The time series and each fault's figures (both None when the spec asks for no time
    series). The routers count retries as totals over the run, not per window: each fault
    gets those totals (``FaultResult.retries``)."""
    merged = merge_series(outputs)
    if merged is None or spec.timeseries is None:
        return None, None
    retries = {}
    if traffic is not None:
        retries = {
            host: counters["upstream_rq_retry"]
            for host, counters in traffic.destinations.items()
            if counters.get("upstream_rq_retry")
        }
    entry = spec.resolve_topology().call_graph.entry
    faults = fault_results(merged, spec.faults, spec.timeseries, measured, retries, entry)
    return series_result(merged), faults


OVERLOADED = 0.99  # busy this share of the time: the queue grows, there is no steady state


def _warnings(outputs: list[SimulationOutput], measured: int) -> list[str]:
    """What a newcomer should know before reading the figures (see RunResult.warnings)."""
    found = []
    if not measured:
        found.append(
            "no request was measured: nothing that started after the warm-up came back "
            "before the end (make the run longer, or look for an overloaded component)"
        )
    busy: dict[str, float] = defaultdict(float)
    workers: dict[str, int] = {}
    kinds: dict[str, str] = {}
    for out in outputs:
        for server in out.servers:
            busy[server.scope] += server.cpu_s / (server.workers * out.measured_s)
            workers[server.scope] = server.workers
            kinds[server.scope] = server.kind
    for scope in sorted(busy):
        utilisation = busy[scope] / len(outputs)
        if utilisation >= OVERLOADED:
            found.append(
                f"{scope} ({kinds[scope]}, {workers[scope]} worker(s)) was busy "
                f"{utilisation:.0%} of the time: overloaded, its queue grows with the run and "
                "latencies there describe the run's length, not a steady state"
            )
    return found


def _cpu(outputs: list[SimulationOutput], total_s: float, rps: float) -> CpuResult:
    by_kind: dict[str, float] = defaultdict(float)
    by_component: dict[str, float] = defaultdict(float)
    by_node: dict[str, float] = defaultdict(float)
    for out in outputs:
        for server in out.servers:
            cores = server.cpu_s / total_s
            by_kind[server.kind] += cores
            by_component[server.scope] += cores
            by_node[server.scope.split(".", 1)[0]] += cores
    per_1000 = {k: v / rps * 1000.0 if rps > 0 else 0.0 for k, v in by_kind.items()}
    proxy_cpu: dict[str, float] = defaultdict(float)
    proxy_requests: dict[str, int] = defaultdict(int)
    for out in outputs:
        for proxy in out.proxies:
            proxy_cpu[proxy.kind] += proxy.cpu_s
            proxy_requests[proxy.kind] += proxy.requests
    per_proxy = {
        k: proxy_cpu[k] / proxy_requests[k] * 1000.0 if proxy_requests[k] else 0.0
        for k in sorted(proxy_cpu)
    }
    throttling: dict[str, list[float]] = {}
    limits: dict[str, float] = {}
    for out in outputs:
        for server in out.servers:
            if server.limit_cores is not None:
                server.settle_throttling()
                limits[server.scope] = server.limit_cores
                sums = throttling.setdefault(server.scope, [0.0, 0.0, 0.0])
                sums[0] += server.periods / len(outputs)
                sums[1] += server.throttled_periods / len(outputs)
                sums[2] += server.throttled_s / len(outputs)
    return CpuResult(
        by_kind=dict(sorted(by_kind.items())),
        by_component=dict(sorted(by_component.items())),
        by_node=dict(sorted(by_node.items())),
        per_1000_rps=dict(sorted(per_1000.items())),
        per_proxy_per_1000_rps=per_proxy,
        throttling={
            scope: ThrottlingResult(
                limit_cores=limits[scope],
                periods=sums[0],
                throttled_periods=sums[1],
                throttled_s=sums[2],
            )
            for scope, sums in sorted(throttling.items())
        },
    )


def _proxies(outputs: list[SimulationOutput], total_s: float) -> dict[str, ProxyResult]:
    cpu: dict[str, float] = defaultdict(float)
    requests: dict[str, int] = defaultdict(int)
    memory: dict[str, float] = defaultdict(float)
    memory_mean: dict[str, float] = defaultdict(float)
    first = {}
    for out in outputs:
        for proxy in out.proxies:
            first.setdefault(proxy.scope, proxy)
            cpu[proxy.scope] += proxy.cpu_s
            requests[proxy.scope] += proxy.requests
            memory[proxy.scope] += proxy.memory_bytes / len(outputs)
            memory_mean[proxy.scope] += proxy.memory_mean_bytes / len(outputs)
    results = {}
    for scope in sorted(first):
        cores = cpu[scope] / total_s
        rps = requests[scope] / total_s
        results[scope] = ProxyResult(
            kind=first[scope].kind,
            node=first[scope].node,
            cores=cores,
            rps=rps,
            vcpu_per_1000_rps=cores / rps * 1000.0 if rps > 0 else 0.0,
            memory_bytes=memory[scope],
            memory_mean_bytes=memory_mean[scope],
        )
    return results


def _mean_memory(outputs: list[SimulationOutput]) -> dict[str, float]:
    totals: dict[str, float] = defaultdict(float)
    for out in outputs:
        for scope, value in out.memory_bytes.items():
            totals[scope] += value / len(outputs)
    return dict(sorted(totals.items()))


def _control_plane(outputs: list[SimulationOutput]) -> ControlPlaneResult | None:
    """The control plane's counts summed over replications; each change's convergence over
    the proxies of every replication."""
    summaries = [out.extras["control_plane"] for out in outputs if "control_plane" in out.extras]
    if not summaries:
        return None
    changes = []
    for i, first in enumerate(summaries[0]["changes"]):
        samples = [x for s in summaries for x in s["changes"][i]["convergence_s"]]
        affected = sum(s["changes"][i]["affected"] for s in summaries)
        stats = convergence_summary(samples, affected)
        changes.append(
            ChangeResult(at_s=first["at_s"], kind=first["kind"], service=first["service"], **stats)
        )
    data_plane: dict[str, int] = defaultdict(int)
    for out in outputs:
        for name, count in out.extras.get("data_plane", {}).items():
            data_plane[name] += count
    return ControlPlaneResult(
        kind=summaries[0]["kind"],
        proxies=summaries[0]["proxies"],
        pushes=sum(s["pushes"] for s in summaries),
        push_counts=dict(sum((Counter(s["push_counts"]) for s in summaries), Counter())),
        push_cpu_s=sum(s["push_cpu_s"] for s in summaries),
        push_bytes=int(sum(s["push_bytes"] for s in summaries)),
        push_contexts=sum(s["push_contexts"] for s in summaries),
        push_context_cpu_s=sum(s["push_context_cpu_s"] for s in summaries),
        merged_pushes=sum(s["merged_pushes"] for s in summaries),
        aborted_pushes=sum(s["aborted_pushes"] for s in summaries),
        signatures=sum(s["signatures"] for s in summaries),
        signature_failures=sum(s["signature_failures"] for s in summaries),
        memory_bytes=sum(s["memory_bytes"] for s in summaries) / len(summaries),
        stale_connect_failures=data_plane["stale_connect_failures"],
        stale_failures=data_plane["stale_failures"],
        retries=data_plane["retries"],
        tls_failures=data_plane["tls_failures"],
        changes=changes,
    )


_COUNTER_ORDER = {name: i for i, name in enumerate(Counters.__slots__)}


def _counter_key(name: str) -> tuple[int, str]:
    """Envoy's counters in one fixed order (``Counters``'), unknown names after, by name."""
    return _COUNTER_ORDER.get(name, len(_COUNTER_ORDER)), name


def _sum_counters(into: dict[str, dict[str, int]], found: dict[str, dict[str, int]]) -> None:
    for key, counters in found.items():
        mine = into.setdefault(key, {})
        for name, count in counters.items():
            mine[name] = mine.get(name, 0) + count


def _tidy(counters: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    """Keys sorted, counters in Envoy's order, zeros and empty rows dropped."""
    tidy = {}
    for key in sorted(counters):
        row = {n: counters[key][n] for n in sorted(counters[key], key=_counter_key)}
        row = {n: c for n, c in row.items() if c}
        if row:
            tidy[key] = row
    return tidy


def _traffic(outputs: list[SimulationOutput]) -> TrafficResult | None:
    """The routers' counters of every replication (``models.dataplane.TrafficOutput``):
    counters and active ejections summed; breakers' state changes kept per replication
    (keys prefixed ``r<i>/`` when there are several). None when no replication counted
    anything (no proxies, or no traffic through them)."""
    destinations: dict[str, dict[str, int]] = {}
    subsets: dict[str, dict[str, int]] = {}
    proxies: dict[str, dict[str, int]] = {}
    ejections: dict[str, int] = defaultdict(int)
    breakers: dict[str, list[tuple[float, str]]] = {}
    several = len(outputs) > 1
    for i, out in enumerate(outputs):
        traffic = out.traffic
        if traffic is None:
            continue
        _sum_counters(destinations, traffic.destinations)
        _sum_counters(subsets, traffic.subsets)
        _sum_counters(proxies, traffic.proxies)
        for host, n in traffic.ejections_active.items():
            ejections[host] += n
        for key, changes in traffic.breakers.items():
            breakers[f"r{i}/{key}" if several else key] = [(t, s) for t, s in changes]
    result = TrafficResult(
        destinations=_tidy(destinations),
        subsets=_tidy(subsets),
        proxies=_tidy(proxies),
        ejections_active={h: n for h, n in sorted(ejections.items()) if n},
        breakers=breakers,  # replications in order, each in the data plane's order
    )
    if not (
        result.destinations
        or result.subsets
        or result.proxies
        or result.ejections_active
        or result.breakers
    ):
        return None
    return result


def _merge_extras(outputs: list[SimulationOutput]) -> dict[str, Any]:
    """Counts are summed over replications; anything else is kept per replication."""
    merged: dict[str, Any] = {}
    for out in outputs:
        for key, value in out.extras.items():
            if key in ("control_plane", "io_breakdown"):
                continue  # in RunResult.control_plane, and in RunResult.hops_ms
            if isinstance(value, dict) and all(isinstance(v, int) for v in value.values()):
                into = merged.setdefault(key, {})
                for name, count in value.items():
                    into[name] = into.get(name, 0) + count
            else:
                merged.setdefault(key, []).append(value)
    return merged
