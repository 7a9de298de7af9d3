"""A result re-runs to the same numbers: ``meshsim run --from result.json`` runs the
effective spec it holds (topology and mesh written out in full)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

import experiments.spec as spec_module
from experiments.cli import app
from experiments.profiles import resolve_mesh

SPEC = """
name: rerun
topology: bookinfo
mesh: {profile: istio-1.8, overrides: {proxy: {concurrency: 1}}}
workload: {kind: open_loop, rate_rps: 40}
duration: 2s
warmup: 0.5s
seed: 7
"""


def numbers(result: dict) -> dict:
    """What a re-run must reproduce: everything but the wall time and how the spec was
    written."""
    return {k: v for k, v in result.items() if k not in ("wall_time_s", "spec", "intervals")}


@pytest.fixture
def first(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC, encoding="utf-8")
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["run", str(spec), "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out / "result.json"


def test_a_result_re_runs_to_the_same_numbers(first):
    again = CliRunner().invoke(app, ["run", "--from", str(first), "--json"])
    assert again.exit_code == 0, again.output
    before = json.loads(first.read_text(encoding="utf-8"))
    after = json.loads(again.stdout)
    assert numbers(after) == numbers(before)
    assert after["effective_spec"]["mesh"]["inline"]["proxy"]["concurrency"] == 1
    assert after["effective_spec"]["topology"]["inline"]["name"] == "bookinfo"


def test_a_changed_profile_does_not_change_a_re_run(first, monkeypatch):
    """After the profile changes (here: istio-1.8's sidecars get 4 workers), the spec by name
    gives other numbers, and the result's effective spec the same ones."""

    def changed(profile, overrides=None):
        mesh = resolve_mesh(profile, overrides)
        return mesh.model_copy(update={"proxy": mesh.proxy.model_copy(update={"concurrency": 4})})

    monkeypatch.setattr(spec_module, "resolve_mesh", changed)
    before = json.loads(first.read_text(encoding="utf-8"))
    again = CliRunner().invoke(app, ["run", "--from", str(first), "--json"])
    assert numbers(json.loads(again.stdout)) == numbers(before)
    spec = first.parent.parent / "spec.yaml"
    by_name = CliRunner().invoke(app, ["run", str(spec), "--json"])
    assert json.loads(by_name.stdout)["end_to_end"] != before["end_to_end"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such file"),
        ("not json", "not a result file (JSON)"),
        ("[1, 2]", "not a result file (no 'spec')"),
        ('{"spec": {"name": "x", "workload": {"kind": "nope"}}}', "workload"),
    ],
)
def test_from_refuses_what_is_not_a_result(tmp_path, content, message):
    path = tmp_path / "result.json"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    result = CliRunner().invoke(app, ["run", "--from", str(path)])
    assert result.exit_code == 2
    assert message in result.output


def test_run_takes_a_spec_or_a_result_not_both(first):
    result = CliRunner().invoke(app, ["run", str(first), "--from", str(first)])
    assert result.exit_code == 2 and "one of them" in result.output
    result = CliRunner().invoke(app, ["run"])
    assert result.exit_code == 2 and "one of them" in result.output
