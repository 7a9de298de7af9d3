"""Overrides by dotted path (``--set workload.rate_rps=500``), merged into data before validation."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

import yaml

__all__ = ["apply_overrides", "deep_merge", "parse_assignment"]


def parse_assignment(text: str) -> tuple[list[str], Any]:
    """Split ``a.b.c=value`` into a path and a YAML-parsed value."""
    if "=" not in text:
        raise ValueError(f"override {text!r} must look like path.to.field=value")
    path, _, raw = text.partition("=")
    keys = [k for k in path.strip().split(".") if k]
    if not keys:
        raise ValueError(f"override {text!r} has an empty path")
    return keys, yaml.safe_load(raw) if raw.strip() else ""


def deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``base`` with ``update`` merged in, recursively for nested mappings."""
    merged = copy.deepcopy(dict(base))
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def apply_overrides(data: Mapping[str, Any], assignments: Iterable[str]) -> dict[str, Any]:
    """``data`` with every ``path=value`` assignment applied (creating mappings as needed)."""
    result = copy.deepcopy(dict(data))
    for text in assignments:
        keys, value = parse_assignment(text)
        node = result
        for key in keys[:-1]:
            child = node.get(key)
            if not isinstance(child, dict):
                child = node[key] = {}
            node = child
        node[keys[-1]] = value
    return result
