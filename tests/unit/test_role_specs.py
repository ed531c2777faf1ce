"""Every role's meta/argument_specs.yml mirrors its defaults/main.yml, names and default values."""

import pytest
import yaml

from conftest import ROOT

ROLES = sorted(path.name for path in (ROOT / "roles").iterdir() if (path / "defaults" / "main.yml").exists())


def test_every_role_is_checked():
    assert {"preflight", "backup", "migration", "verification"} <= set(ROLES)


@pytest.mark.parametrize("role", ROLES)
def test_argument_specs_mirror_defaults(role):
    defaults = yaml.safe_load((ROOT / "roles" / role / "defaults" / "main.yml").read_text()) or {}
    specs = yaml.safe_load((ROOT / "roles" / role / "meta" / "argument_specs.yml").read_text())
    options = specs["argument_specs"]["main"]["options"]
    assert sorted(options) == sorted(defaults), "options and defaults differ"
    for name, value in defaults.items():
        assert name.startswith(role + "_"), f"{name} lacks the role prefix"
        assert options[name].get("default") == value, f"{name}: spec default differs from defaults/main.yml"
        assert options[name].get("description"), f"{name} has no description"
