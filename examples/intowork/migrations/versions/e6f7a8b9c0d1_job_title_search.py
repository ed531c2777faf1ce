"""job title search: pg_trgm GIN index on jobs.title

Serves ILIKE '%term%' title search, which no btree index can.

Revision ID: e6f7a8b9c0d1
Revises: d5e6f7a8b9c0
Create Date: 2026-04-14 09:00:00
"""

from migrations.online import create_index_concurrently, drop_index_concurrently
from alembic import op

revision = "e6f7a8b9c0d1"
down_revision = "d5e6f7a8b9c0"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    create_index_concurrently("ix_jobs_title_trgm", "jobs USING gin (title gin_trgm_ops)")


def downgrade() -> None:
    drop_index_concurrently("ix_jobs_title_trgm")
    # Without CASCADE: if anything else came to rely on pg_trgm, this fails instead of breaking it.
    op.execute("DROP EXTENSION IF EXISTS pg_trgm")
