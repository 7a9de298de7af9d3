"""Replications until a relative precision: more replications while a listed figure's 95 %
half-width is more than the target share of its mean, up to a cap the budget counts."""

from __future__ import annotations

import pytest

from experiments.budget import estimate_experiment
from experiments.runner import run_experiment
from experiments.spec import SpecError, spec_from_dict

SPEC = {
    "name": "precision",
    "topology": "bookinfo",
    "mesh": "none",
    "workload": {"kind": "open_loop", "rate_rps": 50},
    "duration": "2s",
    "warmup": "0.5s",
    "seed": 11,
}


def half_width_share(result, name: str) -> float:
    interval = getattr(result.intervals.end_to_end, name)
    return interval.half_width / abs(interval.mean)


def test_replications_stop_once_the_target_is_reached():
    spec = spec_from_dict(
        {**SPEC, "precision": {"relative": 0.05, "figures": ["mean_ms"], "max_replications": 40}}
    )
    result = run_experiment(spec)
    n = len(result.replications)
    assert 2 <= n < 40
    assert half_width_share(result, "mean_ms") <= 0.05
    # One replication fewer was not precise enough: the same seeds, cut one short.
    fewer = run_experiment(spec_from_dict({**SPEC, "replications": n - 1}))
    if n - 1 >= 2:
        assert half_width_share(fewer, "mean_ms") > 0.05
    # The replications are those of a plain run with as many (the same seeds, in order).
    plain = run_experiment(spec_from_dict({**SPEC, "replications": n}))
    assert result.replications == plain.replications
    assert not any(w.startswith("precision") for w in result.warnings)


def test_a_target_out_of_reach_stops_at_the_cap_and_says_so():
    spec = spec_from_dict(
        {**SPEC, "precision": {"relative": 0.0001, "figures": ["p99_ms"], "max_replications": 3}}
    )
    result = run_experiment(spec)
    assert len(result.replications) == 3
    assert result.warnings[0].startswith("precision: ±0.0% not reached after 3 replications")
    assert "p99_ms ±" in result.warnings[0]


def test_the_budget_counts_the_cap():
    plain = estimate_experiment(spec_from_dict(SPEC)).runs[0]
    capped = estimate_experiment(
        spec_from_dict({**SPEC, "precision": {"relative": 0.1, "max_replications": 25}})
    ).runs[0]
    assert capped.replications == 25
    assert capped.events == pytest.approx(plain.events * 25)


@pytest.mark.parametrize(
    ("precision", "message"),
    [
        ({"relative": 0}, "precision.relative"),
        ({"relative": 1.5}, "precision.relative"),
        ({"relative": 0.1, "figures": ["latency"]}, "precision.figures.0"),
        ({"relative": 0.1, "figures": []}, "precision.figures"),
        ({"relative": 0.1, "max_replications": 1}, "precision.max_replications"),
        ({"relative": 0.1, "max_replications": 10**6}, "precision.max_replications"),
    ],
)
def test_bad_precision_targets_name_the_field(precision, message):
    with pytest.raises(SpecError, match=message.replace(".", r"\.")):
        spec_from_dict({**SPEC, "precision": precision})


def test_the_cap_is_not_below_the_first_replications():
    with pytest.raises(SpecError, match="below replications"):
        spec_from_dict(
            {**SPEC, "replications": 5, "precision": {"relative": 0.1, "max_replications": 3}}
        )
