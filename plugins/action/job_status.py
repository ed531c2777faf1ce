# -*- coding: utf-8 -*-
# Copyright: (c) 2026, INTOWORK platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Poll a job started with async and poll 0, printing what it is doing from the progress file it writes."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import shlex
import time

from ansible.errors import AnsibleError
from ansible.module_utils.common.text.converters import to_text
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display
from ansible.utils.vars import merge_hash
from ansible.vars.clean import remove_internal_keys
from ansible_collections.intowork.pgops.plugins.module_utils._text import duration_text, size_text

display = Display()

# A look is one shell command, so a job that ends within a second (a small migration, an empty database's
# backup) is seen within a quarter of one; a long one costs one round trip every few seconds.
LOOK_AFTER = (0.25, 0.25, 0.25, 0.25, 0.5, 0.5, 1, 1, 2, 2, 3, 5)


def progress_line(progress):
    """One line from the progress file's JSON: its phase, the bytes it has written, the time since the start."""
    parts = [to_text(progress.get("phase") or "running")]
    if progress.get("bytes") is not None:
        parts.append("%s %s" % (size_text(progress["bytes"]), progress.get("bytes_are") or "written"))
    if progress.get("elapsed_seconds") is not None:
        parts.append(duration_text(progress["elapsed_seconds"]) + " so far")
    return ", ".join(parts)


class ActionModule(ActionBase):
    """async_status, waiting up to `wait` seconds in one call and printing a progress line when it returns.

    The job's files are read with one shell command each (cat, rm), not with the async_status and slurp modules:
    a look is then a round trip, not a Python start on the host that imports Ansible's module code afresh (about
    a quarter of a second of CPU each, several per job)."""

    _VALID_ARGS = frozenset(("jid", "progress_file", "label", "wait"))

    def run(self, tmp=None, task_vars=None):
        result = super(ActionModule, self).run(tmp, task_vars)
        _validation, args = self.validate_argument_spec(argument_spec={
            "jid": {"type": "str", "required": True},
            "progress_file": {"type": "str"},
            "label": {"type": "str", "default": "the job"},
            "wait": {"type": "int", "default": 10},
        })
        async_dir = self._remote_expand_user(self.get_shell_option("async_dir", default="~/.ansible_async"))
        results_file = self._connection._shell.join_path(async_dir, args["jid"])
        deadline = time.monotonic() + max(args["wait"], 0)
        looks = 0
        while True:
            status = self._job_status(args["jid"], results_file)
            if status.get("finished") or status.get("failed") or time.monotonic() >= deadline:
                break
            time.sleep(min(LOOK_AFTER[min(looks, len(LOOK_AFTER) - 1)], max(deadline - time.monotonic(), 0)))
            looks += 1
        result = merge_hash(result, status)
        result["started"], result["finished"] = bool(result.get("started")), bool(result.get("finished"))
        if result["finished"]:
            # The job's result file holds what the module returned; the registered result keeps it. Removing it
            # is tidying only: a link lost now must not turn a finished job's verdict into a lost host.
            try:
                self._low_level_execute_command("rm -f %s" % shlex.quote(results_file))
            except AnsibleError as error:
                display.vvv("job_status: could not remove the result file of job %s: %s" % (args["jid"], error))
        elif not result.get("failed") and args["progress_file"]:
            # The file's name may start with ~ (the async folder's): the shell would not expand it quoted.
            line = self._progress(self._remote_expand_user(args["progress_file"]))
            if line:
                result["progress"] = line
                display.display("%s: %s: %s" % (task_vars.get("inventory_hostname", "?"), args["label"], line))
        return result

    def _job_status(self, jid, results_file):
        """What async_status would return: the job's results file as async_wrapper wrote it (whole: it writes a
        temporary file and renames it), read as a module's output is."""
        read = self._low_level_execute_command("cat %s" % shlex.quote(results_file))
        if read["rc"] != 0:
            return {"failed": True, "msg": "could not find job %s (%s): %s" % (
                jid, results_file, to_text(read.get("stderr")).strip()), "ansible_job_id": jid, "started": True,
                "finished": True}
        if not to_text(read["stdout"]).strip():
            return {"results_file": results_file, "ansible_job_id": jid, "started": True, "finished": False}
        status = self._parse_returned_data({"stdout": to_text(read["stdout"]), "stderr": "", "rc": 0}, "legacy")
        remove_internal_keys(status)
        if "started" not in status:
            status.update(finished=True, ansible_job_id=jid)
        elif "finished" not in status:
            status["finished"] = False
        return status

    def _progress(self, path):
        """The job's progress file as a line; None while it has not written one (or it cannot be read)."""
        read = self._low_level_execute_command("cat %s" % shlex.quote(path))
        if read["rc"] != 0:
            return None
        try:
            return progress_line(json.loads(to_text(read["stdout"])))
        except (ValueError, TypeError, AttributeError):
            return None
