"""The one fill rule, for live sessions (and backtests): a simulated account.

- A signal computed at the close of candle t is filled at the open of candle t+1.
- BUY targets a long position (closing a short first), SELL a short position (closing a long
  first) or, when `long_only`, a flat one. HOLD keeps the position.
- Fees are `fee_bps` basis points of the traded notional, charged on every fill.
- The whole equity goes into each position: units = equity / (price · (1 + fee)), so a fill
  can always be paid for.
Equity = cash + units × price. A trade's return_pct is (exit / entry − 1) × (+1 long, −1 short)
in percent, net of the fees of both its fills.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from contract.vocab import CASH

TARGET = {"BUY": 1, "SELL": -1}


@dataclass
class Account:
    fee_bps: float = 0.0
    long_only: bool = False
    cash: float = CASH
    units: float = 0.0
    pending: int | None = None  # target position (-1, 0, 1) to fill at the next open
    entry_ts: int | None = None
    entry_price: float | None = None
    entry_fee: float = 0.0
    realized: float = 0.0
    fees: float = 0.0
    last_price: float | None = None
    trades: int = 0
    wins: int = 0
    closed: list[dict] = field(default_factory=list, repr=False)

    @property
    def position(self) -> int:
        return int(self.units > 0) - int(self.units < 0)

    @property
    def equity(self) -> float:
        return self.cash + self.units * (self.last_price or 0.0)

    @property
    def unrealized(self) -> float:
        if not self.units or self.entry_price is None or self.last_price is None:
            return 0.0
        return self.units * (self.last_price - self.entry_price) - self.entry_fee

    def signal(self, action: str) -> None:
        """The model's action at a candle's close; filled at the next open."""
        target = TARGET.get(action)
        if target is None:
            self.pending = None
            return
        if target < 0 and self.long_only:
            target = 0
        self.pending = target if target != self.position else None

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
        """Close any open position at `price` (the end of a backtest)."""
        self.last_price = price
        return [self._close(ts, price)] if self.units else []

    def _fee(self, notional: float) -> float:
        return abs(notional) * self.fee_bps / 10_000

    def _open(self, ts: int, price: float, side: int) -> None:
        rate = self.fee_bps / 10_000
        units = side * self.cash / (price * (1 + rate))
        fee = self._fee(units * price)
        self.cash -= units * price + fee
        self.units = units
        self.entry_ts, self.entry_price, self.entry_fee = ts, price, fee
        self.fees += fee

    def _close(self, ts: int, price: float) -> dict:
        fee = self._fee(self.units * price)
        self.cash += self.units * price - fee
        pnl = self.units * (price - self.entry_price) - self.entry_fee - fee
        side = "long" if self.units > 0 else "short"
        notional = abs(self.units) * self.entry_price
        trade = {
            "side": side,
            "entry_ts": self.entry_ts,
            "entry_price": self.entry_price,
            "exit_ts": ts,
            "exit_price": price,
            "pnl": pnl,
            "return_pct": pnl / notional * 100,
            "fees": self.entry_fee + fee,
        }
        self.units = 0.0
        self.entry_ts = self.entry_price = None
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
        fields = {k: v for k, v in state.items() if k in cls.__dataclass_fields__}
        return cls(**fields)
