"""The HTML report of ``meshsim compare``: one self-contained file, readable offline.

The page holds a summary table and four plotly figures (latency CDF, per-hop breakdown, CPU
by component kind, mesh memory). plotly.js is embedded inline exactly once (with the first
figure), so the file opens without network access; the other figures reuse it.
"""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from experiments.comparison import BASELINE
from experiments.overrides import value_label
from experiments.sweep import sweep_table
from experiments.tables import fmt

if TYPE_CHECKING:
    from experiments.comparison import Comparison
    from experiments.results import RunResult
    from experiments.sweep import SweepPoint

__all__ = [
    "write_report",
    "render_report",
    "cdf_points",
    "QUANTILE_GRID",
    "write_run_report",
    "render_run_report",
    "timeseries_figure",
]

#: The quantiles at which each end-to-end histogram is sampled for the CDF.
QUANTILE_GRID = np.linspace(0.001, 0.999, 200)

# One colour per hop kind / component kind, the same in every figure and every report.
# Kinds of the same component share a hue family (dark = CPU, mid = queue, light = I/O).
KIND_COLOURS: dict[str, str] = {
    "app_cpu": "#1f77b4",
    "app_queue": "#6baed6",
    "network": "#7f7f7f",
    "tcp_handshake": "#bcbd22",
    "tls_handshake": "#dbdb8d",
    "sidecar_cpu": "#d62728",
    "sidecar_queue": "#ff7f7f",
    "sidecar_io": "#f7b6b6",
    "ztunnel_cpu": "#2ca02c",
    "ztunnel_queue": "#74c476",
    "ztunnel_io": "#c7e9c0",
    "waypoint_cpu": "#9467bd",
    "waypoint_queue": "#b59ad6",
    "waypoint_io": "#dcd0ee",
    "node_proxy_cpu": "#ff7f0e",
    "node_proxy_queue": "#ffb26e",
    "node_proxy_io": "#ffdcb8",
    # CPU by component kind
    "app": "#1f77b4",
    "sidecar": "#d62728",
    "ztunnel": "#2ca02c",
    "waypoint": "#9467bd",
    "node_proxy": "#ff7f0e",
    "loadgen": "#8c564b",
}
FALLBACK_COLOURS = (
    "#17becf",
    "#e377c2",
    "#8c564b",
    "#aec7e8",
    "#98df8a",
    "#c49c94",
    "#f7b6d2",
    "#9edae5",
    "#393b79",
    "#637939",
)
PROFILE_COLOURS = ("#444444", "#d62728", "#2ca02c", "#1f77b4", "#ff7f0e", "#9467bd", "#8c564b")

FIGURE_HEIGHT = 460
CONFIG = {"displaylogo": False, "responsive": True}

CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 0;
       color: #222; background: #fafafa; }
main { max-width: 1200px; margin: 0 auto; padding: 24px 32px 48px; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
p.lead { color: #444; line-height: 1.5; }
p.note { color: #666; font-size: 0.9em; }
table { border-collapse: collapse; font-size: 0.92em; background: #fff; }
th, td { padding: 5px 10px; border-bottom: 1px solid #e4e4e4; }
th { background: #f0f0f0; text-align: right; }
th:first-child, td:first-child { text-align: left; }
td { text-align: right; font-variant-numeric: tabular-nums; }
tr.baseline td { color: #555; font-style: italic; }
.figure { background: #fff; border: 1px solid #e4e4e4; margin: 12px 0; padding: 4px; }
.failures { background: #fff3f3; border: 1px solid #e6b3b3; padding: 8px 16px; }
.failures li { font-family: monospace; white-space: pre-wrap; }
code { background: #eee; padding: 1px 4px; border-radius: 3px; }
"""


def _colour_map(kinds: list[str]) -> dict[str, str]:
    """A colour per kind: the fixed one if known, else the next fallback (sorted order)."""
    colours = {}
    unknown = sorted(k for k in kinds if k not in KIND_COLOURS)
    for k in kinds:
        colours[k] = (
            KIND_COLOURS.get(k) or FALLBACK_COLOURS[unknown.index(k) % len(FALLBACK_COLOURS)]
        )
    return colours


def _profile_colour(index: int) -> str:
    return PROFILE_COLOURS[index % len(PROFILE_COLOURS)]


def _kinds_in_order(maps: list[dict[str, float]]) -> list[str]:
    """The keys of ``maps`` not zero everywhere: known kinds in KIND_COLOURS order first."""
    seen = {k for m in maps for k, v in m.items() if v}
    known = [k for k in KIND_COLOURS if k in seen]
    return known + sorted(seen - set(known))


def cdf_points(
    result: RunResult, grid: np.ndarray = QUANTILE_GRID
) -> tuple[list[float], list[float]]:
    """The end-to-end latency CDF: (latency ms, quantile) on ``grid``; empty if no requests.

    Points at 0 ms are dropped (they cannot be drawn on a log axis).
    """
    histogram = result.histogram()
    if histogram.count == 0:
        return [], []
    values = histogram.quantiles(grid.tolist())
    xs, ys = [], []
    for q, v in zip(grid.tolist(), values, strict=True):
        ms = v * 1e3
        if ms > 0 and math.isfinite(ms):
            xs.append(ms)
            ys.append(q)
    return xs, ys


# -- figures -------------------------------------------------------------------------------


def _layout(fig: go.Figure, title: str, **kwargs: Any) -> go.Figure:
    settings: dict[str, Any] = {
        "title": {"text": title, "x": 0.01},
        "template": "plotly_white",
        "height": FIGURE_HEIGHT,
        "margin": {"l": 70, "r": 30, "t": 60, "b": 60},
        "legend": {"orientation": "v"},
    }
    fig.update_layout(**{**settings, **kwargs})
    return fig


def latency_figure(comparison: Comparison) -> go.Figure:
    """Figure 1: the end-to-end latency CDF per profile (log x)."""
    fig = go.Figure()
    for i, (name, result) in enumerate(comparison.results.items()):
        xs, ys = cdf_points(result)
        if not xs:
            continue
        fig.add_trace(
            go.Scatter(
                x=xs,
                y=ys,
                mode="lines",
                name=name,
                line={"color": _profile_colour(i), "width": 2.2},
                hovertemplate=f"{html.escape(name)}<br>p%{{y:.3f}}: %{{x:.3f}} ms<extra></extra>",
            )
        )
    for q in (0.5, 0.9, 0.99):
        fig.add_hline(y=q, line={"color": "#bbb", "dash": "dot", "width": 1})
    lows = [t.x[0] for t in fig.data]
    highs = [t.x[-1] for t in fig.data]
    ticks = _log_ticks(min(lows), max(highs)) if lows else None
    fig.update_xaxes(
        type="log",
        title_text="end-to-end latency (ms, log scale)",
        tickvals=ticks,
        ticktext=[f"{t:g}" for t in ticks] if ticks else None,
        minor={"showgrid": True, "gridcolor": "#f3f3f3"},
    )
    fig.update_yaxes(title_text="quantile", range=[0, 1.01])
    return _layout(fig, "1. End-to-end latency distribution (CDF)", hovermode="closest")


def _log_ticks(low: float, high: float) -> list[float]:
    """1-2-5 tick values covering [low, high] (both > 0)."""
    ticks = []
    for exponent in range(math.floor(math.log10(low)) - 1, math.ceil(math.log10(high)) + 1):
        for mantissa in (1, 2, 5):
            value = round(mantissa * 10.0**exponent, 12)
            if low / 1.5 <= value <= high * 1.5:
                ticks.append(value)
    return ticks


def hops_figure(comparison: Comparison) -> go.Figure:
    """Figure 2: mean ms per request by hop kind, one stacked bar per profile."""
    profiles = list(comparison.results)
    kinds = _kinds_in_order([r.hops_ms for r in comparison.results.values()])
    colours = _colour_map(kinds)
    fig = go.Figure()
    for kind in kinds:
        values = [comparison.results[p].hops_ms.get(kind, 0.0) for p in profiles]
        fig.add_trace(
            go.Bar(
                y=profiles,
                x=values,
                name=kind,
                orientation="h",
                marker={"color": colours[kind]},
                hovertemplate=f"%{{y}}<br>{kind}: %{{x:.3f}} ms<extra></extra>",
            )
        )
    fig.update_xaxes(title_text="mean ms per end-to-end request")
    fig.update_yaxes(autorange="reversed")
    return _layout(
        fig,
        "2. Where the time goes: mean time per request by hop kind",
        barmode="stack",
        legend={"traceorder": "normal"},
        height=max(FIGURE_HEIGHT - 100, 140 + 60 * len(profiles)),
    )


def cpu_figure(comparison: Comparison) -> go.Figure:
    """Figure 3: CPU by component kind (millicores), stacked per profile."""
    profiles = list(comparison.results)
    kinds = _kinds_in_order([r.cpu.by_kind for r in comparison.results.values()])
    colours = _colour_map(kinds)
    fig = go.Figure()
    for kind in kinds:
        values = [comparison.results[p].cpu.by_kind.get(kind, 0.0) * 1e3 for p in profiles]
        fig.add_trace(
            go.Bar(
                x=profiles,
                y=values,
                name=kind,
                marker={"color": colours[kind]},
                hovertemplate=f"%{{x}}<br>{kind}: %{{y:.1f}} mCPU<extra></extra>",
            )
        )
    totals = [sum(comparison.results[p].cpu.by_kind.values()) * 1e3 for p in profiles]
    fig.add_trace(
        go.Scatter(
            x=profiles,
            y=totals,
            mode="text",
            text=[f"{t:,.0f}" for t in totals],
            textposition="top center",
            showlegend=False,
            hoverinfo="skip",
        )
    )
    fig.update_yaxes(title_text="millicores (mean busy)", rangemode="tozero")
    if totals:
        fig.update_yaxes(range=[0, max(max(totals), 1e-9) * 1.15])
    return _layout(
        fig, "3. CPU by component kind", barmode="stack", legend={"traceorder": "reversed"}
    )


def memory_figure(comparison: Comparison) -> go.Figure:
    """Figure 4: modelled mesh memory, total per profile (left) and per proxy (right)."""
    profiles = list(comparison.results)
    fig = make_subplots(
        rows=1,
        cols=2,
        column_widths=[0.45, 0.55],
        subplot_titles=("total per profile (MiB)", "each proxy (MiB; hover for its name)"),
        horizontal_spacing=0.1,
    )
    totals, hovers = [], []
    for p in profiles:
        memory = comparison.results[p].memory_bytes
        totals.append(sum(memory.values()) / 2**20)
        lines = [f"{k}: {v / 2**20:.1f} MiB" for k, v in sorted(memory.items())]
        if len(lines) > 15:
            lines = [*lines[:15], f"... and {len(lines) - 15} more"]
        hovers.append(f"<b>{p}</b>: {len(memory)} proxies<br>" + "<br>".join(lines))
    fig.add_trace(
        go.Bar(
            x=profiles,
            y=totals,
            name="total MiB",
            marker={"color": [_profile_colour(i) for i in range(len(profiles))]},
            text=[f"{t:,.1f}" for t in totals],
            textposition="outside",
            hovertext=hovers,
            hoverinfo="text",
            showlegend=False,
        ),
        row=1,
        col=1,
    )
    for i, p in enumerate(profiles):
        memory = comparison.results[p].memory_bytes
        names = sorted(memory)
        fig.add_trace(
            go.Box(
                x=[p] * len(names),
                y=[memory[n] / 2**20 for n in names],
                name=p,
                text=names,
                boxpoints="all",
                jitter=0.4,
                pointpos=0,
                marker={"color": _profile_colour(i), "size": 6},
                line={"color": _profile_colour(i)},
                hovertemplate="%{text}: %{y:.1f} MiB<extra></extra>",
                showlegend=False,
            ),
            row=1,
            col=2,
        )
    fig.update_xaxes(categoryorder="array", categoryarray=profiles)
    fig.update_yaxes(title_text="MiB", rangemode="tozero", row=1, col=1)
    if totals:
        fig.update_yaxes(range=[0, max(max(totals), 1.0) * 1.15], row=1, col=1)
    fig.update_yaxes(title_text="MiB per proxy", rangemode="tozero", row=1, col=2)
    return _layout(fig, "4. Modelled mesh memory")


# -- the page ------------------------------------------------------------------------------


def _describe(comparison: Comparison) -> str:
    first = next(iter(comparison.results.values()), None)
    names = list(comparison.results) + [
        p for p in comparison.failures if p not in comparison.results
    ]
    profiles = ", ".join(f"<code>{html.escape(p)}</code>" for p in names)
    if first is None:
        return f"<p class='lead'>Compared profiles {profiles}; every run failed.</p>"
    spec = first.spec
    topology = spec.get("topology") or {}
    topo = topology.get("catalog") or topology.get("file") or "inline"
    params = topology.get("params") or {}
    if params:
        topo += " (" + ", ".join(f"{k}={v}" for k, v in sorted(params.items()) if k != "cluster")
        topo += ")"
    workload = spec.get("workload") or {}
    work = ", ".join(f"{k}={v}" for k, v in workload.items() if v is not None)
    return (
        f"<p class='lead'>Topology <b>{html.escape(str(spec.get('name', '')))}</b> "
        f"(catalog <code>{html.escape(topo)}</code>) under the mesh profiles {profiles}. "
        f"Workload: <code>{html.escape(work)}</code>; {fmt(spec.get('duration'), 1)} s "
        f"simulated per run, of which the first {fmt(spec.get('warmup'), 1)} s are warm-up "
        f"({fmt(first.measured_s, 1)} s measured), {spec.get('replications', 1)} replication(s), "
        f"seed {html.escape(str(spec.get('seed')))}.</p>"
        "<p class='lead'>Every architecture saw <b>the same arrivals and the same service "
        "times</b> (common random numbers: same seed, same streams), so the differences "
        "between rows are the mesh's, not the dice's. <code>none</code> (no mesh) is the "
        "baseline for the added latency.</p>"
    )


def _summary_table(comparison: Comparison) -> str:
    headers = [
        "profile",
        "requests",
        "rps",
        "err %",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "+p50 ms",
        "+p90 ms",
        "+p99 ms",
        "CPU mCPU",
        "mesh MiB",
        "proxies",
    ]
    rows = []
    for name, r in comparison.results.items():
        lat = r.end_to_end.latency
        cells = [
            html.escape(name),
            fmt(r.end_to_end.requests),
            fmt(r.end_to_end.throughput_rps, 1),
            fmt(r.end_to_end.error_rate * 100, 2),
            fmt(lat.p50_ms, 3),
            fmt(lat.p90_ms, 3),
            fmt(lat.p99_ms, 3),
            _signed(comparison.added_ms(name, "p50_ms")),
            _signed(comparison.added_ms(name, "p90_ms")),
            _signed(comparison.added_ms(name, "p99_ms")),
            fmt(sum(r.cpu.by_kind.values()) * 1e3, 0),
            fmt(r.memory_total_bytes / 2**20, 1),
            fmt(len(r.memory_bytes)),
        ]
        css = " class='baseline'" if name == BASELINE else ""
        rows.append(f"<tr{css}>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    head = "<tr>" + "".join(f"<th>{h}</th>" for h in headers) + "</tr>"
    return f"<table><thead>{head}</thead><tbody>{''.join(rows)}</tbody></table>"


def _signed(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "-"
    return f"{value:+,.3f}"


def _failures(comparison: Comparison) -> str:
    if not comparison.failures:
        return ""
    items = "".join(
        f"<li><b>{html.escape(name)}</b>: {html.escape(message)}</li>"
        for name, message in comparison.failures.items()
    )
    return f"<h2>Failures</h2><div class='failures'><ul>{items}</ul></div>"


def render_report(comparison: Comparison) -> str:
    """The report as one HTML string (plotly.js inline once; no network needed)."""
    first = next(iter(comparison.results.values()), None)
    title = "meshsim compare"
    if first is not None:
        title += f": {first.spec.get('name', '')}"
    sections = []
    if comparison.results:
        figures = [
            (
                latency_figure(comparison),
                "Lines further right are slower; the dotted lines mark p50, p90 and p99.",
            ),
            (
                hops_figure(comparison),
                "Mean time per end-to-end request in each kind of hop, "
                "summed over the hops of the request path.",
            ),
            (
                cpu_figure(comparison),
                "Mean busy cores over the measured time, by component "
                "kind (1000 mCPU = one core); the number above each bar is the total.",
            ),
            (
                memory_figure(comparison),
                "Modelled memory of the mesh's proxies (the baseline has none).",
            ),
        ]
        for i, (fig, note) in enumerate(figures):
            div = fig.to_html(
                full_html=False,
                include_plotlyjs=(i == 0),  # inline plotly.js once, never from a CDN
                config=CONFIG,
                default_width="100%",
            )
            sections.append(f"<div class='figure'>{div}</div><p class='note'>{note}</p>")
    else:
        sections.append("<p>No run succeeded, so there is nothing to plot.</p>")
    return (
        "<!DOCTYPE html>\n<html lang='en'>\n<head>\n<meta charset='utf-8'>\n"
        f"<title>{html.escape(title)}</title>\n"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>\n"
        f"<style>{CSS}</style>\n</head>\n<body>\n<main>\n"
        f"<h1>{html.escape(title)}</h1>\n"
        f"{_describe(comparison)}\n"
        "<h2>Summary</h2>\n"
        f"{_summary_table(comparison)}\n"
        "<p class='note'>+ = latency added over <code>none</code> (no mesh) at the same "
        "quantile; CPU is the total over every component kind; mesh memory is the sum over "
        "the modelled proxies.</p>\n"
        f"{_failures(comparison)}\n"
        "<h2>Figures</h2>\n" + "\n".join(sections) + "\n</main>\n</body>\n</html>\n"
    )


def write_report(comparison: Comparison, path: Path) -> Path:
    """Write the comparison's HTML report to ``path`` (parents created) and return it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_report(comparison), encoding="utf-8")
    return path


# --- the report of one run over time (``meshsim run --out``) -----------------------------------


def timeseries_figure(result: RunResult) -> go.Figure:
    """End-to-end throughput, error rate and p50/p99 per window, the warm-up and each fault's
    time shaded (the run's ``timeseries``)."""
    series = result.timeseries
    assert series is not None, "a run over time needs the spec's timeseries"
    e2e = series.end_to_end
    mids = [s + series.window_s / 2 for s in series.starts_s]
    fig = make_subplots(
        rows=3,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.06,
        subplot_titles=("throughput (rps)", "errors (%)", "latency (ms)"),
    )
    fig.add_trace(go.Scatter(x=mids, y=e2e.throughput_rps, name="rps", mode="lines"), 1, 1)
    errors = [(e / r * 100.0) if r else None for e, r in zip(e2e.errors, e2e.requests, strict=True)]
    fig.add_trace(go.Scatter(x=mids, y=errors, name="errors %", mode="lines"), 2, 1)
    for name, values in (("p50", e2e.p50_ms), ("p99", e2e.p99_ms)):
        clean = [None if v is None or math.isnan(v) else v for v in values]
        fig.add_trace(go.Scatter(x=mids, y=clean, name=f"{name} ms", mode="lines"), 3, 1)
    warmup = (
        series.starts_s[series.warmup_windows]
        if series.warmup_windows < len(series.starts_s)
        else None
    )
    if series.warmup_windows and warmup is not None:
        fig.add_vrect(x0=0, x1=warmup, fillcolor="#999999", opacity=0.15, line_width=0)
    for fault in result.faults or []:
        fig.add_vrect(
            x0=fault.start_s,
            x1=fault.end_s,
            fillcolor="#d62728",
            opacity=0.12,
            line_width=0,
            annotation_text=f"{fault.index} {fault.kind}",
            annotation_position="top left",
        )
    fig.update_xaxes(title_text="simulated time (s)", row=3, col=1)
    return _layout(fig, f"{result.name}: end to end, per {series.window_s:g} s window", height=720)


def render_run_report(result: RunResult) -> str:
    """One run's report over time, self-contained (plotly.js inline)."""
    title = f"meshsim run: {result.name}"
    if result.timeseries is None:
        body = "<p>This run has no <code>timeseries</code>: nothing to plot over time.</p>"
    else:
        div = timeseries_figure(result).to_html(
            full_html=False, include_plotlyjs=True, config=CONFIG, default_width="100%"
        )
        body = (
            f"<div class='figure'>{div}</div><p class='note'>Grey: the warm-up. Red: each "
            "fault, from its start to its end (a crash: to its restart). A request counts in "
            "the window it ends in.</p>"
        )
    return (
        "<!DOCTYPE html>\n<html lang='en'>\n<head>\n<meta charset='utf-8'>\n"
        f"<title>{html.escape(title)}</title>\n"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>\n"
        f"<style>{CSS}</style>\n</head>\n<body>\n<main>\n"
        f"<h1>{html.escape(title)}</h1>\n{body}\n</main>\n</body>\n</html>\n"
    )


def write_run_report(result: RunResult, path: Path) -> Path:
    """Write one run's report over time to ``path`` and return it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_run_report(result), encoding="utf-8")
    return path


# --- the report of a sweep (``meshsim report DIR``) --------------------------------------------


def sweep_figure(points: list[SweepPoint]) -> go.Figure:
    """End-to-end p50, p90 and p99 latency and throughput at every finished point, in grid
    order (the x axis names each point by its values)."""
    done = [p for p in points if p.result is not None]
    labels = [
        ", ".join(f"{k.split('.')[-1]}={value_label(v)}" for k, v in p.assignments.items())
        for p in done
    ]
    fig = make_subplots(
        rows=2,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.08,
        subplot_titles=("latency (ms)", "throughput (rps)"),
    )
    for quantile in ("p50", "p90", "p99"):
        values = [getattr(p.result.end_to_end.latency, f"{quantile}_ms") for p in done]  # type: ignore[union-attr]
        clean = [None if v is None or math.isnan(v) else v for v in values]
        fig.add_trace(go.Scatter(x=labels, y=clean, name=quantile, mode="lines+markers"), 1, 1)
    rps = [p.result.end_to_end.throughput_rps for p in done]  # type: ignore[union-attr]
    fig.add_trace(go.Scatter(x=labels, y=rps, name="rps", mode="lines+markers"), 2, 1)
    return _layout(fig, "end to end, per sweep point", height=640)


def render_sweep_report(points: list[SweepPoint], title: str) -> str:
    """A sweep's report: its table and a figure over its points, self-contained."""
    table = html.escape(sweep_table(points))
    if any(p.result is not None for p in points):
        div = sweep_figure(points).to_html(
            full_html=False, include_plotlyjs=True, config=CONFIG, default_width="100%"
        )
        body = f"<div class='figure'>{div}</div>"
    else:
        body = "<p>No point has finished: nothing to plot.</p>"
    return (
        "<!DOCTYPE html>\n<html lang='en'>\n<head>\n<meta charset='utf-8'>\n"
        f"<title>{html.escape(title)}</title>\n"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>\n"
        f"<style>{CSS}</style>\n</head>\n<body>\n<main>\n"
        f"<h1>{html.escape(title)}</h1>\n<pre>{table}</pre>\n{body}\n</main>\n</body>\n</html>\n"
    )


def write_sweep_report(points: list[SweepPoint], path: Path, title: str) -> Path:
    """Write a sweep's report to ``path`` and return it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_sweep_report(points, title), encoding="utf-8")
    return path
