"""archived status for books

Revision ID: 2a1b2c3d4e5f
Revises: 1f0a2b3c4d5e
Create Date: 2026-11-09 16:40:02.118734

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '2a1b2c3d4e5f'
down_revision: Union[str, Sequence[str], None] = '1f0a2b3c4d5e'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.execute("ALTER TYPE book_status ADD VALUE IF NOT EXISTS 'archived'")
    # A new enum value cannot be used in the transaction that added it.
    op.get_bind().commit()
    op.add_column('books', sa.Column('published_on', sa.Date(), nullable=True))
    op.execute("UPDATE books SET status = 'archived' WHERE published_on < DATE '2000-01-01'")


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_column('books', 'published_on')
    # PostgreSQL cannot drop an enum value: rebuild the type without it.
    op.execute("UPDATE books SET status = 'published' WHERE status = 'archived'")
    op.execute("ALTER TYPE book_status RENAME TO book_status_old")
    op.execute("CREATE TYPE book_status AS ENUM ('draft', 'published')")
    op.execute("ALTER TABLE books ALTER COLUMN status DROP DEFAULT")
    op.execute("ALTER TABLE books ALTER COLUMN status TYPE book_status USING status::text::book_status")
    op.execute("ALTER TABLE books ALTER COLUMN status SET DEFAULT 'draft'")
    op.execute("DROP TYPE book_status_old")
