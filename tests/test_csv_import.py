"""Candle files: every fault is reported with examples, and a rejected file changes nothing."""

from __future__ import annotations

import hashlib
import shutil

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import text

from db import candles
from market.csv_import import CsvLayoutError, ImportRejected, guess_timeframe, read_candles
from market.importer import import_candles
from market.samples import SAMPLES
from tests.conftest import DATA, run_cli

CSV = DATA / "csv"


def snapshot(database) -> str:
    """A digest of everything an import may touch."""
    with database.connect() as conn:
        rows = conn.execute(text("SELECT * FROM candles ORDER BY id")).all()
        imports = conn.execute(text("SELECT * FROM imports ORDER BY id")).all()
    return hashlib.sha256(repr((rows, imports)).encode()).hexdigest()


@pytest.fixture
def seeded(database):
    """A database that already holds a dataset, so "unchanged" means something."""
    import_candles(database, CSV / "good_generic.csv", "BTC/USDT", "1h", created_by="ana")
    return database


@pytest.mark.parametrize(
    ("name", "kind", "count", "example"),
    [
        ("bad_unparsable.csv", "unparsable", 3, "line 6"),
        ("bad_missing_values.csv", "missing_values", 2, "line 7"),
        ("bad_high_below_low.csv", "high_below_low", 1, "line 9: high 1204.46 < low 1247.75"),
        ("bad_open_outside_range.csv", "open_outside_range", 1, "line 11: open"),
        ("bad_close_outside_range.csv", "close_outside_range", 1, "line 13: close"),
        ("bad_negative_volume.csv", "negative_volume", 1, "volume -5.0"),
        ("bad_duplicate_timestamp.csv", "duplicate_timestamp", 1, "2024-03-01 14:00 already"),
        ("bad_out_of_order.csv", "out_of_order", 1, "comes after"),
        ("bad_gaps.csv", "gaps", 1, "5 candle(s) missing after 2024-03-02 00:00"),
    ],
)
def test_each_fault_is_reported_and_the_database_is_unchanged(seeded, name, kind, count, example):
    before = snapshot(seeded)
    with pytest.raises(ImportRejected) as err:
        import_candles(seeded, CSV / name, "BTC/USDT", "1h", created_by="bo")
    problem = err.value.report.problem(kind)
    assert problem is not None, [p.kind for p in err.value.report.problems]
    assert problem.count == count
    assert any(example in e["detail"] for e in problem.examples), problem.examples
    message = str(err.value)
    assert "nothing was changed" in message and str(count) in message
    assert snapshot(seeded) == before


@pytest.mark.parametrize("name", ["not_candles.csv", "header_only.csv"])
def test_files_that_are_not_candles_are_refused_with_what_was_expected(seeded, name):
    before = snapshot(seeded)
    with pytest.raises(CsvLayoutError):
        import_candles(seeded, CSV / name, "X", "1h")
    assert snapshot(seeded) == before


def test_skip_bad_rows_imports_exactly_the_good_rows(database):
    with pytest.raises(ImportRejected, match="allow gaps"):  # dropping rows leaves holes
        import_candles(database, CSV / "bad_unparsable.csv", "X", "1h", skip_bad_rows=True)
    out = import_candles(
        database, CSV / "bad_unparsable.csv", "X", "1h", skip_bad_rows=True, allow_gaps=True
    )
    assert (out.result.added, out.report.rows_in_file) == (37, 40)
    stored = candles.load(database, "X", "1h")
    assert len(stored) == 37 and stored.ts.is_monotonic_increasing


def test_skip_bad_rows_sorts_out_of_order_rows_and_drops_repeats(database):
    import_candles(database, CSV / "bad_out_of_order.csv", "X", "1h", skip_bad_rows=True)
    assert candles.load(database, "X", "1h").ts.is_monotonic_increasing
    out = import_candles(
        database, CSV / "bad_duplicate_timestamp.csv", "Y", "1h", skip_bad_rows=True,
        allow_gaps=True,
    )  # fmt: skip
    assert out.result.added == 39


def test_reimporting_the_same_file_adds_nothing(database):
    first = import_candles(database, CSV / "good_generic.csv", "X", "1h")
    again = import_candles(database, CSV / "good_generic.csv", "X", "1h")
    assert (first.result.added, again.result.added, again.result.existing) == (40, 0, 40)
    assert candles.total(database) == 40


@pytest.mark.parametrize(
    ("name", "timeframe", "fmt", "rows", "first_close"),
    [
        ("good_generic.csv", "1h", "generic", 40, 1228.10),
        ("good_yahoo.csv", "1d", "yahoo", 30, 1228.099976),
        ("good_binance.csv", "1m", "binance", 40, 1228.10),
        ("good_semicolon_date_time.csv", "1h", "generic", 40, 1228.10),
    ],
)
def test_common_layouts_import_with_correct_values(
    database, name, timeframe, fmt, rows, first_close
):
    out = import_candles(database, CSV / name, "S", timeframe, allow_gaps=fmt == "yahoo")
    assert out.report.format == fmt and out.result.added == rows
    df = candles.load(database, "S", timeframe)
    assert df.close.iloc[0] == pytest.approx(first_close)
    assert (df.high >= df.low).all()
    if fmt == "binance":
        assert df.ts.iloc[0] == 1709251200000
    if fmt == "yahoo":  # daily stock data: weekends are closures; the two holidays are gaps
        assert str(df.time.iloc[0].date()) == "1999-01-04"
        holidays = out.report.problem("gaps")
        assert holidays.count == 2 and "after 1999-01-15" in holidays.examples[0]["detail"]


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("good_metatrader5.csv", "tick volume used instead"),  # tab, <DATE> <TIME>, VOL all 0
        ("good_investing_newest_first.csv", "rows were newest first"),  # "1,228.10", 0.877K
        ("good_decimal_comma.csv", "day before month"),  # ; 01.03.2024 00:00 ; 1228,10
    ],
)
def test_exports_from_other_tools_read_the_same_candles_as_the_plain_file(name, says):
    plain = read_candles(CSV / "good_generic.csv", "1h").candles()
    other = read_candles(CSV / name, "1h")
    assert other.report.problems == [] and any(says in n for n in other.report.notes)
    got = other.candles()
    pd.testing.assert_frame_equal(got.drop(columns="volume"), plain.drop(columns="volume"))
    np.testing.assert_allclose(got.volume, plain.volume, rtol=1e-3)


def test_timeframe_that_does_not_match_the_file_is_refused(database):
    with pytest.raises(ImportRejected) as err:
        import_candles(database, CSV / "good_generic.csv", "X", "4h")
    assert err.value.report.problem("timeframe_mismatch").count > 0


def test_timeframe_is_guessed_from_the_spacing():
    assert guess_timeframe(CSV / "good_generic.csv") == "1h"
    assert guess_timeframe(CSV / "good_binance.csv") == "1m"
    assert guess_timeframe(CSV / "good_yahoo.csv") == "1d"


def test_real_sp500_holidays_are_gaps_weekends_are_not():
    sample = next(s for s in SAMPLES if s.symbol == "SP500")
    report = read_candles(sample.read_bytes(), "1d", name="sp500").report
    gaps = report.problem("gaps")
    assert report.valid_rows == 5031 and gaps is not None
    # 9/11: the market was shut four trading days, Sep 11-14 2001.
    assert any("4 candle(s) missing after 2001-09-10" in e["detail"] for e in gaps.examples)
    assert gaps.count < 260  # holidays only, roughly nine a year; weekends would be ~1,000


def test_gzip_and_renamed_files_are_read_the_same(tmp_path):
    import gzip

    plain = read_candles(CSV / "good_generic.csv", "1h")
    packed = tmp_path / "candles.csv.gz"
    packed.write_bytes(gzip.compress((CSV / "good_generic.csv").read_bytes()))
    assert read_candles(packed, "1h").rows[["ts", "close"]].equals(plain.rows[["ts", "close"]])


def test_cli_import_reports_and_exits_nonzero_on_bad_files(home, tmp_path):
    bad = shutil.copy(CSV / "bad_negative_volume.csv", tmp_path / "x.csv")
    out = run_cli(home, "import-csv", str(bad), "--symbol", "X", "--timeframe", "1h")
    assert (
        out.returncode == 1 and "negative volume" in out.stderr and "--skip-bad-rows" in out.stderr
    )
    out = run_cli(
        home,
        "import-csv",
        str(CSV / "good_generic.csv"),
        "--symbol",
        "SPX",
        "--timeframe",
        "1h",
        "--user",
        "cy",
    )
    assert out.returncode == 0 and "40 candles added" in out.stdout
    out = run_cli(
        home,
        "import-csv",
        str(CSV / "good_yahoo.csv"),
        "--symbol",
        "bad symbol!",
        "--timeframe",
        "1d",
    )
    assert out.returncode == 2 and "symbol" in out.stderr
