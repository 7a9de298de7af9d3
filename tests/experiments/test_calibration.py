"""The built-in profiles reproduce the published figures (a short run of the calibration)."""

from __future__ import annotations

import pytest

from experiments.calibration import calibrate, format_calibration, loadtest_memory_mb

# Short runs: 10 simulated seconds are 10,000 requests per profile at 1000 rps.
DURATION_S = 10.0


@pytest.fixture(scope="module")
def calibration():
    return calibrate(
        [
            "istio-1.8",
            "istio-ambient",
            "istio-1.1",
            "istio-1.4",
            "istio-1.24",
            "istio-1.24-ambient",
        ],
        duration_s=DURATION_S,
    )


def rows_of(rows, profile):
    return {row.metric: row for row in rows if row.profile == profile}


def test_istio_1_8_within_15_percent_of_istios_published_figures(calibration):
    rows = rows_of(calibration[0], "istio-1.8")
    expected = {
        "added p90 (ms)": 2.65,
        "added p99 (ms)": 2.91,
        "sidecar vCPU per 1000 rps": 0.35,
        "memory per proxy, load-test mesh (MB)": 40.0,
    }
    for metric, published in expected.items():
        row = rows[metric]
        assert row.published == published
        assert row.simulated == pytest.approx(published, rel=0.15), format_calibration([row])


def test_istio_ambient_within_20_percent_of_istios_published_figures(calibration):
    rows = rows_of(calibration[0], "istio-ambient")
    expected = {"added p90 (ms)": 0.17, "added p99 (ms)": 0.20, "ztunnel vCPU per 1000 rps": 0.06}
    for metric, published in expected.items():
        row = rows[metric]
        assert row.published == published
        assert row.simulated == pytest.approx(published, rel=0.20), format_calibration([row])


def test_the_benchmark_runs_at_the_published_load(calibration):
    results = calibration[1]
    for name in ("none", "istio-1.8", "istio-ambient"):
        e2e = results[name].end_to_end
        assert e2e.throughput_rps == pytest.approx(1000.0, rel=0.01)
        assert e2e.error_rate == 0.0
    # Both sidecars of the path carry every request: the client's and the server's.
    sidecars = [p for p in results["istio-1.8"].proxies.values() if p.kind == "sidecar"]
    assert len(sidecars) == 2
    assert all(p.rps == pytest.approx(1000.0, rel=0.01) for p in sidecars)


def test_without_scoping_every_sidecar_holds_all_1000_services():
    scoped = loadtest_memory_mb("istio-1.8")
    unscoped = loadtest_memory_mb("istio-1.8", {"scoping": "mesh"})
    # 990 more clusters of 118 KB and 1980 more endpoints of 8 KB per sidecar.
    assert unscoped - scoped == pytest.approx((990 * 118e3 + 1980 * 8e3) / 1e6, rel=1e-6)


@pytest.mark.parametrize(
    ("profile", "expected"),
    [
        (
            "istio-1.1",
            {
                "added p90 (ms)": 8.0,
                "added p99 (ms)": 10.0,
                "sidecar vCPU per 1000 rps": 0.6,
                "Mixer telemetry vCPU per 1000 mesh rps": 0.6,
                "memory per proxy, load-test mesh (MB)": 50.0,
            },
        ),
        (
            "istio-1.4",
            {
                "added p90 (ms)": 6.3,
                "sidecar vCPU per 1000 rps": 0.5,
                "Mixer telemetry vCPU per 1000 mesh rps": 0.6,
                "memory per proxy, load-test mesh (MB)": 50.0,
            },
        ),
    ],
)
def test_mixer_era_profiles_within_15_percent(calibration, profile, expected):
    rows = rows_of(calibration[0], profile)
    for metric, published in expected.items():
        row = rows[metric]
        assert row.published == published
        assert row.simulated == pytest.approx(published, rel=0.15), format_calibration([row])


@pytest.mark.parametrize(
    ("profile", "expected"),
    [
        (
            "istio-1.24",
            {"sidecar vCPU per 1000 rps": 0.20, "sidecar memory in the benchmark (MB)": 60.0},
        ),
        (
            "istio-1.24-ambient",
            {
                "ztunnel vCPU per 1000 rps": 0.06,
                "waypoint vCPU per 1000 rps": 0.25,
                "ztunnel memory in the benchmark (MB)": 12.0,
                "waypoint memory in the benchmark (MB)": 60.0,
            },
        ),
    ],
)
def test_istio_1_24_within_tolerance_of_its_performance_page(calibration, profile, expected):
    rows = rows_of(calibration[0], profile)
    tolerance = {"istio-1.24": 0.15, "istio-1.24-ambient": 0.20}[profile]
    for metric, published in expected.items():
        row = rows[metric]
        assert row.published == published
        assert row.simulated == pytest.approx(published, rel=tolerance), format_calibration([row])
    # 1.24's page gives its latencies only as charts: the rows say so instead of a figure.
    assert rows["added p90 (ms)"].published is None
    assert rows["added p99 (ms)"].within is None
