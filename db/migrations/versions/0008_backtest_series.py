"""backtest series: a report's per-candle arrays and trades as blobs, its row's equity decimated

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-27 08:30:00

"""
from typing import Sequence, Union

from alembic import op
import numpy as np
import sqlalchemy as sa

from db import series


# revision identifiers, used by Alembic.
revision: str = '0008'
down_revision: Union[str, Sequence[str], None] = '0007'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

_backtests = sa.table('backtests', sa.column('id', sa.Integer), sa.column('equity', sa.JSON),
                      sa.column('trades', sa.JSON))
_series = sa.table('backtest_series', sa.column('backtest_id', sa.Integer),
                   sa.column('candles', sa.Integer), sa.column('predictions', sa.Integer),
                   sa.column('data', sa.LargeBinary), sa.column('trades', sa.LargeBinary))
_predictions = sa.table('backtest_predictions', sa.column('backtest_id', sa.Integer),
                        sa.column('ts', sa.BigInteger), sa.column('action', sa.String),
                        *(sa.column(c, sa.Float) for c in ('p_buy', 'p_sell', 'p_hold')))
_P = ('p_buy', 'p_sell', 'p_hold')  # contract.vocab.ACTIONS order


def upgrade() -> None:
    """Every stored report's predictions and whole equity move into one blob, its trades into
    another; its row keeps the decimated curve. The prediction rows go."""
    op.create_table('backtest_series',
    sa.Column('backtest_id', sa.Integer(), nullable=False),
    sa.Column('candles', sa.Integer(), nullable=False),
    sa.Column('predictions', sa.Integer(), nullable=False),
    sa.Column('data', sa.LargeBinary(), nullable=False),
    sa.Column('trades', sa.LargeBinary(), nullable=False),
    sa.ForeignKeyConstraint(['backtest_id'], ['backtests.id'], name=op.f('fk_backtest_series_backtest_id_backtests')),
    sa.PrimaryKeyConstraint('backtest_id', name=op.f('pk_backtest_series'))
    )
    conn = op.get_bind()
    reports = sa.select(_backtests.c.id, _backtests.c.equity, _backtests.c.trades)
    for bid, equity, trades in conn.execute(reports).all():
        rows = conn.execute(
            sa.select(_predictions.c.ts, *(_predictions.c[c] for c in _P))
            .where(_predictions.c.backtest_id == bid).order_by(_predictions.c.ts)
        ).all()
        if not equity or not equity.get('ts'):
            continue  # a failed or cancelled run kept no curve
        ts, eq = np.asarray(equity['ts'], dtype=np.int64), np.asarray(equity['equity'], dtype=float)
        probs = None
        if rows:
            by_ts = {r[0]: r[1:] for r in rows}
            probs = np.array([by_ts.get(int(t), (np.nan,) * 3) for t in ts], dtype=np.float32)
        trade_columns = series.trade_columns((trades or {}).get('rows', []))
        conn.execute(_series.insert().values(backtest_id=bid, candles=len(ts),
                     predictions=len(rows), data=series.pack(ts, eq, probs),
                     trades=series.pack_trades(trade_columns)))
        conn.execute(_backtests.update().where(_backtests.c.id == bid)
                     .values(equity=series.row_equity(ts, eq), trades=None))
    op.drop_table('backtest_predictions')


def downgrade() -> None:
    op.create_table('backtest_predictions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('backtest_id', sa.Integer(), nullable=False),
    sa.Column('ts', sa.BigInteger(), nullable=False),
    sa.Column('action', sa.String(length=4), nullable=False),
    sa.Column('p_buy', sa.Double(), nullable=False),
    sa.Column('p_sell', sa.Double(), nullable=False),
    sa.Column('p_hold', sa.Double(), nullable=False),
    sa.ForeignKeyConstraint(['backtest_id'], ['backtests.id'], name=op.f('fk_backtest_predictions_backtest_id_backtests')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_backtest_predictions')),
    sa.UniqueConstraint('backtest_id', 'ts', name=op.f('uq_backtest_predictions_backtest_id_ts'))
    )
    conn = op.get_bind()
    kept = sa.select(_series.c.backtest_id, _series.c.data, _series.c.trades)
    for bid, data, trades in conn.execute(kept).all():
        arrays = series.unpack(data)
        ts, eq = arrays['ts'], arrays['equity']
        rows = series.trade_frame(series.unpack_trades(trades)).to_dict('records')
        conn.execute(_backtests.update().where(_backtests.c.id == bid)
                     .values(equity={'ts': ts.tolist(), 'equity': eq.tolist()},
                             trades={'rows': rows}))
        if 'probs' in arrays:
            names = np.array(['BUY', 'SELL', 'HOLD'])[arrays['probs'].argmax(1)]
            rows = [{'backtest_id': bid, 'ts': int(t), 'action': a, **dict(zip(_P, map(float, p)))}
                    for t, a, p in zip(ts, names, arrays['probs']) if not np.isnan(p).any()]
            if rows:
                conn.execute(_predictions.insert(), rows)
    op.drop_table('backtest_series')
