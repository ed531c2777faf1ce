"""Print docs/variables.md: every inventory variable (pgops_*), host pattern and runbook extra var, and every
role option, from the roles' meta/argument_specs.yml and defaults/main.yml and docs/runbook-variables.yml.

    .venv/bin/python tools/variables_doc.py > docs/variables.md
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
INVENTORY_VARIABLE = re.compile(r"\{\{ (pgops_\w+) \| default\(")
MARKUP = re.compile(r"\b([COVEI])\(((?:[^()\\]|\\.|\([^()]*\))*)\)")


def plain(text) -> str:
    """ansible-doc markup as Markdown, one line."""
    text = " ".join(text) if isinstance(text, list) else str(text)
    text = MARKUP.sub(lambda m: ("*%s*" if m.group(1) == "I" else "`%s`") % m.group(2).replace("\\", ""), text)
    return " ".join(text.split()).replace("|", "\\|")


def shown(value) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return "`''`" if value == "" else "`%s`" % value
    return "`%s`" % yaml.safe_dump(value, default_flow_style=True, width=1000).strip().removesuffix("...").strip()


def roles() -> list[tuple[str, dict, dict]]:
    """(role, its main entry point's options, its defaults) for every role with an argument spec."""
    found = []
    for path in sorted((ROOT / "roles").iterdir()):
        spec = path / "meta" / "argument_specs.yml"
        if spec.exists():
            defaults = yaml.safe_load((path / "defaults" / "main.yml").read_text()) if (path / "defaults" / "main.yml").exists() else {}
            found.append((path.name, yaml.safe_load(spec.read_text())["argument_specs"]["main"]["options"], defaults or {}))
    return found


def inventory_variables(all_roles) -> dict[str, list[tuple[str, str, object]]]:
    """pgops_* -> [(role, option, the option's default)] for every role default that reads it."""
    found: dict[str, list] = {}
    for role, options, defaults in all_roles:
        for option, value in defaults.items():
            for variable in INVENTORY_VARIABLE.findall(str(value)):
                found.setdefault(variable, []).append((role, option, options.get(option, {}).get("default")))
    return found


def document() -> str:
    all_roles = roles()
    playbooks = yaml.safe_load((ROOT / "docs" / "runbook-variables.yml").read_text())
    lines = ["# Variables", "",
             "Generated from the roles' `meta/argument_specs.yml` and `defaults/main.yml` and from",
             "`docs/runbook-variables.yml` by `tools/variables_doc.py`; a test keeps it equal to them.", "",
             "Set the `pgops_*` variables in the inventory (group_vars); each role reads them through its own",
             "options, which a playbook of your own may set directly when it uses a role by its FQCN. Every",
             "option has a literal default, so a role used alone starts with none of the inventory's variables.", ""]
    for section in playbooks:
        if section == "not_settings":
            continue
        lines += ["## " + playbooks[section]["title"], "", "| Variable | Default | Meaning |", "|---|---|---|"]
        for name, entry in playbooks[section]["variables"].items():
            lines.append("| `%s` | `%s` | %s |" % (name, entry["default"], plain(entry["description"])))
        lines.append("")
    lines += ["## Inventory variables the roles read", "",
              "Each sets the role options named beside it (their defaults apply when it is not set).", "",
              "| Variable | Role options | Default |", "|---|---|---|"]
    for variable, uses in sorted(inventory_variables(all_roles).items()):
        defaults = sorted({shown(default) for _role, _option, default in uses if default is not None})
        options = ", ".join("`%s`" % option for _role, option, _d in uses)
        lines.append("| `%s` | %s | %s |" % (variable, options, " / ".join(defaults) or "computed, see the option"))
    lines.append("")
    lines += ["## Role options", ""]
    for role, options, defaults in all_roles:
        lines += ["### intowork.pgops.%s" % role, "", "| Option | Type | Default | From | Meaning |", "|---|---|---|---|---|"]
        for option, spec in options.items():
            source = ", ".join("`%s`" % v for v in INVENTORY_VARIABLE.findall(str(defaults.get(option, ""))))
            kind = spec.get("type", "str") + ("/" + spec["elements"] if spec.get("elements") else "")
            meaning = plain(spec.get("description", ""))
            lines.append("| `%s` | %s | %s | %s | %s |" % (option, kind, shown(spec.get("default")), source, meaning))
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.stdout.write(document())
