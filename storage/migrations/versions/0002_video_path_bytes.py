"""videos.path_bytes: the raw name of a file whose name is not UTF-8

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24 01:10:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('videos', schema=None) as batch_op:
        batch_op.add_column(sa.Column('path_bytes', sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('videos', schema=None) as batch_op:
        batch_op.drop_column('path_bytes')
