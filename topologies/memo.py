"""Values derived from a frozen spec, computed once and kept on the spec."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar, cast

from pydantic import BaseModel

__all__ = ["cached_on"]

_T = TypeVar("_T")


def cached_on(
    model: BaseModel, key: str, inputs: tuple[object, ...], build: Callable[[], _T]
) -> _T:
    """Memoise a value derived from fields of a frozen pydantic model, on the model itself.

    Like :func:`functools.cached_property`, the value is kept in the instance's ``__dict__``
    (which a frozen model's ``__setattr__`` would refuse); pydantic compares, dumps and
    validates only the declared fields, so the cache is invisible to them. ``model_copy``
    copies ``__dict__``, and with ``update=`` it may replace a field the value was derived
    from: the cache therefore remembers the objects it was built from (``inputs``, compared
    by identity) and is rebuilt when one of them is no longer the model's.

    Args:
        model: The frozen model that owns the cache.
        key: The cache's name; it is kept in ``__dict__`` as ``_cached_<key>``, a name that is
            never a field and never shadows a method (an instance's ``__dict__`` would).
        inputs: The field values the value is derived from.
        build: Computes the value from the model.

    Returns:
        The cached or freshly built value.
    """
    key = f"_cached_{key}"
    found = model.__dict__.get(key)
    if found is not None:
        built_from, value = found
        if len(built_from) == len(inputs) and all(
            a is b for a, b in zip(built_from, inputs, strict=True)
        ):
            return cast(_T, value)
    value = build()
    model.__dict__[key] = (inputs, value)
    return value
