"""Windowed statistics: a series of observations and a level, by hand-made examples."""

from __future__ import annotations

import pytest

from sim.stats import WindowedLevel, WindowedSeries


def test_series_counts_errors_by_label_and_measured_apart() -> None:
    series = WindowedSeries(window_s=1.0)
    series.add(0.2, 0.010, ok=False, label="UH", measured=False)
    series.add(0.7, 0.020)
    series.add(1.0, 0.030, ok=False, label="UH")  # a window's start belongs to it
    series.add(1.5, 0.040, ok=False, label="UF")
    first, second = series.window(0), series.window(1)
    assert first is not None and second is not None
    assert (first.count, first.errors, first.measured) == (2, 1, 1)
    assert first.labels == {"UH": 1} and first.measured_labels == {}
    assert (second.count, second.errors, second.measured) == (2, 2, 2)
    assert second.labels == second.measured_labels == {"UF": 1, "UH": 1}
    assert second.hist.count == 2 and second.hist.max == pytest.approx(0.040)
    assert series.window(2) is None
    assert series.last_index() == 1


def test_series_merge_adds_window_by_window() -> None:
    a, b = WindowedSeries(0.5), WindowedSeries(0.5)
    a.add(0.1, 0.001, ok=False, label=503)
    b.add(0.2, 0.003, ok=False, label=503)
    b.add(0.6, 0.002)
    a.merge(b)
    w0, w1 = a.window(0), a.window(1)
    assert w0 is not None and w1 is not None
    assert (w0.count, w0.errors, w0.labels) == (2, 2, {503: 2})
    assert w0.hist.count == 2 and w0.hist.min == pytest.approx(0.001)
    assert (w1.count, w1.errors) == (1, 0)
    with pytest.raises(ValueError, match="different windows"):
        a.merge(WindowedSeries(1.0))


def test_series_folds_the_windows_after_the_last_into_it() -> None:
    series = WindowedSeries(1.0)
    series.add(1.5, 0.001)
    series.add(2.0, 0.002, ok=False, label="-")  # exactly at the end of a 2 s run
    series.fold_after(1)
    w = series.window(1)
    assert w is not None and (w.count, w.errors, w.labels) == (2, 1, {"-": 1})
    assert series.last_index() == 1


def test_level_means_and_levels_at_window_edges() -> None:
    # Level 0 until 0.5, 1 until 1.25, 2 until 3.5 (skipping window 2 whole), 1 after.
    level = WindowedLevel(window_s=1.0)
    level.add(0.5, 1)
    level.add(1.25, 1)
    level.add(3.5, -1)
    means, starts, ends = level.finish(4.5)  # the last window is half a window long
    assert means == pytest.approx([0.5, 0.25 * 1 + 0.75 * 2, 2.0, 0.5 * 2 + 0.5 * 1, 1.0])
    assert starts == [0, 1, 2, 2, 1]
    assert ends == [1, 2, 2, 1, 1]


def test_level_change_at_a_window_start_counts_in_that_window() -> None:
    level = WindowedLevel(window_s=1.0)
    level.add(1.0, 1)  # at the start of window 1: window 0 ends at level 0
    means, starts, ends = level.finish(2.0)
    assert starts == [0, 0] and ends == [0, 1]
    assert means == pytest.approx([0.0, 1.0])


def test_level_refuses_time_going_backwards() -> None:
    level = WindowedLevel(0.5)
    level.add(1.0, 1)
    with pytest.raises(ValueError, match="backwards"):
        level.add(0.9, -1)
    with pytest.raises(ValueError, match="window_s"):
        WindowedLevel(0.0)
