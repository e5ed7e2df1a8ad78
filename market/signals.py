"""Signals files (`timestamp,action`) from other strategies, and how their rows land on candles.

One reader for the Backtest page and the headless CLI, so a file means the same thing in both.
Timestamps may be ISO times (with or without a zone; none means UTC), dates, or epoch seconds,
milliseconds, microseconds or nanoseconds. Actions are BUY, SELL or HOLD in any case.

A row lands on the last candle that opened at or before its time, as long as its time is before
the next candle opens (or, for the last candle, within one timeframe of its open). So a row
stamped with a candle's open time, its close time minus a tick, or a time of day in another zone
of the same date all land on that candle; a row timed in a gap lands on the candle before the
gap. That is causal: a row's time is never after the close it is acted on, so it fills at the
next open as every other signal does. HOLD rows are "do nothing" and never cancel a BUY or SELL;
when several BUY / SELL rows land on one candle the last one wins.

Anything wrong with a file raises SignalsError, the one error a file's content can cause, with
a short message naming the row: no rows, an unknown action, a time that does not read (inf,
text) or cannot be a market's (before 1900, years ahead; market/times.py). Files over the
upload limit, broken .gz files and binary data are refused as the candle reader refuses them.
"""

from __future__ import annotations

import csv
import io
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from contract.vocab import ACTIONS
from market import times
from market.files import CsvLayoutError, clip, load_text

_TIME_COLUMNS = ("timestamp", "time", "datetime", "date")
_ACTION_COLUMNS = ("action", "signal")


class SignalsError(ValueError):
    """A signals file that cannot be used; the message says which row and why."""


def read(source: str | Path | bytes) -> pd.DataFrame:
    """Rows of a signals CSV as a DataFrame (ts: epoch ms UTC, action), sorted by time (rows
    with equal times keep their file order). Raises SignalsError (see above); OSError for a
    path that cannot be opened."""
    try:
        text, _ = load_text(source, "the signals file")
    except CsvLayoutError as exc:
        raise SignalsError(str(exc)) from None
    try:
        df = pd.read_csv(
            io.StringIO(text),
            sep=_delimiter(text),
            dtype=str,
            keep_default_na=False,
            skipinitialspace=True,
        )
    except (ValueError, csv.Error, OverflowError) as exc:  # pandas' ParserError is a ValueError
        raise SignalsError(f"cannot read the signals file: {clip(exc, 200)}") from None
    cols = {str(c).lower().strip().lstrip("\ufeff"): c for c in df.columns}
    t_col = next((cols[c] for c in _TIME_COLUMNS if c in cols), None)
    a_col = next((cols[c] for c in _ACTION_COLUMNS if c in cols), None)
    if t_col is None or a_col is None:
        raise SignalsError(
            f"a signals file needs columns timestamp,action; it has {clip(list(df.columns), 120)}"
        )
    if df.empty:
        raise SignalsError("no signals in file: it has a header but no rows")
    actions = df[a_col].fillna("").str.strip().str.upper()
    bad = ~actions.isin(ACTIONS)
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise SignalsError(
            f"row {i + 2}: action {clip(df[a_col].iloc[i], 40)!r} is not BUY, SELL or HOLD"
        )
    ts = to_epoch_ms(df[t_col].fillna("").str.strip())
    out = pd.DataFrame({"ts": ts, "action": actions.to_numpy()})
    return out.sort_values("ts", kind="stable", ignore_index=True)


def to_epoch_ms(raw: pd.Series) -> np.ndarray:
    """Times as epoch milliseconds (market/times.py); the first row that does not read, or
    reads as a time no market has (before 1900, years ahead), is an error."""
    ms, _ = times.parse(raw.astype("string"))
    if ms.isna().any():
        i = int(np.flatnonzero(ms.isna().to_numpy())[0])
        raise SignalsError(f"row {i + 2}: {clip(raw.iloc[i], 40)!r} is not a date or time")
    odd = times.implausible(ms)
    if odd.any():
        i = int(np.flatnonzero(odd.to_numpy())[0])
        raise SignalsError(
            f"row {i + 2}: {clip(raw.iloc[i], 40)!r} reads as {times.fmt(ms.iloc[i])}, not "
            f"{times.bounds_text()}: a wrong unit or a typo?"
        )
    return ms.astype("int64").to_numpy()


def _delimiter(text: str) -> str:
    """`,` `;` tab or `|`, sniffed from the first lines."""
    try:
        found = csv.Sniffer().sniff(text[:4096], delimiters=",;\t|").delimiter
    except csv.Error:
        return ","
    return found if found and found in ",;\t|" else ","


@dataclass
class Placement:
    """How a file's rows landed on the candles of a backtest's range."""

    rows: int = 0
    on_candles: int = 0  # BUY / SELL rows that landed on a candle in range
    exact: int = 0  # … of which at a candle's exact open time
    before_range: int = 0
    after_range: int = 0
    in_gaps: int = 0  # timed in a gap between candles: acted on at the candle before it
    overridden: int = 0  # a later BUY / SELL row landed on the same candle
    holds: int = 0

    def as_dict(self) -> dict:
        return asdict(self)

    def warning(self) -> str | None:
        """A sentence for the person when rows were dropped or moved; None when all is plain."""
        parts = []
        if self.before_range or self.after_range:
            parts.append(
                f"{self.before_range + self.after_range:,} outside the range "
                f"({self.before_range:,} before, {self.after_range:,} after)"
            )
        if self.on_candles - self.exact:
            parts.append(
                f"{self.on_candles - self.exact:,} not at a candle's open time, acted on at the candle they fall in"
            )
        if self.overridden:
            parts.append(f"{self.overridden:,} replaced by a later signal in the same candle")
        if not parts:
            return None
        return f"signals: {self.rows:,} rows; " + "; ".join(parts) + "."


def place(
    signals: pd.DataFrame, candle_ts: np.ndarray, interval_ms: int
) -> tuple[np.ndarray, Placement]:
    """Action per candle (BUY / SELL / HOLD strings) for candles opening at `candle_ts`
    (ascending epoch ms), and how the rows landed."""
    ts = np.asarray(candle_ts, dtype="int64")
    n = len(ts)
    out = np.full(n, "HOLD", dtype=object)
    info = Placement(rows=len(signals))
    acts = signals.action.to_numpy()
    when = signals.ts.to_numpy(dtype="int64")
    info.holds = int((acts == "HOLD").sum())
    keep = acts != "HOLD"
    acts, when = acts[keep], when[keep]
    if n == 0 or len(when) == 0:
        return out, info
    idx = np.searchsorted(ts, when, side="right") - 1
    ends = np.append(ts[1:], ts[-1] + interval_ms)
    before = idx < 0
    safe = np.clip(idx, 0, n - 1)
    after = ~before & (idx == n - 1) & (when >= ends[-1])
    landed = ~before & ~after
    info.before_range, info.after_range = int(before.sum()), int(after.sum())
    exact = landed & (ts[safe] == when)
    info.exact = int(exact.sum())
    info.on_candles = int(landed.sum())
    nominal_end = ts[safe] + interval_ms
    info.in_gaps = int((landed & (when >= nominal_end)).sum())
    hit, landed_acts = safe[landed], acts[landed]
    last = np.ones(len(hit), dtype=bool)  # rows are in time order: the last per candle wins
    last[:-1] = hit[1:] != hit[:-1]
    info.overridden = int((~last).sum())
    out[hit[last]] = landed_acts[last]
    return out, info


def span(signals: pd.DataFrame) -> tuple[pd.Timestamp, pd.Timestamp] | None:
    """First and last row time (UTC), or None for an empty file."""
    if signals.empty:
        return None
    return (pd.Timestamp(int(signals.ts.min()), unit="ms", tz="UTC"),
            pd.Timestamp(int(signals.ts.max()), unit="ms", tz="UTC"))  # fmt: skip
