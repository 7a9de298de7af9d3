"""Shipped experiment specs (YAML), runnable with ``meshsim run``."""

from __future__ import annotations

from pathlib import Path

__all__ = ["SPECS_DIR", "shipped_specs"]

SPECS_DIR = Path(__file__).parent


def shipped_specs() -> list[Path]:
    """The shipped spec files, sorted by name."""
    return sorted(SPECS_DIR.glob("*.yaml"))
