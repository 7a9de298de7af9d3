"""Results: what a run reports, as pydantic models that serialise to JSON."""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, PlainSerializer, field_serializer

from sim.stats import LatencyHistogram

__all__ = [
    "Measure",
    "ThrottlingResult",
    "finite_or_none",
    "LatencySummary",
    "ServiceResult",
    "TrafficResult",
    "CpuResult",
    "Conservation",
    "ProxyResult",
    "ChangeResult",
    "ControlPlaneResult",
    "SeriesResult",
    "EndToEndSeries",
    "TimeSeriesResult",
    "ServiceHurt",
    "FaultResult",
    "Figures",
    "ReplicationResult",
    "Interval",
    "FigureIntervals",
    "Intervals",
    "OperationsResult",
    "RolloutKind",
    "RunResult",
]


def _none_is_nan(value: Any) -> Any:
    return math.nan if value is None else value


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def finite_or_none(data: Any) -> Any:
    """``data`` with every NaN or infinite float (nested in dicts and lists) replaced by None,
    so that it serialises to strict JSON (``null``, never a bare ``NaN``)."""
    if isinstance(data, float):
        return _finite_or_none(data)
    if isinstance(data, dict):
        return {key: finite_or_none(value) for key, value in data.items()}
    if isinstance(data, list | tuple):
        return [finite_or_none(item) for item in data]
    return data


Measure = Annotated[
    float,
    BeforeValidator(_none_is_nan),
    PlainSerializer(_finite_or_none, return_type=float | None, when_used="json"),
]
"""A measured figure: NaN in Python when nothing was measured (an empty histogram's mean),
``null`` in JSON (JSON has no NaN: strict parsers refuse it), and NaN again when read back."""

QUANTILES = {"p50_ms": 0.5, "p90_ms": 0.9, "p99_ms": 0.99, "p999_ms": 0.999}


class LatencySummary(BaseModel):
    """Latency in milliseconds: mean, p50, p90, p99, p99.9 and max, over ``count`` requests."""

    model_config = ConfigDict(frozen=True)

    count: int
    mean_ms: Measure
    p50_ms: Measure
    p90_ms: Measure
    p99_ms: Measure
    p999_ms: Measure
    max_ms: Measure

    @classmethod
    def from_histogram(cls, histogram: LatencyHistogram) -> LatencySummary:
        if histogram.count == 0:
            nan = math.nan
            return cls(
                count=0, mean_ms=nan, p50_ms=nan, p90_ms=nan, p99_ms=nan, p999_ms=nan, max_ms=nan
            )
        values = {name: histogram.quantile(q) * 1e3 for name, q in QUANTILES.items()}
        return cls(
            count=histogram.count,
            mean_ms=histogram.mean * 1e3,
            max_ms=histogram.max * 1e3,
            **values,
        )


class ServiceResult(BaseModel):
    """One service (or the whole request path, end to end), after the warm-up.

    Attributes:
        name: the workload's name, or ``end-to-end``.
        requests: requests answered (for a service: the requests it received, every try of a
            retried call counted, so that retry amplification shows; a request it hung on is
            never answered and is counted in ``hangs`` instead).
        throughput_rps: ``requests`` per measured second.
        error_rate: share of ``requests`` answered with an error (status 400 or more).
        latency: of the answered requests.
        error_codes: the errors answered, by HTTP status (``"503"``); end to end, the
            errors the load generator got.
        injected_errors: errors the workload's own misbehaviour answered (in
            ``error_codes`` too); 0 end to end.
        hangs: requests the workload never answered (its misbehaviour); 0 end to end.
    """

    model_config = ConfigDict(frozen=True)

    name: str
    requests: int
    throughput_rps: Measure
    error_rate: Measure
    latency: LatencySummary
    error_codes: dict[str, int] = {}
    injected_errors: int = 0
    hangs: int = 0


class TrafficResult(BaseModel):
    """What the proxies' routers counted after the warm-up, by Envoy's stat names
    (``upstream_rq_retry``, ``upstream_rq_pending_overflow``, ``rbac_denied``, ...; see
    ``models.routing.Counters``), summed over replications; only counters that are not zero.

    Attributes:
        destinations: per destination host, summed over every proxy that routes to it.
        subsets: per ``host/subset`` cluster (a DestinationRule's subset), summed over
            proxies.
        proxies: per proxy scope, its own local answers (denied, rate limited, faults
            injected, mirrored) and its clusters' counters.
        ejections_active: per host, endpoints ejected by outlier detection at the end of
            each replication, summed over replications.
        breakers: per ``proxy/host``, the Traefik circuit breaker's state changes
            ``(time s, state)``; with several replications each is kept apart, its key
            prefixed with the replication's index (``r0/``, ``r1/``, ...).
    """

    model_config = ConfigDict(frozen=True)

    destinations: dict[str, dict[str, int]] = {}
    subsets: dict[str, dict[str, int]] = {}
    proxies: dict[str, dict[str, int]] = {}
    ejections_active: dict[str, int] = {}
    breakers: dict[str, list[tuple[float, str]]] = {}


class ThrottlingResult(BaseModel):
    """CFS throttling of one container with a CPU limit that can bind (means per
    replication, as cAdvisor's counters over the measured time).

    Attributes:
        limit_cores: its CPU limit (``limits.cpu``).
        periods: CFS periods in which it ran (``container_cpu_cfs_periods_total``).
        throttled_periods: periods in which its quota ran out and its threads stopped
            until the next (``container_cpu_cfs_throttled_periods_total``).
        throttled_s: time its threads waited for a period to start, wall-clock seconds.
    """

    model_config = ConfigDict(frozen=True)

    limit_cores: float
    periods: Measure
    throttled_periods: Measure
    throttled_s: Measure


class CpuResult(BaseModel):
    """CPU used, as mean busy cores over the measured time (1.0 = one core all the time).

    Attributes:
        by_kind: per component kind (``app``, ``sidecar``, ``node_proxy``, ...).
        by_component: per component scope (``node-1.reviews-v1-0.app``).
        by_node: per node.
        per_1000_rps: vCPU per 1000 end-to-end requests per second, per component kind.
        per_proxy_per_1000_rps: per proxy kind, vCPU per 1000 rps through one proxy
            (all proxies of the kind together: their cores over their requests).
        throttling: per component scope, the CFS throttling of each container whose CPU
            limit can bind (fewer cores than its threads); empty when none has one.
    """

    model_config = ConfigDict(frozen=True)

    by_kind: dict[str, Measure]
    by_component: dict[str, Measure]
    by_node: dict[str, Measure]
    per_1000_rps: dict[str, Measure]
    per_proxy_per_1000_rps: dict[str, Measure] = {}
    throttling: dict[str, ThrottlingResult] = {}


class ProxyResult(BaseModel):
    """One proxy: its CPU, the requests through it, and its modelled memory.

    Attributes:
        kind: ``sidecar``, ``node_proxy``, ``ztunnel`` or ``waypoint``.
        node: the node it runs on.
        cores: mean busy cores.
        rps: requests per second through it (each request counted once per proxy, inbound
            and outbound alike).
        vcpu_per_1000_rps: cores per 1000 rps through it (Istio's "per proxy" figure).
        memory_bytes: modelled memory, its peak after the warm-up (configuration, and the
            most its connections and requests in flight held at once).
        memory_mean_bytes: modelled memory, its time-weighted mean after the warm-up.
    """

    model_config = ConfigDict(frozen=True)

    kind: str
    node: str
    cores: Measure
    rps: Measure
    vcpu_per_1000_rps: Measure
    memory_bytes: Measure
    memory_mean_bytes: Measure = 0.0


class ChangeResult(BaseModel):
    """One configuration change: when, what, and how long the proxies took to apply it.

    Attributes:
        affected: proxies whose configuration it concerns (summed over replications).
        converged: of those, how many had applied it by the end of the run.
        p50_s / p99_s / max_s: convergence time over those proxies (Istio's
            ``pilot_proxy_convergence_time``), seconds.
    """

    model_config = ConfigDict(frozen=True)

    at_s: Measure
    kind: str
    service: str
    affected: int
    converged: int
    p50_s: Measure
    p99_s: Measure
    max_s: Measure


class ControlPlaneResult(BaseModel):
    """The control plane over the run.

    Attributes:
        kind: ``istiod``, ``split`` or ``maesh``.
        proxies: proxies connected to it (at the end of a replication).
        pushes: configurations sent (or pulled), summed over replications.
        signatures / signature_failures: certificates signed, and requests for one that
            failed during an outage.
        memory_bytes: its modelled memory.
        stale_connect_failures: connections refused by pods that were gone (stale routing),
            after the warm-up, every attempt counted (retries too).
        stale_failures: calls that failed for it (no live endpoint left to retry: ``UF``
            or ``URX``).
        retries: retries those failures caused.
        tls_failures: requests that failed because a certificate had expired.
        changes: per configuration change, its convergence.
        push_counts: pushes by kind: ``full`` (a whole configuration, after a new push
            context), ``eds`` (incremental EDS: the changed services' endpoints) and
            ``delta`` (delta xDS: only what changed), summed over replications.
        push_cpu_s / push_bytes: CPU seconds and bytes the pushes took.
        push_contexts / push_context_cpu_s: push contexts built (one per full push
            round) and their CPU.
        merged_pushes: pushes merged into one already queued for the same proxy.
        aborted_pushes: full pushes dropped for a newer one (before Istio 1.3's queue).
    """

    model_config = ConfigDict(frozen=True)

    kind: str
    proxies: int
    pushes: int
    push_counts: dict[str, int] = {}
    push_cpu_s: Measure = 0.0
    push_bytes: int = 0
    push_contexts: int = 0
    push_context_cpu_s: Measure = 0.0
    merged_pushes: int = 0
    aborted_pushes: int = 0
    signatures: int
    signature_failures: int
    memory_bytes: Measure
    stale_connect_failures: int
    stale_failures: int
    retries: int
    tls_failures: int
    changes: list[ChangeResult]


class Conservation(BaseModel):
    """Every request sent is completed, failed, or still in flight at the end."""

    model_config = ConfigDict(frozen=True)

    sent: int
    completed: int
    failed: int
    in_flight: int

    @property
    def balanced(self) -> bool:
        return self.sent == self.completed + self.failed + self.in_flight


class SeriesResult(BaseModel):
    """One series in fixed windows (see :class:`TimeSeriesResult`): one value per window.

    A request counts in the window it ended in (its response came back, or, for a service,
    it answered): what a dashboard shows. With several replications, counts are summed and
    histograms merged per window; rates are per replication (as the run's totals are).

    Attributes:
        requests: requests that ended in the window (warm-up included).
        successes: of them, those answered below 400.
        errors: of them, those answered 400 or more.
        throughput_rps: ``requests`` per second of the window (per replication).
        success_rate: ``successes / requests`` (NaN, ``null`` in JSON, for an empty window).
        errors_by: errors by response flag (end to end; ``-`` = no flag) or by HTTP status
            (a service: applications carry no flags), per window.
        measured: of ``requests``, those that started after the warm-up: summed over the
            windows, the run's ``requests`` (``ServiceResult.requests``).
        measured_errors_by: ``errors_by`` of the measured requests only: summed over the
            windows, the run's ``response_flags`` (end to end, errors only) or
            ``error_codes`` (a service).
        p50_ms / p99_ms: latency quantiles of the requests that ended in the window.
    """

    model_config = ConfigDict(frozen=True)

    requests: list[int]
    successes: list[int]
    errors: list[int]
    throughput_rps: list[Measure]
    success_rate: list[Measure]
    errors_by: dict[str, list[int]]
    measured: list[int]
    measured_errors_by: dict[str, list[int]]
    p50_ms: list[Measure]
    p99_ms: list[Measure]


class EndToEndSeries(SeriesResult):
    """The end-to-end series, with what the load generator sent and had in flight.

    Per window, ``sent == requests + in_flight_end - in_flight_start`` (conservation).

    Attributes:
        sent: requests sent in the window (by their start).
        in_flight_mean: time-weighted mean of the requests in flight (per replication).
        in_flight_start / in_flight_end: requests in flight at the window's start and end
            (summed over replications).
    """

    sent: list[int]
    in_flight_mean: list[Measure]
    in_flight_start: list[int]
    in_flight_end: list[int]


class TimeSeriesResult(BaseModel):
    """The run in fixed windows from its start (0 s), warm-up included (the spec's
    ``timeseries``).

    Attributes:
        window_s: the window's width; the last window ends with the run and may be shorter.
        starts_s: each window's start (seconds from the run's start).
        warmup_windows: the first this many windows start before the end of the warm-up
            (the last of them may straddle it); the run's totals count only requests that
            started after it.
        end_to_end: as the load generator saw the requests.
        services: per workload, the requests its pods answered (every try of a retried
            call counted).
    """

    model_config = ConfigDict(frozen=True)

    window_s: float
    starts_s: list[float]
    warmup_windows: int
    end_to_end: EndToEndSeries
    services: dict[str, SeriesResult]

    def rows(self) -> list[tuple[float, str, str, Any]]:
        """One row per window, series and metric: ``(window_start_s, series, metric,
        value)``; the series is ``end_to_end`` or a workload's name, a metric per field
        (``errors_by:UF`` for one flag's or status's errors). For ``timeseries.csv``."""
        found: list[tuple[float, str, str, Any]] = []
        named: list[tuple[str, SeriesResult]] = [("end_to_end", self.end_to_end)]
        named += sorted(self.services.items())
        for name, series in named:
            values: dict[str, list[Any]] = {}
            for field_name, value in series:
                if isinstance(value, list):
                    values[field_name] = value
                elif isinstance(value, dict):
                    for key, per_window in sorted(value.items()):
                        values[f"{field_name}:{key}"] = per_window
            for i, start in enumerate(self.starts_s):
                for metric, per_window in values.items():
                    found.append((start, name, metric, finite_or_none(per_window[i])))
        return found


class ServiceHurt(BaseModel):
    """A service that had errors during a fault that it did not have before it.

    Two views: ``seen_by: pods``, the errors its pods' application answered (by HTTP
    status); ``seen_by: load generator``, for the entry service only, the errors the load
    generator got from it beyond those its application answered: errors made before its
    application (its proxies, Mixer's check on its inbound, its endpoints), by response flag.
    A proxy in front of another service that fails shows at that service's callers, whose
    application answers the error (the series record what applications answered, not what
    each proxy did).

    Attributes:
        seen_by: ``pods`` or ``load generator`` (see above).
        baseline_error_rate: its error rate in the fault's baseline windows.
        error_rate: its error rate in the fault's windows.
        errors: those errors in the fault's windows.
        errors_by: those errors by HTTP status (``pods``) or response flag.
    """

    model_config = ConfigDict(frozen=True)

    seen_by: str

    baseline_error_rate: Measure
    error_rate: Measure
    errors: int
    errors_by: dict[str, int]


class FaultResult(BaseModel):
    """What one fault of the spec did, judged from the time series: its resolution is one
    window.

    The fault's windows are those that overlap ``[start_s, end_s)``. Its baseline is the
    windows that end before it starts, start after the warm-up and overlap no fault (or,
    when there are none, such windows in the warm-up: ``baseline`` says which). A window
    is normal when its end-to-end error rate is at most the baseline's plus
    ``error_rate_band`` and its p99 at most ``p99_band`` times the baseline's; an empty
    window is not normal.

    Attributes:
        index: the fault's position in the spec's ``faults``.
        kind: the fault's kind.
        target: the fault's other fields (its target), as the spec gives them.
        start_s / end_s: when it starts and ends (the end of the run when it has no
            duration).
        baseline: ``measured`` (windows after the warm-up), ``warm-up`` or ``none``.
        baseline_windows: how many windows the baseline has.
        baseline_error_rate / baseline_p99_ms: end to end, over the baseline windows.
        requests: end-to-end requests that ended in the fault's windows.
        failed: of them, those that failed.
        error_rate: ``failed / requests``.
        services_hurt: the services whose error rate in the fault's windows was above their
            baseline's plus the band (blast radius), with their figures.
        requests_lost: failed end-to-end requests whose life overlapped the fault's windows
            (started in them, or in flight when they ended, and failed).
        share_lost: ``requests_lost`` over the run's measured end-to-end requests.
        errors_started_at_s: start of the first window, from the fault's first on, whose
            error rate is above the band (None: never).
        time_to_errors_s: from the fault's start to that window's start (0 when it is the
            window the fault starts in).
        recovered_at_s: start of the first window after the disturbance from which two
            windows in a row are normal (None: not by the end of the run, or no baseline).
        time_to_recover_s: from the fault's end to ``recovered_at_s`` (0 when it recovered
            while the fault lasted; ``recovered_during_fault`` says so; None if it did not
            recover); 0 too when nothing left the band.
        disturbed: whether any window from the fault's first on left the band before the
            recovery.
        retries: the routers' ``upstream_rq_retry`` per destination host, over the whole
            measured run and every replication.
        requests_stuck: requests in flight at the end of the fault's last window beyond the
            baseline's level: held by it, slow or hanging (a black hole with no timeout fails
            nothing: it holds its requests).
        retries_made: retries the routers made in the fault's windows (every caller's
            proxy, every hop of the call graph).
        saved_by_retries: calls retried in the fault's windows that then succeeded (the
            retries hid the fault from their caller).
        failed_after_retries: calls retried in the fault's windows that failed anyway.
        notes: what limits the figures (no baseline, a window wider than the fault, ...).
    """

    model_config = ConfigDict(frozen=True)

    index: int
    kind: str
    target: dict[str, Any] = {}
    start_s: float
    end_s: float
    baseline: str
    baseline_windows: int
    baseline_error_rate: Measure
    baseline_p99_ms: Measure
    requests: int
    failed: int
    error_rate: Measure
    services_hurt: dict[str, ServiceHurt]
    requests_lost: int
    share_lost: Measure
    errors_started_at_s: float | None
    time_to_errors_s: float | None
    disturbed: bool
    recovered_at_s: float | None
    time_to_recover_s: float | None
    recovered_during_fault: bool
    retries: dict[str, int] = {}
    requests_stuck: int = 0
    retries_made: int = 0
    saved_by_retries: int = 0
    failed_after_retries: int = 0
    notes: list[str] = []

    @field_serializer("target", when_used="json")
    def _strict_json(self, value: dict[str, Any]) -> Any:
        return finite_or_none(value)


class Figures(BaseModel):
    """One replication's own figures for the whole request path or one service (what the
    confidence intervals are computed from).

    Attributes:
        requests: requests measured (answered after the warm-up).
        throughput_rps: ``requests`` per measured second.
        error_rate: share of ``requests`` answered with an error (0 when none was measured).
        mean_ms / p50_ms / p90_ms / p99_ms / p999_ms: latency in milliseconds (NaN, ``null``
            in JSON, when none was measured).
    """

    model_config = ConfigDict(frozen=True)

    requests: int
    throughput_rps: Measure
    error_rate: Measure
    mean_ms: Measure
    p50_ms: Measure
    p90_ms: Measure
    p99_ms: Measure
    p999_ms: Measure

    @classmethod
    def of(
        cls, requests: int, errors: int, measured_s: float, histogram: LatencyHistogram
    ) -> Figures:
        """The figures of ``requests`` (``errors`` of them failed) over ``measured_s``
        seconds, with their latencies (seconds) in ``histogram``."""
        latency = LatencySummary.from_histogram(histogram)
        return cls(
            requests=requests,
            throughput_rps=requests / measured_s,
            error_rate=errors / requests if requests else 0.0,
            mean_ms=latency.mean_ms,
            p50_ms=latency.p50_ms,
            p90_ms=latency.p90_ms,
            p99_ms=latency.p99_ms,
            p999_ms=latency.p999_ms,
        )


class ReplicationResult(Figures):
    """One replication, end to end, with its seed and each service's figures.

    Attributes:
        seed: the replication's own seed (spawned from the run's).
        services: per workload, its pods' figures in this replication.
    """

    seed: int
    services: dict[str, Figures] = {}


class Interval(BaseModel):
    """A mean over replications and its 95 % confidence half-width (Student t over the
    replications: ``t(0.975, n - 1) * s / sqrt(n)``; see ``sim.stats.mean_half_width``).

    Attributes:
        mean: the mean of the replications' values (NaN left out).
        half_width: the interval is ``mean ± half_width``; NaN (``null`` in JSON) with
            fewer than two values.
        n: the replications whose value was measured (not NaN).
    """

    model_config = ConfigDict(frozen=True)

    mean: Measure
    half_width: Measure
    n: int


class FigureIntervals(BaseModel):
    """Each figure of :class:`Figures` (but ``requests``) as a mean over replications with
    its 95 % confidence half-width. A quantile's interval is that of the mean of the
    replications' quantiles, which can differ a little from the quantile of their merged
    histogram (``ServiceResult.latency``)."""

    model_config = ConfigDict(frozen=True)

    throughput_rps: Interval
    error_rate: Interval
    mean_ms: Interval
    p50_ms: Interval
    p90_ms: Interval
    p99_ms: Interval
    p999_ms: Interval


class Intervals(BaseModel):
    """95 % confidence intervals over the replications, end to end and per service.

    Attributes:
        replications: how many replications they are over.
        end_to_end: as the load generator saw the requests.
        services: per workload.
    """

    model_config = ConfigDict(frozen=True)

    replications: int
    end_to_end: FigureIntervals
    services: dict[str, FigureIntervals] = {}


RolloutKind = Literal["none", "sidecar", "daemonset", "ambient", "library"]


class OperationsResult(BaseModel):
    """What an operator writes and runs for this mesh and topology (``experiments.operations``
    says what is counted and how).

    Attributes:
        objects: Kubernetes objects the policies take (an SMI backend's own Service counted).
        objects_by_kind: those, by kind.
        yaml_lines: their lines of YAML, with the annotation lines.
        annotations: Traefik Mesh annotations (one line each, on their Service).
        control_plane_pods: pods of the control plane (and Mixer's deployments).
        control_plane_cores: the cores those pods are given (CPUs).
        control_plane_memory_bytes: the control plane's modelled memory for this topology.
        rollout: how a proxy upgrade rolls out: ``sidecar`` (every meshed pod restarts),
            ``daemonset`` (one proxy pod per node), ``ambient`` (ztunnels per node and
            waypoints), ``library`` (apps rebuilt and restarted), ``none`` (no mesh).
        proxies: proxies (or, proxyless, xDS clients) a version upgrade replaces.
        proxy_restarts: proxy pods restarted (sidecars restart with their app pods, counted
            in ``app_restarts``).
        app_restarts: application pods restarted.
        app_rebuilds: application images rebuilt (proxyless: the gRPC library is linked in).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    objects: int
    objects_by_kind: dict[str, int]
    yaml_lines: int
    annotations: int
    control_plane_pods: int
    control_plane_cores: float
    control_plane_memory_bytes: float
    rollout: RolloutKind
    proxies: int
    proxy_restarts: int
    app_restarts: int
    app_rebuilds: int


class RunResult(BaseModel):
    """The result of one experiment (all its replications merged).

    Attributes:
        name: the experiment's name.
        spec: the effective spec, as data (profiles and overrides resolved).
        effective_spec: the spec with its topology and mesh resolved and written out in
            full (``ExperimentSpec.effective``): ``meshsim run --from`` re-runs it to the
            same numbers, whatever became of the profile or topology it named (empty in
            results written before it was kept).
        interrupted: the run was stopped (Ctrl-C) before its end: the figures cover what
            it measured until then (its first warning says what).
        seed: the root seed; ``replication_seeds`` were spawned from it.
        version: meshsim's version.
        wall_time_s: wall-clock seconds the run took.
        measured_s: simulated seconds measured per replication (after the warm-up).
        end_to_end: the requests as the load generator saw them.
        services: per workload, as its pods served them.
        hops_ms: mean milliseconds per end-to-end request spent in each kind of hop.
        cpu: CPU by component kind, component and node.
        memory_bytes: modelled memory per proxy (or per application's xDS client).
        proxies: per proxy: kind, node, cores, rps, vCPU per 1000 rps and memory.
        in_flight_mean: time-averaged requests in flight (Little's law: = rate x latency).
        status_codes / response_flags: counts over the measured requests.
        traffic: Envoy's counters per destination, subset and proxy, outlier ejections and
            Traefik breakers (None without proxies, or when nothing was counted).
        latency_histogram: the end-to-end histogram, serialised (mergeable).
        timeseries: the run in fixed windows (None unless the spec asks for it).
        faults: per fault of the spec, its blast radius and recovery, judged from the time
            series (None without one).
        error: what went wrong, if the run failed.
        warnings: what makes the figures hard to read: a component busy all the time (its
            queue grows with the run: no steady state), no request measured.
        replications: each replication's own figures, in the order of
            ``replication_seeds`` (empty in results written before they were kept).
        intervals: means over the replications with 95 % confidence half-widths (None in
            results written before they were kept; half-widths NaN with one replication).
        operations: what an operator writes and runs for this mesh, topology and policies
            (None in results written before it was counted).
    """

    model_config = ConfigDict(frozen=True)

    name: str
    spec: dict[str, Any]
    effective_spec: dict[str, Any] = {}
    interrupted: bool = False
    seed: int
    replication_seeds: list[int]
    version: str
    wall_time_s: Measure
    measured_s: Measure
    end_to_end: ServiceResult
    services: dict[str, ServiceResult]
    hops_ms: dict[str, Measure]
    cpu: CpuResult
    memory_bytes: dict[str, Measure]
    proxies: dict[str, ProxyResult] = {}
    control_plane: ControlPlaneResult | None = None
    conservation: Conservation
    in_flight_mean: Measure
    status_codes: dict[str, int]
    response_flags: dict[str, int]
    traffic: TrafficResult | None = None
    latency_histogram: dict[str, Any]
    extras: dict[str, Any] = {}
    timeseries: TimeSeriesResult | None = None
    faults: list[FaultResult] | None = None
    error: str | None = None
    warnings: list[str] = []
    replications: list[ReplicationResult] = []
    intervals: Intervals | None = None
    operations: OperationsResult | None = None

    @field_serializer("spec", "effective_spec", "latency_histogram", "extras", when_used="json")
    def _strict_json(self, value: dict[str, Any]) -> Any:
        # Free-form data: no type to say "NaN is null", so say it here.
        return finite_or_none(value)

    def to_frame(self) -> Any:
        """The run's figures as a tidy pandas DataFrame (``experiments.frames``; pandas is
        in the ``frames`` extra)."""
        from experiments.frames import run_frame  # pandas only when asked for

        return run_frame(self)

    @property
    def memory_total_bytes(self) -> float:
        return float(sum(self.memory_bytes.values()))

    def histogram(self) -> LatencyHistogram:
        """The end-to-end latency histogram (seconds)."""
        return LatencyHistogram.from_dict(self.latency_histogram)
