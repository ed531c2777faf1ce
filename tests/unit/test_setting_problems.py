"""How the runbooks judge a setting before anything changes (a pure check: no server needed)."""

import pytest

from ansible_collections.intowork.pgops.plugins.filter.setting_problems import setting_problems


@pytest.mark.parametrize("check", [
    ["d", "/var/backups/pgops", "path"], ["d", "/", "path"], ["d", "", "optional_path"],
    ["n", 30, "number", 0.1, 600], ["n", "0.5", "number", 0.1, 600], ["n", "7200", "whole", 1, None],
    ["a", "postgres", "name"], ["a", "app_db-2.x", "name"], ["m", "", "mail"], ["m", "ops+db@example.com", "mail"],
    ["l", [], "mails"], ["l", ["a@example.com", "b@example.com"], "mails"],
    ["u", "", "url"], ["u", "https://hooks.example.com/T0/B1?x=1", "url"], ["u", "http://127.0.0.1:8080/hook", "url"],
    ["c", "revoke", "choice", "allow", "revoke"],
])
def test_a_good_value_passes(check):
    assert setting_problems([check]) == []


@pytest.mark.parametrize("check, problem", [
    (["pgops_cron_dir", "cron.d", "path"], 'pgops_cron_dir "cron.d" must be an absolute path'),
    (["pgops_backup_dir", "b", "path", "on the database host"],
     'pgops_backup_dir "b" must be an absolute path on the database host'),
    (["d", "/var/backups/../../etc", "path"],
     'd "/var/backups/../../etc" is not a normalised path: give it as /etc, without ".."'),
    (["d", "/srv//x/", "optional_path"], 'd "/srv//x/" is not a normalised path: give it as /srv/x,'),
    (["d", "/srv/x\n* * * * * root id", "path"], 'd "/srv/x\\n* * * * * root id" must be an absolute path without'),
    (["d", "/srv/100%", "path"], "must be an absolute path without control characters or %"),
    (["n", 0, "number", 0.1, 600], 'n must be a number from 0.1 to 600 (got "0")'),
    (["n", "-1", "number", 0, 1000], 'n must be a number from 0 to 1000 (got "-1")'),
    (["n", "1e9", "number", 0, None], 'n must be a number of at least 0 (got "1e9")'),
    (["n", "2.5", "whole", 1, 64], 'n must be a whole number from 1 to 64 (got "2.5")'),
    (["n", True, "whole", 0, None], 'n must be a whole number of at least 0 (got "True")'),
    (["a", "root\nx", "name"], 'a "root\\nx" is not a name'),
    (["a", "-rf", "name"], 'a "-rf" is not a name'),
    (["m", "ops@example.com\nBcc: x@evil", "mail"], 'm "ops@example.com\\nBcc: x@evil" is not one mail address'),
    (["m", "a@example.com, b@example.com", "mail"], "is not one mail address"),
    # A trailing line break would end a mail's headers, or a cron line's name, early.
    (["m", "ops@example.com\n", "mail"], 'm "ops@example.com\\n" is not one mail address'),
    (["a", "intowork\n", "name"], 'a "intowork\\n" is not a name'),
    (["n", "5\n", "whole", 0, None], 'n must be a whole number of at least 0'),
    (["u", "file:///etc/passwd", "url"], 'u "file:///etc/passwd" is not an http or https URL: give one like '
                                         'https://hooks.example.com/..., or empty for none'),
    (["u", "https://hooks.example.com/x\r\nX-Injected: 1", "url"], "is not an http or https URL"),
    (["u", "https://hooks example.com/", "url"], "is not an http or https URL"),
    (["u", "https:///path-only", "url"], "is not an http or https URL"),
    (["l", "ops@example.com", "mails"], 'l "ops@example.com" must be a list of mail addresses, like ["ops@example.com"]'),
    (["l", ["a@example.com", "b@example.com\nBcc: x@evil"], "mails"],
     'l: "b@example.com\\nBcc: x@evil" is not one mail address'),
    (["c", "revoke\n", "choice", "allow", "revoke"], 'c "revoke\\n" is not one of allow, revoke'),
    (["c", None, "choice", "allow", "revoke"], 'c "" is not one of allow, revoke'),
])
def test_a_bad_value_is_named_with_its_fix(check, problem):
    problems = setting_problems([check])
    assert len(problems) == 1 and problem in problems[0], problems


def test_every_bad_value_is_named_at_once():
    assert len(setting_problems([["a", "x", "path"], ["b", "/ok", "path"], ["c", "-1", "whole", 0, 9]])) == 2
