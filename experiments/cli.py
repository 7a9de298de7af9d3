"""The ``meshsim`` command line: thin typer wrappers over the plain functions of experiments/."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Annotated, Any, NoReturn, Optional

import typer

from experiments.budget import (
    DEFAULT_EVENTS,
    DEFAULT_MEMORY_BYTES,
    EVENTS_PER_CPU_SECOND,
    Budget,
    ExperimentEstimate,
    check_budget,
    estimate_experiment,
    format_bytes,
    parse_events,
    parse_memory,
    total,
)
from experiments.calibration import calibrate as run_calibration
from experiments.calibration import format_calibration
from experiments.compare import compare
from experiments.exports import run_with_exports, write_exports
from experiments.profiles import list_profiles, load_profile
from experiments.progress import RunProgress, SweepProgress
from experiments.results import finite_or_none
from experiments.runner import RunInterrupted, run_experiment
from experiments.spec import MAX_SEED, ExperimentSpec, SpecError, load_spec
from experiments.specs import shipped_specs
from experiments.store import run_sweep
from experiments.sweep import sweep_table
from experiments.tables import run_tables
from sim.units import parse_duration, parse_rate
from topologies import CATALOG

app = typer.Typer(
    help="meshsim: what a service mesh costs and how it behaves, before you touch a cluster.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

QuietOption = Annotated[
    bool,
    typer.Option("--quiet", "-q", help="No progress on stderr (warnings still)."),
]

SetOption = Annotated[
    Optional[list[str]],  # noqa: UP045 (typer needs Optional on Python 3.10)
    typer.Option("--set", help="Override a field by dotted path: --set workload.rate_rps=500"),
]


def _fail(message: str, code: int = 2) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _json(data: Any) -> str:
    """Strict JSON: a figure that was not measured (NaN) is ``null``, never a bare ``NaN``."""
    return json.dumps(finite_or_none(data), indent=1, allow_nan=False)


def _duration(option: str, text: str) -> float:
    """A duration option (``20``, ``"20s"``, ``"1m30s"``), in seconds, or exit 2 naming it."""
    try:
        return parse_duration(text)
    except ValueError as error:
        _fail(f"{option}: {error}")


def _seed(option: str, value: int) -> int:
    if not 0 <= value <= MAX_SEED:
        _fail(f"{option} must be an integer from 0 to 2**63 - 1, got {value}")
    return value


def _check_out_dir(option: str, path: Path) -> None:
    """Make sure ``path`` is, or can be made, a directory we can write in; else exit 2.

    Checked before any run, so that a bad ``--out`` costs nothing and loses no results.
    """
    if path.exists() and not path.is_dir():
        _fail(f"{option} {path}: is a file, not a directory")
    existing = next((p for p in [path, *path.parents] if p.exists()), Path("."))
    if not existing.is_dir():
        _fail(f"{option} {path}: {existing} is a file, so no directory can be made under it")
    try:
        path.mkdir(parents=True, exist_ok=True)
        # Permissions alone do not tell (root ignores them; a read-only mount does not):
        # write a file and remove it.
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as error:
        _fail(f"{option} {path}: cannot write there ({error.strerror or error})")


def _load(path: Path, sets: list[str] | None) -> ExperimentSpec:
    try:
        return load_spec(path, overrides=sets or [])
    except SpecError as error:
        _fail(str(error))


@app.command()
def run(
    spec: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Argument(help="The experiment spec (YAML); or --from a result."),
    ] = None,
    from_result: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option(
            "--from",
            metavar="RESULT",
            help="Re-run the experiment a result.json holds (its effective spec: the same "
            "numbers, whatever became of the profile or topology it named).",
        ),
    ] = None,
    set_: SetOption = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    budget_events: BudgetEventsOption = None,
    budget_memory: BudgetMemoryOption = None,
    quiet: QuietOption = False,
    out: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option(
            help="Also write result.json and what an operator would see (metrics.prom, "
            "traces.json, fortio.json) into this directory."
        ),
    ] = None,
    scrape_every: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(
            "--scrape-every",
            metavar="WINDOW",
            help="With --out: one Prometheus scrape per window of simulated time (10s), "
            "timestamped, instead of one at the end.",
        ),
    ] = None,
) -> None:
    """Run one experiment (or every point of its sweep) and print the result."""
    if (spec is None) == (from_result is None):
        _fail("give a spec file or --from RESULT (one of them)")
    if from_result is not None:
        experiment = _from_result(from_result, set_)
        spec = from_result
    else:
        assert spec is not None
        experiment = _load(spec, set_)
    estimate = _within_budget(experiment, budget_events, budget_memory, "meshsim run")
    scrape_every_s = None
    if scrape_every is not None:
        if out is None:
            _fail("--scrape-every needs --out (it shapes metrics.prom)")
        scrape_every_s = _duration("--scrape-every", scrape_every)
        if scrape_every_s <= 0:
            _fail(f"--scrape-every must be > 0, got {scrape_every}")
    if out is not None:
        if experiment.sweep is not None:
            _fail("--out writes the files of one run; this spec has a sweep")
        _check_out_dir("--out", out)
    if experiment.sweep is not None:
        _print_sweep(run_sweep(experiment), json_out)
        return
    progress = RunProgress(
        experiment.duration,
        experiment.most_replications,
        estimate.events / EVENTS_PER_CPU_SECOND,
        quiet=quiet,
    )
    try:
        with progress:
            if out is not None:
                exported = run_with_exports(experiment, scrape_every_s, progress)
                result = exported.result
            else:
                result = run_experiment(experiment, progress)
    except RunInterrupted as error:
        typer.echo(f"interrupted: {error}", err=True)
        raise typer.Exit(130) from None
    except ValueError as error:  # a spec the validation let through but the model refused
        _fail(f"{spec}: the run stopped: {error}", code=1)
    if json_out:
        typer.echo(_json(result.model_dump(mode="json")))
    else:
        typer.echo(run_tables(result))
    if out is not None:
        # With --json, stdout is the result alone: what was written goes to stderr.
        for line in write_exports(exported, out):
            typer.echo(line, err=json_out)
    for warning in result.warnings:
        typer.echo(f"warning: {warning}", err=True)
    if result.interrupted:
        raise typer.Exit(130)


def _from_result(path: Path, sets: list[str] | None) -> ExperimentSpec:
    """The effective spec a result file holds (``meshsim run --from``), or exit 2."""
    from experiments.spec import spec_from_dict

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        _fail(f"--from {path}: no such file")
    except (OSError, UnicodeDecodeError, ValueError) as error:
        _fail(f"--from {path}: not a result file (JSON): {error}")
    if not isinstance(data, dict) or not isinstance(data.get("spec"), dict):
        _fail(f"--from {path}: not a result file (no 'spec'); meshsim run --out writes one")
    effective = data.get("effective_spec") or data["spec"]
    if not data.get("effective_spec"):
        typer.echo(
            f"warning: {path} predates effective specs: re-running its spec as written "
            "(a changed profile or topology changes the numbers)",
            err=True,
        )
    try:
        return spec_from_dict(effective, overrides=sets or [])
    except SpecError as error:
        _fail(f"--from {path}:\n{error}")


@app.command()
def sweep(
    spec: Annotated[Path, typer.Argument(help="An experiment spec with a sweep (YAML).")],
    set_: SetOption = None,
    workers: Annotated[
        int, typer.Option(help="Processes running points at once (process, local dask).")
    ] = 1,
    backend: Annotated[
        str, typer.Option(help="Where points run: serial, process or dask.")
    ] = "serial",
    scheduler: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(
            help="With --backend dask: the scheduler's address (tcp://host:8786); "
            "default: a local cluster of --workers processes."
        ),
    ] = None,
    store: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option(
            help="Keep every finished point here; a rerun computes only the missing "
            "ones (meshsim report DIR rebuilds the tables)."
        ),
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the points as JSON.")] = False,
    frame: FrameOption = None,
    frame_format: FormatOption = None,
    budget_events: BudgetEventsOption = None,
    budget_memory: BudgetMemoryOption = None,
    quiet: QuietOption = False,
) -> None:
    """Run a sweep's points serially, in processes or on Dask, keeping them in a store."""
    from experiments.store import BACKENDS, SweepStore, run_sweep_points

    _check_frame(frame, frame_format)
    if backend not in BACKENDS:
        _fail(f"--backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if workers < 1:
        _fail(f"--workers must be >= 1, got {workers}")
    if scheduler is not None and backend != "dask":
        _fail("--scheduler is for --backend dask")
    experiment = _load(spec, set_)
    if experiment.sweep is None:
        _fail(f"{spec}: has no sweep (meshsim run runs a single experiment)")
    estimate = _within_budget(experiment, budget_events, budget_memory, "meshsim sweep")
    parallel = workers if backend != "serial" and scheduler is None else 1
    largest = max(run.memory_bytes for run in estimate.runs)
    limit = DEFAULT_MEMORY_BYTES if budget_memory is None else budget_memory
    if largest * parallel > limit:
        _fail(
            f"{parallel} points at once may take {format_bytes(largest * parallel)} "
            f"(the largest point {format_bytes(largest)}), over the memory budget of "
            f"{format_bytes(limit)}: use fewer --workers or raise --budget-memory"
        )
    kept = None
    if store is not None:
        _check_out_dir("--store", store)
        kept = SweepStore(store)

    try:
        with SweepProgress(quiet=quiet) as progress:
            outcome = run_sweep_points(
                experiment,
                backend=backend,  # type: ignore[arg-type]
                workers=workers,
                store=kept,
                scheduler=scheduler,
                on_point=progress,
            )
    except KeyboardInterrupt:
        where = f"; the finished points are in {store}" if store is not None else ""
        typer.echo(f"interrupted{where}", err=True)
        raise typer.Exit(130) from None
    except SpecError as error:
        _fail(str(error))
    if kept is not None:
        typer.echo(
            f"{outcome.reused} of {len(outcome.points)} points were in the store; "
            f"{outcome.ran} computed",
            err=True,
        )
    _write_frame(outcome.points, frame, frame_format)
    _print_sweep(outcome.points, json_out)


FrameOption = Annotated[
    Optional[Path],  # noqa: UP045
    typer.Option(
        "--frame",
        metavar="FILE",
        help="Also write the points' figures as one tidy table (CSV or Parquet; pandas, "
        "in the 'frames' extra).",
    ),
]
FormatOption = Annotated[
    Optional[str],  # noqa: UP045
    typer.Option(
        "--format", help="The --frame file's format: csv or parquet (default: its suffix)."
    ),
]


def _check_frame(frame: Path | None, fmt: str | None) -> None:
    """Check --frame and --format before any run (a bad option loses no results)."""
    from experiments.frames import FORMATS

    if frame is None:
        if fmt is not None:
            _fail("--format is the format of --frame: give --frame FILE too")
        return
    if frame.exists() and frame.is_dir():
        _fail(f"--frame {frame}: is a directory, not a file")
    chosen = fmt or frame.suffix.lstrip(".").lower()
    if chosen not in FORMATS:
        _fail(
            f"--format must be one of {', '.join(FORMATS)} (or a .csv/.parquet --frame), "
            f"got {chosen!r}"
        )
    _check_out_dir("--frame", frame.parent if str(frame.parent) else Path("."))


def _write_frame(points: list[Any], frame: Path | None, fmt: str | None) -> None:
    if frame is None:
        return
    from experiments.frames import FrameError, sweep_frame, write_frame

    try:
        path = write_frame(sweep_frame(points), frame, fmt)
    except FrameError as error:
        _fail(str(error))
    typer.echo(f"Table: {path}", err=True)


def _print_sweep(points: list[Any], json_out: bool) -> None:
    """A sweep's table (or JSON) on stdout, its warnings on stderr; exit 1 if a point failed."""
    if json_out:
        typer.echo(_sweep_json(points))
    else:
        typer.echo(sweep_table(points))
    for point in points:
        for warning in point.result.warnings if point.result else []:
            typer.echo(f"warning: {point.assignments}: {warning}", err=True)
    if any(p.error for p in points):
        raise typer.Exit(1)


def _sweep_json(points: list[Any]) -> str:
    return _json(
        [
            {
                "assignments": p.assignments,
                "result": p.result.model_dump(mode="json") if p.result else None,
                "error": p.error,
            }
            for p in points
        ]
    )


@app.command()
def report(
    store: Annotated[Path, typer.Argument(help="A sweep's store (meshsim sweep --store DIR).")],
    json_out: Annotated[bool, typer.Option("--json", help="Print the points as JSON.")] = False,
    frame: FrameOption = None,
    frame_format: FormatOption = None,
) -> None:
    """Rebuild a sweep's table and its HTML report (DIR/report.html) from its store."""
    from experiments.report import write_sweep_report
    from experiments.store import StoreError, SweepStore

    _check_frame(frame, frame_format)
    kept = SweepStore(store)
    try:
        points = kept.points()
        title = f"meshsim sweep: {kept.manifest()['base'].get('name', store.name)}"
    except StoreError as error:
        _fail(str(error))
    missing = sum(p.result is None for p in points)
    if missing:
        typer.echo(f"{missing} of {len(points)} points are not in the store yet", err=True)
    path = write_sweep_report(points, store / "report.html", title)
    _write_frame(points, frame, frame_format)
    if json_out:
        typer.echo(_sweep_json(points))
    else:
        typer.echo(sweep_table(points))
        typer.echo(f"\nReport: {path}")


@app.command()
def validate(
    spec: Annotated[Path, typer.Argument(help="The experiment spec (YAML).")],
    set_: SetOption = None,
    budget_events: BudgetEventsOption = None,
    budget_memory: BudgetMemoryOption = None,
) -> None:
    """Check a spec and its size: every problem is named by its field; exit 2 if there is one."""
    experiment = _load(spec, set_)
    estimate = _within_budget(experiment, budget_events, budget_memory, "meshsim validate")
    topology = experiment.resolve_topology()
    typer.echo(
        f"{spec}: valid ({experiment.name}: {len(topology.call_graph.services)} services, "
        f"{len(topology.cluster.nodes)} nodes, mesh {experiment.mesh.profile})"
    )
    typer.echo(f"  {estimate.summary()}")


@app.command("compare")
def compare_command(
    topology: Annotated[
        str, typer.Option(help="A catalog topology, or a topology file (.yaml).")
    ] = "bookinfo",
    rps: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(help="Open-loop arrival rate, requests/s (200, 200rps); default 200."),
    ] = None,
    connections: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option(help="A closed loop instead, as fortio's -c (with --qps)."),
    ] = None,
    qps: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(help="The closed loop's total rate, fortio's -qps (0: as fast as it can)."),
    ] = None,
    spec: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option(
            "--spec",
            help="An experiment spec to run under each profile (its mesh replaced); "
            "topology, load and times then come from it.",
        ),
    ] = None,
    profile: Annotated[
        Optional[list[str]],  # noqa: UP045
        typer.Option("--profile", "-p", help="A profile to compare (repeat); default: all."),
    ] = None,
    duration: Annotated[str, typer.Option(help="Simulated time per run (20, 20s, 1m30s).")] = "20s",
    warmup: Annotated[str, typer.Option(help="Warm-up cut from statistics (2, 2s).")] = "2s",
    seed: Annotated[int, typer.Option(help="Root seed, shared by every run.")] = 1,
    nodes: Annotated[Optional[int], typer.Option(help="Cluster size (flat).")] = None,  # noqa: UP045
    out: Annotated[Path, typer.Option(help="Output directory.")] = Path("meshsim-report"),
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON, not tables.")] = False,
    budget_events: BudgetEventsOption = None,
    budget_memory: BudgetMemoryOption = None,
) -> None:
    """Compare the architectures on one topology, with the same arrivals for each."""
    base_spec = None
    if spec is not None:
        given = [
            name
            for name, value in (("--rps", rps), ("--connections", connections), ("--qps", qps))
            if value is not None
        ]
        if topology != "bookinfo" or nodes is not None:
            given.append("--topology/--nodes")
        if given:
            _fail(f"--spec gives the topology and the load: drop {', '.join(given)}")
        base_spec = _load(spec, None).model_dump(mode="json")
    workload = None
    if connections is not None or qps is not None:
        if rps is not None:
            _fail("--rps is an open loop; --connections and --qps a closed loop: give one")
        if connections is None or qps is None:
            _fail("a closed loop needs both --connections and --qps")
        if connections < 1:
            _fail(f"--connections must be >= 1, got {connections}")
        try:
            qps_value = parse_rate(qps)
        except ValueError as error:
            _fail(f"--qps: {error}")
        workload = {"kind": "closed_loop", "connections": connections, "qps": qps_value}
    try:
        rate_rps = parse_rate(rps if rps is not None else "200")
    except ValueError as error:
        _fail(f"--rps: {error}")
    if rate_rps <= 0:
        _fail(f"--rps must be > 0, got {rps}")
    duration_s = _duration("--duration", duration)
    warmup_s = _duration("--warmup", warmup)
    if duration_s <= 0:
        _fail(f"--duration must be > 0, got {duration}")
    if warmup_s >= duration_s:
        _fail(f"--warmup ({warmup}) must be shorter than --duration ({duration})")
    _seed("--seed", seed)
    if nodes is not None and nodes < 1:
        _fail(f"--nodes must be >= 1, got {nodes}")
    if topology.endswith((".yaml", ".yml")):
        if not Path(topology).is_file():
            _fail(f"--topology {topology}: no such file")
    elif topology not in CATALOG:
        _fail(
            f"unknown topology {topology!r}; known: {', '.join(sorted(CATALOG))} "
            "(or a topology file, .yaml)"
        )
    _check_out_dir("--out", out)
    try:
        result = compare(
            topology=topology,
            rate_rps=rate_rps,
            profiles=profile,
            duration_s=duration_s,
            warmup_s=warmup_s,
            seed=seed,
            nodes=nodes,
            out_dir=out,
            budget=_budget(budget_events, budget_memory),
            workload=workload,
            base_spec=base_spec,
        )
    except SpecError as error:
        _fail(str(error))
    if json_out:
        typer.echo(_json({k: v.model_dump(mode="json") for k, v in result.results.items()}))
    else:
        typer.echo(result.table())
        if result.json_path is not None:
            typer.echo(f"\nResults: {result.json_path}")
        if result.report_path is not None:
            typer.echo(f"Report: {result.report_path}")
    if result.failures:
        raise typer.Exit(1)


@app.command()
def calibrate(
    profile: Annotated[
        Optional[list[str]],  # noqa: UP045
        typer.Option("--profile", "-p", help="A profile to calibrate (repeat); default: all."),
    ] = None,
    duration: Annotated[str, typer.Option(help="Simulated time per run (30, 30s, 1m).")] = "30s",
    seed: Annotated[int, typer.Option(help="Root seed.")] = 1,
    budget_events: BudgetEventsOption = None,
    budget_memory: BudgetMemoryOption = None,
) -> None:
    """Run Istio's benchmark set-up for each profile: published figures against simulated."""
    unknown = [p for p in profile or [] if p not in list_profiles()]
    if unknown:
        _fail(f"unknown profile(s) {', '.join(unknown)}; known: {', '.join(list_profiles())}")
    duration_s = _duration("--duration", duration)
    if duration_s <= 0:
        _fail(f"--duration must be > 0, got {duration}")
    _seed("--seed", seed)
    from experiments.calibration import benchmark_spec

    names = ["none", *[p for p in (profile or list_profiles()) if p != "none"]]
    try:
        estimates = [estimate_experiment(benchmark_spec(n, duration_s, seed), n) for n in names]
        check_budget(
            total(estimates), _budget(budget_events, budget_memory), command="meshsim calibrate"
        )
    except SpecError as error:
        _fail(str(error))
    try:
        rows, _ = run_calibration(profile or None, duration_s=duration_s, seed=seed)
    except SpecError as error:
        _fail(str(error))
    typer.echo(format_calibration(rows))
    if any(row.within is False for row in rows):
        raise typer.Exit(1)


@app.command()
def show(
    profile: Annotated[str, typer.Argument(help="A built-in profile (meshsim list).")],
) -> None:
    """A profile's effective mesh fields, defaults filled in: what a spec's mesh overrides can
    set (``mesh: {profile: NAME, overrides: {...}}``)."""
    import yaml

    from experiments.profiles import ProfileError, resolve_mesh

    try:
        described = load_profile(profile)
        mesh = resolve_mesh(profile).model_dump(mode="json")
    except ProfileError as error:
        _fail(str(error))
    typer.echo(f"# {described.name}: {described.description}")
    typer.echo(
        "# Override any field below (mesh: {profile: NAME, overrides: {...}}), or give the "
        "whole mesh (mesh: {architecture: ..., ...})."
    )
    typer.echo(yaml.safe_dump(finite_or_none(mesh), sort_keys=False, width=100).rstrip())


@app.command("list")
def list_command() -> None:
    """The built-in profiles, topologies and shipped experiments."""
    typer.echo("Profiles:")
    for name in list_profiles():
        typer.echo(f"  {name:16} {load_profile(name).description}")
    typer.echo("Topologies:")
    for name in sorted(CATALOG):
        doc = (CATALOG[name].__doc__ or "").strip().splitlines()[0]
        typer.echo(f"  {name:16} {doc}")
    typer.echo("Experiments (meshsim run PATH):")
    for path in shipped_specs():
        first = path.read_text(encoding="utf-8").splitlines()[0].lstrip("# ")
        typer.echo(f"  {path}\n      {first}")


# --- the budget (experiments.budget): options of run, validate and compare ---------------------

BudgetEventsOption = Annotated[
    Optional[float],  # noqa: UP045
    typer.Option(
        "--budget-events",
        parser=parse_events,
        metavar="N",
        help=f"Most simulated events, all runs together (default {DEFAULT_EVENTS:.0e}: about "
        "25 minutes of CPU). Raise it for a longer run.",
    ),
]
BudgetMemoryOption = Annotated[
    Optional[float],  # noqa: UP045
    typer.Option(
        "--budget-memory",
        parser=parse_memory,
        metavar="SIZE",
        help=f"Most estimated memory of a run (8GiB, 16Gi; default "
        f"{format_bytes(DEFAULT_MEMORY_BYTES)}).",
    ),
]


def _budget(events: float | None, memory: float | None) -> Budget:
    return Budget(
        events=DEFAULT_EVENTS if events is None else events,
        memory_bytes=DEFAULT_MEMORY_BYTES if memory is None else memory,
    )


def _within_budget(
    experiment: ExperimentSpec, events: float | None, memory: float | None, command: str
) -> ExperimentEstimate:
    """The estimate of ``experiment``'s runs; exit 2 with the reason if over the budget."""
    try:
        return check_budget(
            estimate_experiment(experiment), _budget(events, memory), command=command
        )
    except SpecError as error:  # BudgetError
        _fail(str(error))
        raise  # unreachable: _fail exits


@app.command()
def schema() -> None:
    """The JSON Schema (Draft 2020-12) of an experiment spec, for editors and validators."""
    from experiments.schema import experiment_schema  # loads only for this command

    typer.echo(json.dumps(experiment_schema(), indent=1))


def main() -> None:
    """Console-script entry point."""
    app(prog_name="meshsim")


if __name__ == "__main__":
    sys.exit(main())
