"""soft delete for jobs and job_applications

Nullable deleted_at columns (no default: no table rewrite) and partial indexes that keep the
live-row queries and the purge job fast.

Revision ID: c4d5e6f7a8b9
Revises: h8c2d6e5f4g3
Create Date: 2026-03-02 09:00:00
"""

from migrations.online import create_index_concurrently, drop_index_concurrently, set_lock_timeout
from alembic import op

revision = "c4d5e6f7a8b9"
down_revision = "h8c2d6e5f4g3"
branch_labels = None
depends_on = None

INDEXES = [
    # Listing reads only live published jobs.
    ("ix_jobs_live_published_posted_at", "jobs (posted_at DESC) WHERE status = 'published' AND deleted_at IS NULL"),
    # The purge job finds soft-deleted rows without scanning the live ones.
    ("ix_jobs_deleted_at", "jobs (deleted_at) WHERE deleted_at IS NOT NULL"),
    ("ix_job_applications_deleted_at", "job_applications (deleted_at) WHERE deleted_at IS NOT NULL"),
]


def upgrade() -> None:
    set_lock_timeout()
    op.execute("ALTER TABLE jobs ADD COLUMN IF NOT EXISTS deleted_at timestamptz")
    op.execute("ALTER TABLE job_applications ADD COLUMN IF NOT EXISTS deleted_at timestamptz")
    for name, definition in INDEXES:
        create_index_concurrently(name, definition)


def downgrade() -> None:
    for name, _definition in reversed(INDEXES):
        drop_index_concurrently(name)
    set_lock_timeout()
    op.execute("ALTER TABLE job_applications DROP COLUMN IF EXISTS deleted_at")
    op.execute("ALTER TABLE jobs DROP COLUMN IF EXISTS deleted_at")
