"""One import path for candle files, shared by the CLI, the Data page and the seed."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine

from contract.access import SYSTEM_ACCOUNT
from db import candles as candle_store
from market import symbols, timeframes
from market.csv_import import CandleFile, CandleReport, read_candles
from market.samples import SAMPLES


@dataclass(frozen=True)
class ImportOutcome:
    """What happened to a file: its report and what was stored."""

    report: CandleReport
    result: candle_store.ImportResult

    def message(self) -> str:
        r = self.result
        parts = [f"{self.report.source}: {r.added} candles added"]
        if r.existing:
            parts.append(f"{r.existing} already stored")
        if r.differing:
            parts.append(f"{r.differing} of those stored with other values (kept as stored)")
        skipped = self.report.rows_in_file - self.report.valid_rows
        if skipped:
            parts.append(f"{skipped} bad rows skipped")
        gaps = self.report.gaps_note()
        return ", ".join(parts) + "." + (f" Imported with {gaps}." if gaps else "")


def import_candles(
    engine: Engine,
    source: str | Path | bytes | CandleFile,
    symbol: str,
    timeframe: str,
    *,
    name: str | None = None,
    skip_bad_rows: bool = False,
    strict_gaps: bool = False,
    adjust: bool = False,
    created_by: str | None,
) -> ImportOutcome:
    """Check and store a candle file, whole or not at all.

    Gaps (missing candles: holidays, closures) are reported and imported as gaps; with
    `strict_gaps` they refuse the file.

    Raises BadSymbol / BadTimeframe / CsvLayoutError for unusable input and ImportRejected
    (carrying the full report) when the file has problems the options do not allow; in each
    case the database is unchanged.
    """
    symbol = symbols.check(symbol)
    timeframes.parse(timeframe)
    parsed = (
        source
        if isinstance(source, CandleFile)
        else read_candles(source, timeframe, name=name, adjust=adjust)
    )
    rows = parsed.candles(skip_bad_rows=skip_bad_rows, strict_gaps=strict_gaps)
    report = parsed.report
    result = candle_store.store(
        engine,
        rows,
        symbol=symbol,
        timeframe=timeframe,
        source=report.source,
        sha256=report.sha256,
        format=report.format,
        rows_in_file=report.rows_in_file,
        rows_skipped=report.rows_in_file - len(rows),
        options={"skip_bad_rows": skip_bad_rows, "strict_gaps": strict_gaps, "adjust": adjust},
        report=report.to_dict(),
        created_by=created_by,
    )
    return ImportOutcome(report, result)


def seed_samples(engine: Engine, created_by: str = SYSTEM_ACCOUNT) -> list[ImportOutcome]:
    """Import the packaged real datasets that are not stored yet. Market holidays show up as
    gaps in daily index data: imported, and recorded in the import's report."""
    have = set(map(tuple, candle_store.datasets(engine)[["symbol", "timeframe"]].to_numpy()))
    out = []
    for sample in SAMPLES:
        if (sample.symbol, sample.timeframe) in have:
            continue
        out.append(
            import_candles(
                engine,
                sample.read_bytes(),
                sample.symbol,
                sample.timeframe,
                name=sample.source,
                created_by=created_by,
            )
        )
    return out
