"""Reading and writing topologies as YAML files, with errors that say where the problem is."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from .errors import TopologyError
from .spec import TopologySpec

__all__ = ["format_validation_error", "load_topology", "save_topology", "topology_from_dict"]


def format_validation_error(error: ValidationError) -> str:
    """Format a pydantic error as one line per problem: ``field.path: message``.

    Args:
        error: The validation error.

    Returns:
        The problems, one per line, each indented by two spaces.
    """
    lines = []
    for err in error.errors():
        path = ".".join(str(part) for part in err["loc"]) or "(top level)"
        message = err["msg"]
        if err["type"] == "value_error":
            # Our validators' messages are complete sentences; drop pydantic's prefix.
            message = message.removeprefix("Value error, ")
        lines.append(f"  {path}: {message}")
    return "\n".join(lines)


def topology_from_dict(data: Any, source: str = "<dict>") -> TopologySpec:
    """Validate plain data (as parsed from YAML or JSON) into a topology.

    Args:
        data: A mapping with the fields of :class:`TopologySpec`.
        source: Where the data came from, for error messages (a file name).

    Returns:
        The validated topology.

    Raises:
        TopologyError: If the data is not a mapping or is invalid; the message names each
            field path at fault.
    """
    if not isinstance(data, dict):
        raise TopologyError(
            f"{source}: a topology must be a mapping of fields, got {type(data).__name__}"
        )
    try:
        return TopologySpec.model_validate(data)
    except ValidationError as exc:
        count = exc.error_count()
        plural = "s" if count != 1 else ""
        raise TopologyError(
            f"{source}: invalid topology ({count} error{plural}):\n{format_validation_error(exc)}"
        ) from None


def load_topology(path: str | Path) -> TopologySpec:
    """Load a topology from a YAML file.

    Args:
        path: The file.

    Returns:
        The validated topology.

    Raises:
        TopologyError: If the file is missing or unreadable, is not valid YAML (the message
            gives the line and column) or is not a valid topology (the message gives each
            field path, joined with dots).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TopologyError(f"topology file {str(path)!r} not found") from None
    except OSError as exc:
        raise TopologyError(f"cannot read topology file {str(path)!r}: {exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise TopologyError(f"{path}: invalid YAML{_yaml_where(exc)}") from None
    return topology_from_dict(data, source=str(path))


def _yaml_where(exc: yaml.YAMLError) -> str:
    """Describe where a YAML error is (1-based line and column) and what it is."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    if mark is None:
        return f": {problem}"
    return f" at line {mark.line + 1}, column {mark.column + 1}: {problem}"


def save_topology(spec: TopologySpec, path: str | Path) -> None:
    """Write a topology to a YAML file, every field included; ``load_topology`` reads it back
    equal.

    Args:
        spec: The topology.
        path: The file (overwritten if it exists).
    """
    data = spec.model_dump(mode="json", exclude_defaults=False)
    text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    Path(path).write_text(text, encoding="utf-8")
