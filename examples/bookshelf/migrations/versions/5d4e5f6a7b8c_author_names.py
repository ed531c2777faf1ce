"""split author names

Revision ID: 5d4e5f6a7b8c
Revises: 4c3d4e5f6a7b
Create Date: 2026-11-30 11:48:55.672045

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '5d4e5f6a7b8c'
down_revision: Union[str, Sequence[str], None] = '4c3d4e5f6a7b'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.add_column('authors', sa.Column('family_name', sa.String(length=200), nullable=True))
    op.execute("UPDATE authors SET family_name = split_part(name, ' ', -1)")


def downgrade() -> None:
    """Downgrade schema."""
    raise NotImplementedError("family names were edited by hand after the split: restore the backup instead")
