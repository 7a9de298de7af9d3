"""The JSON Schema of an experiment spec (Draft 2020-12), for editors and validators.

pydantic's own schema describes the validated models, not what a spec file may say: it has
``'30s' is not of type 'number'`` for a duration, ``'bookinfo' is not of type 'object'`` for
the shorthands, ``gt``/``ge`` where JSON Schema has ``exclusiveMinimum``/``minimum``, and a
mesh's ``overrides`` as any mapping. :class:`SpecJsonSchema` generates it from the same models
and fixes each of those:

* quantities (:data:`sim.units.Duration`, ``Size``, ``Bandwidth``, ``Rate``) are a number in
  the base unit or a string with one of the units their parser accepts (``"25ms"``,
  ``"1KiB"``, ``"10Gbps"``, ``"1000rps"``); a distribution may be a constant written as one;
* the shorthands of :class:`~experiments.spec.TopologyRef` (a catalog name, a ``.yaml`` file,
  an inline topology), :class:`~experiments.spec.MeshRef` (a profile name, a mesh given in
  full), :class:`~topologies.CallSpec` (a service name) and :class:`~topologies.StepSpec` (a
  service name, or a list of calls made in parallel);
* the profile and catalog names are enums, so an editor completes them; ``mesh.overrides`` is
  described by the architectures' own specs with no field required (overrides are merged into
  the profile's mesh: mappings merge, lists and values replace);
* pydantic's ``gt``/``ge``/``lt``/``le`` become JSON Schema's keywords, on the number branch
  of a quantity;
* every field gets the description its model's docstring gives it (``Attributes:``).
"""

from __future__ import annotations

import copy
import inspect
import re
from typing import Any, get_args

from pydantic import BeforeValidator, TypeAdapter
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaMode, JsonSchemaValue
from pydantic_core import CoreSchema, core_schema

from experiments.profiles import list_profiles
from experiments.spec import ExperimentSpec, MeshRef, TopologyRef
from models.architectures import MeshSpec
from models.proxy import IoDirectionSpec, IoField, IoPart
from sim import units
from sim.distributions import DistributionSpec
from topologies import CATALOG, CallSpec, StepSpec, TopologySpec
from topologies.callgraph import NAME_PATTERN

__all__ = ["SpecJsonSchema", "experiment_schema"]

DIALECT = "https://json-schema.org/draft/2020-12/schema"

_NUMBER = r"(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?"


def _alternatives(names: Any) -> str:
    """A regex alternation of unit names, longest first (so ``ms`` is tried before ``m``)."""
    return "|".join(re.escape(name) for name in sorted(names, key=len, reverse=True) if name)


def _quantity(base: str, pattern: str, description: str, examples: list[Any]) -> JsonSchemaValue:
    return {
        "anyOf": [
            {"type": "number", "minimum": 0, "description": f"In {base}."},
            {"type": "string", "pattern": pattern, "description": description},
        ],
        "description": description,
        "examples": examples,
    }


def _quantities() -> dict[Any, JsonSchemaValue]:
    """The schema of each quantity type, keyed by its parsing function.

    The accepted units are read from :mod:`sim.units`, where the parsers take them from, so
    the schema accepts what the parsers accept.
    """
    duration_units = _alternatives(units.DURATION_UNITS)
    one = rf"\+?{_NUMBER}\s*(?:{duration_units})?"
    # Go's and Kubernetes' way: parts of a number and a unit, one after another ("1m30s").
    parts = rf"(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:{duration_units}))+"
    size_units = _alternatives(units.SIZE_UNITS)
    bandwidth_units = _alternatives(units.BANDWIDTH_UNITS)
    rate_units = _alternatives(units.RATE_UNITS)
    schemas = {
        units.Duration: _quantity(
            "seconds",
            rf"^\s*(?:{one}|{parts})\s*$",
            'A duration with a unit (ns, us, ms, s, m, h): "250us", "25ms", "1.5s", "1m30s".',
            ["25ms", "1.5s", "1m30s"],
        ),
        units.Size: _quantity(
            "bytes",
            rf"^\s*\+?{_NUMBER}\s*(?:{size_units})?\s*$",
            'A size with a unit: "512B", "1KiB", "16MiB", "1GB".',
            ["1KiB", "16MiB"],
        ),
        units.Bandwidth: _quantity(
            "bytes per second",
            rf"^\s*\+?{_NUMBER}\s*(?:{bandwidth_units})?\s*$",
            'A bandwidth with a unit: "10Gbps" (bits), "1GB/s", "100MiB/s".',
            ["10Gbps", "1GB/s"],
        ),
        units.Cpu: _quantity(
            "cores",
            rf"^\s*\+?{_NUMBER}\s*m?\s*$",
            'CPU in cores, or millicores as Kubernetes writes them: 0.5, "500m".',
            [0.5, "500m"],
        ),
        units.Rate: _quantity(
            "events per second",
            rf"^\s*\+?{_NUMBER}\s*(?:{rate_units})?\s*$",
            'A rate with a unit: "1000rps", "50/s".',
            [300, "1000rps"],
        ),
    }
    return {_before_function(annotated): schema for annotated, schema in schemas.items()}


def _before_function(annotated: Any) -> Any:
    """The function of the ``BeforeValidator`` of an ``Annotated`` type."""
    for meta in get_args(annotated)[1:]:
        if isinstance(meta, BeforeValidator):
            return meta.func
    raise TypeError(f"{annotated!r} has no BeforeValidator")


def _attribute_docs(cls: type) -> dict[str, str]:
    """The ``Attributes:`` section of a Google-style class docstring, by attribute name."""
    doc = inspect.getdoc(cls) or ""
    match = re.search(r"^Attributes:\n((?:[ \t]+.*\n?|\n)+)", doc, re.MULTILINE)
    if match is None:
        return {}
    docs: dict[str, str] = {}
    name = None
    for line in match.group(1).splitlines():
        item = re.match(r"^ {4}(\w+):\s*(.*)$", line)
        if item is not None:
            name = item.group(1)
            docs[name] = item.group(2)
        elif name is not None and line.strip():
            docs[name] += " " + line.strip()
    return docs


def _summary(cls: type) -> str:
    """A class docstring without its ``Attributes:`` section."""
    doc = inspect.getdoc(cls) or ""
    return doc.split("\nAttributes:")[0].strip()


def _catalog_params() -> str:
    lines = []
    for name in sorted(CATALOG):
        params = ", ".join(inspect.signature(CATALOG[name]).parameters)
        lines.append(f"{name}({params})")
    return "Parameters of the catalog entry: " + "; ".join(lines) + "."


class SpecJsonSchema(GenerateJsonSchema):
    """pydantic's schema generator, with what a spec file may say (see the module docstring)."""

    _PARTIAL_MARK = "x-meshsim-mesh-overrides"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._quantity_schemas = _quantities()
        self._distribution_shorthand = _before_function(DistributionSpec)
        self._io_part = _before_function(IoPart)
        self._io_both_ways = _before_function(IoField)

    # --- quantities and distributions ---------------------------------------------------------

    def function_before_schema(
        self, schema: core_schema.BeforeValidatorFunctionSchema
    ) -> JsonSchemaValue:
        function = schema["function"]["function"]
        quantity = self._quantity_schemas.get(function)
        if quantity is not None:
            return copy.deepcopy(quantity)
        if function is self._distribution_shorthand:
            constant = copy.deepcopy(self._quantity_schemas[_before_function(units.Duration)])
            constant["description"] = "A constant duration (seconds, or with a unit: 2ms)."
            return {"anyOf": [constant, self.generate_inner(schema["schema"])]}
        if function is self._io_part:  # a bare distribution is the part's base
            bare = self._core(DistributionSpec)
            bare["description"] = "The time per message alone (no size term)."
            return {"anyOf": [bare, self.generate_inner(schema["schema"])]}
        if function is self._io_both_ways:  # components without a direction: both ways
            both = self._core(IoDirectionSpec)
            both["description"] = "The same io both ways."
            return {"anyOf": [both, self.generate_inner(schema["schema"])]}
        return super().function_before_schema(schema)

    # --- models: shorthands, enums and descriptions --------------------------------------------

    def model_schema(self, schema: core_schema.ModelSchema) -> JsonSchemaValue:
        json_schema = super().model_schema(schema)
        cls = schema["cls"]
        docs = _attribute_docs(cls)
        for name, prop in json_schema.get("properties", {}).items():
            if name in docs:  # before what the type says (a quantity's units)
                prop["description"] = "\n\n".join(
                    filter(None, [docs[name], prop.get("description")])
                )
        if "description" in json_schema:
            json_schema["description"] = _summary(cls)
        shorthand = {
            TopologyRef: self._topology_ref,
            MeshRef: self._mesh_ref,
            CallSpec: self._call,
            StepSpec: self._step,
        }.get(cls)
        return shorthand(json_schema) if shorthand is not None else json_schema

    def _core(self, annotated: Any) -> JsonSchemaValue:
        core: CoreSchema = TypeAdapter(annotated).core_schema
        return self.generate_inner(core)

    def _topology_ref(self, full: JsonSchemaValue) -> JsonSchemaValue:
        names = sorted(CATALOG)
        props = full["properties"]
        props["catalog"] = {
            "anyOf": [{"enum": names}, {"type": "null"}],
            "default": None,
            "description": "A topology of the catalog.",
        }
        props["params"]["description"] = _catalog_params()
        props["file"]["description"] = "A topology file (YAML), relative to the spec."
        inline = self._core(TopologySpec)
        return {
            "anyOf": [
                {"enum": names, "description": "A topology of the catalog, by name."},
                {
                    "type": "string",
                    "pattern": r"\.ya?ml$",
                    "description": "A topology file (YAML), relative to the spec.",
                },
                {**inline, "description": "A topology given inline (cluster and call_graph)."},
                full,
            ],
            "description": _summary(TopologyRef),
        }

    def _mesh_ref(self, full: JsonSchemaValue) -> JsonSchemaValue:
        profiles = list_profiles()
        mesh = self._core(MeshSpec)
        props = full["properties"]
        props["profile"] = {
            "enum": [*profiles, "custom"],
            "default": "none",
            "description": "A built-in profile (``meshsim list`` names them).",
        }
        props["overrides"] = {
            self._PARTIAL_MARK: mesh,
            "description": "Fields of the profile's mesh to change: mappings are merged into "
            "the profile's, lists and values replace its.",
        }
        props["inline"] = {
            "anyOf": [mesh, {"type": "null"}],
            "default": None,
            "description": "A mesh given in full, instead of a profile.",
        }
        return {
            "anyOf": [
                {"enum": profiles, "description": "A built-in profile, by name."},
                {**copy.deepcopy(mesh), "description": "A mesh given in full (architecture, ...)."},
                full,
            ],
            "description": _summary(MeshRef),
        }

    def _call(self, full: JsonSchemaValue) -> JsonSchemaValue:
        name = {"type": "string", "pattern": NAME_PATTERN, "description": "A call to this host."}
        return {"anyOf": [name, full], "description": full.get("description", "")}

    def _step(self, full: JsonSchemaValue) -> JsonSchemaValue:
        call = self._core(CallSpec)
        return {
            "anyOf": [
                {"type": "string", "pattern": NAME_PATTERN, "description": "One call."},
                {
                    "type": "array",
                    "items": call,
                    "minItems": 1,
                    "description": "Calls in parallel.",
                },
                full,
            ],
            "description": full.get("description", ""),
        }

    # --- the whole schema -----------------------------------------------------------------------

    def generate(self, schema: CoreSchema, mode: JsonSchemaMode = "validation") -> JsonSchemaValue:
        json_schema = super().generate(schema, mode)
        defs = json_schema.setdefault("$defs", {})
        _Partials(defs).replace_marks(json_schema, self._PARTIAL_MARK)
        _constraints(json_schema)
        return {"$schema": DIALECT, **json_schema}


class _Partials:
    """Copies of definitions with nothing required, for overrides merged into a profile."""

    def __init__(self, defs: dict[str, JsonSchemaValue]) -> None:
        self._defs = defs

    def replace_marks(self, node: Any, mark: str) -> None:
        """Replace every ``{mark: schema}`` by a reference to the partial of ``schema``."""
        if isinstance(node, dict):
            if mark in node:
                partial = self._partial(node.pop(mark))
                defs_name = "MeshOverrides"
                self._defs[defs_name] = {
                    **partial,
                    "title": "MeshOverrides",
                    "description": "Any field of a mesh spec; none is required.",
                }
                node["$ref"] = f"#/$defs/{defs_name}"
            for value in list(node.values()):
                self.replace_marks(value, mark)
        elif isinstance(node, list):
            for value in node:
                self.replace_marks(value, mark)

    def _partial(self, schema: JsonSchemaValue) -> JsonSchemaValue:
        """``schema`` with no property required, down through mappings (not lists: a list in
        an override replaces the profile's, so its items must be whole)."""
        out = copy.deepcopy(schema)
        out.pop("required", None)
        out.pop("discriminator", None)
        if "oneOf" in out:  # partial variants overlap: any of them will do
            out["anyOf"] = out.pop("oneOf")
        ref = out.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            out["$ref"] = self._partial_ref(ref.removeprefix("#/$defs/"))
        for key in ("anyOf", "allOf"):
            if key in out:
                out[key] = [self._partial(branch) for branch in out[key]]
        if "properties" in out:
            out["properties"] = {k: self._partial(v) for k, v in out["properties"].items()}
        if isinstance(out.get("additionalProperties"), dict):
            out["additionalProperties"] = self._partial(out["additionalProperties"])
        return out

    def _partial_ref(self, name: str) -> str:
        partial = f"{name}Override"
        if partial not in self._defs:
            self._defs[partial] = {}  # taken before recursing: definitions may refer back
            self._defs[partial] = self._partial(self._defs[name])
        return f"#/$defs/{partial}"


_KEYWORDS = {"gt": "exclusiveMinimum", "ge": "minimum", "lt": "exclusiveMaximum", "le": "maximum"}

# Keys whose value is a mapping of names to schemas, or data: not schemas themselves.
_NAMED = ("properties", "$defs", "patternProperties", "dependentSchemas")
_DATA = ("default", "examples", "const", "enum")


def _constraints(node: Any) -> None:
    """pydantic's ``gt``/``ge``/``lt``/``le`` (left where a constraint wraps a validator) as
    JSON Schema's keywords; on a quantity, on its number branch (a string is not compared)."""
    if isinstance(node, list):
        for item in node:
            _constraints(item)
        return
    if not isinstance(node, dict):
        return
    for key, value in list(node.items()):
        if key in _NAMED and isinstance(value, dict):
            for schema in value.values():
                _constraints(schema)
        elif key not in _DATA:
            _constraints(value)
    bounds = {_KEYWORDS[k]: node.pop(k) for k in list(node) if k in _KEYWORDS}
    numbers = [b for b in node.get("anyOf", []) if b.get("type") in ("number", "integer")]
    for target in numbers or [node]:
        target.update(bounds)


def experiment_schema() -> JsonSchemaValue:
    """The JSON Schema (Draft 2020-12) of an experiment spec file."""
    schema = ExperimentSpec.model_json_schema(schema_generator=SpecJsonSchema)
    schema.setdefault("title", "meshsim experiment")
    return schema
