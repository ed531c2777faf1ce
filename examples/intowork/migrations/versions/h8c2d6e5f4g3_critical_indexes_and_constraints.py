"""critical indexes and constraints

The 15 performance indexes and 3 unique constraints of the index strategy
(examples/intowork/index_strategy.yml), built online: CREATE INDEX CONCURRENTLY outside the
migration transaction, unique constraints attached USING INDEX, lock_timeout on every DDL.

Revision ID: h8c2d6e5f4g3
Revises: a7f3b2c1d9e8
Create Date: 2026-02-10 09:00:00
"""

from migrations.online import (
    add_unique_constraint_using_index,
    create_index_concurrently,
    drop_index_concurrently,
    set_lock_timeout,
)
from alembic import op

revision = "h8c2d6e5f4g3"
down_revision = "a7f3b2c1d9e8"
branch_labels = None
depends_on = None

INDEXES = [
    # Employer dashboard: applications per job by status (index-only count).
    ("ix_job_applications_job_id_status", "job_applications (job_id, status)", False),
    # Candidate's applications filtered by status.
    ("ix_job_applications_candidate_id_status", "job_applications (candidate_id, status)", False),
    # Candidate's applications, newest first.
    ("ix_job_applications_candidate_id_applied_at", "job_applications (candidate_id, applied_at DESC)", False),
    # Job list filters: only published jobs are ever listed, so the indexes hold only those.
    ("ix_jobs_published_location_type", "jobs (status, location_type) WHERE status = 'published'", False),
    ("ix_jobs_published_job_type", "jobs (status, job_type) WHERE status = 'published'", False),
    ("ix_jobs_published_posted_at", "jobs (posted_at DESC) WHERE status = 'published'", False),
    # Foreign keys: joins and ON DELETE CASCADE need an index on the referencing side.
    ("ix_jobs_company_id", "jobs (company_id)", False),
    ("ix_jobs_employer_id", "jobs (employer_id)", False),
    ("ix_employers_user_id", "employers (user_id)", False),
    ("ix_employers_company_id", "employers (company_id)", False),
    ("ix_candidates_user_id", "candidates (user_id)", False),
    ("ix_sessions_user_id", "sessions (user_id)", False),
    ("ix_password_reset_tokens_user_id", "password_reset_tokens (user_id)", False),
    # Every authenticated request looks its session up by token; tokens must be unique.
    ("ix_sessions_session_token", "sessions (session_token)", True),
    ("ix_password_reset_tokens_token", "password_reset_tokens (token)", True),
]

UNIQUE_CONSTRAINTS = [
    ("job_applications", "uq_job_applications_candidate_id_job_id", "candidate_id, job_id"),
    ("accounts", "uq_accounts_user_id_provider_account", "user_id, provider, provider_account_id"),
    ("users", "uq_users_email", "email"),
]


def upgrade() -> None:
    for name, definition, unique in INDEXES:
        create_index_concurrently(name, definition, unique=unique)
    for table, name, columns in UNIQUE_CONSTRAINTS:
        add_unique_constraint_using_index(table, name, columns)


def downgrade() -> None:
    set_lock_timeout()
    for table, name, _columns in reversed(UNIQUE_CONSTRAINTS):
        # Dropping the constraint drops its index too.
        op.execute(f"ALTER TABLE {table} DROP CONSTRAINT IF EXISTS {name}")
    for name, _definition, _unique in reversed(INDEXES):
        drop_index_concurrently(name)
