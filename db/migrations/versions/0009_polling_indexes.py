"""polling indexes: engines not stopped, annotations by where they end

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-27 10:00:00

"""
from typing import Sequence, Union

from alembic import op


# revision identifiers, used by Alembic.
revision: str = '0009'
down_revision: Union[str, Sequence[str], None] = '0008'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Reads the pages poll: the engine badge (instances whose stop is not recorded, every 2 s
    on every page; the table gains a row per engine start) and a live chart's annotations
    (those of a dataset ending after the window's first candle). Indexes only: no table is
    rebuilt."""
    op.create_index('ix_engines_stopped_at', 'engines', ['stopped_at'])
    op.create_index('ix_annotations_symbol_timeframe_exit_ts', 'annotations',
                    ['symbol', 'timeframe', 'exit_ts'])


def downgrade() -> None:
    op.drop_index('ix_annotations_symbol_timeframe_exit_ts', table_name='annotations')
    op.drop_index('ix_engines_stopped_at', table_name='engines')
