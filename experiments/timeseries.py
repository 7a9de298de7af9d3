"""The run over time: replications' windows merged, and each fault judged from them.

The model records each replication in fixed windows (``models.simulation.SeriesOutput``);
here the replications are merged (counts summed, histograms merged, window by window) into a
:class:`~experiments.results.TimeSeriesResult`, and each fault of the spec, whatever its kind,
is judged against the windows before it (:class:`~experiments.results.FaultResult`).
Everything here has the resolution of one window.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from experiments.results import (
    EndToEndSeries,
    FaultResult,
    SeriesResult,
    ServiceHurt,
    TimeSeriesResult,
)
from experiments.timeseries_spec import TimeSeriesSpec
from models.simulation import SimulationOutput
from sim.stats import LatencyHistogram, WindowedSeries

__all__ = ["Merged", "merge_series", "series_result", "fault_results"]

_FAULT_FIELDS = ("kind", "start", "duration")


class Merged:
    """The replications' windows merged (what the results and the fault figures read).

    Attributes:
        window_s: the window (seconds).
        end_s: the end of the run (seconds).
        warmup_s: the end of the warm-up (seconds).
        replications: how many replications were merged.
        starts_s / lengths_s: each window's start and length (the last may be shorter).
        end_to_end: the end-to-end windows, merged.
        services: per service, its windows, merged.
        sent / in_flight_start / in_flight_end: per window, summed over replications.
        in_flight_mean: per window, the mean over replications of the time-weighted mean.
        failed_spans: failed end-to-end requests by (start window, end window), summed.
    """

    def __init__(self, outputs: Sequence[SimulationOutput]) -> None:
        series = [out.series for out in outputs]
        first = series[0]
        assert first is not None and all(s is not None for s in series)
        self.window_s = first.window_s
        self.end_s = first.end_s
        self.warmup_s = first.warmup_s
        self.replications = len(series)
        n = first.windows
        self.starts_s = [i * self.window_s for i in range(n)]
        self.lengths_s = [
            min((i + 1) * self.window_s, self.end_s) - i * self.window_s for i in range(n)
        ]
        self.end_to_end = WindowedSeries(self.window_s)
        self.services: dict[str, WindowedSeries] = {}
        self.sent = [0] * n
        self.in_flight_start = [0] * n
        self.in_flight_end = [0] * n
        self.in_flight_mean = [0.0] * n
        self.failed_spans: dict[tuple[int, int], int] = {}
        # Per window: retries made, calls a retry saved, calls that failed after retrying.
        self.retries = [[0, 0, 0] for _ in range(n)]
        for s in series:
            assert s is not None
            self.end_to_end.merge(s.workload.ended)
            for name, found in s.services.items():
                self.services.setdefault(name, WindowedSeries(self.window_s)).merge(found)
            for i, count in s.workload.sent.items():
                self.sent[i] += count
            for i in range(n):
                self.in_flight_start[i] += round(s.in_flight_start[i])
                self.in_flight_end[i] += round(s.in_flight_end[i])
                self.in_flight_mean[i] += s.in_flight_mean[i] / self.replications
            for key, count in s.workload.failed_spans.items():
                self.failed_spans[key] = self.failed_spans.get(key, 0) + count
            for i, counts in s.retries.items():
                if i < n:
                    for k in range(3):
                        self.retries[i][k] += counts[k]

    @property
    def windows(self) -> int:
        """The number of windows."""
        return len(self.starts_s)


def merge_series(outputs: Sequence[SimulationOutput]) -> Merged | None:
    """The replications' windows merged; None when the run recorded none."""
    if not outputs or outputs[0].series is None:
        return None
    return Merged(outputs)


def _series(merged: Merged, series: WindowedSeries) -> dict[str, Any]:
    """The fields of a :class:`SeriesResult` from one merged series."""
    n = merged.windows
    requests, successes, errors, measured = [0] * n, [0] * n, [0] * n, [0] * n
    rps, rate, p50, p99 = [0.0] * n, [math.nan] * n, [math.nan] * n, [math.nan] * n
    by: dict[str, list[int]] = {}
    measured_by: dict[str, list[int]] = {}
    for i in range(n):
        w = series.window(i)
        if w is None or w.count == 0:
            continue
        requests[i] = w.count
        errors[i] = w.errors
        successes[i] = w.count - w.errors
        measured[i] = w.measured
        rps[i] = w.count / (merged.lengths_s[i] * merged.replications)
        rate[i] = (w.count - w.errors) / w.count
        q50, q99 = w.hist.quantiles([0.5, 0.99])
        p50[i], p99[i] = q50 * 1e3, q99 * 1e3
        for into, labels in ((by, w.labels), (measured_by, w.measured_labels)):
            for label, count in labels.items():
                into.setdefault(str(label), [0] * n)[i] += count
    return {
        "requests": requests,
        "successes": successes,
        "errors": errors,
        "throughput_rps": rps,
        "success_rate": rate,
        "errors_by": dict(sorted(by.items())),
        "measured": measured,
        "measured_errors_by": dict(sorted(measured_by.items())),
        "p50_ms": p50,
        "p99_ms": p99,
    }


def series_result(merged: Merged) -> TimeSeriesResult:
    """The typed result of the merged windows."""
    return TimeSeriesResult(
        window_s=merged.window_s,
        starts_s=merged.starts_s,
        warmup_windows=sum(1 for start in merged.starts_s if start < merged.warmup_s),
        end_to_end=EndToEndSeries(
            **_series(merged, merged.end_to_end),
            sent=merged.sent,
            in_flight_mean=merged.in_flight_mean,
            in_flight_start=merged.in_flight_start,
            in_flight_end=merged.in_flight_end,
        ),
        services={
            name: SeriesResult(**_series(merged, merged.services[name]))
            for name in sorted(merged.services)
        },
    )


# --- faults ----------------------------------------------------------------------------------


def _fault_span(fault: Any, end_s: float) -> tuple[float, float]:
    """When a fault starts and ends (seconds); no duration (or None) = to the run's end; a
    crash ends when its pods run again (``FaultSpec.end_s``)."""
    start = float(fault.start)
    if hasattr(fault, "end_s"):
        return start, float(fault.end_s(end_s))
    duration = getattr(fault, "duration", None)
    return start, end_s if duration is None else min(end_s, start + float(duration))


def _fault_windows(merged: Merged, start: float, end: float) -> range:
    """The windows that overlap ``[start, end)`` (at least the one ``start`` is in)."""
    w = merged.window_s
    first = min(int(start // w), merged.windows - 1)
    last = max(first, min(math.ceil(end / w - 1e-9), merged.windows) - 1)
    return range(first, last + 1)


def _totals(series: WindowedSeries, windows: Sequence[int]) -> tuple[int, int, LatencyHistogram]:
    """Requests, errors and the merged latency histogram over ``windows``."""
    count = errors = 0
    hist = LatencyHistogram()
    for i in windows:
        w = series.window(i)
        if w is not None:
            count += w.count
            errors += w.errors
            hist.merge(w.hist)
    return count, errors, hist


def _labels(series: WindowedSeries, windows: Sequence[int]) -> dict[str, int]:
    """Errors by label over ``windows``."""
    by: dict[str, int] = {}
    for i in windows:
        w = series.window(i)
        for label, n in (w.labels if w is not None else {}).items():
            by[str(label)] = by.get(str(label), 0) + n
    return dict(sorted(by.items()))


def _rate(errors: int, count: int) -> float:
    return errors / count if count else math.nan


def fault_results(
    merged: Merged,
    faults: Sequence[Any],
    band: TimeSeriesSpec,
    measured_requests: int,
    retries: dict[str, int],
    entry: str,
) -> list[FaultResult]:
    """Each fault's blast radius and recovery (see :class:`FaultResult`).

    Args:
        merged: the run's windows, replications merged.
        faults: the spec's faults (any kind: ``kind``, ``start`` and ``duration`` are read,
            the other fields are reported as its target).
        band: the spec's ``timeseries`` (its bands).
        measured_requests: the run's measured end-to-end requests (``share_lost``'s
            denominator).
        retries: the routers' ``upstream_rq_retry`` per destination, over the run.
        entry: the entry service (the one the load generator calls).
    """
    spans = [_fault_span(f, merged.end_s) for f in faults]
    faulty: set[int] = set()
    for start, end in spans:
        faulty.update(_fault_windows(merged, start, end))
    e2e = merged.end_to_end
    results = []
    for index, (fault, (start, end)) in enumerate(zip(faults, spans, strict=True)):
        notes: list[str] = []
        windows = _fault_windows(merged, start, end)
        before = [
            i
            for i in range(merged.windows)
            if merged.starts_s[i] + merged.lengths_s[i] <= start and i not in faulty
        ]
        baseline = [i for i in before if merged.starts_s[i] >= merged.warmup_s]
        source = "measured"
        if not baseline:
            baseline, source = before, "warm-up"
            if before:
                notes.append("no window between the warm-up and the fault: baseline in the warm-up")
        if not baseline:
            source = "none"
            notes.append("no window before the fault: no baseline, no recovery figures")
        b_count, b_errors, b_hist = _totals(e2e, baseline)
        b_rate = _rate(b_errors, b_count)
        b_p99 = b_hist.quantile(0.99) if b_hist.count else math.nan
        if end - start < merged.window_s:
            notes.append("the fault is shorter than a window: its figures are diluted")

        def normal(i: int, b_rate: float = b_rate, b_p99: float = b_p99) -> bool:
            w = e2e.window(i)
            if w is None or w.count == 0:
                return False
            if w.errors / w.count > b_rate + band.error_rate_band:
                return False
            return w.hist.quantile(0.99) <= b_p99 * band.p99_band

        def erroring(i: int, b_rate: float = b_rate) -> bool:
            w = e2e.window(i)
            return (
                w is not None and w.count > 0 and w.errors / w.count > b_rate + band.error_rate_band
            )

        started_at = to_errors = recovered_at = to_recover = None
        disturbed = during = False
        if source != "none" and b_count:
            # The fault's windows and the one after (an effect caught at its end).
            after = range(windows.start, min(windows.stop + 1, merged.windows))
            first_error = next((i for i in after if erroring(i)), None)
            if first_error is not None:
                started_at = merged.starts_s[first_error]
                to_errors = max(0.0, started_at - start)
            first_off = next((i for i in after if not normal(i)), None)
            if first_off is None:  # nothing left the band
                recovered_at, to_recover = merged.starts_s[windows.start], 0.0
            else:
                disturbed = True
                r = next(
                    (
                        i
                        for i in range(first_off + 1, merged.windows - 1)
                        if normal(i) and normal(i + 1)
                    ),
                    None,
                )
                if r is not None:
                    recovered_at = merged.starts_s[r]
                    during = recovered_at < end
                    to_recover = max(0.0, recovered_at - end)
        elif source != "none":
            notes.append("no request ended in the baseline windows: no recovery figures")

        count, failed, _ = _totals(e2e, windows)
        hurt = {}
        for name in sorted(merged.services):
            series = merged.services[name]
            s_count, s_errors, _ = _totals(series, windows)
            sb_count, sb_errors, _ = _totals(series, baseline)
            s_base = sb_errors / sb_count if sb_count else 0.0
            if s_count and s_errors / s_count > s_base + band.error_rate_band:
                hurt[name] = ServiceHurt(
                    seen_by="pods",
                    baseline_error_rate=sb_errors / sb_count if sb_count else math.nan,
                    error_rate=s_errors / s_count,
                    errors=s_errors,
                    errors_by=_labels(series, windows),
                )
        if entry in merged.services and count:
            # Errors the load generator got that the entry's application did not answer:
            # made before it (its proxies, Mixer's check, its endpoints).
            app = merged.services[entry]
            extra = failed - _totals(app, windows)[1]
            b_extra = b_errors - _totals(app, baseline)[1]
            e_base = b_extra / b_count if b_count else 0.0
            if extra / count > e_base + band.error_rate_band:
                hurt[entry] = ServiceHurt(
                    seen_by="load generator",
                    baseline_error_rate=b_extra / b_count if b_count else math.nan,
                    error_rate=extra / count,
                    errors=extra,
                    errors_by=_labels(e2e, windows),
                )
        lost = sum(
            n
            for (first, last), n in merged.failed_spans.items()
            if first <= windows[-1] and last >= windows[0]
        )
        # Requests that hang: still in flight at the end of the fault's last window beyond
        # what the baseline kept in flight (a black hole without a timeout loses no request
        # to an error; it holds them).
        base_in_flight = (
            sum(merged.in_flight_mean[i] for i in baseline) / len(baseline) if baseline else 0.0
        )
        stuck = max(
            0, round(merged.in_flight_end[windows[-1]] - base_in_flight * merged.replications)
        )
        if stuck > max(5, 2 * base_in_flight * merged.replications) and not disturbed:
            disturbed = True
            recovered_at = to_recover = None
            during = False
            notes.append(
                f"{stuck} requests still in flight at the end of its windows (hanging: no "
                "timeout answered them)"
            )
        results.append(
            FaultResult(
                index=index,
                kind=str(fault.kind),
                target={
                    k: v
                    for k, v in _dump(fault).items()
                    if k not in _FAULT_FIELDS and v is not None
                },
                start_s=start,
                end_s=end,
                baseline=source,
                baseline_windows=len(baseline),
                baseline_error_rate=b_rate,
                baseline_p99_ms=b_p99 * 1e3,
                requests=count,
                failed=failed,
                error_rate=_rate(failed, count),
                services_hurt=hurt,
                requests_lost=lost,
                requests_stuck=stuck,
                share_lost=lost / measured_requests if measured_requests else math.nan,
                errors_started_at_s=started_at,
                time_to_errors_s=to_errors,
                disturbed=disturbed,
                recovered_at_s=recovered_at,
                time_to_recover_s=to_recover,
                recovered_during_fault=during,
                retries=retries,
                retries_made=sum(merged.retries[i][0] for i in windows),
                saved_by_retries=sum(merged.retries[i][1] for i in windows),
                failed_after_retries=sum(merged.retries[i][2] for i in windows),
                notes=notes,
            )
        )
    return results


def _dump(fault: Any) -> dict[str, Any]:
    """A fault's fields as JSON data (a pydantic model, or any object with attributes)."""
    dump = getattr(fault, "model_dump", None)
    if dump is not None:
        return dict(dump(mode="json"))
    return {k: v for k, v in vars(fault).items() if not k.startswith("_")}
