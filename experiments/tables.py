"""Plain-text tables for the terminal (no colours, stable widths, easy to diff)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from experiments.results import (
    ControlPlaneResult,
    FigureIntervals,
    Interval,
    OperationsResult,
    RunResult,
    ServiceResult,
    TimeSeriesResult,
    TrafficResult,
)
from models.proxy import IO_COMPONENTS

__all__ = [
    "format_table",
    "operations_block",
    "run_tables",
    "hop_rows",
    "fmt",
    "fmt_interval",
    "traffic_tables",
    "errors_table",
    "faults_table",
    "timeseries_table",
]

WIDTH = 100
"""The widest line a table may print; a wider one is printed as ``name=value`` lists."""


def fmt(value: float | int | str | None, digits: int = 2) -> str:
    """A number for a table: fixed digits, ``-`` for missing or NaN."""
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return f"{value:,}"
    if math.isnan(value):
        return "-"
    return f"{value:,.{digits}f}"


def fmt_interval(interval: Interval, digits: int = 2, scale: float = 1.0) -> str:
    """``mean ± half-width`` (both times ``scale``, ``digits`` decimals); the mean alone
    when the half-width is NaN (fewer than two replications measured it)."""
    mean = fmt(interval.mean * scale, digits)
    if math.isnan(interval.half_width) or math.isnan(interval.mean):
        return mean
    return f"{mean} ± {fmt(interval.half_width * scale, digits)}"


def _with_intervals(result: RunResult) -> bool:
    """Whether the tables print ``value ± half-width``: two replications or more."""
    return result.intervals is not None and result.intervals.replications >= 2


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]], title: str = "") -> str:
    """Columns aligned (text left, numbers right), with a rule under the header."""
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))

    def line(cells: Sequence[str]) -> str:
        out = []
        for i, cell in enumerate(cells):
            numeric = i > 0 and (cell[:1].isdigit() or cell[:1] in "-+" and cell[1:2].isdigit())
            out.append(cell.rjust(widths[i]) if numeric or cell == "-" else cell.ljust(widths[i]))
        return "  ".join(out).rstrip()

    parts = [title] if title else []
    parts.append(line(headers))
    parts.append("  ".join("-" * w for w in widths))
    parts.extend(line(row) for row in rows)
    return "\n".join(parts)


def run_tables(result: RunResult) -> str:
    """The tables of one run: end to end and per service, the hop breakdown, CPU; first a
    line saying so when the run was interrupted."""
    if result.interrupted:
        note = result.warnings[0] if result.warnings else "interrupted"
        return f"INTERRUPTED: {note}\n\n" + _run_tables(result)
    return _run_tables(result)


def _run_tables(result: RunResult) -> str:
    latency_headers = [
        "",
        "requests",
        "rps",
        "errors %",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "p99.9 ms",
        "max ms",
    ]
    rows = []
    intervals = result.intervals if _with_intervals(result) else None
    for item in [result.end_to_end, *result.services.values()]:
        lat = item.latency
        ci: FigureIntervals | None = None
        if intervals is not None:
            ci = intervals.end_to_end if item is result.end_to_end else None
            ci = intervals.services.get(item.name) if ci is None else ci
        if ci is not None:
            rows.append(
                [
                    item.name,
                    fmt(item.requests),
                    fmt_interval(ci.throughput_rps, 1),
                    fmt_interval(ci.error_rate, 2, scale=100),
                    fmt_interval(ci.p50_ms, 3),
                    fmt_interval(ci.p90_ms, 3),
                    fmt_interval(ci.p99_ms, 3),
                    fmt_interval(ci.p999_ms, 3),
                    fmt(lat.max_ms, 3),
                ]
            )
            continue
        rows.append(
            [
                item.name,
                fmt(item.requests),
                fmt(item.throughput_rps, 1),
                fmt(item.error_rate * 100, 2),
                fmt(lat.p50_ms, 3),
                fmt(lat.p90_ms, 3),
                fmt(lat.p99_ms, 3),
                fmt(lat.p999_ms, 3),
                fmt(lat.max_ms, 3),
            ]
        )
    c = result.conservation
    title = (
        f"{result.name}: seed {result.seed}, {len(result.replication_seeds)} replication(s) of "
        f"{result.measured_s:g} s measured, {result.wall_time_s:.1f} s wall"
    )
    blocks = [format_table(latency_headers, rows, title)]
    if intervals is not None:
        mean = intervals.end_to_end.mean_ms
        blocks[0] += (
            f"\n± 95 % confidence half-width over {intervals.replications} replications "
            "(Student t); values are means over them,\nrequests and max over all of them. "
            "A quantile is known to 1 % (the histogram's buckets): ± 0 means\nthe "
            f"replications fell in one bucket. End-to-end mean latency {fmt_interval(mean, 3)} ms"
        )
    hops = format_table(
        ["hop", "ms per request"],
        [[k, fmt(v, 3)] for k, v in hop_rows(result.hops_ms)],
        "Where the time goes (mean per end-to-end request)",
    )
    if any(k.rpartition("_io_")[2] in IO_COMPONENTS for k in result.hops_ms):
        hops += (
            "\nio: time in sockets, the kernel and the event loop, by MeshInsight's components: "
            "ipc (the\nloopback hop to the app), read_write (socket reads and writes; they grow "
            "with the message),\nepoll (the event loop's wake-up); both directions summed"
        )
    blocks.append(hops)
    per_proxy = result.cpu.per_proxy_per_1000_rps
    blocks.append(
        format_table(
            ["component kind", "cores", "vCPU per 1000 rps", "per proxy, per 1000 rps through it"],
            [
                [
                    k,
                    fmt(v, 3),
                    fmt(result.cpu.per_1000_rps.get(k, 0.0), 3),
                    fmt(per_proxy[k], 3) if k in per_proxy else "-",
                ]
                for k, v in result.cpu.by_kind.items()
            ],
            "CPU (vCPU per 1000 end-to-end rps; and per proxy, per 1000 rps through that proxy)",
        )
    )
    if result.cpu.throttling:
        blocks.append(
            format_table(
                ["container", "limit (cores)", "periods", "throttled periods", "throttled s"],
                [
                    [
                        scope,
                        fmt(t.limit_cores, 3),
                        fmt(t.periods, 1),
                        fmt(t.throttled_periods, 1),
                        fmt(t.throttled_s, 3),
                    ]
                    for scope, t in result.cpu.throttling.items()
                ],
                "CPU limits: CFS throttling (per replication; periods in which it ran, in which "
                "its quota ran out, and the time its threads waited for the next period)",
            )
        )
    errors = errors_table(result)
    if errors:
        blocks.append(errors)
    traffic = traffic_tables(result.traffic)
    if traffic:
        blocks.append(traffic)
    if result.memory_bytes:
        total = result.memory_total_bytes
        n = len(result.memory_bytes)
        blocks.append(
            f"Memory: {total / 2**20:,.1f} MiB for {n} proxies ({total / n / 2**20:,.1f} MiB each on average)"
        )
    if result.control_plane is not None:
        blocks.append(control_plane_table(result))
    if result.operations is not None and result.operations.rollout != "none":
        blocks.append(operations_block(result.operations))
    if result.timeseries is not None:
        blocks.append(timeseries_table(result.timeseries, result))
    if result.faults:
        blocks.append(faults_table(result))
    blocks.append(
        f"Requests over the whole run, warm-up included: {c.sent:,} sent = {c.completed:,} completed + {c.failed:,} failed + "
        f"{c.in_flight:,} in flight at the end"
    )
    if result.error:
        blocks.append(f"ERROR: {result.error}")
    return "\n\n".join(blocks)


def _kinds(cp: ControlPlaneResult) -> str:
    """Pushes by kind, their CPU and bytes, and what the queue merged: `` (12 full, 300
    eds; 1.2 s CPU, 3.4 MiB; 5 merged)``."""
    if not cp.push_counts:
        return ""
    kinds = ", ".join(f"{n:,} {kind}" for kind, n in sorted(cp.push_counts.items()) if n)
    extra = f"; {cp.merged_pushes:,} merged" if cp.merged_pushes else ""
    if cp.aborted_pushes:
        extra += f"; {cp.aborted_pushes:,} aborted"
    return (
        f" ({kinds}; {cp.push_cpu_s + cp.push_context_cpu_s:,.2f} s CPU, "
        f"{cp.push_bytes / 2**20:,.1f} MiB{extra})"
    )


def hop_rows(hops_ms: dict[str, float]) -> list[tuple[str, float]]:
    """The breakdown's rows: each hop kind, a proxy kind's io as its total (``sidecar_io``)
    followed by its components, indented, in MeshInsight's order (ipc, read_write, epoll);
    io the components do not cover shows as ``other``."""
    groups: dict[str, dict[str, float]] = {}
    for kind, ms in hops_ms.items():
        head, sep, part = kind.rpartition("_io_")
        if sep and part in IO_COMPONENTS:
            groups.setdefault(f"{head}_io", {})[part] = ms
    rows: list[tuple[str, float]] = []
    for kind, ms in hops_ms.items():
        head, sep, part = kind.rpartition("_io_")
        if sep and part in IO_COMPONENTS:
            continue  # listed under its total
        if kind not in groups:
            rows.append((kind, ms))
    for io_kind, parts in groups.items():
        rest = hops_ms.get(io_kind, 0.0)
        at = next((i for i, (k, _) in enumerate(rows) if k > io_kind), len(rows))
        group = [(io_kind, rest + sum(parts.values()))]
        group += [(f"  {part}", parts[part]) for part in IO_COMPONENTS if part in parts]
        if rest:
            group.append(("  other", rest))
        rows[at:at] = group
    return rows


def control_plane_table(result: RunResult) -> str:
    """Each change's convergence, and what the control plane did."""
    cp = result.control_plane
    assert cp is not None
    rows = [
        [
            fmt(change.at_s, 2),
            change.kind,
            change.service,
            f"{change.converged:,}/{change.affected:,}",
            fmt(change.p50_s * 1e3, 1),
            fmt(change.p99_s * 1e3, 1),
            fmt(change.max_s * 1e3, 1),
        ]
        for change in cp.changes
    ]
    title = (
        f"Control plane ({cp.kind}): {cp.proxies:,} proxies, {cp.pushes:,} pushes{_kinds(cp)}, "
        f"{cp.signatures:,} certificates signed ({cp.signature_failures:,} failed), "
        f"{cp.memory_bytes / 2**20:,.1f} MiB; stale routing: {cp.stale_connect_failures:,} "
        f"refused connections, {cp.retries:,} retries, {cp.stale_failures:,} failed calls; "
        f"{cp.tls_failures:,} mTLS failures"
    )
    if not rows:
        return title
    return format_table(
        ["at s", "change", "service", "converged", "p50 ms", "p99 ms", "max ms"], rows, title
    )


_ROLLOUTS = {
    "sidecar": "every meshed pod restarts: its sidecar is injected at creation",
    "daemonset": "a DaemonSet rollout: one proxy pod per node, no app pod",
    "ambient": "ztunnels (a DaemonSet) and waypoints restart, no app pod",
    "library": "every meshed app is rebuilt and its pods restart",
}


def operations_block(ops: OperationsResult) -> str:
    """What an operator writes and runs for this mesh: three lines."""
    kinds = ", ".join(f"{n} {kind}" for kind, n in ops.objects_by_kind.items())
    annotations = f" + {ops.annotations:,} annotations" if ops.annotations else ""
    return "\n".join(
        [
            f"Operations: {ops.objects:,} Kubernetes objects{f' ({kinds})' if kinds else ''}"
            f"{annotations}, {ops.yaml_lines:,} lines of YAML",
            f"  control plane: {ops.control_plane_pods:,} pods, "
            f"{fmt(ops.control_plane_cores, 1)} cores, "
            f"{ops.control_plane_memory_bytes / 2**20:,.1f} MiB modelled",
            f"  proxy upgrade: {ops.proxies:,} proxies; {ops.proxy_restarts:,} proxy pods and "
            f"{ops.app_restarts:,} app pods restart, {ops.app_rebuilds:,} images rebuilt "
            f"({_ROLLOUTS[ops.rollout]})",
        ]
    )


def _counts(counts: dict[str, int]) -> str:
    """``503=12 504=3``: counts by name, as a compact cell."""
    return " ".join(f"{name}={n:,}" for name, n in counts.items())


def errors_table(result: RunResult) -> str:
    """The errors answered end to end and by each service, by status code, with the
    response flags end to end and each workload's own misbehaviour (injected errors, hangs);
    empty when nothing failed or hung."""
    items: list[ServiceResult] = [result.end_to_end, *result.services.values()]
    failing = [item for item in items if item.error_codes or item.hangs]
    if not failing:
        return ""
    rows = [
        [
            item.name,
            fmt(sum(item.error_codes.values())),
            _counts(item.error_codes) or "-",
            _counts(_named_flags(result.response_flags)) if item is result.end_to_end else "",
            fmt(item.injected_errors) if item is not result.end_to_end else "",
            fmt(item.hangs) if item is not result.end_to_end else "",
        ]
        for item in failing
    ]
    return _table_or_lists(
        ["", "errors", "by status", "response flags", "injected", "hangs"],
        rows,
        "Errors answered, after the warm-up (injected and hangs: the workload's own misbehaviour)",
    )


def _named_flags(flags: dict[str, int]) -> dict[str, int]:
    """Response flags as the table shows them: Envoy's ``-`` (no flag) as ``none``."""
    return {("none" if flag == "-" else flag): n for flag, n in flags.items()}


def _shows_policy(traffic: TrafficResult) -> bool:
    """Whether the counters say more than requests per destination (which the service
    table shows already): anything but ``upstream_rq_total``, a subset, an ejection or a
    breaker. A run without policies, and without failures, shows none of these."""
    if traffic.subsets or traffic.ejections_active or traffic.breakers:
        return True
    rows = [*traffic.destinations.values(), *traffic.proxies.values()]
    return any(name != "upstream_rq_total" for row in rows for name in row)


def traffic_tables(traffic: TrafficResult | None) -> str:
    """The section "Traffic policy": Envoy's counters per destination host (each subset
    under its host), with a column only for a counter that is not zero somewhere; the
    proxies' own answers (faults, denials, mirrors: counters not attributed to a
    destination); outlier ejections in force at the end; Traefik breakers' state changes.
    Empty when the counters show nothing beyond requests per destination."""
    if traffic is None or not _shows_policy(traffic):
        return ""
    blocks = ["Traffic policy (Envoy's counters, after the warm-up)"]
    named: list[tuple[str, dict[str, int]]] = []
    for host, counters in traffic.destinations.items():
        named.append((host, counters))
        named.extend(
            (f"  {key}", sub)
            for key, sub in traffic.subsets.items()
            if key.split("/", 1)[0] == host
        )
    hosts = set(traffic.destinations)
    named.extend(
        (key, sub) for key, sub in traffic.subsets.items() if key.split("/", 1)[0] not in hosts
    )
    if named:
        blocks.append(_counter_table("destination", named))
    # What a proxy counted beyond its clusters' counters: its local answers.
    attributed: dict[str, int] = {}
    for counters in traffic.destinations.values():
        for name, n in counters.items():
            attributed[name] = attributed.get(name, 0) + n
    totals: dict[str, int] = {}
    for counters in traffic.proxies.values():
        for name, n in counters.items():
            totals[name] = totals.get(name, 0) + n
    local = [name for name, n in totals.items() if n > attributed.get(name, 0)]
    if local:
        rows = [
            (scope, {name: counters[name] for name in local if name in counters})
            for scope, counters in traffic.proxies.items()
        ]
        blocks.append(_counter_table("proxy (its own answers)", [r for r in rows if r[1]]))
    if traffic.ejections_active:
        blocks.append("Outlier ejections active at the end: " + _counts(traffic.ejections_active))
    if traffic.breakers:
        lines = ["Traefik circuit breakers, state changes (s: state):"]
        for key, changes in traffic.breakers.items():
            steps = [f"{t:.3f} {state}" for t, state in changes]
            lines.append(_wrap(f"  {key}: ", steps, sep=", ", indent="      "))
        blocks.append("\n".join(lines))
    # The section's title sits on its first block, as other tables' titles do.
    return "\n".join(blocks[:2]) + "".join("\n\n" + block for block in blocks[2:])


def _counter_table(first: str, named: Sequence[tuple[str, dict[str, int]]]) -> str:
    """One row per name, one column per counter that is not zero in some row (in the
    order the rows first name them)."""
    columns: list[str] = []
    for _, counters in named:
        columns.extend(name for name in counters if name not in columns)
    rows = [[name, *(fmt(counters.get(c, 0)) for c in columns)] for name, counters in named]
    return _table_or_lists([first, *columns], rows)


def _table_or_lists(headers: Sequence[str], rows: Sequence[Sequence[str]], title: str = "") -> str:
    """A table when it fits in :data:`WIDTH` columns; else one ``name=value`` list per row
    (empty cells left out), wrapped."""
    table = format_table(headers, rows, title)
    if max(len(line) for line in table.splitlines()) <= WIDTH:
        return table
    lines = [title] if title else []
    for row in rows:
        cells = [f"{h}={cell}" for h, cell in zip(headers[1:], row[1:], strict=True) if cell]
        lines.append(_wrap(f"{row[0]}: ", cells))
    return "\n".join(lines)


def _wrap(head: str, pieces: Sequence[str], sep: str = "  ", indent: str = "    ") -> str:
    """``head`` then ``pieces`` joined by ``sep``, cut between pieces into lines of at most
    :data:`WIDTH` characters (a piece longer than that stays whole), continuation lines
    indented."""
    lines: list[str] = []
    current = head
    fresh = True  # nothing on the current line yet but its head or indent
    for piece in pieces:
        if fresh:
            current += piece
        elif len(current) + len(sep) + len(piece) > WIDTH:
            lines.append(current)
            current = indent + piece
        else:
            current += sep + piece
        fresh = False
    lines.append(current)
    return "\n".join(lines)


SPARKS = " ▁▂▃▄▅▆▇█"
"""A value from 0 (blank) to the row's largest (full block), in eight steps."""

SPARK_COLUMNS = 60
"""The most columns of a sparkline: more windows are grouped, several to a column."""


def _spark(
    values: Sequence[float], groups: Sequence[range], peak: str = "max"
) -> tuple[str, float]:
    """A row of blocks, one per group of windows (its largest value, NaN left out), scaled
    to the row's largest; and that largest value."""
    cells = []
    for group in groups:
        found = [values[i] for i in group if not math.isnan(values[i])]
        cells.append(max(found) if found else math.nan)
    top = max((c for c in cells if not math.isnan(c)), default=0.0)
    out = []
    for c in cells:
        if math.isnan(c):
            out.append("·")
        elif top <= 0:
            out.append(SPARKS[0])
        else:
            out.append(SPARKS[max(1 if c > 0 else 0, round(c / top * (len(SPARKS) - 1)))])
    return "".join(out), top


def timeseries_table(ts: TimeSeriesResult, result: RunResult | None = None) -> str:
    """The run over time, one sparkline per series: each column is a window (or, beyond
    :data:`SPARK_COLUMNS` windows, the largest value of several), scaled to the row's
    largest value, which the last column gives; ``·`` is a window where nothing ended. A
    marks row shows the warm-up (``w``) and the faults (``F``)."""
    n = len(ts.starts_s)
    per = max(1, math.ceil(n / SPARK_COLUMNS))
    groups = [range(i, min(i + per, n)) for i in range(0, n, per)]
    e2e = ts.end_to_end

    def error_pct(errors: Sequence[int], requests: Sequence[int]) -> list[float]:
        return [e / r * 100 if r else math.nan for e, r in zip(errors, requests, strict=True)]

    rows: list[tuple[str, Sequence[float], str, int]] = [
        ("end-to-end rps", e2e.throughput_rps, "rps", 1),
        ("end-to-end errors %", error_pct(e2e.errors, e2e.requests), "%", 1),
        ("end-to-end p99 ms", e2e.p99_ms, "ms", 2),
        ("in flight (mean)", e2e.in_flight_mean, "", 1),
    ]
    for flag, counts in e2e.errors_by.items():
        name = "none" if flag == "-" else flag
        rows.append((f"  errors {name}", [float(c) for c in counts], "", 0))
    for name, series in ts.services.items():
        if any(series.errors):
            rows.append((f"{name} errors %", error_pct(series.errors, series.requests), "%", 1))
        rows.append((f"{name} p99 ms", series.p99_ms, "ms", 2))
    marks = []
    spans = [(f.start_s, f.end_s) for f in (result.faults or [])] if result else []
    for group in groups:
        lo = ts.starts_s[group.start]
        hi = ts.starts_s[group[-1]] + ts.window_s
        if any(start < hi and lo < end for start, end in spans):
            marks.append("F")
        elif group.start < ts.warmup_windows:
            marks.append("w")
        else:
            marks.append(" ")
    label = max(len(r[0]) for r in rows)
    lines = [
        f"Over time: {n} windows of {ts.window_s:g} s from 0 s"
        + (f", {per} per column" if per > 1 else "")
        + " (a request counts when it ends; each row scaled to its largest value, at its end)"
    ]
    lines.append(f"{'':<{label}}  {''.join(marks).rstrip()}")
    for name, values, unit, digits in rows:
        spark, top = _spark(values, groups)
        lines.append(f"{name:<{label}}  {spark}  {fmt(top, digits)}{(' ' + unit) if unit else ''}")
    return "\n".join(line.rstrip() for line in lines).rstrip()


def faults_table(result: RunResult) -> str:
    """Per fault: when, what it hurt, how long until errors and until recovery, and the
    requests it lost (every figure to a window's resolution)."""
    faults = result.faults or []
    window = result.timeseries.window_s if result.timeseries is not None else math.nan
    rows = []
    for f in faults:
        hurt = ", ".join(
            f"{name} {h.error_rate * 100:.0f}%" + ("" if h.seen_by == "pods" else " (proxy)")
            for name, h in f.services_hurt.items()
        )
        if f.recovered_at_s is None:
            recover = "-" if f.baseline == "none" else "not by end"
        elif not f.disturbed:
            recover = "undisturbed"
        elif f.recovered_during_fault:
            recover = f"in it, at {f.recovered_at_s:g}"
        else:
            recover = fmt(f.time_to_recover_s, 2)
        rows.append(
            [
                f"{f.index} {f.kind}",
                f"{f.start_s:g}-{f.end_s:g}",
                fmt(f.error_rate * 100, 1),
                fmt(f.baseline_error_rate * 100, 1),
                fmt(f.time_to_errors_s, 2),
                recover,
                (
                    f"{f.requests_lost:,} ({f.share_lost * 100:.1f}%)"
                    if not math.isnan(f.share_lost)
                    else fmt(f.requests_lost)
                )
                + (f" +{f.requests_stuck:,} in flight" if f.requests_stuck else ""),
                f"{f.saved_by_retries:,}/{f.failed_after_retries:,}",
                hurt or "-",
            ]
        )
    notes = [f"  fault {f.index}: {note}" for f in faults for note in f.notes]
    retries = next((f.retries for f in faults if f.retries), {})
    extra = []
    if retries:
        extra.append("Retries over the whole run (upstream_rq_retry): " + _counts(retries))
    if any(f.retries_made for f in faults):
        extra.append(
            "retried saved/failed: calls retried during the fault that then succeeded (the "
            "retries hid it) / that failed anyway (every hop of the call graph)"
        )
    table = _table_or_lists(
        [
            "fault",
            "from-to s",
            "err %",
            "base %",
            "errors in s",
            "recovery s",
            "lost",
            "retried saved/failed",
            "hurt",
        ],
        rows,
        f"Faults (to one window, {window:g} s; recovery: from its end to 2 windows in the band)",
    )
    return "\n".join([table, *notes, *extra])
