"""Specs generated from meshsim's own JSON Schema, then mutated: ``meshsim validate`` answers
every one with exit code 0 (valid) or 2 (a clear error), never a traceback.

The generator walks the schema (``meshsim schema``): objects with their required properties
and a random few of the others, arrays, enums, numbers at and past their bounds, strings from
their enums or plausible values (durations, sizes), ``anyOf``/``oneOf`` branches and
``$ref``s (cut off past a depth). Mutations then replace a random part with hostile values:
wrong types, NaN and infinities, huge and negative numbers, unknown keys, deep nesting, long
and odd strings.
"""

from __future__ import annotations

import json
import math
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from experiments.cli import app
from experiments.schema import experiment_schema

SCHEMA = experiment_schema()
DEFS = SCHEMA.get("$defs", {})
MAX_DEPTH = 9

HOSTILE = st.sampled_from(
    [
        None,
        True,
        -1,
        0,
        2**64,
        -(2**63),
        1e308,
        -1e-308,
        float("nan"),
        float("inf"),
        "",
        "nan",
        "inf",
        "-5s",
        "1e400",
        "9" * 400,
        "x" * 10_000,
        "\x00",
        "é🙂",
        [],
        [[[[[[[[]]]]]]]],
        {},
        {"unknown": 1},
        {"profile": "istio-1.8", "overrides": {"proxy": {"concurrency": 10**9}}},
    ]
)

STRINGS = st.sampled_from(
    [
        "25s",
        "1m30s",
        "500us",
        "10ms",
        "16Gi",
        "1KiB",
        "500M",
        "200",
        "istio-1.8",
        "maesh",
        "bookinfo",
        "chain",
        "node-0",
        "a",
    ]
)


def _number(schema: dict[str, Any], integer: bool) -> st.SearchStrategy[Any]:
    """Mostly within the schema's bounds, sometimes at or just past one."""
    low = schema.get("minimum", schema.get("exclusiveMinimum"))
    high = schema.get("maximum", schema.get("exclusiveMaximum"))
    low = 0 if low is None else low
    high = low + 1000 if high is None else min(high, low + 10**6)
    if integer:
        inside: st.SearchStrategy[Any] = st.integers(
            math.ceil(low) + 1, max(math.ceil(low) + 1, int(high) - 1)
        )
    else:
        inside = st.floats(low, high, allow_nan=False, exclude_min=True, exclude_max=True)
    edges = st.sampled_from([low - 1, low, high, high + 1])
    return st.one_of(inside, inside, inside, edges)


def from_schema(schema: Any, depth: int = 0) -> st.SearchStrategy[Any]:
    """A strategy for values the (sub)schema describes, most of them valid."""
    if not isinstance(schema, dict) or depth > MAX_DEPTH:
        return HOSTILE
    if "$ref" in schema:
        name = schema["$ref"].split("/")[-1]
        return st.deferred(lambda: from_schema(DEFS.get(name, {}), depth + 1))
    if "const" in schema:
        return st.just(schema["const"])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return st.one_of([from_schema(s, depth + 1) for s in schema[key]])
    if "allOf" in schema and schema["allOf"]:
        return from_schema(schema["allOf"][0], depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        return st.one_of([from_schema({**schema, "type": k}, depth) for k in kind])
    if kind == "object" or "properties" in schema:
        properties = schema.get("properties", {})
        # A discriminator ("kind") is always given, as a user gives it.
        required = [k for k in properties if k in schema.get("required", []) or k == "kind"]
        optional = [k for k in properties if k not in required]
        if depth >= MAX_DEPTH:
            optional = []

        @st.composite
        def objects(draw: Any) -> dict[str, Any]:
            chosen = (
                required + draw(st.lists(st.sampled_from(optional), max_size=4, unique=True))
                if optional
                else list(required)
            )
            return {k: draw(from_schema(properties[k], depth + 1)) for k in chosen}

        extra = schema.get("additionalProperties")
        if not properties and isinstance(extra, dict):
            return st.dictionaries(STRINGS, from_schema(extra, depth + 1), max_size=3)
        return objects()
    if kind == "array":
        items = schema.get("items", {})
        return st.lists(from_schema(items, depth + 1), max_size=3)
    if kind == "integer":
        return _number(schema, integer=True)
    if kind == "number":
        return _number(schema, integer=False)
    if kind == "boolean":
        return st.booleans()
    if kind == "string":
        return STRINGS
    if kind == "null":
        return st.none()
    return HOSTILE


def mutate(value: Any, draw: Any) -> Any:
    """``value`` with one random part replaced by a hostile value (or left alone)."""
    if isinstance(value, dict) and value and draw(st.booleans()):
        key = draw(st.sampled_from(sorted(value, key=str)))
        return {**value, key: mutate(value[key], draw)}
    if isinstance(value, list) and value and draw(st.booleans()):
        i = draw(st.integers(0, len(value) - 1))
        return [*value[:i], mutate(value[i], draw), *value[i + 1 :]]
    return draw(HOSTILE)


SPECS = from_schema(SCHEMA)


@st.composite
def specs(draw: Any) -> Any:
    spec = draw(SPECS)
    if draw(st.booleans()):
        spec = mutate(spec, draw)
    return spec


def _yaml(spec: Any) -> str:
    # NaN and infinities as YAML writes them (.nan, .inf): hostile input, on purpose.
    return yaml.safe_dump(spec, allow_unicode=True, sort_keys=False)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)
@given(spec=specs())
def test_validate_answers_every_generated_spec_with_0_or_2(
    tmp_path_factory: Any, spec: Any
) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "spec.yaml"
    path.write_text(_yaml(spec), encoding="utf-8")
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code in (0, 2), (result.output, json.dumps(spec, default=str)[:2000])
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    if result.exit_code == 2:
        assert result.output.startswith("error: ")
        assert "Traceback" not in result.output


def test_the_generator_makes_valid_specs_too() -> None:
    """The property above is worth little if every generated spec is refused at its first
    field: some must be valid."""
    valid = 0

    @settings(
        max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(spec=SPECS)
    def count(spec: Any) -> None:
        nonlocal valid
        from experiments.spec import SpecError, spec_from_dict

        try:
            spec_from_dict(spec)
        except SpecError:
            return
        valid += 1

    count()
    assert valid > 0
    assert math.isfinite(valid)
