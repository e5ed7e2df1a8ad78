"""candle snapshots: a dataset's candles as one archive beside its rows

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-28 03:00:00

"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op



# revision identifiers, used by Alembic.
revision: str = '0010'
down_revision: Union[str, Sequence[str], None] = '0009'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """A new table of derived data: existing datasets get their snapshot when an engine first
    reads them whole."""
    op.create_table(
        'candle_snapshots',
        sa.Column('symbol', sa.String(length=64), nullable=False),
        sa.Column('timeframe', sa.String(length=16), nullable=False),
        sa.Column('candles', sa.BigInteger(), nullable=False),
        sa.Column('first_ts', sa.BigInteger(), nullable=False),
        sa.Column('last_ts', sa.BigInteger(), nullable=False),
        sa.Column('data', sa.LargeBinary(), nullable=False),
        sa.Column('written_at', sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint('symbol', 'timeframe', name=op.f('pk_candle_snapshots')),
    )


def downgrade() -> None:
    op.drop_table('candle_snapshots')
