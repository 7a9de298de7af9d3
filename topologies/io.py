"""Reading and writing topologies as YAML files, with errors that say where the problem is."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from sim.yamlsafe import Mark, YamlInputError, read_yaml_file

from .errors import TopologyError
from .spec import TopologySpec

__all__ = ["format_validation_error", "load_topology", "save_topology", "topology_from_dict"]


def format_validation_error(
    error: ValidationError, marks: Mapping[tuple[str, ...], Mark] | None = None
) -> str:
    """Format a pydantic error as one line per problem: ``field.path: message``.

    Args:
        error: The validation error.
        marks: Where each field is in the file (line and column by path of keys), to append
            to its line; None if the data did not come from a file.

    Returns:
        The problems, one per line, each indented by two spaces.
    """
    lines = []
    for err in error.errors():
        parts = [str(part) for part in err["loc"]]
        path = ".".join(parts) or "(top level)"
        message = err["msg"]
        if err["type"] == "value_error":
            # Our validators' messages are complete sentences; drop pydantic's prefix.
            message = message.removeprefix("Value error, ")
        where = _where(parts, marks or {})
        lines.append(f"  {path}: {message}{where}")
    return "\n".join(lines)


def _where(parts: list[str], marks: Mapping[tuple[str, ...], Mark]) -> str:
    """`` (line 3, column 5)`` for the field (or the nearest enclosing one the file has)."""
    for end in range(len(parts), 0, -1):
        mark = marks.get(tuple(parts[:end]))
        if mark is not None:
            return f" (line {mark[0]}, column {mark[1]})"
    return ""


def topology_from_dict(
    data: Any, source: str = "<dict>", marks: Mapping[tuple[str, ...], Mark] | None = None
) -> TopologySpec:
    """Validate plain data (as parsed from YAML or JSON) into a topology.

    Args:
        data: A mapping with the fields of :class:`TopologySpec`.
        source: Where the data came from, for error messages (a file name).
        marks: Where each field is in that file, for error messages.

    Returns:
        The validated topology.

    Raises:
        TopologyError: If the data is not a mapping or is invalid; the message names each
            field path at fault.
    """
    if not isinstance(data, dict):
        got = "nothing (no YAML document)" if data is None else type(data).__name__
        raise TopologyError(f"{source}: a topology must be a mapping of fields, got {got}")
    try:
        return TopologySpec.model_validate(data)
    except ValidationError as exc:
        count = exc.error_count()
        plural = "s" if count != 1 else ""
        raise TopologyError(
            f"{source}: invalid topology ({count} error{plural}):\n"
            f"{format_validation_error(exc, marks)}"
        ) from None


def load_topology(path: str | Path) -> TopologySpec:
    """Load a topology from a YAML file.

    The file is read with :func:`sim.yamlsafe.read_yaml_file`, which refuses what is not a
    plain UTF-8 YAML text file (binary, Latin-1, UTF-16, a directory, a device), YAML nested
    too deep, alias bombs, keys given twice and tags, with the line and column.

    Args:
        path: The file.

    Returns:
        The validated topology.

    Raises:
        TopologyError: If the file is missing or unreadable, is not valid YAML (the message
            gives the line and column) or is not a valid topology (the message gives each
            field path, joined with dots, and its line).
    """
    path = Path(path)
    try:
        document = read_yaml_file(path)
    except YamlInputError as exc:
        raise TopologyError(f"{path}: {exc}") from None
    return topology_from_dict(document.data, source=str(path), marks=document.marks)


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
