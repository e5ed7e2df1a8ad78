"""Read a candle CSV in the layouts people actually have, and check every row before import.

Layouts recognised (`CandleReport.format`):
- `generic`: a header naming a time column (timestamp / time / date / datetime / open_time, or
  separate date and time columns, or an unnamed first column as pandas writes an index) and
  open, high, low, close and (optionally) volume, in any order and case.
- `yahoo`: the same with an `Adj Close` column (ignored unless `adjust=True`, which scales
  open/high/low/close by adj_close / close so splits and dividends do not show as jumps).
- `binance`: Binance's kline export, no header, twelve columns starting
  open_time, open, high, low, close, volume (open_time in ms, or µs in newer spot files).
Times are read by market/times.py (shared with signals files): ISO strings, dates, YYYYMMDD,
or epoch numbers (s / ms / µs / ns, told apart by size); no zone means UTC; nn/nn/yyyy dates
are read day-first or month-first as the data says. Delimiters `,`, `;`, tab
and `|` are sniffed. Exports from other tools read as they are: MetaTrader (<DATE> <TIME>,
tick volume when real volume is all zero), Investing.com (Price as close, "1,228.10", volume
"0.88K", newest row first), decimal commas in `;` files, TradingView / Kraken epoch seconds.

Every fault is counted with examples (`Problem`). Row faults (unparsable, missing values,
high < low, open/close outside [low, high], non-positive prices, negative volume, duplicate
times) and file faults (rows out of time order, gaps, a spacing that does not match the
timeframe) all block the import by default: a file goes in whole or not at all. The person may
`skip_bad_rows` (bad rows dropped, rows sorted) and `allow_gaps`.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from market import timeframes, times

COLUMNS = ["ts", "open", "high", "low", "close", "volume"]
MAX_EXAMPLES = 5
WEEK_MS = 7 * 86_400_000
MONDAY_MS = 4 * 86_400_000  # 1970-01-05 was the first Monday after the epoch

# What each fault is called in reports, and whether skipping bad rows removes it.
PROBLEMS = {
    "unparsable": "rows that could not be read (wrong number of fields, text where a number "
    "or time should be)",
    "missing_values": "rows with an empty or NaN open, high, low, close, volume or time",
    "high_below_low": "rows where high < low",
    "open_outside_range": "rows where open is outside [low, high]",
    "close_outside_range": "rows where close is outside [low, high]",
    "non_positive_price": "rows with a price of zero or below",
    "negative_volume": "rows with negative volume",
    "duplicate_timestamp": "rows repeating a time already seen earlier in the file",
    "out_of_order": "rows earlier than the row before them",
    "timeframe_mismatch": "rows spaced more tightly than the timeframe allows",
    "gaps": "missing candles between consecutive rows (market closures excepted)",
}
ROW_FAULTS = [
    "unparsable",
    "missing_values",
    "high_below_low",
    "open_outside_range",
    "close_outside_range",
    "non_positive_price",
    "negative_volume",
    "duplicate_timestamp",
    "timeframe_mismatch",
]

# Header names for each field, in order of preference (compared after _norm).
_ALIASES = {
    "ts": [
        "timestamp", "datetime", "date", "time", "opentime", "open_time", "datetimeutc",
        "gmttime", "localtime", "unnamed:0", "", "index", "t", "timeutc", "dateutc",
    ],
    "open": ["open", "o", "openprice"],
    "high": ["high", "h", "highprice"],
    "low": ["low", "l", "lowprice"],
    "close": ["close", "c", "closeprice", "close/last", "last", "price"],  # price: Investing.com
    "volume": ["volume", "vol", "v", "volumefrom", "basevolume", "tickvolume", "tickvol"],
    "adj_close": ["adjclose", "adjustedclose", "adj_close"],
}  # fmt: skip
TICK_VOLUME = {"tickvolume", "tickvol"}  # MetaTrader: real volume is often all zero for FX
_THOUSANDS = re.compile(r"^[+-]?\d{1,3}(,\d{3})+(\.\d+)?$")
_EUROPEAN = re.compile(r"^[+-]?\d{1,3}(\.\d{3})*,\d+$|^[+-]?\d+,\d+$")
_SUFFIXED = re.compile(r"^([+-]?[\d.,]+)\s*([kmb])$", re.IGNORECASE)
_SUFFIX = {"k": 1e3, "m": 1e6, "b": 1e9}


class CsvLayoutError(ValueError):
    """The file is not a candle CSV this reader understands (no usable columns)."""


@dataclass
class Problem:
    """One kind of fault: how many rows or places have it, and a few to look at."""

    kind: str
    count: int
    description: str
    examples: list[dict] = field(default_factory=list)

    def headline(self) -> str:
        return f"{self.count} {self.description}"


@dataclass
class CandleReport:
    """What a check of one file found. `blocking` lists what stops an import as asked."""

    source: str
    format: str
    timeframe: str
    rows_in_file: int
    valid_rows: int
    first_ts: int | None
    last_ts: int | None
    problems: list[Problem]
    notes: list[str]
    sha256: str

    def problem(self, kind: str) -> Problem | None:
        return next((p for p in self.problems if p.kind == kind), None)

    def blocking(self, skip_bad_rows: bool = False, allow_gaps: bool = False) -> list[Problem]:
        """The problems that stop an import with these options."""
        out = []
        for p in self.problems:
            if p.kind == "gaps":
                if not allow_gaps:
                    out.append(p)
            elif not skip_bad_rows:
                out.append(p)
        return out

    def message(self, skip_bad_rows: bool = False, allow_gaps: bool = False) -> str:
        """A paragraph a person can act on."""
        blocking = self.blocking(skip_bad_rows, allow_gaps)
        if not blocking:
            return f"{self.source}: {self.valid_rows} candles ready to import."
        lines = [f"{self.source}: not imported, nothing was changed. Found:"]
        for p in blocking:
            ex = "; ".join(e["detail"] for e in p.examples[:3])
            lines.append(f"  - {p.headline()}" + (f" (e.g. {ex})" if ex else ""))
        fixes = []
        if any(p.kind != "gaps" for p in blocking):
            fixes.append("fix the file, or choose 'skip bad rows' to import only the good rows")
        if any(p.kind == "gaps" for p in blocking):
            fixes.append("choose 'allow gaps' if the missing candles are expected")
        lines.append("To import: " + "; ".join(fixes) + ".")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class CandleFile:
    """A parsed file: every row with its parse results, plus the report."""

    rows: pd.DataFrame  # COLUMNS + line (file line number) + bad (bool) + reasons
    report: CandleReport

    def candles(self, skip_bad_rows: bool = False, allow_gaps: bool = False) -> pd.DataFrame:
        """The rows to import, sorted by time; raises ImportRejected if the options do not
        cover every problem found."""
        if self.report.blocking(skip_bad_rows, allow_gaps):
            raise ImportRejected(self.report, skip_bad_rows, allow_gaps)
        good = self.rows.loc[~self.rows["bad"], COLUMNS]
        return good.sort_values("ts", kind="stable").reset_index(drop=True)


class ImportRejected(ValueError):
    """The file has problems the chosen options do not allow; nothing was imported."""

    def __init__(self, report: CandleReport, skip_bad_rows: bool, allow_gaps: bool) -> None:
        super().__init__(report.message(skip_bad_rows, allow_gaps))
        self.report = report


def _decode(data: bytes) -> str:
    for enc in ("utf-8-sig", "cp1252"):
        try:
            return data.decode(enc)
        except UnicodeDecodeError:
            continue
    return data.decode("latin-1")


def _sniff_delimiter(text: str) -> str:
    sample = "\n".join(text.splitlines()[:20])
    try:
        return csv.Sniffer().sniff(sample, delimiters=",;\t|").delimiter
    except csv.Error:
        return ","


def _norm(name: str) -> str:
    """Header names compared without case, spaces, _ - . or MetaTrader's <angle brackets>."""
    return re.sub(r"[\s_\-\.<>]+", "", name.strip().strip('"').lower())


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _map_header(header: list[str]) -> tuple[dict[str, int], int | None]:
    """Column positions for our fields, plus a separate time-of-day column if present."""
    normed = [_norm(h) for h in header]
    found: dict[str, int] = {}
    for key, names in _ALIASES.items():
        for alias in (_norm(a) for a in names):
            i = next(
                (i for i, n in enumerate(normed) if n == alias and i not in found.values()), None
            )
            if i is not None:
                found[key] = i
                break
    time_of_day = None
    if "ts" in found and normed[found["ts"]] == "date" and "time" in normed:
        time_of_day = normed.index("time")
    if found.get("ts") == time_of_day:
        time_of_day = None
    return found, time_of_day


def _numbers(text: pd.Series, delimiter: str) -> tuple[pd.Series, bool]:
    """Floats from a column's text (NaN where unreadable), and whether any needed more than
    float(): thousands separators (2,940.51), decimal commas (1228,10 in ;-separated files,
    1.234,56) or K / M / B suffixes (0.56K, as Investing.com writes volume)."""
    num = pd.to_numeric(text, errors="coerce")
    retry = num.isna() & text.notna() & ~text.str.lower().isin(["", "nan", "null"])
    if not retry.any():
        return num, False
    fixed = 0

    def read(value: str) -> float:
        nonlocal fixed
        scale, m = 1.0, _SUFFIXED.match(value)
        if m:
            value, scale = m.group(1), _SUFFIX[m.group(2).lower()]
        if delimiter != ";" and _THOUSANDS.match(value):
            value = value.replace(",", "")
        elif _EUROPEAN.match(value):
            value = value.replace(".", "").replace(",", ".")
        elif delimiter == ";" and _THOUSANDS.match(value):
            value = value.replace(",", "")
        try:
            out = float(value) * scale
        except ValueError:
            return float("nan")
        fixed += 1
        return out

    num = num.astype("float64")
    num[retry] = text[retry].map(read).astype("float64")
    return num, fixed > 0


def read_candles(
    source: str | Path | bytes,
    timeframe: str,
    *,
    name: str | None = None,
    adjust: bool = False,
) -> CandleFile:
    """Parse and check a candle CSV (a path, or the file's bytes with `name`).

    Raises CsvLayoutError when no time / OHLC columns can be found at all, and BadTimeframe
    for a timeframe it cannot read; every other fault is reported, not raised.
    """
    interval = timeframes.interval_ms(timeframe)
    if isinstance(source, bytes):
        data, name = source, name or "uploaded file"
    else:
        data, name = Path(source).read_bytes(), name or Path(source).name
    sha = hashlib.sha256(data).hexdigest()
    if data[:2] == b"\x1f\x8b":  # gzip, as exports are often shipped
        data = gzip.decompress(data)
    text = _decode(data)
    if not text.strip():
        raise CsvLayoutError(f"{name} is empty")
    delimiter = _sniff_delimiter(text)
    records = list(csv.reader(io.StringIO(text), delimiter=delimiter))
    lines = [i + 1 for i, r in enumerate(records) if any(c.strip() for c in r)]
    records = [r for r in records if any(c.strip() for c in r)]
    first = records[0]
    if len(records) < 2 and not sum(_is_number(c) for c in first[:6]) >= 5:
        raise CsvLayoutError(f"{name} has a header but no rows")
    notes: list[str] = []

    numeric_first = sum(_is_number(c) for c in first[:6]) >= 5
    if numeric_first and len(first) >= 6:
        fmt, body, body_lines = "binance", records, lines
        cols, time_of_day, width = {k: i for i, k in enumerate(COLUMNS)}, None, len(first)
    else:
        cols, time_of_day = _map_header(first)
        missing = [k for k in ("ts", "open", "high", "low", "close") if k not in cols]
        if missing:
            raise CsvLayoutError(
                f"{name}: no column for {', '.join(missing)} in the header "
                f"{first!r}. Expected a header naming a time column (timestamp, time, date, "
                "datetime or open_time) and open, high, low, close, volume; or a headerless "
                "Binance kline export."
            )
        fmt = "yahoo" if "adj_close" in cols else "generic"
        body, body_lines, width = records[1:], lines[1:], len(first)
        if "volume" not in cols:
            notes.append("no volume column: volume set to 0")
        if "adj_close" in cols:
            notes.append(
                "Adj Close scaled into open/high/low/close" if adjust else "Adj Close ignored"
            )
    if time_of_day is not None:
        notes.append("date and time columns combined")

    def column(idx: int | None) -> pd.Series:
        if idx is None:
            return pd.Series([None] * len(body), dtype=object)
        return pd.Series([r[idx] if idx < len(r) else None for r in body], dtype=object)

    raw_ts = column(cols["ts"]).astype("str").where(column(cols["ts"]).notna())
    if time_of_day is not None:
        raw_ts = raw_ts + " " + column(time_of_day).fillna("").astype(str)
    ts, how = times.parse(raw_ts.astype("string"))
    notes.append(how)

    frame = pd.DataFrame({"ts": ts, "line": body_lines})
    wrong_width = pd.Series([len(r) != width for r in body])
    unparsable = wrong_width.copy()
    missing = pd.Series(False, index=frame.index)
    ts_text = raw_ts.astype("string").str.strip()
    ts_missing = ts_text.isna() | (ts_text == "") | ts_text.str.lower().isin(["nan", "nat"])
    missing |= ts_missing
    unparsable |= ~ts_missing & frame["ts"].isna()
    if "volume" in cols and fmt != "binance":
        volume_text = column(cols["volume"]).astype("string").str.strip()
        if volume_text.isna().all() or volume_text.fillna("").isin(["", "-"]).all():
            del cols["volume"]  # an index without volume (Investing.com writes "-")
            notes.append("volume column empty: volume set to 0")
        elif (pd.to_numeric(volume_text, errors="coerce").fillna(0) == 0).all():
            tick = next((i for i, h in enumerate(first) if _norm(h) in TICK_VOLUME), None)
            if tick is not None and tick != cols["volume"]:
                cols["volume"] = tick
                notes.append("volume all zero: tick volume used instead")
    reformatted = False
    for key in ("open", "high", "low", "close", "volume", "adj_close"):
        if key not in cols:
            if key == "volume":
                frame[key] = 0.0
            continue
        text_col = column(cols[key]).astype("string").str.strip()
        num, was_reformatted = _numbers(text_col, delimiter)
        reformatted |= was_reformatted
        empty = text_col.isna() | (text_col == "") | text_col.str.lower().isin(["nan", "null"])
        missing |= empty
        unparsable |= ~empty & num.isna()
        frame[key] = num.astype("float64")
    if reformatted:
        notes.append("numbers with thousands separators, decimal commas or K/M/B suffixes read")
    missing &= ~unparsable  # a row is counted once, under its first fault
    if adjust and "adj_close" in cols:
        factor = frame["adj_close"] / frame["close"]
        for key in ("open", "high", "low", "close"):
            frame[key] = frame[key] * factor
    frame = frame.drop(columns=["adj_close"], errors="ignore")

    faults: dict[str, pd.Series] = {"unparsable": unparsable, "missing_values": missing}
    readable = ~(unparsable | missing)
    o, h, lo, c, v = (frame[k] for k in ("open", "high", "low", "close", "volume"))
    faults["high_below_low"] = readable & (h < lo)
    in_range = readable & (h >= lo)
    faults["open_outside_range"] = in_range & ((o < lo) | (o > h))
    faults["close_outside_range"] = in_range & ((c < lo) | (c > h))
    faults["non_positive_price"] = readable & ((o <= 0) | (h <= 0) | (lo <= 0) | (c <= 0))
    faults["negative_volume"] = readable & (v < 0)
    bad = pd.Series(False, index=frame.index)
    for mask in faults.values():
        bad |= mask.fillna(False).astype(bool)

    ts_valid = frame["ts"].where(~bad)
    dup = ts_valid.notna() & ts_valid.duplicated(keep="first")
    faults["duplicate_timestamp"] = dup
    bad |= dup
    frame["bad"] = bad

    good_ts = frame.loc[~bad, "ts"].astype("int64").to_numpy()
    good_lines = frame.loc[~bad, "line"].to_numpy()
    newest_first = len(good_ts) > 2 and bool((np.diff(good_ts) < 0).all())
    if newest_first:  # Investing.com and others write newest first: a layout, not a fault
        notes.append("rows were newest first: read in time order")
    order_faults = None if newest_first else _out_of_order(good_ts, good_lines)
    sorted_ts = np.sort(good_ts)
    mismatch = _tight_spacing(frame, bad, interval, timeframe)
    faults["timeframe_mismatch"] = mismatch
    frame["bad"] = bad | mismatch
    if mismatch.any():
        sorted_ts = np.sort(frame.loc[~frame["bad"], "ts"].astype("int64").to_numpy())

    problems: list[Problem] = []
    for kind, mask in faults.items():
        mask = mask.fillna(False).astype(bool)
        if mask.any():
            problems.append(
                Problem(kind, int(mask.sum()), PROBLEMS[kind], _examples(frame, mask, body, kind))
            )
    if order_faults:
        problems.append(order_faults)
    gap = _gaps(sorted_ts, timeframe, interval)
    if gap:
        problems.append(gap)
    problems.sort(key=lambda p: list(PROBLEMS).index(p.kind))

    report = CandleReport(
        source=name,
        format=fmt,
        timeframe=timeframe,
        rows_in_file=len(body),
        valid_rows=int((~frame["bad"]).sum()),
        first_ts=int(sorted_ts[0]) if len(sorted_ts) else None,
        last_ts=int(sorted_ts[-1]) if len(sorted_ts) else None,
        problems=problems,
        notes=notes,
        sha256=sha,
    )
    reasons = pd.Series("", index=frame.index)
    for kind, mask in faults.items():
        reasons = reasons.where(~mask.fillna(False).astype(bool), reasons + kind + " ")
    frame["reasons"] = reasons.str.strip()
    return CandleFile(frame, report)


def _fmt_ts(ms: int) -> str:
    return pd.Timestamp(int(ms), unit="ms", tz="UTC").strftime("%Y-%m-%d %H:%M")


def _examples(frame: pd.DataFrame, mask: pd.Series, body: list[list[str]], kind: str) -> list:
    out = []
    for idx in np.flatnonzero(mask.to_numpy())[:MAX_EXAMPLES]:
        row = frame.iloc[idx]
        raw = ",".join(body[idx])
        detail = {
            "high_below_low": f"line {row.line}: high {row.high} < low {row.low}",
            "open_outside_range": f"line {row.line}: open {row.open} outside "
            f"[{row.low}, {row.high}]",
            "close_outside_range": f"line {row.line}: close {row.close} outside "
            f"[{row.low}, {row.high}]",
            "negative_volume": f"line {row.line}: volume {row.volume}",
            "duplicate_timestamp": f"line {row.line}: "
            + (_fmt_ts(row.ts) if pd.notna(row.ts) else "")
            + " already seen",
            "timeframe_mismatch": f"line {row.line}: "
            + (_fmt_ts(row.ts) if pd.notna(row.ts) else "")
            + " is less than one candle after the row before",
        }.get(kind, f"line {row.line}: {raw[:80]!r}")
        out.append({"line": int(row.line), "detail": detail, "raw": raw[:200]})
    return out


def _out_of_order(ts: np.ndarray, lines: np.ndarray) -> Problem | None:
    if len(ts) < 2:
        return None
    running_max = np.maximum.accumulate(ts)
    back = np.flatnonzero(ts[1:] < running_max[:-1]) + 1
    if not len(back):
        return None
    examples = [
        {
            "line": int(lines[i]),
            "detail": f"line {lines[i]}: {_fmt_ts(ts[i])} comes after "
            f"{_fmt_ts(running_max[i - 1])}",
        }
        for i in back[:MAX_EXAMPLES]
    ]
    return Problem("out_of_order", len(back), PROBLEMS["out_of_order"], examples)


def _tight_spacing(frame: pd.DataFrame, bad: pd.Series, interval: int, timeframe: str):
    """Rows closer to the previous row than one candle: a wrong timeframe or stray rows."""
    mask = pd.Series(False, index=frame.index)
    good = frame.loc[~bad].sort_values("ts", kind="stable")
    if len(good) < 2:
        return mask
    slack = 0.5 if timeframes.is_calendar_regular(timeframe) else 0.9 * 28 / 30
    diffs = good["ts"].astype("int64").diff()
    tight = diffs < interval * slack
    mask.loc[good.index[tight.fillna(False).to_numpy()]] = True
    return mask


def _gaps(ts: np.ndarray, timeframe: str, interval: int) -> Problem | None:
    """Missing candles, not counting market closures.

    A closure is learned from the file itself: a time slot of the week (Saturday for daily
    stock data, the night for intraday stock data) that never holds a candle is closed, so
    skipping it is no gap. Crypto files, which trade every slot, count every missing candle.
    Files shorter than two weeks learn weekdays and times of day separately instead.
    """
    if len(ts) < 2:
        return None
    d = np.diff(ts)
    if not timeframes.is_calendar_regular(timeframe):
        idx = np.flatnonzero(d > 1.5 * interval)
        missing = np.maximum(np.round(d[idx] / interval) - 1, 1).astype(int)
    else:
        idx = np.flatnonzero(d > interval)
        missing = (d[idx] // interval - 1).astype(np.int64) + ((d[idx] % interval) > 0)
        if interval <= WEEK_MS and WEEK_MS % interval == 0:
            slots = WEEK_MS // interval
            slot = ((ts - MONDAY_MS) % WEEK_MS) // interval
            seen = np.zeros(slots, dtype=bool)
            seen[slot] = True
            if ts[-1] - ts[0] < 2 * WEEK_MS and interval < 86_400_000:
                # Too short to learn a weekly pattern: a slot is open if its weekday and its
                # time of day each appear somewhere in the file.
                per_day = 86_400_000 // interval
                all_slots = np.arange(slots)
                day_seen = np.zeros(7, dtype=bool)
                day_seen[slot // per_day] = True
                tod_seen = np.zeros(per_day, dtype=bool)
                tod_seen[slot % per_day] = True
                seen = day_seen[all_slots // per_day] & tod_seen[all_slots % per_day]
            keep = []
            for j, i in enumerate(idx):
                k = int(missing[j])
                if k >= slots:
                    keep.append(True)
                    continue
                start = ((ts[i] - MONDAY_MS) % WEEK_MS) // interval + 1
                open_skipped = int(seen[(start + np.arange(k)) % slots].sum())
                missing[j] = open_skipped  # closed slots skipped are not missing candles
                keep.append(open_skipped > 0)
            keep = np.array(keep, dtype=bool)
            idx, missing = idx[keep], missing[keep]
    if not len(idx):
        return None
    order = np.argsort(-missing, kind="stable")
    examples = [
        {
            "line": None,
            "detail": f"{int(missing[j])} candle(s) missing after {_fmt_ts(ts[idx[j]])}",
        }
        for j in order[:MAX_EXAMPLES]
    ]
    return Problem(
        "gaps",
        int(len(idx)),
        f"gaps, {int(missing.sum())} candles missing in all ({PROBLEMS['gaps']})",
        examples,
    )


COMMON_TIMEFRAMES = [
    "1m",
    "3m",
    "5m",
    "15m",
    "30m",
    "1h",
    "2h",
    "4h",
    "6h",
    "12h",
    "1d",
    "1w",
    "1M",
]


def guess_timeframe(source: str | Path | bytes) -> str | None:
    """The common timeframe closest to the file's typical spacing (its median), or None."""
    try:
        parsed = read_candles(source, "1d")
    except (CsvLayoutError, ValueError):
        return None
    ts = np.sort(parsed.rows.loc[~parsed.rows["ts"].isna(), "ts"].astype("int64").unique())
    if len(ts) < 2:
        return None
    step = float(np.median(np.diff(ts)))
    return min(COMMON_TIMEFRAMES, key=lambda tf: abs(np.log(timeframes.interval_ms(tf) / step)))
