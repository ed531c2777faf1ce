"""active_jobs_summary materialized view

Per-company counts for the employer dashboard. The unique index on company_id allows
REFRESH MATERIALIZED VIEW CONCURRENTLY, so a refresh never blocks readers.

Revision ID: f7a8b9c0d1e2
Revises: e6f7a8b9c0d1
Create Date: 2026-05-11 09:00:00
"""

from migrations.online import set_lock_timeout
from alembic import op

revision = "f7a8b9c0d1e2"
down_revision = "e6f7a8b9c0d1"
branch_labels = None
depends_on = None


def upgrade() -> None:
    set_lock_timeout()
    op.execute(
        """
        CREATE MATERIALIZED VIEW active_jobs_summary AS
        SELECT j.company_id,
               count(*) AS published_jobs,
               coalesce(sum(a.applications), 0)::bigint AS applications,
               max(j.posted_at) AS last_posted_at
          FROM jobs j
          LEFT JOIN (SELECT job_id, count(*) AS applications
                       FROM job_applications
                      WHERE deleted_at IS NULL
                      GROUP BY job_id) a ON a.job_id = j.id
         WHERE j.status = 'published' AND j.deleted_at IS NULL
         GROUP BY j.company_id
        """
    )
    op.execute("CREATE UNIQUE INDEX ux_active_jobs_summary_company_id ON active_jobs_summary (company_id)")


def downgrade() -> None:
    set_lock_timeout()
    op.execute("DROP MATERIALIZED VIEW IF EXISTS active_jobs_summary")
