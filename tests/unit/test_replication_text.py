"""How WAL distances read in the replication messages."""

from ansible_collections.intowork.pgops.plugins.module_utils._replication import current_lsn
from ansible_collections.intowork.pgops.plugins.module_utils._text import size_text


def test_small_lags_read_in_kilobytes_and_large_ones_in_megabytes():
    assert size_text(0) == "0 kB"
    assert size_text(200) == "1 kB"  # behind is behind: never "0 kB" for a standby that has not replayed
    assert size_text(1024) == "1 kB"
    assert size_text(300 * 1024) == "300 kB"
    assert size_text(64 * 2 ** 20) == "64.0 MB"
    assert size_text(3 * 2 ** 30 + 2 ** 29) == "3.5 GB"  # a multi-hour dump's size
    assert size_text(2 * 2 ** 40) == "2.0 TB"


class OneRow:
    """A cursor returning one fixed row: the insert position as the server prints it."""

    def __init__(self, insert_lsn, block_size=8192):
        self.row = (insert_lsn, block_size)

    def execute(self, statement):
        assert "pg_current_wal_insert_lsn()" in statement

    def fetchone(self):
        return self.row


def test_the_wait_target_is_the_insert_position_or_the_page_boundary_before_a_page_header():
    assert current_lsn(OneRow("0/3000060")) == "0/3000060"
    # 24 bytes into a page (short header) or 40 (long header): the last record ended at the boundary.
    assert current_lsn(OneRow("0/3002018")) == "0/3002000"
    assert current_lsn(OneRow("1/28")) == "1/0"
    assert current_lsn(OneRow("0/3002030")) == "0/3002030"
