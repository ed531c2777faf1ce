"""How WAL distances read in the replication messages."""

from ansible_collections.intowork.pgops.plugins.module_utils._replication import size_text


def test_small_lags_read_in_kilobytes_and_large_ones_in_megabytes():
    assert size_text(0) == "0 kB"
    assert size_text(200) == "1 kB"  # behind is behind: never "0 kB" for a standby that has not replayed
    assert size_text(1024) == "1 kB"
    assert size_text(300 * 1024) == "300 kB"
    assert size_text(64 * 2 ** 20) == "64.0 MB"
