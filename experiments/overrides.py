"""Overrides by dotted path (``--set workload.rate_rps=500``), merged into data before validation."""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

from sim.yamlsafe import MAX_DEPTH, YamlInputError, parse_yaml

__all__ = ["apply_overrides", "deep_merge", "parse_assignment", "set_path", "value_label"]


def parse_assignment(text: str) -> tuple[list[str], Any]:
    """Split ``a.b.c=value`` into a path and a YAML-parsed value.

    The value is read as the spec file is (:func:`sim.yamlsafe.parse_yaml`): plain data only,
    no tags, bounded depth and aliases.

    Raises:
        ValueError: If there is no ``=``, the path is empty or longer than
            :data:`sim.yamlsafe.MAX_DEPTH` keys, or the value is not plain YAML; the message
            names the path.
    """
    if "=" not in text:
        raise ValueError(f"override {text!r} must look like path.to.field=value")
    path, _, raw = text.partition("=")
    keys = [k for k in path.strip().split(".") if k]
    if not keys:
        raise ValueError(f"override {text!r} has an empty path")
    if len(keys) > MAX_DEPTH:
        raise ValueError(
            f"override {path[:60]!r}...: a path of {len(keys)} keys, more than {MAX_DEPTH}"
        )
    if not raw.strip():
        return keys, ""
    try:
        value = parse_yaml(raw).data
    except YamlInputError as error:
        shown = raw if len(raw) <= 60 else raw[:57] + "..."
        # A value is one line: its column says where; a line past it means "at the end".
        where = f" at column {error.column}" if error.line == 1 else ""
        raise ValueError(
            f"--set {'.'.join(keys)}: the value {shown!r} is not plain YAML ({error.what}"
            f"{where}): {error.problem}"
        ) from None
    return keys, value


def deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``base`` with ``update`` merged in, recursively for nested mappings."""
    merged = copy.deepcopy(dict(base))
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _expand(key: str, value: Any) -> Any:
    """A spec's shorthand for ``mesh`` (a profile name) or ``topology`` (a catalog name or a
    file), as the mapping it stands for, so that a path can reach inside it."""
    if key == "mesh" and isinstance(value, str):
        return {"profile": value}
    if key == "topology" and isinstance(value, str):
        return {"file": value} if value.endswith((".yaml", ".yml")) else {"catalog": value}
    return value


def set_path(data: dict[str, Any], keys: list[str], value: Any) -> None:
    """Set the field at ``keys`` (``["workload", "rate_rps"]``) to ``value``.

    Mappings are made where the path goes through nothing; a number indexes a list
    (``faults.0.duration``); a ``mesh`` or ``topology`` given by name is expanded first.
    """
    node: Any = data
    for depth, key in enumerate(keys):
        last = depth == len(keys) - 1
        if isinstance(node, list):
            if not key.isdigit() or int(key) >= len(node):
                where = ".".join(keys[: depth + 1])
                raise ValueError(f"{where}: no item {key} in a list of {len(node)}")
            if last:
                node[int(key)] = copy.deepcopy(value)
                return
            node[int(key)] = child = _expand(key, node[int(key)])
            node = child
            continue
        if last:
            node[key] = copy.deepcopy(value)
            return
        child = _expand(key, node.get(key))
        if not isinstance(child, dict | list):
            child = {}
        node[key] = child
        node = child


def apply_overrides(data: Mapping[str, Any], assignments: Iterable[str]) -> dict[str, Any]:
    """``data`` with every ``path=value`` assignment applied (see :func:`set_path`)."""
    result = copy.deepcopy(dict(data))
    for text in assignments:
        keys, value = parse_assignment(text)
        set_path(result, keys, value)
    return result


def value_label(value: Any) -> str:
    """A value set by path (a swept value) as a short label (a mesh by its profile, with a
    short hash of its overrides when it has some)."""
    if isinstance(value, dict):
        if "profile" in value:
            overrides = value.get("overrides")
            if not overrides:
                return str(value["profile"])
            # The same profile with other overrides: told apart by them when short
            # (``istio-1.8 scoping=mesh``), else by a hash of them (``istio-1.4#3fa2c1``).
            flat = " ".join(f"{k}={v}" for k, v in _flatten(overrides))
            if len(flat) <= 32:
                return f"{value['profile']} {flat}"
            text = json.dumps(overrides, sort_keys=True, separators=(",", ":"), default=str)
            return f"{value['profile']}#{hashlib.sha256(text.encode()).hexdigest()[:6]}"
        return json.dumps(value, separators=(",", ":"))[:40]
    return str(value)


def _flatten(data: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """A mapping's leaves as (dotted path, value); lists and other values are leaves."""
    if not isinstance(data, Mapping) or not data:
        return [(prefix, "null" if data is None else data)]
    found: list[tuple[str, Any]] = []
    for key, value in data.items():
        found += _flatten(value, f"{prefix}.{key}" if prefix else str(key))
    return found
