"""``meshsim schema`` is a valid JSON Schema (Draft 2020-12) that the shipped specs satisfy.

Checked with a real validator (``jsonschema``): the schema itself against the metaschema, every
shipped spec, every profile's mesh given inline, every catalog topology given inline, specs
as pydantic dumps them (results carry them), and what the schema must refuse, each with the
place it points at.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator
from typer.testing import CliRunner

from experiments.cli import app
from experiments.profiles import list_profiles, load_profile
from experiments.schema import experiment_schema
from experiments.spec import load_spec, spec_from_dict
from experiments.specs import shipped_specs
from sim.units import parse_bandwidth, parse_duration, parse_rate, parse_size
from topologies import CATALOG, get_topology

SPECS = shipped_specs()
SMALL_PARAMS: dict[str, dict[str, Any]] = {"mesh_scale": {"pods": 20}, "random_dag": {"n": 30}}


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    result = CliRunner().invoke(app, ["schema"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def validator(schema) -> Draft202012Validator:
    return Draft202012Validator(schema)


def errors(validator: Draft202012Validator, data: Any) -> list[str]:
    return [
        f"{'.'.join(map(str, e.absolute_path)) or '<spec>'}: {e.message}"
        for e in validator.iter_errors(data)
    ]


def spec(**fields: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "topology": "bookinfo",
        "workload": {"kind": "open_loop", "rate_rps": 9},
    }
    data.update(fields)
    return data


def test_the_schema_is_a_draft_2020_12_schema(schema):
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(schema)


def test_the_schema_has_no_pydantic_only_keywords(schema):
    text = json.dumps(schema)
    for keyword in ("gt", "ge", "lt", "le"):
        assert f'"{keyword}":' not in text


@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_every_shipped_spec_satisfies_the_schema(validator, path):
    assert errors(validator, yaml.safe_load(path.read_text(encoding="utf-8"))) == []


@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_a_shipped_spec_as_pydantic_dumps_it_satisfies_the_schema(validator, path):
    assert errors(validator, load_spec(path).model_dump(mode="json")) == []


@pytest.mark.parametrize("profile", list_profiles())
def test_every_profile_given_inline_satisfies_the_schema(validator, profile):
    data = spec(mesh=load_profile(profile).mesh)
    spec_from_dict(data)  # the validator takes it too
    assert errors(validator, data) == []


@pytest.mark.parametrize("name", sorted(CATALOG))
def test_every_catalog_topology_given_inline_satisfies_the_schema(validator, name):
    topology = get_topology(name, **SMALL_PARAMS.get(name, {})).model_dump(mode="json")
    assert errors(validator, spec(topology=topology)) == []


@pytest.mark.parametrize(
    "fields",
    [
        {"topology": {"catalog": "chain", "params": {"n": 4}}},
        {"topology": "topologies/bookinfo.yaml"},
        {"mesh": "istio-ambient"},
        {"mesh": {"profile": "istio-1.8", "overrides": {"proxy": {"concurrency": 4}}}},
        {"mesh": {"profile": "istio-1.8", "overrides": {"proxy": {"io_delay": {"mean": "1ms"}}}}},
        {"mesh": {"profile": "istio-1.4", "overrides": {"mixer": None, "scoping": "mesh"}}},
        {"mesh": {"profile": "istio-1.4", "overrides": {"mixer": {"fail_policy": "fail_open"}}}},
        {"mesh": {"architecture": "per_node", "proxy": {"concurrency": 2}}},
        {"duration": "1m", "warmup": "500ms"},
        {"duration": 12.5, "warmup": "0"},
        {"workload": {"kind": "closed_loop", "connections": 4, "qps": "100rps"}},
        {"workload": {"kind": "open_loop", "rate_rps": "50/s", "payload_bytes": "2KiB"}},
        {"sweep": {"grid": {"workload.rate_rps": [10, 20], "mesh": ["none", "maesh"]}}},
    ],
)
def test_what_a_spec_may_say_the_schema_accepts(validator, fields):
    data = spec(**fields)
    assert errors(validator, data) == []


def test_shorthand_steps_and_calls_are_accepted(validator):
    topology = {
        "cluster": {"nodes": [{"name": "node-0"}], "network": {"bandwidth": "1Gbps"}},
        "call_graph": {
            "entry": "a",
            "services": [
                {"name": "a", "service_time": "2ms", "steps": ["b", ["c", "d"]]},
                {"name": "b", "service_time": {"kind": "exponential", "mean": "1ms"}},
                {"name": "c", "steps": [{"calls": ["d", {"service": "b", "probability": 0.5}]}]},
                {"name": "d", "request_size_bytes": "1KiB", "response_size_bytes": 2048},
            ],
        },
    }
    data = spec(topology=topology)
    spec_from_dict(data)
    assert errors(validator, data) == []


@pytest.mark.parametrize(
    ("fields", "where", "message"),
    [
        ({"durationn": "3s"}, "<spec>", "'durationn' was unexpected"),
        ({"mesh": "istio-9"}, "mesh", "is not valid under any of the given schemas"),
        ({"topology": "no-such-topology"}, "topology", "is not valid under any"),
        ({"duration": "30 parsecs"}, "duration", "is not valid under any"),
        ({"duration": 0}, "duration", "is not valid under any"),
        ({"duration": -1}, "duration", "is not valid under any"),
        ({"workload": {"kind": "open_loop", "rate_rps": 0}}, "workload", "not valid under any"),
        ({"mesh": {"profile": "istio-1.8", "overrides": {"proxy": {"concurrenc": 4}}}}, "mesh", ""),
        ({"mesh": {"profile": "istio-1.8", "overrides": {"scoping": "galaxy"}}}, "mesh", ""),
        ({"replications": 0}, "replications", "less than the minimum of 1"),
    ],
)
def test_what_the_schema_refuses(validator, fields, where, message):
    found = errors(validator, spec(**fields))
    assert found, fields
    assert any(e.startswith(f"{where}:") and message in e for e in found), found


QUANTITIES = [
    (parse_duration, "duration", ["25ms", "1.5s", "2m", "1h", "250ns", "20us", "30", " 3 s", "+1s", ".5s", "1e3ms"],
     ["25 parsecs", "-1s", "1sec", "s", "", "nan", "inf", "1.2.3s", "1ms5"]),
    (parse_size, "size", ["1KiB", "16MiB", "1GB", "512B", "100", "2 KiB"],
     ["1 kilobyte", "-1KiB", "KiB", "1kib"]),
    (parse_bandwidth, "bandwidth", ["10Gbps", "1GB/s", "100MiB/s", "125000000"],
     ["10 gigabits", "-1Gbps", "Gbps"]),
    (parse_rate, "rate", ["1000rps", "50/s", "12.5"], ["1000 per second", "-5rps", "rps"]),
]  # fmt: skip


def pattern_of(schema: dict[str, Any], what: str) -> re.Pattern[str]:
    """The string pattern the schema gives a quantity (found by its description)."""
    found = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            text = str(node.get("description", ""))
            if node.get("type") == "string" and text.startswith(f"A {what} with a unit"):
                found.add(node["pattern"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    (pattern,) = found
    return re.compile(pattern)


@pytest.mark.parametrize(
    ("parse", "what", "good", "bad"), QUANTITIES, ids=[q[1] for q in QUANTITIES]
)
def test_the_schema_accepts_the_quantity_strings_the_parser_accepts(schema, parse, what, good, bad):
    # JSON Schema patterns are ECMA 262 regexes; these use nothing Python reads otherwise.
    pattern = pattern_of(schema, what)
    for text in good:
        parse(text)
        assert pattern.search(text), text
    for text in bad:
        with pytest.raises(ValueError):
            parse(text)
        if not text.lstrip().startswith("-"):  # a negative number is refused by the parser
            assert not pattern.search(text), text


def test_fields_carry_their_docstring_descriptions(schema):
    props = schema["properties"]
    assert props["warmup"]["description"].startswith('cut from all statistics (``"2s"``).\n\n')
    assert "A duration with a unit" in props["warmup"]["description"]
    workload = schema["$defs"]["OpenLoopSpec"]["properties"]["rate_rps"]
    assert workload["description"].startswith("mean arrival rate, requests per second.")


def test_profile_names_are_an_enum_an_editor_can_complete(schema):
    (by_name, *_) = schema["$defs"]["MeshRef"]["anyOf"]
    assert by_name["enum"] == list_profiles()


def test_the_experiment_schema_is_the_same_each_time():
    assert experiment_schema() == experiment_schema()
