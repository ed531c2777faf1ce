"""finish_deployment.yml: a deployment whose playbook died while its migration job ran on alone. When the job
completed the plan, the runbook runs the checks the deployment never ran and gives writes back; when it did not,
or when a check fails, writes stay off, the lock keeps the plan, and rollback.yml undoes it."""

import json
import os
import re
import signal
import time

import pytest

from conftest import (APP, BASELINE, HEAD, assert_application_survived, assert_writes_kept_off, failure_message,
                      last_line, query, run_module, run_playbook)
from test_deploy_faults import app_can_write, counts
from test_deploy_interruptions import SETTINGS, alembic_processes, cut_off_deployment, kill_alembic
from test_deploy_playbook import revision

FORCE = ("-e", "force_unlock=yes", "-e", "confirm=yes")


def lock_holder(params):
    return run_module("deploy_lock", dict(params, state="status"))["holder"]


def playbook_killed(server, params, tmp_path, and_then=lambda: None):
    """The controller is gone mid-migration (its playbook killed whole); the migration job on the host goes on
    alone once the table it waits for is free, unless and_then() stops it first."""
    def kill(deploy):
        os.killpg(deploy.pid, signal.SIGKILL)
        and_then()
    cut_off_deployment(server, params, tmp_path, kill)
    deadline = time.monotonic() + 180
    while alembic_processes(params) or query(
            params, "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgops_migration'")[0][0]:
        assert time.monotonic() < deadline, "the migration job never ended"
        time.sleep(0.2)
    holder = lock_holder(params)
    assert holder["owner"].startswith("deploy-") and holder["details"]["migration_started"], holder
    assert not app_can_write(params), "the dead deployment left writes off"
    return holder


@pytest.mark.one_server_version
def test_a_deployment_that_migrated_alone_is_finished_with_its_checks(server, deployable, tmp_path, live_writer):
    writer = live_writer(deployable)
    dead = playbook_killed(server, deployable, tmp_path)
    assert revision(deployable) == HEAD, "the job finished the plan after the controller was gone"

    # Without force_unlock the lock may still be in use: refused, nothing changed.
    refused = run_playbook("finish_deployment.yml", server, deployable, tmp_path, "-e", SETTINGS, "-e", "confirm=yes")
    assert refused.returncode == 2, refused.stdout[-3000:]
    assert failure_message(refused).endswith("If it died, run again with -e force_unlock=yes. Nothing was changed.")
    assert lock_holder(deployable)["owner"] == dead["owner"] and not app_can_write(deployable)

    # The rollback runbook, asked first, offers the finish too, and changes nothing either.
    asked = run_playbook("rollback.yml", server, deployable, tmp_path, "-e", SETTINGS, "-e", "confirm=yes")
    assert asked.returncode == 2 and failure_message(asked).endswith(
        f"; its migration completed (the database records {HEAD}): to keep it instead, run ansible-playbook "
        "playbooks/finish_deployment.yml -e force_unlock=yes. Nothing was changed."), asked.stdout[-3000:]

    result = run_playbook("finish_deployment.yml", server, deployable, tmp_path, "-e", SETTINGS, *FORCE)
    assert result.returncode == 0, result.stdout[-3000:]
    line = last_line(result)
    assert line.startswith(f"Finished {dead['owner']}: ") and f"is at {HEAD} " in line and "every check passed" in line
    reported = float(re.search(r"Writes were off for ([0-9.]+) s \(since the deployment turned them off at ", line)[1])
    assert lock_holder(deployable) is None, "the lock is released"
    assert app_can_write(deployable)
    # Every write the application committed is kept; writes failed only from the deployment's guard to the finish.
    assert_application_survived(writer, deployable, reported)

    # The record is one rollback.yml accepts: it undoes the finished deployment.
    (record,) = (tmp_path / "reports").glob("finish-*.json")
    fields = json.loads(record.read_text())
    assert (fields["deployment"], fields["revision_before"], fields["revision_after"], fields["outcome"]) == (
        dead["owner"], BASELINE, HEAD, "finished")
    undone = run_playbook("rollback.yml", server, deployable, tmp_path, "-e", SETTINGS, "-e", f"record={record}",
                          "-e", "confirm=yes")
    assert undone.returncode == 0, undone.stdout[-3000:]
    assert revision(deployable) == BASELINE


@pytest.mark.one_server_version
def test_a_deployment_cut_off_half_way_is_not_finished(server, deployable, tmp_path, live_writer):
    before = counts(deployable)
    writer = live_writer(deployable)
    started = time.time()
    dead = playbook_killed(server, deployable, tmp_path, and_then=lambda: kill_alembic(deployable))
    at = revision(deployable)
    plan = dead["details"]["plan"]
    assert at != HEAD
    applied = plan.index(at) + 1 if at in plan else 0

    result = run_playbook("finish_deployment.yml", server, deployable, tmp_path, "-e", SETTINGS, *FORCE)
    assert result.returncode == 2, result.stdout[-3000:]
    assert failure_message(result) == (
        f"The plan of {dead['owner']} ({', '.join(plan)}) is not complete: the migration did not complete (the "
        f"database records {at}, {applied} of {len(plan)} revision(s) of the plan applied; {plan[applied]} may be "
        "half-applied), so there is nothing to finish. Roll it back: ansible-playbook playbooks/rollback.yml "
        "-e force_unlock=yes -e confirm=yes. Nothing was changed.")
    assert lock_holder(deployable) == dead and not app_can_write(deployable), "nothing was changed"

    # The remedy it names works.
    rolled_back = run_playbook("rollback.yml", server, deployable, tmp_path, "-e", SETTINGS, *FORCE)
    assert rolled_back.returncode == 0, rolled_back.stdout[-3000:]
    assert (revision(deployable), counts(deployable)) == (BASELINE, before) and app_can_write(deployable)
    # Writes were off from the dead deployment's guard until the rollback gave them back: no longer than that.
    assert_application_survived(writer, deployable, time.time() - started)


@pytest.mark.one_server_version
def test_a_finish_whose_check_fails_keeps_writes_off_and_the_plan(server, deployable, tmp_path, live_writer):
    writer = live_writer(deployable)
    dead = playbook_killed(server, deployable, tmp_path)
    assert revision(deployable) == HEAD
    # Something the deployment's catalog gate would have caught: a grant of the application gone.
    query(deployable, f"REVOKE SELECT ON jobs FROM {APP}")

    result = run_playbook("finish_deployment.yml", server, deployable, tmp_path, "-e", SETTINGS, *FORCE)
    assert result.returncode == 2, result.stdout[-3000:]
    message = failure_message(result)
    assert "jobs" in message and re.search(
        r"Writes are kept OFF since \S+Z, and the lock is kept with the plan of "
        + re.escape(dead["owner"]) + r"\. Roll it back: ansible-playbook playbooks/rollback\.yml -e force_unlock=yes "
        r"-e confirm=yes$", message), message
    assert ". Writes are kept OFF" in message and ".. " not in message, message
    holder = lock_holder(deployable)
    assert holder["owner"].startswith("finish-") and holder["details"]["plan"] == dead["details"]["plan"]
    assert_writes_kept_off(writer, deployable)

    # The lock kept the plan: the rollback it names undoes the deployment.
    rolled_back = run_playbook("rollback.yml", server, deployable, tmp_path, "-e", SETTINGS, *FORCE)
    assert rolled_back.returncode == 0, rolled_back.stdout[-3000:]
    assert revision(deployable) == BASELINE and app_can_write(deployable)
