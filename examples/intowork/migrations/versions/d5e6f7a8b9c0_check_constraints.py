"""check constraints: salary ranges and posting dates

Added NOT VALID (a brief lock, no scan), then validated in a second step, which scans the
table under a SHARE UPDATE EXCLUSIVE lock that lets reads and writes go on.

Revision ID: d5e6f7a8b9c0
Revises: c4d5e6f7a8b9
Create Date: 2026-03-20 09:00:00
"""

from migrations.online import add_constraint, set_lock_timeout
from alembic import op

revision = "d5e6f7a8b9c0"
down_revision = "c4d5e6f7a8b9"
branch_labels = None
depends_on = None

CHECKS = [
    ("ck_jobs_salary_min_non_negative", "salary_min IS NULL OR salary_min >= 0"),
    ("ck_jobs_salary_range", "salary_min IS NULL OR salary_max IS NULL OR salary_min <= salary_max"),
    ("ck_jobs_posted_before_expiry", "posted_at IS NULL OR expires_at IS NULL OR posted_at <= expires_at"),
]


def upgrade() -> None:
    for name, expression in CHECKS:
        add_constraint("jobs", name, f"CHECK ({expression}) NOT VALID")
    with op.get_context().autocommit_block():
        for name, _expression in CHECKS:
            op.execute(f"ALTER TABLE jobs VALIDATE CONSTRAINT {name}")


def downgrade() -> None:
    set_lock_timeout()
    for name, _expression in reversed(CHECKS):
        op.execute(f"ALTER TABLE jobs DROP CONSTRAINT IF EXISTS {name}")
