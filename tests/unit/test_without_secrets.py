"""Statement texts lose their passwords and connection strings before any report keeps them (a pure check)."""

import pytest

from ansible_collections.intowork.pgops.plugins.module_utils._text import without_secrets


@pytest.mark.parametrize("text, kept", [
    ("CREATE ROLE app LOGIN PASSWORD 'cleartext-1'", "CREATE ROLE app LOGIN PASSWORD '***'"),
    ("alter user app with encrypted password 'it''s-2' valid until 'infinity'",
     "alter user app with encrypted password '***' valid until 'infinity'"),
    ("ALTER ROLE app PASSWORD $pw$cleartext-3$pw$", "ALTER ROLE app PASSWORD ***"),
    ("CREATE USER MAPPING FOR app SERVER s OPTIONS (user 'x', password 'cleartext-4')",
     "CREATE USER MAPPING FOR app SERVER s OPTIONS (user 'x', password '***')"),
    ("CREATE SUBSCRIPTION s CONNECTION 'host=a user=r password=cleartext-5' PUBLICATION p",
     "CREATE SUBSCRIPTION s CONNECTION '***' PUBLICATION p"),
    ("SELECT * FROM dblink('host=a password=cleartext-6 dbname=b', 'SELECT 1')",
     "SELECT * FROM dblink('host=a password=*** dbname=b', 'SELECT 1')"),
    # Cut short by left(query, 200) inside the literal.
    ("CREATE ROLE app PASSWORD 'cleartext-7", "CREATE ROLE app PASSWORD '***'"),
    ("SELECT name FROM companies WHERE id = $1", "SELECT name FROM companies WHERE id = $1"),
    (None, None),
])
def test_secrets_are_hidden_and_the_rest_kept(text, kept):
    assert without_secrets(text) == kept
