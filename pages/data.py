"""Data: upload a candle CSV, see every problem in it before anything is stored, import it."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import streamlit as st

from db import candles
from db.accounts import Refused
from market import symbols, timeframes
from market.csv_import import (
    COMMON_TIMEFRAMES,
    CsvLayoutError,
    ImportRejected,
    guess_timeframe,
    read_candles,
    upload_limit_mb,
)
from market.importer import import_candles
from pages.common import (
    allowed,
    candle_chart,
    current_user,
    database,
    look_only,
    md_text,
    uploaded,
)

engine = database()
st.title("Data")
st.write(
    "Import candles from a CSV: a generic OHLCV file with a header, a Yahoo-style export "
    "(with Adj Close), a Binance kline export, or exports from MetaTrader, Investing.com, "
    "TradingView and the like (the notes say how the file was read). Every row is checked "
    "first; a file goes in whole, or not at all unless you choose to skip its bad rows. Gaps "
    "(holidays, closures) are listed and imported as gaps unless you refuse them."
)


def candle_upload():
    """The uploaded file if this account may import it; None (with a message) otherwise."""
    if not allowed("data.import"):
        look_only()
        return None
    return uploaded("Candle file", type=["csv", "txt", "gz"], key="upload",
                    note=f"a .gz file up to {upload_limit_mb():g} MB unpacked")  # fmt: skip


upload = candle_upload()


@st.cache_data(max_entries=8, show_spinner="Checking the file…")
def check(data: bytes, name: str, timeframe: str, adjust: bool):
    return read_candles(data, timeframe, name=name, adjust=adjust)


@st.cache_data(max_entries=8)
def guess(data: bytes) -> str | None:
    return guess_timeframe(data)


if upload is not None:
    data = upload.getvalue()
    stem = re.sub(r"[^A-Za-z0-9._-]+", "", Path(upload.name).name.split(".")[0]).upper() or "SYMBOL"
    c1, c2, c3 = st.columns(3)
    symbol = c1.text_input("Symbol", value=stem, key=f"symbol_{upload.file_id}")
    guessed = guess(data) or "1d"
    options = COMMON_TIMEFRAMES if guessed in COMMON_TIMEFRAMES else [guessed, *COMMON_TIMEFRAMES]
    timeframe = c2.selectbox(
        "Timeframe",
        options,
        index=options.index(guessed),
        key=f"tf_{upload.file_id}",
        help=f"Guessed from the file: {guessed}",
    )
    adjust = c3.checkbox(
        "Adjust OHLC by Adj Close",
        help="Yahoo files only: scale prices so splits and dividends do not show as jumps.",
    )
    try:
        symbols.check(symbol)
        timeframes.parse(timeframe)
        parsed = check(data, upload.name, timeframe, adjust)
    except (symbols.BadSymbol, timeframes.BadTimeframe, CsvLayoutError) as exc:
        st.error(md_text(str(exc)))
        st.stop()
    report = parsed.report
    m = st.columns(4)
    m[0].metric("Layout", report.format)
    m[1].metric("Rows", f"{report.rows_in_file:,}")
    m[2].metric("Good rows", f"{report.valid_rows:,}")
    faults = [p for p in report.problems if p.kind != "gaps"]
    m[3].metric("Problems", len(faults), help="Faults that stop the import (unless you skip bad "
                "rows). Gaps are listed too but are imported as gaps unless you refuse them.")  # fmt: skip
    if report.first_ts is not None:
        span = pd.to_datetime([report.first_ts, report.last_ts], unit="ms", utc=True)
        st.caption(
            f"{span[0]:%Y-%m-%d %H:%M} → {span[1]:%Y-%m-%d %H:%M} UTC · " + " · ".join(report.notes)
        )
    if report.problems:
        st.dataframe(
            pd.DataFrame(
                [
                    {
                        "problem": p.kind,
                        "count": p.count,
                        "what": p.description,
                        "examples": " | ".join(e["detail"] for e in p.examples),
                    }
                    for p in report.problems
                ]
            ),
            hide_index=True,
            width="stretch",
        )
    else:
        st.success("No problems found.")
    o1, o2 = st.columns(2)
    skip_bad = o1.checkbox(
        "Skip bad rows", help="Import only the good rows; out-of-order rows are sorted into place."
    )
    strict_gaps = o2.checkbox(
        "Refuse gaps (strict)",
        help="Refuse the file if candles are missing between some rows. Off, gaps are imported "
        "as gaps and listed above (market closures are never counted as gaps).",
    )
    blocking = report.blocking(skip_bad, strict_gaps)
    if blocking:
        st.warning(report.message(skip_bad, strict_gaps))
    elif report.gaps_note():
        st.info(f"Imports with {md_text(report.gaps_note())}.")
    preview = parsed.rows.loc[~parsed.rows["bad"]].sort_values("ts").tail(1000)
    if len(preview):
        preview = preview.assign(
            time=pd.to_datetime(preview["ts"].astype("int64"), unit="ms", utc=True)
        )
        st.altair_chart(
            candle_chart(preview, height=260, title=f"Preview: last {len(preview):,} good rows"),
            width="stretch",
        )
    if st.button("Import", type="primary", disabled=bool(blocking) or report.valid_rows == 0):
        try:
            outcome = import_candles(
                engine,
                parsed,
                symbol,
                timeframe,
                skip_bad_rows=skip_bad,
                strict_gaps=strict_gaps,
                adjust=adjust,
                created_by=current_user(),
            )
        except ImportRejected as exc:
            st.error(md_text(str(exc)))
        except Refused as exc:
            st.error(md_text(str(exc)))
        else:
            st.success(md_text(outcome.message()))

st.subheader("Datasets")
sets = candles.datasets(engine)
st.dataframe(
    sets[["symbol", "timeframe", "candles", "first", "last"]], hide_index=True, width="stretch"
)

st.subheader("Import history")
history = candles.imports(engine, limit=50)
if history:
    st.dataframe(
        pd.DataFrame(
            [
                {
                    "when": i.created_at,
                    "by": i.created_by,
                    "symbol": i.symbol,
                    "timeframe": i.timeframe,
                    "source": i.source,
                    "layout": i.format,
                    "rows": i.rows_in_file,
                    "added": i.rows_added,
                    "already stored": i.rows_existing,
                    "skipped": i.rows_skipped,
                }
                for i in history
            ]
        ),
        hide_index=True,
        width="stretch",
    )
