"""The HTML report of ``meshsim compare``: self-contained, four figures, every profile named."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from experiments.compare import Comparison, compare
from experiments.profiles import list_profiles
from experiments.report import cdf_points, write_report

MESHED = "istio-ambient" if "istio-ambient" in list_profiles() else None
PROFILES = ["none"] + ([MESHED] if MESHED else [])


@pytest.fixture(scope="module")
def comparison(tmp_path_factory: pytest.TempPathFactory) -> Comparison:
    out = tmp_path_factory.mktemp("report")
    return compare(
        topology="chain", rate_rps=50, profiles=PROFILES, duration_s=2, warmup_s=0.5, out_dir=out
    )


@pytest.fixture(scope="module")
def page(comparison: Comparison) -> str:
    assert comparison.report_path is not None
    return comparison.report_path.read_text(encoding="utf-8")


def test_compare_writes_the_report_next_to_the_json(comparison: Comparison):
    assert not comparison.failures
    assert comparison.report_path is not None and comparison.report_path.is_file()
    assert comparison.report_path.name == "report.html"
    assert comparison.json_path is not None
    assert comparison.report_path.parent == comparison.json_path.parent


def test_the_report_has_four_figures_and_names_every_profile(page: str):
    assert page.count('class="plotly-graph-div"') == 4
    for name in PROFILES:
        assert name in page
    assert "chain@50rps" in page
    assert "common random numbers" in page
    for heading in ("p50 ms", "p90 ms", "p99 ms", "+p90 ms", "CPU mCPU", "mesh MiB"):
        assert heading in page


def test_the_report_needs_no_network(page: str):
    # plotly.js is inline, exactly once; nothing is loaded from a URL. (The bundle itself
    # holds the string "https://cdn.plot.ly/un/", its default topojsonURL for geo maps,
    # which these figures never use; so check for loads, not for the bare string.)
    assert page.count("plotly.js v") >= 1
    assert len(re.findall(r"<script[^>]*>\s*/\*\*\s*\n?\s*\* plotly\.js v", page)) == 1
    assert not re.search(r"<script[^>]*\bsrc\s*=", page)
    assert not re.search(r"<link[^>]*\bhref\s*=\s*[\"']?(https?:)?//", page)
    assert 'src="https://cdn.plot.ly' not in page
    assert len(page.encode()) < 10 * 2**20


def test_failures_are_listed(comparison: Comparison, tmp_path: Path):
    broken = Comparison(
        results=dict(comparison.results), failures={"linkerd-x": "RuntimeError: <boom>"}
    )
    text = write_report(broken, tmp_path / "sub" / "r.html").read_text(encoding="utf-8")
    assert "linkerd-x" in text and "RuntimeError: &lt;boom&gt;" in text


def test_a_report_with_no_results_still_renders(tmp_path: Path):
    text = write_report(Comparison(results={}, failures={"none": "boom"}), tmp_path / "r.html")
    page = text.read_text(encoding="utf-8")
    assert "boom" in page and "plotly-graph-div" not in page


def test_the_cdf_is_monotone_and_matches_the_summary(comparison: Comparison):
    result = comparison.results["none"]
    xs, ys = cdf_points(result)
    assert len(xs) == len(ys) > 100
    assert all(a <= b for a, b in zip(xs, xs[1:], strict=False))
    assert all(a < b for a, b in zip(ys, ys[1:], strict=False))
    median = xs[min(range(len(ys)), key=lambda i: abs(ys[i] - 0.5))]
    assert median == pytest.approx(result.end_to_end.latency.p50_ms, rel=0.05)
