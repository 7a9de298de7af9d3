"""Sweeps that scale out, and the store that lets them resume.

A sweep's points run one after another (``serial``), in a pool of processes (``process``) or
on a Dask cluster (``dask``: ``distributed``, an optional extra), the longest points first (by
the budget's event estimate), so that a long point does not start last and leave the other
workers idle. Each point's spec carries its own seed, so every backend gives the same numbers;
only the wall times differ.

With a store (a directory), every point is written as soon as it finishes, atomically (to a
temporary file in the same directory, then renamed over its name), under a key that is a hash
of its effective spec: the spec as validated, with its mesh and topology resolved, so that a
profile or catalog change makes a new key. Rerunning the same sweep with the same store runs
only the points whose keys are missing; a sweep killed midway loses only the points that were
running. A point that failed is not stored, so a rerun tries it again.

Layout of a store::

    DIR/sweep.json          the sweep: its base spec, grid and points' keys, in grid order
    DIR/points/KEY.json     one finished point: its assignments, spec and result
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Literal

from experiments.budget import estimate_run
from experiments.results import RunResult, finite_or_none
from experiments.spec import ExperimentSpec, SpecError, spec_from_dict
from experiments.sweep import NOT_RUN, SweepPoint, SweepSpec, sweep_points

__all__ = [
    "Backend",
    "BACKENDS",
    "StoreError",
    "SweepStore",
    "SweepRun",
    "point_key",
    "run_point",
    "run_sweep",
    "run_sweep_points",
]

Backend = Literal["serial", "process", "dask"]
BACKENDS: tuple[str, ...] = ("serial", "process", "dask")

STORE_FORMAT = 1
"""The layout version written in ``sweep.json``."""


class StoreError(SpecError):
    """A store that cannot be used: not a store, another format, unreadable."""


def point_key(spec: ExperimentSpec) -> str:
    """The key of a point: a hash of its effective spec (the spec as validated, its mesh
    and topology resolved), in 24 hex digits (96 bits of SHA-256: a collision between two
    points is vanishingly unlikely, about 2**-96 per pair)."""
    effective = {
        "spec": spec.model_dump(mode="json"),
        "mesh": spec.mesh.resolve().model_dump(mode="json"),
        "topology": spec.resolve_topology().model_dump(mode="json"),
    }
    text = json.dumps(finite_or_none(effective), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def run_point(data: dict[str, Any]) -> dict[str, Any]:
    """Run one point (its spec as data) and return its result as JSON data, or its error.

    Module-level and taking plain data, so that a process pool or a Dask worker can run it;
    every backend goes through it, so that they all give the same data.
    """
    # Imported here: a worker process needs the runner, the parent that only reads a store
    # does not.
    from experiments.runner import run_experiment

    try:
        result = run_experiment(spec_from_dict(data))
    except Exception as error:  # one point failing must not lose the others
        return {"error": f"{type(error).__name__}: {error}"}
    return {"result": finite_or_none(result.model_dump(mode="json"))}


def _write_atomic(path: Path, data: Any) -> None:
    """Write JSON to ``path`` so that a reader (or a rerun after a kill) sees either the
    whole file or none: a temporary file in the same directory, flushed, then renamed."""
    text = json.dumps(data, indent=1, allow_nan=False)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class SweepStore:
    """A directory of finished sweep points (see the module docstring)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.points_dir = self.root / "points"

    def path(self, key: str) -> Path:
        return self.points_dir / f"{key}.json"

    def has(self, key: str) -> bool:
        return self.path(key).is_file()

    def begin(self, base: dict[str, Any], grid: dict[str, list[Any]], keys: list[str]) -> None:
        """Make the store (or reuse it) and write the sweep's description."""
        self.points_dir.mkdir(parents=True, exist_ok=True)
        # A run killed while writing leaves its temporary file: never a point, so drop it.
        for stale in self.points_dir.glob(".*.tmp"):
            stale.unlink(missing_ok=True)
        manifest = {"format": STORE_FORMAT, "base": base, "grid": grid, "keys": keys}
        _write_atomic(self.root / "sweep.json", finite_or_none(manifest))

    def save(
        self, key: str, assignments: dict[str, Any], data: dict[str, Any], result: Any
    ) -> None:
        """Store one finished point."""
        record = {"key": key, "assignments": assignments, "spec": data, "result": result}
        path = self.path(key)
        if path.exists() and not path.is_file():
            raise StoreError(f"{path}: is not a file (remove it to keep this point)")
        try:
            _write_atomic(path, finite_or_none(record))
        except OSError as error:
            raise StoreError(f"{path}: cannot be written ({error})") from error

    def readable(self, key: str) -> SweepPoint | None:
        """The stored point of ``key``, or None when it is missing or cannot be read (a
        damaged file: its point is computed again and the file replaced)."""
        if not self.has(key):
            return None
        try:
            return self.load_point(key)
        except StoreError:
            return None

    def load_point(self, key: str) -> SweepPoint:
        """A stored point, its result validated again."""
        try:
            record = json.loads(self.path(key).read_text(encoding="utf-8"))
            return SweepPoint(record["assignments"], RunResult.model_validate(record["result"]))
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise StoreError(f"{self.path(key)}: not a stored point ({error})") from error

    def manifest(self) -> dict[str, Any]:
        """The sweep's description, as :meth:`begin` wrote it."""
        path = self.root / "sweep.json"
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise StoreError(f"{self.root}: not a sweep store (no sweep.json)") from None
        except (OSError, ValueError) as error:
            raise StoreError(f"{path}: cannot be read ({error})") from error
        if not isinstance(manifest, dict) or manifest.get("format") != STORE_FORMAT:
            raise StoreError(f"{path}: not a sweep store of format {STORE_FORMAT}")
        return manifest

    def points(self) -> list[SweepPoint]:
        """The sweep's points in grid order: stored ones with their results, missing ones
        with the error "not run yet"."""
        manifest = self.manifest()
        try:
            grid = sweep_points(manifest["base"], SweepSpec(grid=manifest["grid"]))
            keys = [str(key) for key in manifest["keys"]]
            pairs = list(zip(keys, (assignments for assignments, _ in grid), strict=True))
        except (KeyError, TypeError, ValueError) as error:
            raise StoreError(
                f"{self.root / 'sweep.json'}: not a sweep's description ({error})"
            ) from error
        points = []
        for key, assignments in pairs:
            point = self.readable(key)
            points.append(point if point is not None else SweepPoint(assignments, error=NOT_RUN))
        return points


@dataclass
class SweepRun:
    """What a sweep did: its points in grid order, and how many came from the store."""

    points: list[SweepPoint]
    reused: int
    ran: int


def _longest_first(specs: list[ExperimentSpec], todo: list[int]) -> list[int]:
    """The points to run, the largest estimated event count first (ties in grid order)."""
    events = {i: estimate_run(specs[i]).events for i in todo}
    return sorted(todo, key=lambda i: (-events[i], i))


def run_sweep_points(
    spec: ExperimentSpec,
    *,
    backend: Backend = "serial",
    workers: int = 1,
    store: SweepStore | None = None,
    scheduler: str | None = None,
    on_point: Callable[[int, int, SweepPoint], None] | None = None,
) -> SweepRun:
    """Run the points of ``spec``'s sweep that the store does not hold yet.

    Args:
        spec: a validated experiment with a sweep.
        backend: ``serial``, ``process`` (a pool of ``workers`` processes) or ``dask`` (the
            cluster at ``scheduler``, or a local one of ``workers`` processes).
        workers: processes for ``process`` and a local Dask cluster.
        store: where finished points are kept (None: nowhere).
        scheduler: a Dask scheduler's address (``tcp://host:8786``).
        on_point: called as each point finishes with (points done, points to run, point).

    Returns:
        Every point in grid order. On KeyboardInterrupt, the run stops: what finished is in
        the store, and the interruption is raised again once the workers are stopped.
    """
    assert spec.sweep is not None
    base = spec.model_dump(mode="json", exclude={"sweep"})
    grid = sweep_points(base, spec.sweep)
    specs = [spec_from_dict(data) for _, data in grid]
    keys = [point_key(s) for s in specs]
    points: list[SweepPoint | None] = [None] * len(grid)
    if store is not None:
        store.begin(base, spec.sweep.grid, keys)
        for i, key in enumerate(keys):
            points[i] = store.readable(key)
    reused = sum(p is not None for p in points)
    todo = _longest_first(specs, [i for i, p in enumerate(points) if p is None])

    def finished(i: int, outcome: dict[str, Any]) -> None:
        assignments, data = grid[i]
        if "result" in outcome:
            point = SweepPoint(assignments, RunResult.model_validate(outcome["result"]))
            if store is not None:
                store.save(keys[i], assignments, data, outcome["result"])
        else:
            point = SweepPoint(assignments, error=outcome["error"])
        points[i] = point
        if on_point is not None:
            on_point(sum(p is not None for p in points) - reused, len(todo), point)

    for i, outcome in _execute(backend, workers, scheduler, [(i, grid[i][1]) for i in todo]):
        finished(i, outcome)
    done = [p for p in points if p is not None]
    assert len(done) == len(points)
    return SweepRun(done, reused, len(todo))


def _execute(
    backend: Backend, workers: int, scheduler: str | None, jobs: list[tuple[int, dict[str, Any]]]
) -> Iterator[tuple[int, dict[str, Any]]]:
    """(index, outcome) for every job, as they finish."""
    if not jobs:
        return
    if backend == "serial":
        for i, data in jobs:
            yield i, run_point(data)
    elif backend == "process":
        yield from _in_processes(workers, jobs)
    elif backend == "dask":
        yield from _on_dask(workers, scheduler, jobs)
    else:
        raise ValueError(f"backend: {backend!r} is not one of {', '.join(BACKENDS)}")


def _worker_start(parent: int) -> None:
    """In each worker process: Ctrl-C is the parent's to handle (it stops the workers), and
    a worker whose parent is gone (killed with SIGKILL) exits instead of lingering."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="meshsim-parent-watch").start()


def _in_processes(
    workers: int, jobs: list[tuple[int, dict[str, Any]]]
) -> Iterator[tuple[int, dict[str, Any]]]:
    # "spawn": a fresh interpreter per worker, the same on every platform (no forked state).
    pool = ProcessPoolExecutor(
        max_workers=max(1, workers),
        mp_context=get_context("spawn"),
        initializer=_worker_start,
        initargs=(os.getpid(),),
    )
    finished = False
    try:
        pending: dict[Future[dict[str, Any]], int] = {
            pool.submit(run_point, data): i for i, data in jobs
        }
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                yield pending.pop(future), future.result()
        finished = True
    finally:
        if not finished:
            # Interrupted (Ctrl-C, an error): the points still running are lost anyway;
            # stop their processes now rather than wait for them.
            for process in list((getattr(pool, "_processes", None) or {}).values()):
                process.terminate()
        pool.shutdown(wait=finished, cancel_futures=True)


def _on_dask(
    workers: int, scheduler: str | None, jobs: list[tuple[int, dict[str, Any]]]
) -> Iterator[tuple[int, dict[str, Any]]]:
    try:
        from distributed import Client, LocalCluster, as_completed
    except ImportError:
        raise SpecError(
            "backend dask needs the 'distributed' package: pip install 'meshsim[dask]'"
        ) from None
    cluster = None
    if scheduler is None:
        cluster = LocalCluster(
            n_workers=max(1, workers), threads_per_worker=1, processes=True, dashboard_address=None
        )
        client = Client(cluster)
    else:
        client = Client(scheduler)
    try:
        futures = {client.submit(run_point, data, pure=False): i for i, data in jobs}
        for future in as_completed(futures):
            yield futures[future], future.result()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def run_sweep(spec: ExperimentSpec) -> list[SweepPoint]:
    """Run every point of ``spec``'s sweep, one after another, keeping nothing; a point that
    fails keeps its error, and the others their results (``meshsim run`` on a sweep)."""
    return run_sweep_points(spec).points
