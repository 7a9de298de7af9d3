"""The error every topology function raises for bad user input."""

from __future__ import annotations

__all__ = ["TopologyError"]


class TopologyError(ValueError):
    """A topology is invalid, unknown or cannot be loaded.

    The message is meant for the user as is: it names the file, the field path, the service or
    the parameter at fault, so callers print ``str(error)`` and need no traceback. It subclasses
    ``ValueError`` so that raising it inside a pydantic validator still reports it as a
    validation error of the field.
    """
