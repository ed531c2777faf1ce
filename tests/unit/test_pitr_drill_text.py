"""The PITR drill's pure parts: the target time it accepts, the backup it chooses, the folders it refuses."""

from datetime import datetime, timezone

import pytest

from ansible_collections.intowork.pgops.plugins.module_utils._connection import PgopsError
from ansible_collections.intowork.pgops.plugins.module_utils._pitr_drill import (
    choose_backup,
    drill_target,
    overlaps,
    parse_target,
    server_options,
    utc_text,
)
from ansible_collections.intowork.pgops.plugins.module_utils._scratch_server import Scratch


@pytest.mark.parametrize("text, expected", [
    ("2026-12-07 14:30:00+00", "2026-12-07 14:30:00+00"),
    ("2026-12-07T14:30:00.5Z", "2026-12-07 14:30:00.500000+00"),
    ("2026-12-07 16:30+02:00", "2026-12-07 14:30:00+00"),
    ("2026-12-07 13:00:00-0130", "2026-12-07 14:30:00+00"),
])
def test_a_target_with_its_offset_is_read_as_utc(text, expected):
    assert utc_text(parse_target(text)) == expected


def test_a_target_by_age_keeps_the_second_it_falls_in():
    """Rows committed at 23:16:00.085 and a drill "as it is now" at 23:16:00.9: the target must not be cut back to
    23:16:00, before them (a Molecule run lost its 250 rows that way)."""
    now = datetime(2026, 12, 7, 23, 16, 0, 900000, tzinfo=timezone.utc)
    assert utc_text(drill_target("", 0, now)) == "2026-12-07 23:16:00.900000+00"
    assert utc_text(drill_target("", 300, now)) == "2026-12-07 23:11:00.900000+00"
    assert utc_text(drill_target("2026-12-07 14:30:00+00", 0, now)) == "2026-12-07 14:30:00+00"


@pytest.mark.parametrize("text, says", [
    ("2026-12-07 14:30:00", "is not a time with its offset"),
    ("five minutes ago", "is not a time with its offset"),
    ("2026-13-07 14:30:00Z", "is not a valid time: month must be in 1..12"),
])
def test_a_target_without_its_offset_or_not_a_time_is_refused_by_name(text, says):
    with pytest.raises(PgopsError) as error:
        parse_target(text)
    assert str(error.value).startswith("target_time %r " % text) and says in str(error.value)


def backup(label, stop):
    return {"label": label, "type": label[-1] == "F" and "full" or "incr", "timestamp": {"start": stop - 60, "stop": stop}}


def test_the_newest_backup_that_ended_before_the_target_is_chosen():
    info = {"backup": [backup("A-F", 1000), backup("B-I", 2000), backup("C-I", 3000)]}
    target = datetime.fromtimestamp(2500, timezone.utc)
    assert choose_backup(info, target, "main")["label"] == "B-I"
    assert choose_backup(info, datetime.fromtimestamp(2000, timezone.utc), "main")["label"] == "B-I"


def test_a_target_before_every_backup_names_the_earliest():
    with pytest.raises(PgopsError) as error:
        choose_backup({"backup": [backup("A-F", 1000)]}, datetime.fromtimestamp(999, timezone.utc), "main")
    assert str(error.value) == ("no backup of stanza main ended before the target 1970-01-01 00:16:39+00: the "
                                "earliest ended at 1970-01-01 00:16:40+00; choose a later target or take a backup "
                                "first (pgbackrest backup)")
    with pytest.raises(PgopsError, match="the repository holds none"):
        choose_backup({"backup": []}, datetime.fromtimestamp(999, timezone.utc), "main")


def test_folders_overlap_when_one_holds_the_other_not_when_names_only_share_a_prefix():
    assert overlaps("/var/lib/postgresql/15/main", "/var/lib/postgresql")
    assert overlaps("/var/lib/postgresql", "/var/lib/postgresql/15/main/")
    assert overlaps("/srv/pg", "/srv/pg")
    assert not overlaps("/srv/pg-drills", "/srv/pg")


def test_every_server_setting_reaches_the_shell_quoted():
    options = server_options({"scratch_port": 5499, "shared_buffers": "128MB"}, Scratch("/srv/drill's"))
    assert "-c 'listen_addresses='" in options and "-c 'archive_mode=off'" in options
    assert "-c 'unix_socket_directories=/srv/drill'\"'\"'s/socket'" in options


def test_the_backup_a_recovery_to_a_point_starts_from_ended_before_it():
    from ansible_collections.intowork.pgops.plugins.module_utils._pitr_restore import backup_before

    info = {"backup": [{"label": "A-F", "lsn": {"stop": "0/3000100"}}, {"label": "B-I", "lsn": {"stop": "0/9000100"}},
                       {"label": "C-I", "lsn": {"stop": "1/00000100"}}]}
    assert backup_before(info, {"name": "deploy-1", "lsn": "0/A000000"}, "main")["label"] == "B-I"
    # LSNs compare as numbers, not text: 0/9000100 is before 0/A000000, 1/100 after both.
    assert backup_before(info, {"name": "deploy-2", "lsn": "1/00000100"}, "main")["label"] == "C-I"
    with pytest.raises(PgopsError) as error:
        backup_before(info, {"name": "deploy-0", "lsn": "0/2000000"}, "main")
    assert str(error.value) == ("no backup of stanza main ended before restore point deploy-0 (LSN 0/2000000): a "
                                "recovery to it needs one taken before the deployment; nothing was changed")


def test_what_a_recovery_discards_reads_in_words():
    from ansible_collections.intowork.pgops.plugins.module_utils._pitr_restore import discards_text

    assert discards_text({"public.authors": 12, "public.books": -1}, 17_600_000) == (
        "17.6 MB of WAL since the point (row counts against the deployment's: public.authors +12 rows, public.books "
        "-1 rows; updates and deletes that left a count as it was are undone too)")
    assert discards_text({}, 4096) == ("4096 bytes of WAL since the point (no table's row count changed; updates and "
                                       "deletes are undone too)")


def test_a_debian_cluster_names_its_unit():
    from ansible_collections.intowork.pgops.plugins.module_utils._connection import debian_unit

    assert debian_unit("15/main") == "postgresql@15-main"
    assert debian_unit("pgops-pitr-drill") is None and debian_unit(None) is None
