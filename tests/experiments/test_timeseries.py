"""Results over time: windows that add up to the totals, conservation per window, and what a
fault did (blast radius, time to recover), judged from the windows."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from typer.testing import CliRunner

from experiments.cli import app
from experiments.results import RunResult
from experiments.runner import run_experiment
from experiments.spec import SpecError, spec_from_dict

DURATION_S, WARMUP_S, WINDOW_S = 10.0, 1.0, 0.5
OUTAGE_START_S, OUTAGE_S = 4.0, 2.0


def chain_spec(**extra: Any) -> dict[str, Any]:
    """Two services ``s0 -> s1`` under Istio 1.1 (Mixer), 200 rps, policy checks turned on;
    Mixer fails closed, checks on the inbound side and has no check cache, and no retries,
    so every request during a Mixer outage fails at ``s0``'s inbound sidecar (``UAEX``)."""
    spec: dict[str, Any] = {
        "topology": {"catalog": "chain", "params": {"n": 2}},
        "mesh": {
            "profile": "istio-1.1",
            "overrides": {
                "mixer": {
                    "fail_policy": "fail_closed",
                    "disable_policy_checks": False,
                    "check_on": "inbound",
                    "check_cache": {"max_entries": 0},
                },
                "retries": {"attempts": 0},
            },
        },
        "workload": {"kind": "open_loop", "rate_rps": 200},
        "duration": DURATION_S,
        "warmup": WARMUP_S,
    }
    spec.update(extra)
    return spec


OUTAGE = [{"kind": "mixer_outage", "start": OUTAGE_START_S, "duration": OUTAGE_S}]
SERIES = {"window": f"{WINDOW_S}s"}


@pytest.fixture(scope="module")
def outage() -> RunResult:
    return run_experiment(spec_from_dict(chain_spec(faults=OUTAGE, timeseries=SERIES)))


def check_sums(result: RunResult) -> None:
    """The windows add up to the run's totals, and conservation holds per window."""
    ts = result.timeseries
    assert ts is not None
    e2e = ts.end_to_end
    c = result.conservation
    # Every request that ended, warm-up included: the conservation counts.
    assert sum(e2e.requests) == c.completed + c.failed
    assert sum(e2e.successes) == c.completed
    assert sum(e2e.errors) == c.failed
    assert sum(e2e.sent) == c.sent
    assert e2e.in_flight_end[-1] == c.in_flight
    # Those that started after the warm-up: the run's measured figures.
    assert sum(e2e.measured) == result.end_to_end.requests
    flags = {f: sum(v) for f, v in e2e.measured_errors_by.items()}
    assert flags == result.response_flags  # the run counts flags of its errors only
    errors = sum(n for code, n in result.status_codes.items() if int(code) >= 400)
    assert sum(flags.values()) == errors
    assert sum(sum(v) for v in e2e.errors_by.values()) == c.failed
    for name, series in ts.services.items():
        total = result.services[name]
        assert sum(series.measured) == total.requests, name
        assert {s: sum(v) for s, v in series.measured_errors_by.items()} == {
            s: n for s, n in total.error_codes.items()
        }, name
        assert sum(series.successes) + sum(series.errors) == sum(series.requests)
    # Conservation per window: sent = ended + change of in flight across it.
    for i in range(len(ts.starts_s)):
        assert e2e.sent[i] == e2e.requests[i] + e2e.in_flight_end[i] - e2e.in_flight_start[i]
        if i:
            assert e2e.in_flight_start[i] == e2e.in_flight_end[i - 1]
    assert e2e.in_flight_start[0] == 0


def test_windows_sum_to_the_totals_with_a_fault(outage):
    check_sums(outage)
    assert outage.conservation.failed > 0  # the fault made errors for the check to count


def test_windows_sum_to_the_totals_without_a_fault():
    result = run_experiment(spec_from_dict(chain_spec(timeseries=SERIES)))
    check_sums(result)
    assert result.faults == []


def test_windows_sum_with_replications_and_a_window_that_does_not_divide_the_run():
    result = run_experiment(
        spec_from_dict(
            chain_spec(faults=OUTAGE, timeseries={"window": "0.3s"}, replications=2, duration=7)
        )
    )
    check_sums(result)
    ts = result.timeseries
    assert ts is not None
    assert len(ts.starts_s) == math.ceil(7 / 0.3) == 24
    assert ts.starts_s[-1] == pytest.approx(23 * 0.3)
    # Rates are per replication, the last (shorter) window over its own length.
    assert ts.end_to_end.throughput_rps[-1] == pytest.approx(
        ts.end_to_end.requests[-1] / (2 * (7 - 23 * 0.3))
    )


def test_the_warm_up_windows_are_named(outage):
    ts = outage.timeseries
    assert ts is not None
    assert ts.warmup_windows == int(WARMUP_S / WINDOW_S)
    assert ts.starts_s[: ts.warmup_windows + 1] == [0.0, 0.5, 1.0]
    # Windows start at 0: the warm-up's requests are there, not in the measured counts.
    assert ts.end_to_end.requests[0] > 0 and ts.end_to_end.measured[0] == 0


def test_a_mixer_outage_blast_radius_and_recovery(outage):
    (fault,) = outage.faults
    assert (fault.kind, fault.start_s, fault.end_s) == ("mixer_outage", 4.0, 6.0)
    assert fault.baseline == "measured" and fault.baseline_error_rate == 0.0
    # s0's inbound sidecar answers Mixer's 503 UAEX before its application: the load
    # generator sees it, s0's pods do not. A request that passed s0's check just before the
    # outage may meet s1's check in it: s1's sidecar answers UAEX, and s0's app passes the 503
    # on (apps pass the status, not the flag: '-'); only such stragglers.
    assert list(fault.services_hurt) == ["s0"]
    hurt = fault.services_hurt["s0"]
    assert hurt.seen_by == "load generator"
    assert set(hurt.errors_by) <= {"UAEX", "-"}
    assert hurt.errors_by.get("-", 0) <= 3 < hurt.errors_by["UAEX"]
    # Every request during the outage fails: the share lost is the outage's share of the
    # measured time, within a window's worth of requests either side.
    share = OUTAGE_S / (DURATION_S - WARMUP_S)
    assert fault.share_lost == pytest.approx(share, abs=WINDOW_S / (DURATION_S - WARMUP_S))
    assert fault.requests_lost == fault.failed
    assert fault.errors_started_at_s == OUTAGE_START_S and fault.time_to_errors_s == 0.0
    assert fault.disturbed and not fault.recovered_during_fault
    assert fault.time_to_recover_s is not None and 0.0 <= fault.time_to_recover_s <= WINDOW_S
    # The errors, window by window: only in the outage's windows, all UAEX.
    ts = outage.timeseries
    assert ts is not None
    errors = ts.end_to_end.errors_by["UAEX"]
    outage_windows = {i for i, s in enumerate(ts.starts_s) if 4.0 <= s < 6.0}
    assert {i for i, n in enumerate(errors) if n} <= outage_windows | {max(outage_windows) + 1}
    assert all(errors[i] for i in outage_windows)


def test_a_fault_that_hurts_nothing_is_undisturbed():
    # Mixer failing open: checks that fail let the request through.
    spec = chain_spec(faults=OUTAGE, timeseries=SERIES)
    spec["mesh"]["overrides"]["mixer"]["fail_policy"] = "fail_open"
    (fault,) = run_experiment(spec_from_dict(spec)).faults or []
    assert fault.failed == 0 and fault.services_hurt == {}
    assert fault.errors_started_at_s is None
    # p99 may move (no check to wait for), but not up by half: nothing leaves the band.
    assert not fault.disturbed and fault.time_to_recover_s == 0.0


def test_a_fault_in_the_warm_up_has_a_warm_up_baseline_or_none():
    def fault_at(start: float) -> Any:
        early = [{"kind": "mixer_outage", "start": start, "duration": 0.4}]
        spec = chain_spec(faults=early, timeseries=SERIES, warmup=2.0, duration=4.0)
        (fault,) = run_experiment(spec_from_dict(spec)).faults or []
        assert fault.failed > 0  # it shows: windows start at 0
        return fault

    # One whole window (0-0.5 s) before it, in the warm-up.
    fault = fault_at(0.5)
    assert (fault.baseline, fault.baseline_windows) == ("warm-up", 1)
    assert fault.recovered_at_s is not None and fault.notes
    # No window ends before it starts: no baseline, no recovery figures.
    fault = fault_at(0.2)
    assert (fault.baseline, fault.baseline_windows) == ("none", 0)
    assert fault.recovered_at_s is None and fault.errors_started_at_s is None
    assert any("no baseline" in note for note in fault.notes)


def test_timeseries_off_changes_nothing_else():
    off = run_experiment(spec_from_dict(chain_spec(faults=OUTAGE)))
    on = run_experiment(spec_from_dict(chain_spec(faults=OUTAGE, timeseries=SERIES)))
    assert off.timeseries is None and off.faults is None
    a, b = off.model_dump(mode="json"), on.model_dump(mode="json")
    for data in (a, b):
        for key in ("wall_time_s", "timeseries", "faults"):
            data.pop(key)
        data["spec"].pop("timeseries")
        data["effective_spec"].pop("timeseries")
    assert a == b
    payload = json.loads(json.dumps(off.model_dump(mode="json")))
    assert payload["timeseries"] is None and payload["faults"] is None


def test_too_many_windows_are_refused_naming_the_field():
    with pytest.raises(SpecError, match=r"timeseries\.window.*100,000") as caught:
        spec_from_dict(chain_spec(timeseries={"window": "0.05ms"}))
    assert "Traceback" not in str(caught.value)
    with pytest.raises(SpecError, match="timeseries"):
        spec_from_dict(chain_spec(timeseries={"window": 0}))
    with pytest.raises(SpecError, match="timeseries"):
        spec_from_dict(chain_spec(timeseries={"window": "1s", "p99_band": 0.5}))


def test_the_run_prints_the_series_and_the_fault_table(tmp_path):
    import yaml

    path = tmp_path / "outage.yaml"
    path.write_text(yaml.safe_dump(chain_spec(faults=OUTAGE, timeseries=SERIES)), "utf-8")
    result = CliRunner().invoke(app, ["run", str(path)])
    assert result.exit_code == 0, result.output
    assert "Over time: 20 windows of 0.5 s" in result.output
    assert "Faults (" in result.output and "0 mixer_outage" in result.output
    assert all(len(line) <= 100 for line in result.output.splitlines() if "▁" in line)
    data = json.loads(CliRunner().invoke(app, ["run", str(path), "--json"]).output)
    assert len(data["timeseries"]["end_to_end"]["requests"]) == 20
    assert data["faults"][0]["services_hurt"]["s0"]["errors_by"]["UAEX"] == mock_any_int()


class mock_any_int:  # noqa: N801 - reads as a value in the assertion above
    def __eq__(self, other: object) -> bool:
        return isinstance(other, int) and other > 0


def _crash_spec(workload: str, replicas_of: dict[str, int] | None = None) -> dict[str, Any]:
    return {
        "topology": "bookinfo",
        "mesh": "istio-1.8",
        "workload": {"kind": "open_loop", "rate_rps": 100},
        "duration": "12s",
        "warmup": "1s",
        "timeseries": {"window": "1s"},
        "faults": [
            {
                "kind": "pod_crash",
                "start": "4s",
                "target": {"workload": workload},
                "restart_delay": "4s",
                "detection": "2s",
            }
        ],
    }


def test_retries_that_hide_a_fault_are_counted_apart_from_the_calls_they_could_not_save():
    # reviews-v1 crashes: the productpage sidecar's retries go to v2 and v3 (previous hosts
    # avoided), so the calls are saved and no end-to-end request fails.
    saved = run_experiment(spec_from_dict(_crash_spec("reviews-v1")))
    (fault,) = saved.faults or []
    assert (fault.start_s, fault.end_s) == (4.0, 8.0)  # a crash lasts until the restart
    assert fault.saved_by_retries > 0 and fault.failed_after_retries == 0
    assert fault.retries_made >= fault.saved_by_retries
    assert fault.requests_lost == 0
    # details has one pod: its retries cannot save anything until it leaves the endpoints.
    lost = run_experiment(spec_from_dict(_crash_spec("details")))
    (fault,) = lost.faults or []
    assert fault.failed_after_retries > 0 and fault.requests_lost > 0
