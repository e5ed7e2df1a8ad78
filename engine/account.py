"""A simulated account, candle by candle: the fill rule (engine/fills.py) for live sessions.

Per candle, in order: `open_bar` fills what the previous close signalled at this open, `mark`
values the position at the close, `signal` records the model's action there. `close_out` ends
a run with the end-of-run close. Backtests apply the same rule to whole arrays
(engine/backtest.py) and get the same trades and equity.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from contract.vocab import CASH
from engine import fills


@dataclass
class Account:
    fee_bps: float = 0.0
    long_only: bool = False
    cash: float = CASH
    units: float = 0.0
    pending: int | None = None  # target position (-1, 0, 1) to fill at the next open
    entry_ts: int | None = None
    entry_price: float | None = None  # the entry's fill price (slippage included)
    entry_fee: float = 0.0
    realized: float = 0.0
    fees: float = 0.0
    last_price: float | None = None
    trades: int = 0
    wins: int = 0
    slippage_bps: float = 0.0  # states saved before slippage reached live sessions: none
    entry_equity: float | None = None  # equity the open position started from
    closed: list[dict] = field(default_factory=list, repr=False)

    @property
    def position(self) -> int:
        return int(self.units > 0) - int(self.units < 0)

    @property
    def equity(self) -> float:
        return self.cash + self.units * (self.last_price or 0.0)

    @property
    def unrealized(self) -> float:
        """The open position's P&L at the last price, net of its entry fee (exit fee unpaid)."""
        if not self.units or self.entry_equity is None or self.last_price is None:
            return 0.0
        return self.equity - self.entry_equity

    def signal(self, action: str) -> None:
        """The model's action at a candle's close; filled at the next open."""
        target = fills.targets(self.long_only).get(action)
        self.pending = target if target is not None and target != self.position else None

    def open_bar(self, ts: int, price: float) -> list[dict]:
        """A new candle opened at `price`: fill what was signalled. Returns closed trades."""
        self.last_price = price
        target, self.pending = self.pending, None
        if target is None or target == self.position:
            return []
        out = []
        if self.units:
            out.append(self._close(ts, price))
        if target:
            self._open(ts, price, target)
        return out

    def mark(self, price: float) -> None:
        """Value the position at `price` (a candle's close)."""
        self.last_price = price

    def close_out(self, ts: int, price: float) -> list[dict]:
        """The end-of-run close: any open position exits at `price`, the last candle's close
        (fills.end_of_run), with slippage and fee."""
        self.last_price = price
        return [self._close(ts, price)] if self.units else []

    def _open(self, ts: int, price: float, side: int) -> None:
        p = fills.fill_price(price, side, self.slippage_bps)
        units = fills.size(self.cash, p, side, self.fee_bps)
        fee = fills.fee(units, p, self.fee_bps)
        self.entry_equity = self.cash  # flat before an entry: cash is the whole equity
        self.cash = fills.cash_after_entry(self.cash, units, p, fee)
        self.units = units
        self.entry_ts, self.entry_price, self.entry_fee = ts, p, fee
        self.fees += fee

    def _close(self, ts: int, price: float) -> dict:
        side = self.position
        p = fills.fill_price(price, -side, self.slippage_bps)
        fee = fills.fee(self.units, p, self.fee_bps)
        growth = fills.growth(side, self.entry_price, p, self.fee_bps)
        pnl = fills.pnl(self.entry_equity, growth)
        trade = {
            "side": "long" if side > 0 else "short",
            "entry_ts": self.entry_ts,
            "entry_price": self.entry_price,
            "exit_ts": ts,
            "exit_price": p,
            "pnl": pnl,
            "return_pct": fills.return_pct(growth, self.fee_bps),
            "fees": self.entry_fee + fee,
        }
        self.cash = self.entry_equity * growth
        self.units = 0.0
        self.entry_ts = self.entry_price = self.entry_equity = None
        self.entry_fee = 0.0
        self.realized += pnl
        self.fees += fee
        self.trades += 1
        self.wins += pnl > 0
        return trade

    def state(self) -> dict:
        """JSON-friendly state, for the session row (and resuming)."""
        d = asdict(self)
        d.pop("closed")
        d.update(position=self.position, equity=self.equity, unrealized=self.unrealized)
        return d

    @classmethod
    def from_state(cls, state: dict) -> Account:
        """An account from `state()`, also one saved by an earlier version: without slippage
        (0 then) or without the equity an open position started from (what the entry spent)."""
        fields = {k: v for k, v in state.items() if k in cls.__dataclass_fields__}
        acc = cls(**fields)
        if acc.units and acc.entry_equity is None:
            acc.entry_equity = acc.cash + acc.units * acc.entry_price + acc.entry_fee
        return acc
