"""``meshsim show PROFILE``: a profile's effective fields (what overrides can set), which
given in full are the profile's mesh."""

from __future__ import annotations

import pytest
import yaml
from typer.testing import CliRunner

from experiments.cli import app
from experiments.profiles import list_profiles, resolve_mesh, validate_mesh


@pytest.mark.parametrize("profile", list_profiles())
def test_show_prints_every_field_and_they_validate_back(profile):
    result = CliRunner().invoke(app, ["show", profile])
    assert result.exit_code == 0, result.output
    shown = yaml.safe_load(result.stdout)
    # Given back as a mesh in full, the shown fields are the profile's mesh; given back as
    # overrides of the profile, they change nothing.
    assert validate_mesh(shown).model_dump() == resolve_mesh(profile).model_dump()
    assert resolve_mesh(profile, shown).model_dump() == resolve_mesh(profile).model_dump()
    assert shown["architecture"] == resolve_mesh(profile).architecture


def test_show_names_an_unknown_profile():
    result = CliRunner().invoke(app, ["show", "istio-9"])
    assert result.exit_code == 2
    assert "unknown profile 'istio-9'" in result.output
