"""Tests of sim.yamlsafe: YAML read safely, refused with a line and column when it is not.

Every test runs twice: with libyaml's parser (the default where PyYAML has it) and with
PyYAML's own, pure Python one; the guards are the same code over either.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sim.yamlsafe
from sim.yamlsafe import (
    MAX_FILE_BYTES,
    YamlInputError,
    decode_text,
    parse_yaml,
    read_yaml_file,
)


@pytest.fixture(autouse=True, params=["libyaml", "python"])
def parser(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "libyaml" and sim.yamlsafe._CParser is None:
        pytest.skip("PyYAML without libyaml")
    monkeypatch.setattr(sim.yamlsafe, "USE_LIBYAML", request.param == "libyaml")
    return str(request.param)


def refused(text: str, **bounds: int) -> YamlInputError:
    with pytest.raises(YamlInputError) as info:
        parse_yaml(text, **bounds)
    return info.value


def test_plain_yaml_reads_as_safe_load_does():
    text = "a: 1\nb: [x, 2.5, true, null]\nc: {d: '3', e: 25ms}\n"
    assert parse_yaml(text).data == yaml.safe_load(text)


def test_marks_give_the_line_and_column_of_each_key_and_item():
    text = "name: x\nfaults:\n  - kind: a\n    start: 5s\n  - {kind: b}\n"
    marks = parse_yaml(text).marks
    assert marks[("name",)] == (1, 1)
    assert marks[("faults",)] == (2, 1)
    assert marks[("faults", "0")] == (3, 5)
    assert marks[("faults", "0", "start")] == (4, 5)
    assert marks[("faults", "1", "kind")] == (5, 6)


def test_nothing_is_none():
    assert parse_yaml("").data is None
    assert parse_yaml("# a comment\n").data is None


@pytest.mark.parametrize("depth", [64, 65])
def test_the_depth_bound_is_exact(depth):
    text = "[" * depth + "]" * depth
    if depth <= 64:
        assert parse_yaml(text).data is not None
    else:
        error = refused(text)
        assert (error.line, error.column) == (1, 65)


@pytest.mark.parametrize(
    "text",
    [
        "[" * 10_000,
        "{a: " * 10_000,
        "a:\n  b: " + "[" * 10_000,
        "- " * 10_000,
        "a: '" + "[" * 10_000 + "'\n" + "[" * 10_000,
    ],
)
def test_nesting_10000_deep_is_refused_whatever_its_form(text):
    assert "nested more than 64 levels deep" in str(refused(text))


def test_brackets_in_a_string_are_not_nesting():
    assert parse_yaml("a: '" + "[" * 10_000 + "'\n").data == {"a": "[" * 10_000}


def test_a_block_nested_too_deep():
    text = "".join(" " * i + "-\n" for i in range(100))
    error = refused(text, max_depth=10)
    assert "nested more than 10 levels deep" in str(error)
    assert error.line == 11


def test_aliases_are_counted_expanded():
    base = "a: &a [1, 2, 3]\n"  # 4 nodes
    assert parse_yaml(base + "b: [*a, *a]\n", max_alias_nodes=8).data["b"] == [[1, 2, 3]] * 2
    error = refused(base + "b: [*a, *a, *a]\n", max_alias_nodes=8)
    assert "aliases expand to more than 8 nodes" in str(error)
    assert (error.line, error.column) == (2, 13)


def test_an_alias_bomb_is_refused_early():
    text = "l0: &l0 [a, a, a, a, a, a, a, a, a]\n" + "".join(
        f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]\n" for i in range(1, 30)
    )
    assert refused(text).line == 6


def test_aliases_are_copied_not_shared():
    data = parse_yaml("a: &a {x: [1]}\nb: *a\n").data
    assert data["a"] == data["b"]
    assert data["a"] is not data["b"]
    assert data["a"]["x"] is not data["b"]["x"]


def test_a_merge_key_brings_keys_and_the_mapping_overrides_them():
    data = parse_yaml("base: &b {x: 1, y: 2}\nc: {<<: *b, x: 3}\n").data
    assert data["c"] == {"x": 3, "y": 2}


@pytest.mark.parametrize(
    ("text", "key", "line"),
    [
        ("a: 1\nb: 2\na: 3\n", "'a'", 3),
        ("x:\n  y: 1\n  y: 2\n", "'y'", 3),
        ("{1: a, 0x1: b}", "1", 1),  # the same integer, written twice
    ],
)
def test_a_duplicate_key(text, key, line):
    error = refused(text)
    assert f"duplicate key {key}" in str(error)
    assert error.line == line


@pytest.mark.parametrize(
    "text",
    [
        "a: !!python/object:os.system x",
        "a: !!python/name:os.system",
        "a: !foo x",
        "a: !!binary aGk=",
        "a: !!set {x}",
        "a: !!timestamp 2001-01-01",
        "a: !<tag:example.com,2024:x> 1",
    ],
)
def test_a_tag_is_refused_by_name(text):
    error = refused(text)
    assert "is not allowed" in str(error)
    assert (error.line, error.column) == (1, 4)


def test_plain_data_tags_are_fine():
    assert parse_yaml("a: !!str 123\nb: !!float 1\nc: !!int '7'\n").data == {
        "a": "123",
        "b": 1.0,
        "c": 7,
    }


@pytest.mark.parametrize(
    ("text", "where"),
    [("a: !!int abc\n", (1, 4)), ("a: 1\nb: " + "9" * 5000 + "\n", (2, 4))],
)
def test_a_scalar_its_type_cannot_read(text, where):
    error = refused(text)
    assert "cannot read" in str(error)
    assert (error.line, error.column) == where


def test_dates_stay_strings():
    assert parse_yaml("d: 2024-01-01\n").data == {"d": "2024-01-01"}


def test_a_recursive_alias():
    assert "recursive alias" in str(refused("a: &a [1, *a]\n"))


def test_two_documents():
    assert "single document" in str(refused("a: 1\n---\nb: 2\n"))


@pytest.mark.parametrize(
    ("raw", "words", "where"),
    [
        (b"a: 1\nb: \x00\n", "binary file", (2, 4)),
        ("a: é\n".encode("latin-1"), "byte 0xe9 is not UTF-8", (1, 4)),
        ("ab: é\n".encode("cp1252") + b"\x80", "byte 0xe9", (1, 5)),
        ("a: 1".encode("utf-16"), "UTF-16 byte-order mark", (None, None)),
        ("a: 1".encode("utf-32"), "UTF-32 byte-order mark", (None, None)),
        ("a: 1".encode("utf-16-be"), "UTF-16 text?", (1, 1)),
    ],
)
def test_bytes_that_are_not_utf8(raw, words, where):
    with pytest.raises(YamlInputError) as info:
        decode_text(raw)
    assert words in str(info.value)
    assert (info.value.line, info.value.column) == where


def test_a_utf8_byte_order_mark_is_dropped():
    assert decode_text(b"\xef\xbb\xbfa: 1\n") == "a: 1\n"


def test_read_yaml_file_refuses_what_is_not_a_text_file(tmp_path: Path):
    cases = {
        tmp_path / "absent.yaml": "not found",
        tmp_path: "it is a directory",
        Path("/dev/null"): "it is not a regular file",
    }
    big = tmp_path / "big.yaml"
    with big.open("wb") as handle:  # sparse: no disk used
        handle.truncate(MAX_FILE_BYTES + 1)
    cases[big] = f"more than the {MAX_FILE_BYTES:,} a spec may"
    for path, words in cases.items():
        with pytest.raises(YamlInputError, match="cannot read the file") as info:
            read_yaml_file(path)
        assert words in str(info.value)


def test_read_yaml_file(tmp_path: Path):
    path = tmp_path / "a.yaml"
    path.write_text("a: [1, 2]\n", encoding="utf-8")
    assert read_yaml_file(path).data == {"a": [1, 2]}


# Whatever the bytes, the loader answers with data or with a YamlInputError: never another
# exception, never a hang. Text made of YAML's own punctuation reaches the parser's corners.
YAML_CHARS = st.sampled_from(
    [*"[]{}:,-?!&*|>'\"#%@` \n\tab01.\\<=~", "!!", "<<", "---", "&a ", "*a", "<<: *a"]
    + ["!!int ", "!!float ", "!!bool ", "!!null ", "!!str ", "!!map ", "!!seq ", "!!merge "]
    + ["%YAML 1.1\n", "%TAG !e! tag:e,2000:\n", "!e!x ", "0x", "0o", "1_0", ".nan", "|-\n "]
)


@settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(raw=st.binary(max_size=200))
def test_any_bytes_give_data_or_a_clear_error(raw: bytes):
    try:
        parse_yaml(decode_text(raw))
    except YamlInputError as error:
        assert str(error)


@settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(text=st.lists(YAML_CHARS, max_size=80).map("".join))
def test_any_yaml_punctuation_gives_data_or_a_clear_error(text: str):
    try:
        parse_yaml(text, max_depth=8, max_alias_nodes=50)
    except YamlInputError as error:
        assert error.what in ("invalid YAML", "YAML refused", "not YAML text")


def test_random_files_give_data_or_a_clear_error(tmp_path: Path):
    path = tmp_path / "random.yaml"
    for seed in range(50):
        path.write_bytes(os.urandom(64) if seed % 2 else bytes(range(seed, seed + 64)))
        try:
            read_yaml_file(path)
        except YamlInputError as error:
            assert error.what in ("not UTF-8 text", "not YAML text", "invalid YAML")
