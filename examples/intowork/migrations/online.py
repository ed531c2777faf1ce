"""Online schema changes for INTOWORK migrations: short lock waits, concurrent index builds."""

from alembic import op

LOCK_TIMEOUT = "5s"


def set_lock_timeout() -> None:
    """A DDL statement waiting on a lock blocks every query queued behind it: give up fast instead.

    A lock_timeout the session already has (the deployment tool sets one) wins over the default.
    """
    op.execute(
        "SELECT set_config('lock_timeout', CASE WHEN current_setting('lock_timeout') IN ('0', '0ms') "
        f"THEN '{LOCK_TIMEOUT}' ELSE current_setting('lock_timeout') END, false)"
    )


def create_index_concurrently(name: str, definition: str, unique: bool = False) -> None:
    """CREATE INDEX CONCURRENTLY outside the migration's transaction.

    An earlier interrupted build leaves an INVALID index of the same name behind; IF NOT EXISTS would
    keep it, so such a leftover is dropped first.
    """
    with op.get_context().autocommit_block():
        set_lock_timeout()
        op.execute(
            "DO $$ BEGIN "
            "IF EXISTS (SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            f"WHERE c.relname = '{name}' AND c.relnamespace = current_schema()::regnamespace "
            "AND NOT i.indisvalid) THEN "
            f"EXECUTE 'DROP INDEX {name}'; END IF; END $$"
        )
        op.execute(f"CREATE {'UNIQUE ' if unique else ''}INDEX CONCURRENTLY IF NOT EXISTS {name} ON {definition}")


def drop_index_concurrently(name: str) -> None:
    with op.get_context().autocommit_block():
        set_lock_timeout()
        op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")


def add_constraint(table: str, name: str, definition: str) -> None:
    """ALTER TABLE ... ADD CONSTRAINT, skipped when a rerun finds it already there.

    Revisions that mix transactional DDL with autocommit blocks commit part of their work before they
    finish; after a failure the retry must not trip over what was already committed.
    """
    set_lock_timeout()
    op.execute(
        "DO $$ BEGIN "
        f"IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = '{name}' AND conrelid = '{table}'::regclass) "
        f"THEN EXECUTE 'ALTER TABLE {table} ADD CONSTRAINT {name} {definition.replace(chr(39), chr(39) * 2)}'; "
        "END IF; END $$"
    )


def add_unique_constraint_using_index(table: str, name: str, columns: str) -> None:
    """Build the unique index online, then attach it as a constraint (a brief lock only)."""
    create_index_concurrently(name, f"{table} ({columns})", unique=True)
    add_constraint(table, name, f"UNIQUE USING INDEX {name}")
