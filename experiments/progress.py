"""Progress on stderr for runs and sweeps, and Ctrl-C as a clean stop.

A bar (rich, which typer brings) shows a run's simulated time, its requests and the time
left, or a sweep's points done; it is drawn only when stderr is a terminal, the work is
expected to last more than a couple of seconds, and ``--quiet`` is not given. Without a bar,
a sweep prints one line per finished point (useful in a log), unless ``--quiet``.

The first Ctrl-C asks the run to stop at its next slice (``models.simulation``): what it
measured is kept and printed, marked as interrupted. A second Ctrl-C interrupts at once.
"""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType, TracebackType
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

__all__ = ["BAR_AFTER_S", "RunProgress", "SweepProgress", "StopOnInterrupt"]

BAR_AFTER_S = 2.0
"""Work expected to take less CPU time than this (seconds) shows no bar."""


def _terminal() -> bool:
    return sys.stderr.isatty()


class StopOnInterrupt:
    """While active, the first SIGINT sets ``requested`` (and puts the previous handler
    back, so that a second one interrupts at once). Outside the main thread, where signal
    handlers cannot be set, it does nothing."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None
        self._active = False

    def _handle(self, _signum: int, _frame: FrameType | None) -> None:
        self.requested = True
        signal.signal(signal.SIGINT, self._previous)
        sys.stderr.write("\nstopping at the next step (Ctrl-C again to stop at once)\n")

    def __enter__(self) -> StopOnInterrupt:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
            self._active = True
        return self

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _value: BaseException | None,
        _traceback: TracebackType | None,
    ) -> None:
        if self._active and not self.requested:
            signal.signal(signal.SIGINT, self._previous)
        self._active = False


def _bar(*columns: Any) -> Progress:
    return Progress(*columns, console=Console(stderr=True), transient=True)


class RunProgress:
    """The progress callback of one run (``experiments.runner.ReplicationProgress``).

    Args:
        duration_s: simulated seconds per replication.
        replications: replications of the run.
        expected_cpu_s: the budget's estimate of the run's CPU time.
        quiet: no bar, whatever the rest.
    """

    def __init__(
        self, duration_s: float, replications: int, expected_cpu_s: float, quiet: bool = False
    ) -> None:
        self.duration_s = duration_s
        self.replications = replications
        self.stop = StopOnInterrupt()
        show = not quiet and _terminal() and expected_cpu_s >= BAR_AFTER_S
        self._bar = (
            _bar(
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.fields[where]}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
            )
            if show
            else None
        )
        self._task: Any = None

    def __enter__(self) -> RunProgress:
        self.stop.__enter__()
        if self._bar is not None:
            self._bar.start()
            self._task = self._bar.add_task(
                "run", total=self.duration_s * self.replications, where=""
            )
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._bar is not None:
            self._bar.stop()
        self.stop.__exit__(*exc)

    def __call__(self, replication: int, now_s: float, sent: int) -> bool:
        if self._bar is not None:
            where = f"{now_s:,.1f}/{self.duration_s:g} s simulated, {sent:,} requests"
            if self.replications > 1:
                where = f"replication {replication + 1}/{self.replications}: {where}"
            self._bar.update(
                self._task, completed=replication * self.duration_s + now_s, where=where
            )
        return self.stop.requested


class SweepProgress:
    """Points of a sweep as they finish: a bar on a terminal, else a line each.

    Args:
        quiet: nothing at all.
    """

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self._bar = (
            _bar(TextColumn("points"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
            if not quiet and _terminal()
            else None
        )
        self._task: Any = None

    def __enter__(self) -> SweepProgress:
        if self._bar is not None:
            self._bar.start()
            self._task = self._bar.add_task("points", total=None)
        return self

    def __exit__(self, *_exc: Any) -> None:
        if self._bar is not None:
            self._bar.stop()

    def __call__(self, done: int, total: int, point: Any) -> None:
        if self._bar is not None:
            self._bar.update(self._task, total=total, completed=done)
            if point.error:
                self._bar.console.print(f"point {point.assignments}: failed: {point.error}")
            return
        if self.quiet:
            return
        where = ", ".join(f"{k}={v}" for k, v in point.assignments.items())
        state = "failed: " + point.error if point.error else "done"
        sys.stderr.write(f"[{done}/{total}] {where}: {state}\n")
