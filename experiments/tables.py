"""Plain-text tables for the terminal (no colours, stable widths, easy to diff)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from experiments.results import RunResult, ServiceResult, TrafficResult

__all__ = ["format_table", "run_tables", "fmt", "traffic_tables", "errors_table"]

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
    """The tables of one run: end to end and per service, the hop breakdown, CPU."""
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
    for item in [result.end_to_end, *result.services.values()]:
        lat = item.latency
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
    blocks.append(
        format_table(
            ["hop", "ms per request"],
            [[k, fmt(v, 3)] for k, v in result.hops_ms.items()],
            "Where the time goes (mean per end-to-end request)",
        )
    )
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
    blocks.append(
        f"Requests over the whole run, warm-up included: {c.sent:,} sent = {c.completed:,} completed + {c.failed:,} failed + "
        f"{c.in_flight:,} in flight at the end"
    )
    if result.error:
        blocks.append(f"ERROR: {result.error}")
    return "\n\n".join(blocks)


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
        f"Control plane ({cp.kind}): {cp.proxies:,} proxies, {cp.pushes:,} pushes, "
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
