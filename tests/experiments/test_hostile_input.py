"""Hostile input through the command line: each ends in a clear error with exit code 2.

Every case here crashed with a traceback, ran away, or was silently misread before (issue
11, items 5 and 6): a spec file that is binary, Latin-1, UTF-16, empty, a directory or
missing; YAML nested 10,000 deep; an alias bomb; a key given twice; ``--set`` values that are
not YAML or carry tags; an ``--out`` that cannot be a directory; ``calibrate`` with a duration
of ``nan``; ``seed: true``. The error must name the field (and, for YAML, the line and
column), go to stderr, and leave no traceback. JSON output must parse with a strict parser.
"""

from __future__ import annotations

import json
import os
import random
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from experiments.cli import app
from experiments.spec import load_spec

runner = CliRunner()

SMALL = {
    "name": "small",
    "topology": {"catalog": "chain", "params": {"n": 2}},
    "workload": {"kind": "open_loop", "rate_rps": 100},
    "duration": "2s",
    "warmup": "0.5s",
    "seed": 4,
}

SMALL_YAML = yaml.safe_dump(SMALL, sort_keys=False)

# A billion laughs: nine lists, each of nine aliases of the one before (9**9 leaves).
ALIAS_BOMB = "lol0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"lol{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 10)
)


def invoke(*args: object) -> Any:
    return runner.invoke(app, [str(a) for a in args])


def user_error(result: Any) -> str:
    """Exit code 2, a message on stderr that says it is an error, and no traceback."""
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    assert "Traceback" not in result.output
    assert result.stderr.startswith("error: "), result.output
    assert result.stdout == ""
    return str(result.stderr)


def write_bytes(tmp_path: Path, data: bytes, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def write(tmp_path: Path, text: str, name: str = "spec.yaml") -> Path:
    return write_bytes(tmp_path, text.encode("utf-8"), name)


def strict_json(text: str) -> Any:
    """Parse JSON as strict parsers do: ``NaN`` and ``Infinity`` are not JSON."""

    def refuse(constant: str) -> None:
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


# -- Files that are not YAML text ------------------------------------------------------------

NOT_TEXT = {
    "nul": (b"name: x\nseed: \x00\x01\x02\n", ["binary", "line 2, column 7"]),
    "random": (random.Random(11).randbytes(400), ["not UTF-8 text", "line", "column"]),
    "latin-1": ("name: café\n".encode("latin-1"), ["not UTF-8", "line 1, column 10", "0xe9"]),
    "utf-16": ("name: x\nseed: 3\n".encode("utf-16"), ["UTF-16", "save the file as UTF-8"]),
    "utf-16-le": ("name: x\n".encode("utf-16-le"), ["UTF-16", "line 1, column 2"]),
    "control": (b"name: x\x07y\n", ["control character U+0007", "line 1, column 8"]),
}


@pytest.mark.parametrize("command", ["validate", "run"])
@pytest.mark.parametrize("case", sorted(NOT_TEXT))
def test_a_file_that_is_not_utf8_text(tmp_path, command, case):
    data, expected = NOT_TEXT[case]
    path = write_bytes(tmp_path, data)
    message = user_error(invoke(command, path))
    assert str(path) in message
    for words in expected:
        assert words in message


@pytest.mark.parametrize("command", ["validate", "run"])
@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n"])
def test_an_empty_file(tmp_path, command, text):
    message = user_error(invoke(command, write(tmp_path, text)))
    assert "holds no YAML document" in message
    assert "mapping of fields" in message


@pytest.mark.parametrize("command", ["validate", "run"])
def test_a_directory(tmp_path, command):
    message = user_error(invoke(command, tmp_path))
    assert f"{tmp_path}: cannot read the file: it is a directory" in message


@pytest.mark.parametrize("command", ["validate", "run"])
def test_a_missing_file(tmp_path, command):
    message = user_error(invoke(command, tmp_path / "absent.yaml"))
    assert "absent.yaml: cannot read the file: not found" in message


def test_a_device_is_not_read():
    # A device is never read: /dev/zero or /dev/urandom would never end. /dev/null is one
    # too, and harmless to read if this ever breaks.
    message = user_error(invoke("validate", "/dev/null"))
    assert "/dev/null: cannot read the file: it is not a regular file" in message


@pytest.mark.parametrize("text", ["- 1\n", "just words\n", "42\n"])
def test_a_document_that_is_not_a_mapping(tmp_path, text):
    message = user_error(invoke("validate", write(tmp_path, text)))
    assert "an experiment spec must be a mapping of fields" in message


# -- YAML that would crash or run away ---------------------------------------------------------

DEEP = {
    "flow list": "name: x\nseed: " + "[" * 10_000 + "]" * 10_000 + "\n",
    "flow map": "name: x\nseed: " + "{a: " * 10_000 + "1" + "}" * 10_000 + "\n",
    "block list": "name: x\nseed:\n" + "".join(" " * i + "-\n" for i in range(1, 200)),
}


@pytest.mark.parametrize("command", ["validate", "run"])
@pytest.mark.parametrize("case", sorted(DEEP))
def test_yaml_nested_10000_deep(tmp_path, command, case):
    message = user_error(invoke(command, write(tmp_path, DEEP[case])))
    assert "nested more than 64 levels deep" in message
    assert "line 2, column" in message or "line 66, column" in message


def test_an_alias_that_nests_deep_counts_as_deep(tmp_path):
    text = "name: &a " + "[" * 40 + "]" * 40 + "\nseed: " + "[" * 30 + "*a" + "]" * 30 + "\n"
    message = user_error(invoke("validate", write(tmp_path, text)))
    assert "alias *a nests the data more than 64 levels deep" in message
    assert "line 2, column 37" in message


@pytest.mark.parametrize("command", ["validate", "run"])
def test_an_alias_bomb(tmp_path, command):
    message = user_error(invoke(command, write(tmp_path, ALIAS_BOMB + SMALL_YAML)))
    assert "aliases expand to more than 100,000 nodes" in message
    # lol0 is 10 nodes, lol1 91, lol2 820, lol3 7,381, lol4 66,430: lol5's aliases overflow.
    assert "line 6, column" in message


def test_a_recursive_alias(tmp_path):
    message = user_error(invoke("validate", write(tmp_path, "name: &a [*a]\n")))
    assert "recursive alias" in message
    assert "line 1, column 11" in message


def test_aliases_of_a_few_thousand_nodes_are_fine(tmp_path):
    # Shared blocks, the reason anchors exist: one service time used by 300 services.
    services = ["  - {name: s0, service_time: &st {kind: exponential, mean: 1ms}}"] + [
        f"  - {{name: s{i}, service_time: *st}}" for i in range(1, 300)
    ]
    topology = (
        "cluster: {nodes: [{name: node-0}]}\ncall_graph:\n  entry: s0\n  services:\n"
        + "\n".join(services)
        + "\n"
    )
    write(tmp_path, topology, "topology.yaml")
    spec = {**SMALL, "topology": "topology.yaml"}
    result = invoke("validate", write(tmp_path, yaml.safe_dump(spec)))
    assert result.exit_code == 0, result.output
    assert "300 services" in result.output


@pytest.mark.parametrize("command", ["validate", "run"])
def test_a_key_given_twice(tmp_path, command):
    message = user_error(invoke(command, write(tmp_path, SMALL_YAML + "seed: 5\n")))
    assert "duplicate key 'seed'" in message
    assert "line 12, column 1" in message
    assert "first at line 11, column 1" in message


def test_a_key_given_twice_inside_a_field(tmp_path):
    text = SMALL_YAML.replace("rate_rps: 100", "rate_rps: 100\n  rate_rps: 200")
    message = user_error(invoke("validate", write(tmp_path, text)))
    assert "duplicate key 'rate_rps'" in message


def test_a_merge_key_may_bring_a_key_back(tmp_path):
    # ``<<: *base`` then the key again is how YAML overrides a shared block: not a duplicate.
    text = SMALL_YAML.replace(
        "workload:\n  kind: open_loop\n  rate_rps: 100\n",
        "workload:\n  <<: {kind: open_loop, rate_rps: 10}\n  rate_rps: 100\n",
    )
    assert "<<" in text
    assert load_spec(write(tmp_path, text)).workload.rate_rps == 100


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("!!python/object/apply:os.system [echo hi]", "!!python/object/apply:os.system"),
        ("!foo 3", "!foo"),
        ("!!binary aGk=", "!!binary"),
    ],
)
def test_a_tag_in_the_file(tmp_path, value, shown):
    message = user_error(invoke("validate", write(tmp_path, f"{SMALL_YAML}trace_every: {value}\n")))
    assert f"tag {shown} is not allowed" in message
    assert "line 12, column 14" in message


def test_invalid_yaml_gives_line_and_column(tmp_path):
    message = user_error(invoke("validate", write(tmp_path, "name: x\nworkload: {kind: [\n")))
    assert "invalid YAML at line 3, column 1" in message


def test_a_topology_file_gets_the_same_care(tmp_path):
    write(tmp_path, "cluster: " + "[" * 10_000 + "\n", "topology.yaml")
    spec = {**SMALL, "topology": "topology.yaml"}
    message = user_error(invoke("validate", write(tmp_path, yaml.safe_dump(spec))))
    assert "topology" in message
    assert re.search(
        r"topology.yaml: YAML refused at line 1, column \d+: nested more than 64", message
    )


def test_a_topology_file_in_latin1(tmp_path):
    write_bytes(tmp_path, "name: café\n".encode("latin-1"), "topology.yaml")
    spec = {**SMALL, "topology": "topology.yaml"}
    message = user_error(invoke("validate", write(tmp_path, yaml.safe_dump(spec))))
    assert "topology.yaml: not UTF-8 text at line 1, column 10" in message


# -- Errors name the field and its line --------------------------------------------------------


def test_a_field_error_gives_the_line_of_the_field(tmp_path):
    text = SMALL_YAML.replace("rate_rps: 100", "rate_rps: -5")
    message = user_error(invoke("validate", write(tmp_path, text)))
    line = 1 + text.splitlines().index("  rate_rps: -5")
    assert f"workload.rate_rps: rate must be >= 0, got -5 (line {line}, column 3)" in message


def test_a_field_set_on_the_command_line_says_so(tmp_path):
    message = user_error(
        invoke("validate", write(tmp_path, SMALL_YAML), "--set", "workload.rate_rps=-5")
    )
    assert "workload.rate_rps: rate must be >= 0, got -5 (set by --set)" in message


@pytest.mark.parametrize(
    "value", ["true", "false", "yes", "1.5", "'3'", "-1", str(2**63), "[1]", "null"]
)
def test_a_seed_that_is_not_an_integer_in_range(tmp_path, value):
    text = SMALL_YAML.replace("seed: 4", f"seed: {value}")
    message = user_error(invoke("validate", write(tmp_path, text)))
    assert "seed: must be an integer from 0 to 2**63 - 1" in message
    assert "(line 11, column 1)" in message


def test_the_largest_seed_is_accepted(tmp_path):
    text = SMALL_YAML.replace("seed: 4", f"seed: {2**63 - 1}")
    assert load_spec(write(tmp_path, text)).seed == 2**63 - 1


# -- Go and Kubernetes quantities in a spec ----------------------------------------------------


def test_go_durations_and_kubernetes_sizes_in_a_spec(tmp_path):
    text = (
        SMALL_YAML.replace("duration: 2s", "duration: 1m30s")
        .replace("warmup: 0.5s", "warmup: 1m500ms")
        .replace("rate_rps: 100", "rate_rps: 100\n  payload_bytes: 16Ki")
    )
    spec = load_spec(write(tmp_path, text))
    assert spec.duration == 90.0
    assert spec.warmup == 60.5
    assert spec.workload.payload_bytes == 16 * 1024
    spec = load_spec(write(tmp_path, text), overrides=["workload.payload_bytes=500M"])
    assert spec.workload.payload_bytes == 500 * 10**6


# -- --set ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["validate", "run"])
@pytest.mark.parametrize(
    ("assignment", "expected"),
    [
        ("workload.rate_rps=[1, 2", "not plain YAML (invalid YAML): while parsing a flow"),
        ("workload.rate_rps=[1, 2]]", "not plain YAML (invalid YAML at column 7)"),
        ("workload.rate_rps={a: 1", "invalid YAML"),
        ("workload.rate_rps=a: b: c", "(invalid YAML at column 5): mapping values are not"),
        ("workload.rate_rps=!!python/object/apply:os.system [ls]", "tag !!python/object"),
        ("workload.rate_rps=!foo 3", "tag !foo is not allowed"),
        ("workload.rate_rps=" + "[" * 5000, "nested more than 64 levels deep"),
        ("workload.rate_rps=&a [*a]", "recursive alias"),
        ("workload.rate_rps=x\x01", "control character U+0001"),
        ("seed=true", "seed: must be an integer"),
        ("workload.rate_rps=nan", "rate must be finite"),
        ("=5", "empty path"),
        ("seed", "must look like path.to.field=value"),
        ("a" + ".a" * 100 + "=1", "a path of 101 keys, more than 64"),
    ],
)
def test_a_bad_set_value(tmp_path, command, assignment, expected):
    message = user_error(invoke(command, write(tmp_path, SMALL_YAML), "--set", assignment))
    assert expected in message
    if "=" in assignment and not assignment.startswith("="):
        path = assignment.partition("=")[0]
        assert path[:60] in message


# -- --out ---------------------------------------------------------------------------------------


def test_out_that_is_a_file(tmp_path):
    target = write(tmp_path, "x", "report")
    message = user_error(invoke("compare", "--topology", "chain", "--out", target))
    assert f"--out {target}: is a file, not a directory" in message


def test_out_under_a_file(tmp_path):
    target = write(tmp_path, "x", "report") / "deeper" / "still"
    message = user_error(invoke("compare", "--topology", "chain", "--out", target))
    assert "is a file, so no directory can be made under it" in message


def _unwritable_dir(tmp_path: Path) -> Path:
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        return locked / "report"
    # Root writes anywhere that permissions guard; a kernel file system refuses even root.
    if not Path("/sys").is_dir():
        pytest.skip("no directory here that root cannot write in")
    return Path("/sys/meshsim-report")


def test_out_that_is_not_writable(tmp_path):
    target = _unwritable_dir(tmp_path)
    message = user_error(invoke("compare", "--topology", "chain", "--out", target))
    assert f"--out {target}: cannot write there" in message


# -- Numbers on the command line -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--duration", "nan"], "--duration: duration must be finite, got 'nan'"),
        (["--duration", "inf"], "--duration: duration must be finite, got 'inf'"),
        (["--duration", "-1"], "--duration: duration must be >= 0, got '-1'"),
        (["--duration", "0"], "--duration must be > 0"),
        (["--duration", "1e400"], "--duration: duration must be finite"),
        (["--duration", "3 days"], "--duration: unknown duration unit"),
        (["--seed", "-1"], "--seed must be an integer from 0 to 2**63 - 1, got -1"),
        (["--seed", str(2**64)], "--seed must be an integer from 0 to 2**63 - 1"),
    ],
)
@pytest.mark.parametrize("command", ["calibrate", "compare"])
def test_a_bad_number_on_the_command_line(tmp_path, command, args, expected):
    extra = ["--out", tmp_path / "out"] if command == "compare" else []
    assert expected in user_error(invoke(command, *args, *extra))


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--rps", "nan"], "--rps: rate must be finite"),
        (["--rps", "0"], "--rps must be > 0"),
        (["--warmup", "nan"], "--warmup: duration must be finite"),
        (["--warmup", "5s", "--duration", "5s"], "--warmup (5s) must be shorter"),
        (["--nodes", "0"], "--nodes must be >= 1"),
        (["--topology", "nope"], "unknown topology 'nope'"),
    ],
)
def test_a_bad_compare_option(tmp_path, args, expected):
    assert expected in user_error(invoke("compare", *args, "--out", tmp_path / "out"))


def test_an_unknown_calibration_profile():
    assert "unknown profile(s) nope" in user_error(invoke("calibrate", "-p", "nope"))


# -- JSON a strict parser reads ------------------------------------------------------------------

# One request every 100 s, measured for a second: nothing is measured, so no latency exists.
NOTHING_MEASURED = {
    **SMALL,
    "workload": {"kind": "open_loop", "rate_rps": 0.01},
    "duration": "1s",
    "warmup": "0.5s",
}


def test_run_json_when_nothing_was_measured(tmp_path):
    result = invoke("run", write(tmp_path, yaml.safe_dump(NOTHING_MEASURED)), "--json")
    assert result.exit_code == 0, result.output
    data = strict_json(result.stdout)
    assert data["end_to_end"]["requests"] == 0
    assert data["end_to_end"]["latency"]["mean_ms"] is None
    assert data["end_to_end"]["latency"]["p99_ms"] is None


def test_sweep_json_when_a_point_measured_nothing(tmp_path):
    spec = {**NOTHING_MEASURED, "sweep": {"grid": {"workload.rate_rps": [0.01, 200]}}}
    result = invoke("run", write(tmp_path, yaml.safe_dump(spec)), "--json")
    assert result.exit_code == 0, result.output
    points = strict_json(result.stdout)
    assert [p["result"]["end_to_end"]["latency"]["mean_ms"] is None for p in points] == [
        True,
        False,
    ]


def test_compare_json_and_comparison_json_when_nothing_was_measured(tmp_path):
    out = tmp_path / "out"
    result = invoke(
        "compare",
        *["--topology", "chain", "--rps", "0.01", "--duration", "1s", "--warmup", "0.5s"],
        *["-p", "none", "--json", "--out", out],
    )
    assert result.exit_code == 0, result.output
    printed = strict_json(result.stdout)
    written = strict_json((out / "comparison.json").read_text(encoding="utf-8"))
    for data in (printed, written):
        assert data["none"]["end_to_end"]["requests"] == 0
        assert data["none"]["end_to_end"]["latency"]["p50_ms"] is None


def test_calibrate_with_a_huge_duration_is_refused_before_it_runs():
    result = runner.invoke(app, ["calibrate", "--duration", "1e7s", "-p", "istio-1.8"])
    assert result.exit_code == 2
    assert "too large to run" in result.output and "--budget-events" in result.output


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("topology.cluster.nodes.0.cores", True, "cores must be a number of cores"),
        ("workload.jitter", "yes", "workload.jitter: Input should be a valid boolean"),
        ("workload.keepalive", 1, "workload.keepalive: Input should be a valid boolean"),
    ],
)
def test_yaml_truths_and_strings_are_not_numbers_or_flags(tmp_path, path, value, message):
    data = {
        "name": "t",
        "topology": {
            "cluster": {"nodes": [{"name": "node-0"}]},
            "call_graph": {"services": [{"name": "a"}], "entry": "a"},
        },
        "workload": {"kind": "closed_loop", "connections": 2, "qps": 10},
    }
    keys = path.split(".")
    node: Any = data
    for key in keys[:-1]:
        node = node[int(key)] if key.isdigit() else node[key]
    node[keys[-1]] = value
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(data), encoding="utf-8")
    result = runner.invoke(app, ["validate", str(spec)])
    assert result.exit_code == 2 and message in result.output


def test_quantities_take_ascii_digits_only():
    from sim.units import parse_cpu, parse_duration

    assert parse_cpu("500m") == 0.5
    for text in ("５００m", "٥٠٠m"):
        with pytest.raises(ValueError, match="cannot parse cpu"):
            parse_cpu(text)
    with pytest.raises(ValueError, match="cannot parse duration"):
        parse_duration("１s")
