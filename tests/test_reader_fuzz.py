"""Readers against generated hostile files: valid candle and signals CSVs, mutated (bytes
inserted, deleted or replaced, numbers swapped for inf / nan / huge / negative ones, other
delimiters and line endings, truncation, gzip of the result), never fail with anything but
their one documented refusal, and its message stays short.

About 600 files a run (350 candle files, 250 signals files), in well under a minute on two
cores. No example database: CI writes no .hypothesis folder, and each run draws new files.
"""

from __future__ import annotations

import gzip

import hypothesis.strategies as st
from hypothesis import HealthCheck, given, settings

from market import signals
from market.csv_import import CandleFile, CsvLayoutError, ImportRejected, read_candles
from tests.conftest import DATA

CSV = DATA / "csv"
CANDLE_BASES = [
    (CSV / name).read_bytes()[:1500]  # a few dozen rows: enough for every check, and fast
    for name in ("good_generic.csv", "good_binance.csv", "good_yahoo.csv", "good_decimal_comma.csv")
]
SIGNAL_BASES = [
    b"timestamp,action\n2018-01-03,BUY\n2018-01-04,HOLD\n2018-01-05,SELL\n",
    b"Date;Signal\n1514937600;buy\n1515024000;sell\n",
    b"time,action,size\n2018-01-03T10:00:00Z,SELL,1\n2018-01-04 00:00:00-05:00,BUY,2\n",
]
NUMBERS = ["inf", "-inf", "nan", "NaN", "1e309", "-1", "0", "-0", "1e-320", "", "9" * 30,
           "-99999999999999999999", "1e18", "0x1F", "1,5", "١٢٣"]  # fmt: skip
MESSAGE_LIMIT = 2_000
FUZZ = settings(
    max_examples=350,
    deadline=None,
    database=None,
    derandomize=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@st.composite
def mutated(draw, bases: list[bytes]) -> bytes:
    """A base file with one to four mutations, sometimes gzipped (whole or cut short)."""
    data = bytearray(draw(st.sampled_from(bases)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["insert", "delete", "replace", "number", "delimiter",
                                   "endings", "truncate", "repeat"]))  # fmt: skip
        at = draw(st.integers(0, len(data)))
        if op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=40))
        elif op == "delete":
            del data[at : at + draw(st.integers(1, 60))]
        elif op == "replace":
            chunk = draw(st.binary(min_size=1, max_size=20))
            data[at : at + len(chunk)] = chunk
        elif op == "number":
            data = _swap_field(data, at, draw(st.sampled_from(NUMBERS)).encode())
        elif op == "delimiter":
            data = data.replace(b",", draw(st.sampled_from([b";", b"\t", b"|", b" ", b",,"])))
        elif op == "endings":
            data = data.replace(b"\n", draw(st.sampled_from([b"\r", b"\r\n", b"\n\n", b"\x85"])))
        elif op == "truncate":
            del data[at:]
        else:  # one line many times over: duplicates, tight spacing
            line = bytes(data[at : at + 80].split(b"\n")[0])
            data[at:at] = (line + b"\n") * draw(st.integers(2, 50))
    if draw(st.integers(0, 9)) == 0:
        packed = gzip.compress(bytes(data))
        data = bytearray(packed[: draw(st.integers(1, len(packed)))])
    return bytes(data)


def _swap_field(data: bytearray, at: int, value: bytes) -> bytearray:
    """The field around `at` (between delimiters or line ends) replaced by `value`."""
    stops = b",;\t|\n\r"
    start = max((data.rfind(bytes([c]), 0, at) for c in stops), default=-1) + 1
    ends = [i for i in (data.find(bytes([c]), at) for c in stops) if i >= 0]
    end = min(ends, default=len(data))
    return data[:start] + value + data[end:]


@FUZZ
@given(mutated(CANDLE_BASES), st.sampled_from(["1m", "1h", "1d"]))
def test_candle_reader_imports_or_refuses_cleanly(data, timeframe):
    try:
        parsed = read_candles(data, timeframe, name="fuzz.csv")
    except CsvLayoutError as exc:
        assert 0 < len(str(exc)) <= MESSAGE_LIMIT
        return
    assert isinstance(parsed, CandleFile)
    for strict in (False, True):
        try:
            rows = parsed.candles(skip_bad_rows=True, strict_gaps=strict)
        except ImportRejected as exc:
            assert 0 < len(str(exc)) <= MESSAGE_LIMIT
        else:  # what would be stored is finite, plausible and in order
            assert rows[["open", "high", "low", "close", "volume"]].notna().all().all()
            assert rows.ts.is_monotonic_increasing and not rows.ts.duplicated().any()
    assert len(parsed.report.message()) <= MESSAGE_LIMIT * 4  # examples, one line a kind


@settings(FUZZ, max_examples=250)
@given(mutated(SIGNAL_BASES))
def test_signals_reader_reads_or_refuses_cleanly(data):
    try:
        frame = signals.read(data)
    except signals.SignalsError as exc:
        assert 0 < len(str(exc)) <= MESSAGE_LIMIT
        return
    assert len(frame) > 0 and frame.action.isin(signals.ACTIONS).all()
    assert frame.ts.notna().all()
