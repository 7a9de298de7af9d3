"""What an operator would see: the files ``meshsim run SPEC --out DIR`` writes beside
``result.json``.

* ``metrics.prom``: Istio's request metrics (``istio_requests_total``,
  ``istio_request_duration_milliseconds``) in Prometheus' text exposition format, as the
  mesh's proxies would report them (see :mod:`models.telemetry` for who reports what). One
  scrape at the end of the run, without timestamps; with ``scrape_every_s``, one scrape per
  window, each sample stamped with the window's end in milliseconds of simulated time (the
  run starts at 0, the Unix epoch). Replications are summed (as if each were a part of one
  fleet scraped together).
* ``traces.json``: the sampled traces (``trace_every``) in OpenTelemetry's OTLP/JSON shape
  (an ``ExportTraceServiceRequest``), for Jaeger or Tempo.
* ``fortio.json``: for a closed-loop workload, the run in fortio's result shape
  (``periodic.RunnerResults`` with ``fhttp.HTTPRunnerResults``' ``RetCodes``).
* ``timeseries.csv``: when the result carries time series (``RunResult.timeseries``).
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from experiments.report import write_run_report
from experiments.results import RunResult, finite_or_none
from experiments.runner import ReplicationProgress, meshsim_version, run_replications
from experiments.spec import ExperimentSpec
from models.simulation import SimulationOutput
from models.telemetry import DURATION_BUCKETS_MS, IstioTelemetry, SeriesKey, istio_reporting
from models.workload import fortio_plan
from sim.recorder import Span
from sim.stats import LatencyHistogram

__all__ = [
    "ExportedRun",
    "run_with_exports",
    "write_exports",
    "prometheus_text",
    "otlp_traces",
    "fortio_result",
    "go_duration",
    "FORTIO_PERCENTILES",
]

FORTIO_PERCENTILES = (50.0, 75.0, 90.0, 99.0, 99.9)
"""fortio's ``-p`` as Istio's benchmark runs it (shared/REFERENCE.md, section 5)."""

LABELS = (
    "reporter",
    "source_workload",
    "destination_workload",
    "destination_service",
    "response_code",
    "response_flags",
    "connection_security_policy",
)


@dataclass
class ExportedRun:
    """A run with what its exports need beyond the result.

    Attributes:
        spec: the experiment.
        result: the merged result (as ``run_experiment`` returns it).
        outputs: the raw output of each replication (its recorder's traces).
        seeds: each replication's seed.
        telemetry: Istio's metrics of every replication, merged; None when the mesh's
            proxies do not report them.
        reporting: the mesh's Istio reporters (``sidecar``, ``ambient``) or None.
    """

    spec: ExperimentSpec
    result: RunResult
    outputs: list[SimulationOutput]
    seeds: list[int]
    telemetry: IstioTelemetry | None
    reporting: str | None
    scrape_every_s: float | None = None
    written: list[str] = field(default_factory=list)


def run_with_exports(
    spec: ExperimentSpec,
    scrape_every_s: float | None = None,
    progress: ReplicationProgress | None = None,
) -> ExportedRun:
    """Run ``spec`` as ``run_experiment`` does, collecting Istio's metrics as well (when the
    mesh reports them), and keep the raw outputs for the traces.

    Args:
        spec: the experiment (not a sweep).
        scrape_every_s: one Prometheus scrape per window of this width (seconds); None for
            one scrape at the end.
        progress: as ``run_experiment``'s (a stopped run exports what it measured).
    """
    import time

    if spec.sweep is not None:
        raise ValueError("exports are written for one run, not a sweep")
    started = time.perf_counter()
    run = run_replications(
        spec, progress, telemetry=lambda: IstioTelemetry(window_s=scrape_every_s)
    )
    result = run.summarise(time.perf_counter() - started)
    seeds, outputs = run.seeds[: len(run.outputs)], run.outputs
    merged: IstioTelemetry | None = None
    for out in outputs:
        if out.telemetry is not None:
            if merged is None:
                merged = IstioTelemetry(window_s=scrape_every_s)
            merged.merge(out.telemetry)
    return ExportedRun(
        spec=spec,
        result=result,
        outputs=outputs,
        seeds=seeds,
        telemetry=merged,
        reporting=istio_reporting(spec.mesh.resolve()),
        scrape_every_s=scrape_every_s,
    )


def write_exports(run: ExportedRun, out_dir: Path) -> list[str]:
    """Write ``result.json`` and the exports into ``out_dir``; one line per file (or per
    file not written, and why), for the command to print."""
    out_dir.mkdir(parents=True, exist_ok=True)
    result = run.result
    lines = []
    path = out_dir / "result.json"
    path.write_text(_json(result.model_dump(mode="json")), encoding="utf-8")
    lines.append(f"{path}: the result")

    path = out_dir / "metrics.prom"
    path.write_text(prometheus_text(run), encoding="utf-8")
    if run.telemetry is None:
        lines.append(f"{path}: no Istio metrics (this mesh's proxies do not report them)")
    else:
        lines.append(f"{path}: Istio's request metrics (Prometheus text format)")

    path = out_dir / "traces.json"
    traces = otlp_traces(run.outputs, run.seeds)
    path.write_text(json.dumps(traces, indent=1), encoding="utf-8")
    count = sum(len(out.recorder.traces) for out in run.outputs)
    note = "" if count else " (none sampled: set trace_every)"
    lines.append(f"{path}: {count} trace(s), OTLP/JSON{note}")

    spec = run.spec
    if spec.workload.kind == "closed_loop":
        path = out_dir / "fortio.json"
        path.write_text(_json(fortio_result(result, spec)), encoding="utf-8")
        lines.append(f"{path}: fortio's result shape")
    else:
        lines.append("fortio.json: not written (an open-loop workload; fortio runs closed loops)")

    timeseries = getattr(result, "timeseries", None)
    if timeseries is not None:
        path = out_dir / "timeseries.csv"
        _write_timeseries(path, timeseries)
        lines.append(f"{path}: time series, one row per window and series")
        path = write_run_report(result, out_dir / "report.html")
        lines.append(f"{path}: the run over time, faults shaded (HTML, offline)")
    return lines


def _json(data: Any) -> str:
    return json.dumps(finite_or_none(data), indent=1, allow_nan=False)


# --- metrics.prom ------------------------------------------------------------------------------


def _escape(value: str) -> str:
    """A label value as Prometheus' text format writes it (backslash, quote, newline)."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if float(value).is_integer():
        return str(int(value))
    return repr(float(value))


def _labels(key: SeriesKey, extra: str = "") -> str:
    pairs = [f'{name}="{_escape(v)}"' for name, v in zip(LABELS, key, strict=True)]
    if extra:
        pairs.append(extra)
    return "{" + ",".join(pairs) + "}"


def prometheus_text(run: ExportedRun) -> str:
    """``metrics.prom``'s text (see the module docstring)."""
    result = run.result
    warmup_s = float(run.spec.warmup)
    end_s = warmup_s + result.measured_s
    head = [
        "# meshsim: Istio's standard request metrics, as this run's proxies would report them "
        f"(experiment {result.name!r}, seed {result.seed}, {len(run.seeds)} replication(s) "
        "summed; counted after the warm-up).",
    ]
    telemetry = run.telemetry
    if telemetry is None or run.reporting is None:
        head.append(
            "# meshsim: this mesh's proxies do not emit Istio's metrics (only Istio's sidecars "
            "and waypoints do): no samples."
        )
        return "\n".join(head) + "\n"
    if run.reporting == "ambient":
        head.append(
            '# meshsim: ambient: waypoints report (reporter="waypoint"); ztunnel\'s L4 '
            "metrics (istio_tcp_*) are left out, so calls without a waypoint are not here."
        )
    else:
        head.append(
            '# meshsim: sidecars: reporter="source" (the caller\'s sidecar, once per call '
            'after its retries) and reporter="destination" (the server\'s, once per request '
            "its app answers)."
        )
    window_s = run.scrape_every_s
    if window_s is None:
        scrapes: list[tuple[int, float | None]] = [(0, None)]
    else:
        count = max(1, math.ceil(result.measured_s / window_s - 1e-9))
        scrapes = [(w, min(end_s, warmup_s + (w + 1) * window_s)) for w in range(count)]
        head.append(
            f"# meshsim: one scrape every {window_s:g} s of simulated time; timestamps are "
            "milliseconds from the run's start (the Unix epoch)."
        )
    # Cumulative figures per series at each scrape.
    keys = sorted({key for _, key in telemetry.series})
    running: dict[SeriesKey, list[Any]] = {}
    counter = [
        "# HELP istio_requests_total Requests handled by an Istio proxy.",
        "# TYPE istio_requests_total counter",
    ]
    histogram = [
        "# HELP istio_request_duration_milliseconds Duration of requests, milliseconds.",
        "# TYPE istio_request_duration_milliseconds histogram",
    ]
    bounds = [*(_number(b) for b in DURATION_BUCKETS_MS), "+Inf"]
    for window, at in scrapes:
        stamp = "" if at is None else f" {round(at * 1e3)}"
        for key in keys:
            found = telemetry.series.get((window, key))
            mine = running.get(key)
            if found is not None:
                if mine is None:
                    mine = running[key] = [0, 0.0, [0] * len(found.buckets)]
                mine[0] += found.count
                mine[1] += found.sum_ms
                mine[2] = [a + b for a, b in zip(mine[2], found.buckets, strict=True)]
            if mine is None:
                continue  # not seen yet: a series appears with its first request
            counter.append(f"istio_requests_total{_labels(key)} {mine[0]}{stamp}")
            cumulative = 0
            for bound, n in zip(bounds, mine[2], strict=True):
                cumulative += n
                le = f'le="{bound}"'
                histogram.append(
                    f"istio_request_duration_milliseconds_bucket{_labels(key, le)} "
                    f"{cumulative}{stamp}"
                )
            histogram.append(
                f"istio_request_duration_milliseconds_sum{_labels(key)} {mine[1]!r}{stamp}"
            )
            histogram.append(
                f"istio_request_duration_milliseconds_count{_labels(key)} {mine[0]}{stamp}"
            )
    return "\n".join([*head, *counter, *histogram]) + "\n"


# --- traces.json -------------------------------------------------------------------------------

SPAN_KIND_INTERNAL = 1
SPAN_KIND_CLIENT = 3
STATUS_OK = 1
STATUS_ERROR = 2
_POD_INDEX = re.compile(r"-\d+$")


def _hex(text: str, digits: int) -> str:
    """A stable id: the first ``digits`` hex digits of SHA-256 (never Python's salted hash)."""
    return hashlib.sha256(text.encode()).hexdigest()[:digits]


def _service(scope: str) -> str:
    """The service name of a span's scope: its pod's workload (``node-1.reviews-v1-0.sidecar``
    -> ``reviews-v1``), or the node proxy's kind (``node-1.ztunnel`` -> ``ztunnel``)."""
    parts = scope.split(".")
    name = parts[1] if len(parts) > 1 else parts[0]
    return _POD_INDEX.sub("", name)


def _nanos(seconds: float) -> str:
    return str(round(seconds * 1e9))


def _attribute(key: str, value: str) -> dict[str, Any]:
    return {"key": key, "value": {"stringValue": value}}


def otlp_traces(outputs: list[SimulationOutput], seeds: list[int]) -> dict[str, Any]:
    """The sampled traces as an OTLP/JSON ``ExportTraceServiceRequest``.

    The tree: one root span per traced request (``loadgen``, kind CLIENT, from its first
    hop's start to its last hop's end, ERROR if any hop failed), and each recorded hop (a
    network transfer, a proxy's io, queue and CPU, an app's queue and CPU, a TLS handshake)
    a child of the root. meshsim records a request's hops as a flat list that every call of
    the request shares, without which call a hop belongs to, so the calls are not nested
    (what a parallel fan-out did cannot be told apart); each span says its component in
    ``meshsim.scope``. Times are nanoseconds from the run's start (the Unix epoch). Ids are
    SHA-256 digests of the replication's seed, the trace's index and the span's index.
    """
    by_service: dict[str, list[dict[str, Any]]] = {}
    for replication, (out, seed) in enumerate(zip(outputs, seeds, strict=True)):
        for index, trace in enumerate(out.recorder.traces):
            if not trace:
                continue
            trace_id = _hex(f"meshsim-trace:{seed}:{index}", 32)
            root_id = _hex(f"meshsim-span:{seed}:{index}:root", 16)
            ok = all(span.ok for span in trace)
            by_service.setdefault("loadgen", []).append(
                {
                    "traceId": trace_id,
                    "spanId": root_id,
                    "parentSpanId": "",
                    "name": "request",
                    "kind": SPAN_KIND_CLIENT,
                    "startTimeUnixNano": _nanos(min(s.start_s for s in trace)),
                    "endTimeUnixNano": _nanos(max(s.end_s for s in trace)),
                    "attributes": [
                        _attribute("meshsim.replication", str(replication)),
                        _attribute("meshsim.trace_index", str(index)),
                    ],
                    "status": {"code": STATUS_OK if ok else STATUS_ERROR},
                }
            )
            for j, span in enumerate(trace):
                by_service.setdefault(_service(span.scope), []).append(
                    _hop_span(span, trace_id, _hex(f"meshsim-span:{seed}:{index}:{j}", 16), root_id)
                )
    return {
        "resourceSpans": [
            {
                "resource": {"attributes": [_attribute("service.name", name)]},
                "scopeSpans": [
                    {
                        "scope": {"name": "meshsim", "version": meshsim_version()},
                        "spans": spans,
                    }
                ],
            }
            for name, spans in sorted(by_service.items())
        ]
    }


def _hop_span(span: Span, trace_id: str, span_id: str, parent_id: str) -> dict[str, Any]:
    return {
        "traceId": trace_id,
        "spanId": span_id,
        "parentSpanId": parent_id,
        "name": span.kind,
        "kind": SPAN_KIND_INTERNAL,
        "startTimeUnixNano": _nanos(span.start_s),
        "endTimeUnixNano": _nanos(span.end_s),
        "attributes": [_attribute("meshsim.scope", span.scope)],
        "status": {"code": STATUS_OK if span.ok else STATUS_ERROR},
    }


# --- fortio.json -------------------------------------------------------------------------------


def go_duration(seconds: float) -> str:
    """``seconds`` as Go's ``time.Duration.String`` writes it (``30s``, ``1m30s``,
    ``1h0m0s``, ``1.5s``, ``500ms``): fortio's ``RequestedDuration`` is ``fmt.Sprint`` of
    its ``-t``."""
    nanos = round(seconds * 1e9)
    if nanos == 0:
        return "0s"
    sign = "-" if nanos < 0 else ""
    nanos = abs(nanos)
    if nanos < 1_000_000_000:
        for unit, size in (("ms", 1_000_000), ("µs", 1_000), ("ns", 1)):
            if nanos >= size:
                return sign + _trim(nanos / size) + unit
    hours, rest = divmod(nanos, 3_600_000_000_000)
    minutes, rest = divmod(rest, 60_000_000_000)
    secs = _trim(rest / 1e9) + "s"
    if hours:
        return f"{sign}{hours}h{minutes}m{secs}"
    if minutes:
        return f"{sign}{minutes}m{secs}"
    return sign + secs


def _trim(value: float) -> str:
    text = f"{value:.9f}".rstrip("0").rstrip(".")
    return text or "0"


def _histogram_data(histogram: LatencyHistogram) -> dict[str, Any]:
    """fortio's ``stats.HistogramData`` of a latency histogram, values in seconds: its
    buckets (the sketch's, ``Start``/``End`` clamped to ``[Min, Max]``, ``Percent``
    cumulative), and ``StdDev`` from the buckets' representative values (within the
    histogram's relative accuracy; meshsim keeps no sum of squares)."""
    data = histogram.to_dict()
    count = histogram.count
    if count == 0:
        return {"Count": 0, "Min": 0, "Max": 0, "Sum": 0, "Avg": 0, "StdDev": 0, "Data": None}
    gamma = (1 + histogram.relative_accuracy) / (1 - histogram.relative_accuracy)
    low, high = histogram.min, histogram.max
    buckets: list[tuple[float, float, int, float]] = []
    if data["zero_count"]:
        buckets.append((low, min(histogram.min_value, high), data["zero_count"], 0.0))
    for k, n in zip(data["bucket_indexes"], data["bucket_counts"], strict=True):
        start, end = gamma ** (k - 1), gamma**k
        buckets.append((max(start, low), min(end, high), n, 2 * end / (gamma + 1)))
    mean = histogram.mean
    variance = sum(n * (value - mean) ** 2 for _, _, n, value in buckets) / count
    total = 0
    rows = []
    for start, end, n, _ in buckets:
        total += n
        rows.append({"Start": start, "End": end, "Percent": 100.0 * total / count, "Count": n})
    return {
        "Count": count,
        "Min": low,
        "Max": high,
        "Sum": histogram.sum,
        "Avg": mean,
        "StdDev": math.sqrt(variance),
        "Data": rows,
        "Percentiles": [
            {"Percentile": p, "Value": histogram.quantile(p / 100.0)} for p in FORTIO_PERCENTILES
        ],
    }


def fortio_result(result: RunResult, spec: ExperimentSpec) -> dict[str, Any]:
    """The run in fortio's JSON result shape (fortio's ``periodic.RunnerResults`` and
    ``fhttp.HTTPRunnerResults``; ``stats.HistogramData`` for ``DurationHistogram``).

    Units as fortio's: durations in seconds, ``ActualDuration`` in nanoseconds (Go's
    ``time.Duration``), ``RequestedQPS`` a string (``"1000"``, or ``"max"`` for ``qps: 0``),
    ``RetCodes`` keyed by the status as a string. Replications are pooled: ``Count`` is the
    run's measured requests, ``ActualDuration`` the measured time of all replications.
    ``ErrorsDurationHistogram``, ``Sizes`` and ``HeaderSizes`` are left out (meshsim keeps
    no histogram of them).
    """
    workload = spec.workload
    if workload.kind != "closed_loop":
        raise ValueError("fortio.json is for closed-loop workloads (fortio's -c and -qps)")
    histogram = result.histogram()
    replications = len(result.replication_seeds)
    actual_s = result.measured_s * replications
    entry = spec.resolve_topology().call_graph.entry
    return {
        "RunType": "HTTP",
        "Labels": result.name,
        "StartTime": _iso(spec.warmup),
        "RequestedQPS": "max" if workload.qps == 0 else f"{workload.qps:.9g}",
        "RequestedDuration": go_duration(result.measured_s),
        "ActualQPS": histogram.count / actual_s if actual_s > 0 else 0.0,
        "ActualDuration": round(actual_s * 1e9),
        "NumThreads": fortio_plan(workload).threads,  # fortio lowers -c for a short -n
        "Version": f"meshsim {result.version}",
        "DurationHistogram": _histogram_data(histogram),
        "Exactly": workload.exactly or 0,
        "Jitter": workload.jitter,
        "Uniform": workload.uniform,
        "NoCatchUp": workload.nocatchup,
        "RunID": 0,
        "AccessLoggerInfo": "",
        "ID": f"meshsim-{result.name}-{result.seed}",
        "RetCodes": dict(sorted(result.status_codes.items(), key=lambda kv: int(kv[0]))),
        "URL": f"http://{entry}/",
        "SocketCount": workload.connections,
        "AbortOn": 0,
    }


def _iso(seconds: float) -> str:
    """Seconds from the Unix epoch as RFC 3339 (Go's ``time.Time`` in JSON)."""
    moment = datetime.fromtimestamp(seconds, tz=timezone.utc)
    return moment.isoformat().replace("+00:00", "Z")


# --- timeseries.csv ----------------------------------------------------------------------------

TIMESERIES_COLUMNS = ("window_start_s", "series", "metric", "value")


def _timeseries_rows(timeseries: Any) -> Iterable[tuple[Any, ...]]:
    """Rows of ``RunResult.timeseries``: its ``rows()`` if it has them, else the object
    itself as an iterable of rows; a row is a tuple in :data:`TIMESERIES_COLUMNS`' order or
    a mapping with those keys."""
    rows = timeseries.rows() if hasattr(timeseries, "rows") else timeseries
    for row in rows:
        if isinstance(row, dict):
            yield tuple(row[c] for c in TIMESERIES_COLUMNS)
        else:
            yield tuple(row)


def _write_timeseries(path: Path, timeseries: Any) -> None:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(TIMESERIES_COLUMNS)
        for row in _timeseries_rows(timeseries):
            writer.writerow(row)
