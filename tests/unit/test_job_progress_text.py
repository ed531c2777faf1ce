"""How a polled job's progress file reads in the play (intowork.pgops.job_status)."""

from ansible_collections.intowork.pgops.plugins.action.job_status import progress_line
from ansible_collections.intowork.pgops.plugins.module_utils._text import duration_text


def test_a_dump_in_progress_reads_as_its_step_bytes_and_time():
    line = progress_line({"phase": "dumping", "bytes": 5 * 2 ** 30, "bytes_are": "written", "elapsed_seconds": 4000.2})
    assert line == "dumping, 5.0 GB written, 1 h 06 min so far"


def test_a_step_without_bytes_says_only_its_time():
    assert progress_line({"phase": "checking the checksum of appdb.dump", "bytes": None, "elapsed_seconds": 75}) == \
        "checking the checksum of appdb.dump, 1 min 15 s so far"
    assert progress_line({}) == "running"


def test_durations_read_in_the_largest_sensible_unit():
    assert [duration_text(s) for s in (0, 59.9, 60, 3599, 3600, 86399)] == [
        "0 s", "59 s", "1 min 00 s", "59 min 59 s", "1 h 00 min", "23 h 59 min"]
