"""Every role's meta/argument_specs.yml mirrors its defaults/main.yml, names and default values."""

import re

import pytest
import yaml

from conftest import ROOT

INVENTORY_FALLBACK = re.compile(r"^\{\{ (pgops_\w+) \| default\(([^~()]*)\) \}\}$")


def inventory_fallback(value):
    """(True, literal) for "{{ pgops_x | default(literal) }}", else (False, None)."""
    found = INVENTORY_FALLBACK.match(value) if isinstance(value, str) else None
    if not found or re.fullmatch(r"[a-z_]+", found.group(2)) and found.group(2) not in ("true", "false"):
        return False, None
    return True, yaml.safe_load(found.group(2))


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
        assert options[name].get("description"), f"{name} has no description"
        computed, fallback = inventory_fallback(value)
        if computed:
            assert options[name].get("default") == fallback, f"{name}: spec default differs from {value}"
        elif isinstance(value, str) and "{{" in value:
            assert "default" not in options[name], f"{name}: a computed default ({value}) is not a literal"
            assert "Defaults to" in str(options[name]["description"]), f"{name}: say what {value} comes to"
        else:
            assert options[name].get("default") == value, f"{name}: spec default differs from defaults/main.yml"


def test_a_role_used_alone_needs_no_inventory_variable():
    """What ansible-doc shows and what a role by FQCN starts with: no spec default is a template, and every
    default names an inventory variable only with a literal fallback."""
    for role in ROLES:
        specs = (ROOT / "roles" / role / "meta" / "argument_specs.yml").read_text()
        assert "{{" not in specs, f"{role}: a template in meta/argument_specs.yml"
        for name, value in (yaml.safe_load((ROOT / "roles" / role / "defaults" / "main.yml").read_text()) or {}).items():
            for variable in re.findall(r"pgops_\w+", str(value)):
                assert re.search(variable + r" \| default\(", str(value)), f"{role}: {name} needs {variable}"
