"""The notification mail is built by Python's email package: no value can add a header (a pure check)."""

import email

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.intowork.pgops.plugins.filter.mail_message import mail_message


def test_the_message_has_exactly_its_headers_and_body():
    text = mail_message("intowork migrated\nfrom a to b", "pgops@db1", ["ops@example.com", "dba@example.com"],
                        "[pgops] success: intowork on db1")
    parsed = email.message_from_string(text)
    assert parsed["From"] == "pgops@db1" and parsed["To"] == "ops@example.com, dba@example.com"
    assert parsed["Subject"] == "[pgops] success: intowork on db1" and parsed["Bcc"] is None
    assert parsed.get_payload().strip() == "intowork migrated\nfrom a to b"


@pytest.mark.parametrize("sender, recipients, subject", [
    ("pgops@db1", ["ops@example.com\nBcc: x@evil"], "s"),
    ("pgops@db1\r\nBcc: x@evil", ["ops@example.com"], "s"),
    ("pgops@db1", ["ops@example.com"], "[pgops] success: intowork\nBcc: x@evil"),
])
def test_a_value_that_would_add_a_header_is_refused(sender, recipients, subject):
    with pytest.raises(AnsibleFilterError, match="cannot be sent"):
        mail_message("body", sender, recipients, subject)
