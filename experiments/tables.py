"""Plain-text tables for the terminal (no colours, stable widths, easy to diff)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from experiments.results import RunResult

__all__ = ["format_table", "run_tables", "fmt"]


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
