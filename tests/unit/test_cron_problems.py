"""Which cron schedules the roles accept before writing a cron file (a pure parser: no cron needed)."""

import pytest

from ansible_collections.intowork.pgops.plugins.filter.cron_problems import cron_problems


@pytest.mark.parametrize("schedule", ["0 4 * * mon", "*/15 * * * *", "0 3 1,15 * *", "30 2 * jan-mar mon-fri",
                                      "0 0 * * 7", "0-30/10 8-18 * * 1-5", "@daily", "@REBOOT", "5 4 * * SUN"])
def test_valid_cron_syntax_is_accepted(schedule):
    assert cron_problems(schedule) == []


@pytest.mark.parametrize("schedule, problem", [
    ("every hour", "has 2 field(s): cron needs 5"),
    ("60 * * * *", "minute '60': each value must be * or 0-59"),
    ("0 4 * * mun", "day of week 'mun': each value must be * or 0-7 or sun/mon/tue/wed/thu/fri/sat"),
    ("0 4 31-1 * *", "day of month '31-1': a range runs from low to high"),
    ("*/0 * * * *", "minute '*/0': the step after / must be a whole number above 0"),
    ("5/10 * * * *", "a step needs * or a range before it"),
    ("0 4 * * 1,", "day of week '1,': an empty list item"),
    ("@fortnightly", "not a cron keyword"),
    ("0 4 * * *\n* * * * * root rm -rf /", "spans lines"),
])
def test_a_bad_schedule_names_the_bad_part(schedule, problem):
    problems = cron_problems(schedule)
    assert len(problems) == 1 and problem in problems[0], problems
