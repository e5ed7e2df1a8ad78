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
inf prices or volumes, times before 1900 or years ahead, high < low, open/close outside
[low, high], non-positive prices, negative volume, duplicate times) and rows out of time order
or spaced tighter than the timeframe block the import by default: a file goes in whole or not
at all. The person may `skip_bad_rows` (bad rows dropped, rows sorted). Gaps (missing candles)
are facts of markets, not faults of the file (holidays, Christmas closures): they are reported
and imported, unless the person asks for `strict_gaps`.

A file that cannot be read as candles at all (too large, a broken .gz, binary data, no usable
columns) raises CsvLayoutError, the one error a file's content can cause, with a short message.
The bytes are read by market/files.py (shared with signals and annotations files): files over
`upload_limit_mb()` are refused before they are read, and a .gz is unpacked only up to that
size, so a small bomb cannot fill memory. CsvLayoutError, UPLOAD_LIMIT_MB and upload_limit_mb
are importable from here as before.
"""

from __future__ import annotations

import csv
import hashlib
import itertools
import re
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from market import timeframes, times
from market.files import UPLOAD_LIMIT_MB as UPLOAD_LIMIT_MB  # re-exported: the Data page's limit
from market.files import CsvLayoutError, bytes_to_text, clip, load_bytes
from market.files import upload_limit_mb as upload_limit_mb  # re-exported for the Data page

COLUMNS = ["ts", "open", "high", "low", "close", "volume"]
MAX_EXAMPLES = 5
WEEK_MS = 7 * 86_400_000
MONDAY_MS = 4 * 86_400_000  # 1970-01-05 was the first Monday after the epoch
MAX_COLUMNS = 200  # wider first rows are a wrong delimiter or not candles
_CHUNK_ROWS = 100_000  # rows gathered as Python strings before packing into columns
_SNIFF_CHARS = 16_384


# What each fault is called in reports, and whether skipping bad rows removes it.
PROBLEMS = {
    "unparsable": "rows that could not be read (wrong number of fields, text where a number "
    "or time should be)",
    "missing_values": "rows with an empty or NaN open, high, low, close, volume or time",
    "non_finite": "rows with an infinite price or volume (inf, 1e999)",
    "implausible_time": "rows timed before 1900 or years ahead (a wrong unit or a typo)",
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
    "non_finite",
    "implausible_time",
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

    def blocking(self, skip_bad_rows: bool = False, strict_gaps: bool = False) -> list[Problem]:
        """The problems that stop an import with these options (gaps only when strict)."""
        out = []
        for p in self.problems:
            if p.kind == "gaps":
                if strict_gaps:
                    out.append(p)
            elif not skip_bad_rows:
                out.append(p)
        return out

    def gaps_note(self) -> str | None:
        """A sentence on the file's gaps, which are imported as gaps unless strict."""
        gaps = self.problem("gaps")
        if gaps is None:
            return None
        ex = "; ".join(e["detail"] for e in gaps.examples[:2])
        return f"{gaps.headline()} (e.g. {ex})"

    def message(self, skip_bad_rows: bool = False, strict_gaps: bool = False) -> str:
        """A paragraph a person can act on."""
        blocking = self.blocking(skip_bad_rows, strict_gaps)
        if not blocking:
            note = self.gaps_note()
            return f"{self.source}: {self.valid_rows} candles ready to import." + (
                f" It has {note}." if note else ""
            )
        lines = [f"{self.source}: not imported, nothing was changed. Found:"]
        for p in blocking:
            ex = "; ".join(e["detail"] for e in p.examples[:3])
            lines.append(f"  - {p.headline()}" + (f" (e.g. {ex})" if ex else ""))
        fixes = []
        if any(p.kind != "gaps" for p in blocking):
            fixes.append(
                "fix the file, or choose 'skip bad rows' to import only the good rows"
                if self.valid_rows
                else "fix the file: no row of it is usable as it stands"
            )
        if any(p.kind == "gaps" for p in blocking):
            fixes.append("turn off 'refuse gaps (strict)' if the missing candles are expected")
        lines.append("To import: " + "; ".join(fixes) + ".")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class CandleFile:
    """A parsed file: every row with its parse results, plus the report."""

    rows: pd.DataFrame  # COLUMNS + line (file line number) + bad (bool) + reasons
    report: CandleReport

    def candles(self, skip_bad_rows: bool = False, strict_gaps: bool = False) -> pd.DataFrame:
        """The rows to import, sorted by time; raises ImportRejected if the options do not
        cover every problem found."""
        if self.report.blocking(skip_bad_rows, strict_gaps):
            raise ImportRejected(self.report, skip_bad_rows, strict_gaps)
        good = self.rows.loc[~self.rows["bad"], COLUMNS]
        return good.sort_values("ts", kind="stable").reset_index(drop=True)


class ImportRejected(ValueError):
    """The file has problems the chosen options do not allow; nothing was imported."""

    def __init__(self, report: CandleReport, skip_bad_rows: bool, strict_gaps: bool) -> None:
        super().__init__(report.message(skip_bad_rows, strict_gaps))
        self.report = report


def _sniff_delimiter(text: str) -> str:
    """The delimiter of the first lines (a small sample: the sniffer is slow on long text)."""
    sample = "\n".join(text[:_SNIFF_CHARS].splitlines()[:20])
    try:
        found = csv.Sniffer().sniff(sample, delimiters=",;\t|").delimiter
    except csv.Error:
        return ","
    return found if found and found in ",;\t|" else ","


_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n|$)")


def _lines(text: str) -> Iterator[str]:
    """The text's lines with their endings, one at a time (io.StringIO would copy the text
    at four bytes a character)."""
    for m in _LINE.finditer(text):
        if line := m.group():
            yield line


def _records(text: str, delimiter: str, name: str) -> Iterator[tuple[int, list[str]]]:
    """Non-blank records with the line each ends on. Any line ending (\\n, \\r\\n, \\r) ends a
    record; a record csv cannot read (a field over 128 KiB, say) refuses the file."""
    reader = csv.reader(_lines(text), delimiter=delimiter)
    try:
        for row in reader:
            if "".join(row).strip():
                yield reader.line_num, row
    except csv.Error as exc:
        raise CsvLayoutError(
            f"{name}: line {reader.line_num} cannot be read as CSV "
            f"({clip(str(exc), 80)}): not a candle file"
        ) from None


def _columns(
    records: Iterable[tuple[int, list[str]]], keep: set[int]
) -> tuple[dict[int, pd.Series], np.ndarray, np.ndarray]:
    """The text of the `keep` columns (NaN where a row is short), each record's width and its
    line. Built in chunks into compact str columns: a list of every row's fields costs about
    twenty times the file's size."""
    pending: dict[int, list] = {i: [] for i in keep}
    parts: dict[int, list[pd.Series]] = {i: [] for i in keep}
    widths, lines = array("q"), array("q")

    def flush() -> None:
        for i, values in pending.items():
            parts[i].append(pd.Series(values, dtype="str"))
            values.clear()

    for line, row in records:
        lines.append(line)
        widths.append(len(row))
        n = len(row)
        for i, values in pending.items():
            values.append(row[i] if i < n else None)
        if len(lines) % _CHUNK_ROWS == 0:
            flush()
    flush()
    columns = {i: pd.concat(parts.pop(i), ignore_index=True) for i in sorted(keep)}
    return columns, np.frombuffer(widths, dtype=np.int64), np.frombuffer(lines, dtype=np.int64)


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
    num = times.numbers(text)
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

    Anything about the file that stops it being read as candles raises CsvLayoutError with a
    short message: over the size limit, a truncated or corrupt .gz, binary data, a field csv
    cannot read, no time / OHLC columns, no rows. It is the only error a file's content can
    raise (BadTimeframe is about `timeframe`; OSError about a path that cannot be opened).
    Every fault in the rows is reported, not raised.
    """
    interval = timeframes.interval_ms(timeframe)
    text, name, sha = _load(source, name)
    delimiter = _sniff_delimiter(text)
    layout = _layout(_records(text, delimiter, name), name, adjust)
    frame, unparsable, missing = _parse(layout, delimiter, name, adjust)
    faults, bad = _row_faults(frame, unparsable, missing)
    order_faults, sorted_ts = _file_faults(frame, faults, bad, timeframe, interval, layout.notes)
    faults = {k: m.fillna(False).astype(bool) for k, m in faults.items()}
    problems = _row_problems(frame, faults, text, delimiter, name)
    if order_faults:
        problems.append(order_faults)
    gap = _gaps(sorted_ts, timeframe, interval)
    if gap:
        problems.append(gap)
    problems.sort(key=lambda p: list(PROBLEMS).index(p.kind))
    report = _report(frame, sorted_ts, problems, layout, name, timeframe, sha)
    frame["reasons"] = _reasons(frame.index, faults)
    return CandleFile(frame, report)


def _load(source: str | Path | bytes, name: str | None) -> tuple[str, str, str]:
    """The file's text, short name and the sha256 of its bytes as uploaded (before any gunzip),
    which names the file in the import log. Only the text is kept: the bytes are freed."""
    data, name = load_bytes(source, name)
    sha = hashlib.sha256(data).hexdigest()
    text = bytes_to_text(data, name)
    del data
    if not text or text.isspace():
        raise CsvLayoutError(f"{name} is empty")
    return text, name, sha


@dataclass
class _Layout:
    """How the file is laid out: which column holds each field, and the records still to read.

    `cols` maps our fields (COLUMNS, plus adj_close) to column positions; `width` is the number
    of fields in the first row, which every row should have."""

    fmt: str
    cols: dict[str, int]
    time_of_day: int | None  # a separate time column, joined to a date column
    tick: int | None  # MetaTrader's tick volume column, used when real volume is all zero
    width: int
    records: Iterator[tuple[int, list[str]]]
    notes: list[str]

    def kept_columns(self) -> set[int]:
        """The columns whose text is needed; the rest of each row is dropped as it is read."""
        return {i for i in [*self.cols.values(), self.time_of_day, self.tick] if i is not None}


def _layout(records: Iterator[tuple[int, list[str]]], name: str, adjust: bool) -> _Layout:
    """Read the first record and decide the layout: a headerless Binance export (the first row
    is numbers, and is data), else a header naming the columns."""
    first_line, first = _first_record(records, name)
    numeric_first = sum(_is_number(c) for c in first[:6]) >= 5
    if numeric_first and len(first) >= 6:
        cols = {k: i for i, k in enumerate(COLUMNS)}
        body = itertools.chain([(first_line, first)], records)
        layout = _Layout("binance", cols, None, None, len(first), body, [])
    else:
        layout = _header_layout(first, records, name, adjust)
    if layout.time_of_day is not None:
        layout.notes.append("date and time columns combined")
    return layout


def _first_record(records: Iterator[tuple[int, list[str]]], name: str) -> tuple[int, list[str]]:
    """The first non-blank record, refused when it is too wide to be a candle row (a wrong
    delimiter, or not candles)."""
    found = next(records, None)
    if found is None:  # every line blank, or only delimiters (",,,")
        raise CsvLayoutError(f"{clip(name, 60)} has no candle rows: every line is blank")
    first_line, first = found
    if len(first) > MAX_COLUMNS:
        raise CsvLayoutError(
            f"{name} has {len(first):,} columns in its first row; a candle file has 5 to "
            f"{MAX_COLUMNS}: check the delimiter or export fewer columns"
        )
    return first_line, first


def _header_layout(
    header: list[str], records: Iterator[tuple[int, list[str]]], name: str, adjust: bool
) -> _Layout:
    """The layout a header names; refused, saying what is missing, without a time or OHLC
    column."""
    cols, time_of_day = _map_header(header)
    missing = [k for k in ("ts", "open", "high", "low", "close") if k not in cols]
    if missing:
        raise CsvLayoutError(
            f"{name}: no {', '.join(missing)} column in the header "
            f"{clip(repr(header), 60)}. A candle file needs a header naming a time column "
            "(timestamp, time, date) and open, high, low, close, or is a headerless "
            "Binance kline export."
        )
    fmt = "yahoo" if "adj_close" in cols else "generic"
    tick = next((i for i, h in enumerate(header) if _norm(h) in TICK_VOLUME), None)
    notes = []
    if "volume" not in cols:
        notes.append("no volume column: volume set to 0")
    if "adj_close" in cols:
        notes.append("Adj Close scaled into open/high/low/close" if adjust else "Adj Close ignored")
    return _Layout(fmt, cols, time_of_day, tick, len(header), records, notes)


def _parse(
    layout: _Layout, delimiter: str, name: str, adjust: bool
) -> tuple[pd.DataFrame, pd.Series, pd.Series]:
    """Read the remaining records into numbers and times: a frame of ts, line and open, high,
    low, close, volume, plus the rows that could not be read (`unparsable`) and those with an
    empty value (`missing`; a row is counted once, under its first fault)."""
    text_of, widths, body_lines = _columns(layout.records, layout.kept_columns())
    if not len(body_lines):
        raise CsvLayoutError(f"{name} has a header but no rows")
    frame, unparsable, missing = _parse_times(text_of, widths, body_lines, layout)
    _choose_volume(text_of, layout)
    unparsable, missing = _parse_numbers(frame, text_of, layout, delimiter, unparsable, missing)
    text_of.clear()  # the numbers are in the frame; free the text columns
    missing &= ~unparsable  # a row is counted once, under its first fault
    if adjust and "adj_close" in layout.cols:
        _adjust_for_splits(frame)
    frame = frame.drop(columns=["adj_close"], errors="ignore")
    return frame, unparsable, missing


def _parse_times(
    text_of: dict[int, pd.Series], widths: np.ndarray, lines: np.ndarray, layout: _Layout
) -> tuple[pd.DataFrame, pd.Series, pd.Series]:
    """A frame of each row's time (epoch ms) and line, with the rows that are unparsable (the
    wrong number of fields, or a time that does not read) and those with no time."""
    raw_ts = text_of[layout.cols["ts"]]
    if layout.time_of_day is not None:
        raw_ts = raw_ts + " " + text_of[layout.time_of_day].fillna("")
    ts, how = times.parse(raw_ts.astype("string"))
    layout.notes.append(how)
    frame = pd.DataFrame({"ts": ts, "line": lines})
    unparsable = pd.Series(widths != layout.width)
    ts_text = raw_ts.str.strip()
    missing = ts_text.isna() | (ts_text == "") | ts_text.str.lower().isin(["nan", "nat"])
    unparsable |= ~missing & frame["ts"].isna()
    return frame, unparsable, pd.Series(False, index=frame.index) | missing


def _choose_volume(text_of: dict[int, pd.Series], layout: _Layout) -> None:
    """Drop a volume column with nothing in it (Investing.com writes "-" for an index), and
    use MetaTrader's tick volume where the real volume is all zero (as it often is for FX)."""
    cols, tick = layout.cols, layout.tick
    if "volume" not in cols or layout.fmt == "binance":
        return
    volume_text = text_of[cols["volume"]].str.strip()
    if volume_text.isna().all() or volume_text.fillna("").isin(["", "-"]).all():
        del cols["volume"]
        layout.notes.append("volume column empty: volume set to 0")
    elif (
        tick is not None
        and tick != cols["volume"]
        and (times.numbers(volume_text).fillna(0) == 0).all()
    ):
        cols["volume"] = tick
        layout.notes.append("volume all zero: tick volume used instead")


def _parse_numbers(
    frame: pd.DataFrame,
    text_of: dict[int, pd.Series],
    layout: _Layout,
    delimiter: str,
    unparsable: pd.Series,
    missing: pd.Series,
) -> tuple[pd.Series, pd.Series]:
    """Add open, high, low, close, volume (0 when the file has none) and adj_close to the
    frame as floats; returns `unparsable` and `missing` with the rows whose numbers do not
    read or are empty added."""
    reformatted = False
    for key in ("open", "high", "low", "close", "volume", "adj_close"):
        if key not in layout.cols:
            if key == "volume":
                frame[key] = 0.0
            continue
        text_col = text_of[layout.cols[key]].str.strip()
        num, was_reformatted = _numbers(text_col, delimiter)
        reformatted |= was_reformatted
        empty = text_col.isna() | (text_col == "") | text_col.str.lower().isin(["nan", "null"])
        missing |= empty
        unparsable |= ~empty & num.isna()
        frame[key] = num.astype("float64")
    if reformatted:
        layout.notes.append(
            "numbers with thousands separators, decimal commas or K/M/B suffixes read"
        )
    return unparsable, missing


def _adjust_for_splits(frame: pd.DataFrame) -> None:
    """Scale open, high, low and close by adj_close / close, so splits and dividends do not
    show as jumps (Yahoo's Adj Close, when asked for)."""
    with np.errstate(all="ignore"):
        factor = frame["adj_close"] / frame["close"]
    for key in ("open", "high", "low", "close"):
        frame[key] = frame[key] * factor


def _row_faults(
    frame: pd.DataFrame, unparsable: pd.Series, missing: pd.Series
) -> tuple[dict[str, pd.Series], pd.Series]:
    """Each row fault's rows (in ROW_FAULTS order, up to duplicate_timestamp), and the rows
    with any of them. A row is checked further only while it reads: prices are not compared
    on a row whose time is implausible, say. Sets frame["bad"]."""
    faults: dict[str, pd.Series] = {"unparsable": unparsable, "missing_values": missing}
    readable = ~(unparsable | missing)
    o, h, lo, c, v = (frame[k] for k in ("open", "high", "low", "close", "volume"))
    finite = np.isfinite(frame[["open", "high", "low", "close", "volume"]]).all(axis=1)
    faults["non_finite"] = readable & ~finite
    faults["implausible_time"] = readable & times.implausible(frame["ts"])
    readable &= finite & ~faults["implausible_time"]
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
    return faults, bad


def _file_faults(
    frame: pd.DataFrame,
    faults: dict[str, pd.Series],
    bad: pd.Series,
    timeframe: str,
    interval: int,
    notes: list[str],
) -> tuple[Problem | None, np.ndarray]:
    """Faults of the good rows together: out of time order (unless the whole file is newest
    first, a layout, not a fault) and spaced tighter than the timeframe (added to `faults` and
    frame["bad"]). Returns the out-of-order problem and the good rows' times, sorted."""
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
    return order_faults, sorted_ts


def _row_problems(
    frame: pd.DataFrame, faults: dict[str, pd.Series], text: str, delimiter: str, name: str
) -> list[Problem]:
    """A Problem for each row fault found, with the first few rows as examples (their raw
    text re-read from the file)."""
    shown = {k: np.flatnonzero(m.to_numpy())[:MAX_EXAMPLES] for k, m in faults.items()}
    wanted = {int(frame["line"].iat[i]) for idx in shown.values() for i in idx}
    raws = _raw_lines(text, delimiter, name, wanted)
    return [
        Problem(kind, int(mask.sum()), PROBLEMS[kind], _examples(frame, shown[kind], raws, kind))
        for kind, mask in faults.items()
        if len(shown[kind])
    ]


def _report(
    frame: pd.DataFrame,
    sorted_ts: np.ndarray,
    problems: list[Problem],
    layout: _Layout,
    name: str,
    timeframe: str,
    sha: str,
) -> CandleReport:
    """The report of a file read: its layout, counts, time range and problems."""
    return CandleReport(
        source=name,
        format=layout.fmt,
        timeframe=timeframe,
        rows_in_file=len(frame),
        valid_rows=int((~frame["bad"]).sum()),
        first_ts=int(sorted_ts[0]) if len(sorted_ts) else None,
        last_ts=int(sorted_ts[-1]) if len(sorted_ts) else None,
        problems=problems,
        notes=layout.notes,
        sha256=sha,
    )


def _reasons(index: pd.Index, faults: dict[str, pd.Series]) -> pd.Series:
    """Each row's faults, space-separated ("" for a good row), for the rows table."""
    reasons = pd.Series("", index=index, dtype="str")
    for kind, mask in faults.items():
        if mask.any():
            reasons = reasons.where(~mask, reasons + kind + " ")
    return reasons.str.strip()


def _raw_lines(text: str, delimiter: str, name: str, wanted: set[int]) -> dict[int, str]:
    """The fields of the records ending on `wanted` lines, re-read for examples (the columns
    keep only what is imported)."""
    out: dict[int, str] = {}
    if not wanted:
        return out
    for line, row in _records(text, delimiter, name):
        if line in wanted:
            out[line] = clip(",".join(row), 200)
            if len(out) == len(wanted):
                break
    return out


def _fmt_ts(ms) -> str:
    return times.fmt(ms) if pd.notna(ms) else ""


def _examples(frame: pd.DataFrame, shown: np.ndarray, raws: dict[int, str], kind: str) -> list:
    out = []
    for idx in shown:
        row = frame.iloc[idx]
        raw = raws.get(int(row.line), "")
        detail = {
            "high_below_low": f"line {row.line}: high {row.high} < low {row.low}",
            "open_outside_range": f"line {row.line}: open {row.open} outside "
            f"[{row.low}, {row.high}]",
            "close_outside_range": f"line {row.line}: close {row.close} outside "
            f"[{row.low}, {row.high}]",
            "negative_volume": f"line {row.line}: volume {row.volume}",
            "implausible_time": f"line {row.line}: {_fmt_ts(row.ts)} is not {times.bounds_text()}",
            "duplicate_timestamp": f"line {row.line}: "
            + (_fmt_ts(row.ts) if pd.notna(row.ts) else "")
            + " already seen",
            "timeframe_mismatch": f"line {row.line}: "
            + (_fmt_ts(row.ts) if pd.notna(row.ts) else "")
            + " is less than one candle after the row before",
        }.get(kind, f"line {row.line}: {raw[:80]!r}")
        out.append({"line": int(row.line), "detail": detail, "raw": raw})
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
            idx, missing = _skip_closures(ts, idx, missing, interval)
    if not len(idx):
        return None
    return _gaps_problem(ts, idx, missing)


def _open_slots(ts: np.ndarray, interval: int) -> np.ndarray:
    """Which slots of the week (`interval` long, from Monday 00:00 UTC) the market is open in:
    those holding a candle somewhere in the file."""
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
    return seen


def _skip_closures(
    ts: np.ndarray, idx: np.ndarray, missing: np.ndarray, interval: int
) -> tuple[np.ndarray, np.ndarray]:
    """The gaps (rows before them, candles missing in each) once closed slots are not counted:
    a gap that skips only closed slots is no gap. A gap of a week or more is kept whole."""
    seen = _open_slots(ts, interval)
    slots = len(seen)
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
    return idx[keep], missing[keep]


def _gaps_problem(ts: np.ndarray, idx: np.ndarray, missing: np.ndarray) -> Problem:
    """The gaps as a Problem, the largest first among the examples."""
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
        f"gaps, {int(missing.sum())} candles missing in all (market closures excepted)",
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
    readable = ~parsed.rows["ts"].isna() & ~times.implausible(parsed.rows["ts"])
    ts = np.sort(parsed.rows.loc[readable, "ts"].astype("int64").unique())
    if len(ts) < 2:
        return None
    step = float(np.median(np.diff(ts)))
    return min(COMMON_TIMEFRAMES, key=lambda tf: abs(np.log(timeframes.interval_ms(tf) / step)))
