"""The migration plan, computed from the reference project's real revision graph (no database)."""

import pytest

from ansible_collections.intowork.pgops.plugins.module_utils._alembic_runner import PlanError, cut_off_revision, load_scripts, plan
from conftest import BASELINE, HEAD, INDEX_REVISION, PROJECT_DIR

CHAIN = [BASELINE, INDEX_REVISION, "c4d5e6f7a8b9", "d5e6f7a8b9c0", "e6f7a8b9c0d1", HEAD]


@pytest.fixture(scope="module")
def scripts():
    return load_scripts(str(PROJECT_DIR / "alembic.ini"))


@pytest.mark.parametrize("current, target, direction, steps", [
    ((), "head", "upgrade", CHAIN),
    ((BASELINE,), "head", "upgrade", CHAIN[1:]),
    ((BASELINE,), INDEX_REVISION, "upgrade", [INDEX_REVISION]),
    ((HEAD,), "head", "none", []),
    ((HEAD,), INDEX_REVISION, "downgrade", list(reversed(CHAIN[2:]))),
    ((INDEX_REVISION,), "base", "downgrade", [INDEX_REVISION, BASELINE]),
    ((BASELINE,), "h8c2", "upgrade", [INDEX_REVISION]),
])
def test_plan(scripts, current, target, direction, steps):
    got_direction, got_steps = plan(scripts, current, target)
    assert got_direction == direction
    assert [step["revision"] for step in got_steps] == steps


def test_steps_carry_their_message(scripts):
    _direction, steps = plan(scripts, (BASELINE,), INDEX_REVISION)
    assert steps[0] == {"revision": INDEX_REVISION, "down_revision": BASELINE,
                        "doc": "critical indexes and constraints", "irreversible": False}


@pytest.mark.parametrize("current, planned, cut_off", [
    # Killed in the first revision of the plan: the database still records the one before.
    ((BASELINE,), CHAIN[1:], INDEX_REVISION),
    # Killed in the third: the first two were recorded.
    (("c4d5e6f7a8b9",), CHAIN[1:], "d5e6f7a8b9c0"),
    # The whole plan was recorded: nothing was cut off.
    ((HEAD,), CHAIN[1:], None),
    # The database is not where the plan started (someone moved it): guess nothing.
    ((BASELINE,), CHAIN[3:], None),
    ((), CHAIN, BASELINE),
    ((BASELINE,), [], None),
])
def test_cut_off_revision(scripts, current, planned, cut_off):
    assert cut_off_revision(scripts, current, planned) == cut_off


def test_cut_off_revision_refuses_an_unknown_plan(scripts):
    with pytest.raises(PlanError, match="interrupted_plan names revision 'nope'"):
        cut_off_revision(scripts, (BASELINE,), ["nope"])


@pytest.mark.parametrize("current, target, fragment", [
    ((BASELINE,), "nope", "unknown target revision 'nope'"),
    (("0123456789ab",), "head", "revision 0123456789ab, which this project does not know"),
    ((BASELINE, HEAD), "head", "2 heads recorded"),
])
def test_plan_errors_name_the_problem(scripts, current, target, fragment):
    with pytest.raises(PlanError) as caught:
        plan(scripts, current, target)
    assert fragment in str(caught.value)


def test_missing_project_names_the_path(tmp_path):
    with pytest.raises(PlanError) as caught:
        load_scripts(str(tmp_path / "alembic.ini"))
    assert str(tmp_path / "alembic.ini") in str(caught.value)


@pytest.mark.parametrize("lines, reason", [
    (["Traceback (most recent call last):", '  File "x", line 1',
      "sqlalchemy.exc.IntegrityError: (psycopg2.errors.UniqueViolation) could not create unique index \"uq\"",
      "DETAIL:  Key (candidate_id, job_id)=(1, 1) is duplicated.", "[SQL: CREATE UNIQUE INDEX ...]",
      "(Background on this error at: https://sqlalche.me/e/20/gkpj)"],
     'could not create unique index "uq"'),
    (["FAILED: Multiple head revisions are present", "(Background on this error at: x)"],
     "FAILED: Multiple head revisions are present"),
    ([], ""),
])
def test_failure_reason_takes_the_database_words(lines, reason):
    from ansible_collections.intowork.pgops.plugins.module_utils._alembic import failure_reason
    assert failure_reason(lines) == reason
