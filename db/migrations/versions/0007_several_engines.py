"""several engines: names and capacities, routed commands, blobs for shared weights

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-27 05:10:00

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0007'
down_revision: Union[str, Sequence[str], None] = '0006'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Columns are only added, so SQLite alters the tables in place (no rebuild)."""
    with op.batch_alter_table('commands') as batch_op:
        batch_op.add_column(sa.Column('target', sa.String(length=80), nullable=True))
    with op.batch_alter_table('engines') as batch_op:
        batch_op.add_column(sa.Column('name', sa.String(length=80), nullable=True))
        batch_op.add_column(sa.Column('max_jobs', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('max_sessions', sa.Integer(), nullable=True))
    op.create_table('blobs',
    sa.Column('path', sa.String(length=255), nullable=False),
    sa.Column('data', sa.LargeBinary(), nullable=False),
    sa.Column('size', sa.BigInteger(), nullable=False),
    sa.Column('written_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('path', name=op.f('pk_blobs'))
    )


def downgrade() -> None:
    op.drop_table('blobs')
    with op.batch_alter_table('engines') as batch_op:
        batch_op.drop_column('max_sessions')
        batch_op.drop_column('max_jobs')
        batch_op.drop_column('name')
    with op.batch_alter_table('commands') as batch_op:
        batch_op.drop_column('target')
