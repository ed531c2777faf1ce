"""Alembic environment for INTOWORK: one transaction per migration, URL from DATABASE_URL."""

import os
from logging.config import fileConfig

from alembic import context
from sqlalchemy import create_engine, pool

config = context.config
if config.config_file_name is not None:
    fileConfig(config.config_file_name, disable_existing_loggers=False)

# An empty postgresql URL lets libpq take host, user, password from PG* variables or .pgpass.
DATABASE_URL = os.environ.get("DATABASE_URL") or "postgresql+psycopg2://"


def run_migrations_offline() -> None:
    context.configure(url=DATABASE_URL, literal_binds=True, transaction_per_migration=True,
                      dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = create_engine(DATABASE_URL, poolclass=pool.NullPool)
    with engine.connect() as connection:
        # Each revision commits on its own, so a failure leaves the database at the last good revision.
        context.configure(connection=connection, transaction_per_migration=True)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
