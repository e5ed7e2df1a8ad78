"""Candle files: every fault is reported with examples, and a rejected file changes nothing."""

from __future__ import annotations

import gzip
import hashlib
import shutil

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import text

from contract.access import SYSTEM_ACCOUNT
from db import candles
from market.csv_import import (
    UPLOAD_LIMIT_MB,
    CsvLayoutError,
    ImportRejected,
    guess_timeframe,
    read_candles,
    upload_limit_mb,
)
from market.importer import import_candles
from market.samples import SAMPLES
from tests.conftest import DATA, make_account, run_cli

CSV = DATA / "csv"


def snapshot(database) -> str:
    """A digest of everything an import may touch."""
    with database.connect() as conn:
        rows = conn.execute(text("SELECT * FROM candles ORDER BY id")).all()
        imports = conn.execute(text("SELECT * FROM imports ORDER BY id")).all()
    return hashlib.sha256(repr((rows, imports)).encode()).hexdigest()


@pytest.fixture
def database(database):
    """The test database with the traders ana and bo."""
    make_account(database, "ana")
    make_account(database, "bo")
    return database


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
    with pytest.raises(ImportRejected) as err:  # strict: gaps refuse the file too
        import_candles(seeded, CSV / name, "BTC/USDT", "1h", created_by="bo", strict_gaps=True)
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
        import_candles(seeded, CSV / name, "X", "1h", created_by=SYSTEM_ACCOUNT)
    assert snapshot(seeded) == before


def test_skip_bad_rows_imports_exactly_the_good_rows(database):
    with pytest.raises(ImportRejected, match="refuse gaps"):  # dropping rows leaves holes
        import_candles(
            database,
            CSV / "bad_unparsable.csv",
            "X",
            "1h",
            skip_bad_rows=True,
            strict_gaps=True,
            created_by=SYSTEM_ACCOUNT,
        )
    out = import_candles(
        database,
        CSV / "bad_unparsable.csv",
        "X",
        "1h",
        skip_bad_rows=True,
        created_by=SYSTEM_ACCOUNT,
    )
    assert (out.result.added, out.report.rows_in_file) == (37, 40)
    assert "Imported with 3 gaps" in out.message()
    stored = candles.load(database, "X", "1h")
    assert len(stored) == 37 and stored.ts.is_monotonic_increasing


def test_skip_bad_rows_sorts_out_of_order_rows_and_drops_repeats(database):
    import_candles(
        database,
        CSV / "bad_out_of_order.csv",
        "X",
        "1h",
        skip_bad_rows=True,
        created_by=SYSTEM_ACCOUNT,
    )
    assert candles.load(database, "X", "1h").ts.is_monotonic_increasing
    out = import_candles(
        database,
        CSV / "bad_duplicate_timestamp.csv",
        "Y",
        "1h",
        skip_bad_rows=True,
        created_by=SYSTEM_ACCOUNT,
    )
    assert out.result.added == 39


def test_reimporting_the_same_file_adds_nothing(database):
    first = import_candles(database, CSV / "good_generic.csv", "X", "1h", created_by=SYSTEM_ACCOUNT)
    again = import_candles(database, CSV / "good_generic.csv", "X", "1h", created_by=SYSTEM_ACCOUNT)
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
    out = import_candles(database, CSV / name, "S", timeframe, created_by=SYSTEM_ACCOUNT)
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
        import_candles(database, CSV / "good_generic.csv", "X", "4h", created_by=SYSTEM_ACCOUNT)
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
    plain = read_candles(CSV / "good_generic.csv", "1h")
    packed = tmp_path / "candles.csv.gz"
    packed.write_bytes(gzip.compress((CSV / "good_generic.csv").read_bytes()))
    assert read_candles(packed, "1h").rows[["ts", "close"]].equals(plain.rows[["ts", "close"]])


def test_cli_import_reports_and_exits_nonzero_on_bad_files(database, home, tmp_path):
    make_account(database, "cy")
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


# Hostile files: every reader imports them or refuses them with its one documented error and a
# short message; nothing else escapes. The corpus is tests/data/hostile (README.md there).
HOSTILE = DATA / "hostile"
CORPUS = sorted(p for p in HOSTILE.iterdir() if p.name != "README.md")
SHORT = 300


def _candles_or_refusal(data: bytes, name: str):
    try:
        return read_candles(data, "1h", name=name)
    except CsvLayoutError as exc:
        assert 0 < len(str(exc)) <= SHORT, str(exc)
        return exc


@pytest.fixture
def hostile_db(database):
    """A database with candles for HOSTILE 1h, so annotation files have a dataset to name."""
    import_candles(database, CSV / "good_generic.csv", "HOSTILE", "1h", created_by=SYSTEM_ACCOUNT)
    return database


@pytest.mark.parametrize("path", CORPUS, ids=[p.name for p in CORPUS])
def test_every_hostile_file_imports_or_is_refused_cleanly(hostile_db, path):
    from db import annotations
    from market import signals

    data = path.read_bytes()
    parsed = _candles_or_refusal(data, path.name)
    if not isinstance(parsed, Exception):
        try:
            rows = parsed.candles(skip_bad_rows=True)
        except ImportRejected:
            pass
        else:
            assert np.isfinite(rows[["open", "high", "low", "close", "volume"]]).all().all()
    try:
        signals.read(data)
    except signals.SignalsError as exc:
        assert 0 < len(str(exc)) <= SHORT, str(exc)
    try:
        frame = annotations.read_file(data, path.name)
        annotations.import_frame(hostile_db, frame, "ana")
    except annotations.BadAnnotation as exc:
        assert 0 < len(str(exc)) <= SHORT, str(exc)


@pytest.mark.parametrize(
    ("name", "kind", "count"),
    [
        ("inf_values.csv", "non_finite", 12),
        ("minus_inf_low.csv", "non_finite", 1),
        ("overflow_1e999.csv", "non_finite", 1),
        ("nan_values.csv", "missing_values", 4),
        ("year_1700.csv", "implausible_time", 12),
        ("year_9998.csv", "implausible_time", 1),
        ("date_minus_one.csv", "implausible_time", 1),  # -1 read as a date: year -1
        ("epoch_huge.csv", "unparsable", 10),  # 1e30: no unit makes that a time
        ("all_dates_minus_one.csv", "duplicate_timestamp", 11),  # -1 s: 1969, every row
        ("ragged_rows.csv", "unparsable", 2),
        ("negative_zero_prices.csv", "non_positive_price", 1),
    ],
)
def test_hostile_values_are_row_faults_with_the_line(name, kind, count):
    report = read_candles(HOSTILE / name, "1h").report
    problem = report.problem(kind)
    assert problem is not None and problem.count == count, report.problems
    assert all(e["line"] for e in problem.examples)


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("binary_junk.csv", "binary data"),
        ("png_header.csv", "binary data"),
        ("nul_bytes.csv", "binary data"),
        ("utf16_no_bom.csv", "binary data"),
        ("utf16_odd_length.csv", "UTF-16"),
        ("truncated.csv.gz", "truncated .gz"),
        ("gzip_header_only.csv.gz", "truncated .gz"),
        ("corrupt.csv.gz", "not a readable .gz"),
        ("gzip_trailing_junk.csv.gz", "after the end of its gzip stream"),
        ("empty.csv", "is empty"),
        ("only_newlines.csv", "is empty"),
        ("only_spaces.csv", "is empty"),
        ("header_only.csv", "header but no rows"),
        ("latin1_header.csv", "no ts column"),
        ("one_column.csv", "no ts, open, high, low column"),
    ],
)
def test_files_that_cannot_be_candles_are_refused_saying_why(name, says):
    with pytest.raises(CsvLayoutError, match=says) as err:
        read_candles(HOSTILE / name, "1h")
    assert len(str(err.value)) <= SHORT


@pytest.mark.parametrize("name", ["cr_only.csv", "crlf.csv", "bom_utf8.csv", "utf16_le_bom.csv"])
def test_line_endings_and_encodings_read_the_same_candles(name):
    plain = read_candles(HOSTILE / "crlf.csv", "1h").candles()
    other = read_candles(HOSTILE / name, "1h")
    assert other.report.problems == [] and len(plain) == 12
    pd.testing.assert_frame_equal(other.candles(), plain)


def test_a_huge_field_is_refused_without_echoing_it():
    field = b"9" * 140_000
    body = b"timestamp,open,high,low,close,volume\n2024-03-01T00:00:00Z,1,2,0.5,1," + field
    with pytest.raises(CsvLayoutError, match="line 2 cannot be read as CSV") as err:
        read_candles(body + b"\n", "1h")
    assert len(str(err.value)) <= SHORT
    with pytest.raises(CsvLayoutError) as err:  # in the header, where the message quotes it
        read_candles(b"x" * 100_000 + b",open\n1,2\n", "1h")
    assert len(str(err.value)) <= SHORT


def test_a_very_wide_first_row_is_refused():
    with pytest.raises(CsvLayoutError, match="5,000 columns"):
        read_candles(b",".join(b"c%d" % i for i in range(5000)) + b"\n1,2\n", "1h")


def test_a_gzip_bomb_is_refused_once_it_unpacks_past_the_limit(monkeypatch):
    import zlib

    monkeypatch.setenv("CANDLELAB_MAX_UPLOAD_MB", "2")
    pack = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = b"0" * (1 << 20)
    bomb = b"".join(pack.compress(zeros) for _ in range(64)) + pack.flush()  # 64 MB inside
    assert len(bomb) < 100_000
    with pytest.raises(CsvLayoutError, match="bomb.csv.gz unpacks to over the 2 MB limit"):
        read_candles(bomb, "1h", name="bomb.csv.gz")
    glued = gzip.compress(zeros) * 3  # gzip members one after another: counted together
    with pytest.raises(CsvLayoutError, match="glued.csv.gz unpacks to over the 2 MB limit"):
        read_candles(glued, "1h", name="glued.csv.gz")


def test_files_over_the_upload_limit_are_refused_before_reading(monkeypatch, tmp_path):
    monkeypatch.setenv("CANDLELAB_MAX_UPLOAD_MB", "0.001")  # about 1 kB
    big = CSV / "good_generic.csv"
    with pytest.raises(CsvLayoutError, match=r"is 0.0 MB, over the 0.001 MB limit"):
        read_candles(big, "1h")
    with pytest.raises(CsvLayoutError, match="CANDLELAB_MAX_UPLOAD_MB"):
        read_candles(big.read_bytes(), "1h")
    monkeypatch.setenv("CANDLELAB_MAX_UPLOAD_MB", "lots")
    with pytest.raises(ValueError, match="CANDLELAB_MAX_UPLOAD_MB='lots' is not a size in MB"):
        read_candles(big, "1h")


def test_the_readers_limit_is_the_data_pages_upload_limit():
    import tomllib

    from tests.conftest import ROOT

    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert config["server"]["maxUploadSize"] == UPLOAD_LIMIT_MB == upload_limit_mb()


def _backtesting_file(name: str):
    """A data file of the installed backtesting.py package (AGPL: read, never copied here)."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("backtesting")
    path = Path(spec.submodule_search_locations[0]) / "test" / name if spec else None
    if path is None or not path.exists():
        pytest.skip(f"backtesting.py's {name} is not installed")
    return path


@pytest.mark.parametrize(
    ("name", "timeframe", "rows", "gaps"),
    [("GOOG.csv", "1d", 2148, 77), ("EURUSD.csv", "1h", 5000, 40)],
)
def test_real_exports_with_holiday_gaps_import_by_default(database, name, timeframe, rows, gaps):
    path = _backtesting_file(name)
    out = import_candles(database, path, "REAL", timeframe, created_by=SYSTEM_ACCOUNT)
    assert out.result.added == rows
    assert out.report.problem("gaps").count == gaps > 0
    assert f"Imported with {gaps} gaps" in out.message()
    with pytest.raises(ImportRejected, match="refuse gaps"):
        import_candles(
            database, path, "REAL2", timeframe, strict_gaps=True, created_by=SYSTEM_ACCOUNT
        )


def test_cli_imports_gaps_by_default_refuses_them_with_strict_and_keeps_allow_gaps(home):
    gappy = str(CSV / "bad_gaps.csv")
    out = run_cli(home, "import-csv", gappy, "--symbol", "G", "--timeframe", "1h", "--strict")
    assert out.returncode == 1 and "leave out --strict" in out.stderr
    out = run_cli(home, "import-csv", gappy, "--symbol", "G", "--timeframe", "1h", "--allow-gaps")
    assert out.returncode == 0 and "Imported with 1 gaps" in out.stdout
    out = run_cli(home, "import-csv", str(HOSTILE / "corrupt.csv.gz"), "--symbol", "G",
                  "--timeframe", "1h")  # fmt: skip
    assert out.returncode == 2 and "not a readable .gz" in out.stderr
    assert "Traceback" not in out.stderr
