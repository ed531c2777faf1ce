"""ansible-lint rule: a registered result made un-failable must not be judged with `is failed`.

`failed_when: false` rewrites the registered result's `failed` to false, so a later `X is failed` is never
true and the gate it guards always passes. Keep the module's verdict with `ignore_errors: true` instead,
or decide on something the result still carries (rc, a key of its own).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from ansiblelint.rules import AnsibleLintRule

if TYPE_CHECKING:
    from ansiblelint.errors import MatchError
    from ansiblelint.file_utils import Lintable
    from ansiblelint.utils import Task

VERDICT_TESTS = r"\bis\s+(?:not\s+)?(?:failed|succeeded|success|failure)\b"


def _scope(path: Path) -> Path:
    """Where a registered name can be read: its role, or the folder of playbooks and their task files."""
    parts = path.parts
    if "roles" in parts:
        return Path(*parts[:parts.index("roles") + 2])
    return path.parent.parent if path.parent.name == "tasks" else path.parent


def _unfailable(value) -> bool:
    return value is False or (isinstance(value, str) and value.strip().lower() in ("false", "no"))


class SwallowedVerdictRule(AnsibleLintRule):
    """A result registered with failed_when false is later tested with `is failed`."""

    id = "pgops-swallowed-verdict"
    description = ("failed_when: false makes the registered result's `failed` false for good; a later "
                   "`is failed` / `is succeeded` on it never sees the module's verdict. Use ignore_errors: true.")
    severity = "VERY_HIGH"
    tags = ["pgops", "bug"]
    version_changed = "1.0.0"

    def matchtask(self, task: Task, file: Lintable | None = None) -> list[MatchError]:
        register = task.raw_task.get("register")
        if not register or not _unfailable(task.raw_task.get("failed_when")) or file is None:
            return []
        pattern = re.compile(re.escape(register) + r"\s*(?:\|\s*default\([^)]*\)\s*)?\)?\s*" + VERDICT_TESTS)
        for candidate in sorted(_scope(Path(file.path)).rglob("*.yml")):
            if pattern.search(candidate.read_text(encoding="utf-8", errors="replace")):
                return [self.create_matcherror(
                    message="%s is registered with failed_when: false and tested with `is failed` in %s" % (
                        register, candidate),
                    lineno=task.line, filename=file)]
        return []
