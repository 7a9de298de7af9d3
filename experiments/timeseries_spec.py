"""The spec of an experiment's time series: the window and the band of "recovered"."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from sim.units import Duration

__all__ = ["MAX_WINDOWS", "TimeSeriesSpec"]

MAX_WINDOWS = 100_000
"""The most windows of one run (``duration / window``, rounded up): each window holds its
counts and a latency histogram per service."""


class TimeSeriesSpec(BaseModel):
    """Record the run in fixed windows (``timeseries: {window: 1s}``), and judge each fault
    against the baseline before it.

    Attributes:
        window: the window's width (``"1s"``, ``"250ms"``); windows start at the run's start
            (0 s), warm-up included, so a fault during the warm-up shows too.
        error_rate_band: how far above its baseline (a share: 0.01 = 1 percentage point) a
            window's end-to-end error rate may be and still count as normal.
        p99_band: how many times its baseline a window's end-to-end p99 may be and still
            count as normal (>= 1).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    window: Annotated[Duration, Field(gt=0)]
    error_rate_band: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)] = 0.01
    p99_band: Annotated[float, Field(ge=1, allow_inf_nan=False)] = 1.5
