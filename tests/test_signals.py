"""Signals files from other strategies: every common way of writing a time lands on the candle
it means, and nothing lands on a candle that opened after it (no look-ahead)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from market import signals

DAY = 86_400_000


def ms(text: str) -> int:
    return int(pd.Timestamp(text, tz="UTC").value // 1_000_000)


# Daily candles Wed 2018-01-03 … Tue 2018-01-09, weekend missing (a stock market).
CANDLES = np.array(
    [ms(d) for d in ["2018-01-03", "2018-01-04", "2018-01-05", "2018-01-08", "2018-01-09"]]
)


@pytest.mark.parametrize(
    "text",
    [
        "2018-01-04",
        "2018-01-04T00:00:00Z",
        "2018-01-04 00:00:00+00:00",
        "2018-01-04 00:00:00-05:00",  # a New York date: 05:00 UTC, still that day's candle
        "2018-01-04T23:59:59.999Z",  # a close time
        str(ms("2018-01-04") // 1000),  # epoch seconds
        str(ms("2018-01-04")),  # epoch ms
        str(ms("2018-01-04") * 1000),  # epoch µs
        str(ms("2018-01-04") * 1_000_000),  # epoch ns
        "20180104",  # a YYYYMMDD integer date
    ],
)
def test_each_way_of_writing_a_time_lands_on_its_candle(text):
    frame = signals.read(f"timestamp,action\n{text},buy\n".encode())
    actions, placed = signals.place(frame, CANDLES, DAY)
    assert list(actions) == ["HOLD", "BUY", "HOLD", "HOLD", "HOLD"]
    assert placed.on_candles == 1 and placed.before_range == placed.after_range == 0


def test_rows_in_gaps_act_on_the_candle_before_and_outside_rows_are_counted():
    text = (
        "Date,Signal\n"  # other common column names, any case
        "2018-01-01,BUY\n"  # before the first candle
        "2018-01-06,SELL\n"  # Saturday: acted on at Friday's close, filled Monday
        "2018-01-09 10:00,BUY\n"
        "2018-01-09 12:00,HOLD\n"  # HOLD never cancels a signal
        "2018-01-09 13:00,SELL\n"  # the last BUY / SELL in a candle wins
        "2018-01-10,BUY\n"  # after the last candle
    )
    frame = signals.read(text.encode())
    actions, placed = signals.place(frame, CANDLES, DAY)
    assert list(actions) == ["HOLD", "HOLD", "SELL", "HOLD", "SELL"]
    assert (placed.before_range, placed.after_range, placed.in_gaps) == (1, 1, 1)
    assert (placed.overridden, placed.holds, placed.on_candles, placed.exact) == (1, 1, 3, 0)
    assert "2 outside the range" in placed.warning()


def test_no_row_ever_lands_on_a_candle_that_opened_after_it():
    rng = np.random.default_rng(3)
    when = np.sort(rng.integers(CANDLES[0] - DAY, CANDLES[-1] + 2 * DAY, 500))
    frame = pd.DataFrame({"ts": when, "action": rng.choice(["BUY", "SELL"], 500)})
    for t, a in zip(when, frame.action, strict=True):
        actions, _ = signals.place(pd.DataFrame({"ts": [t], "action": [a]}), CANDLES, DAY)
        hit = np.flatnonzero(actions != "HOLD")
        if len(hit):
            assert CANDLES[hit[0]] <= t  # the candle had opened when the signal was made


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("when,what\n2018-01-04,BUY\n", "needs columns timestamp,action"),
        ("timestamp,action\n2018-01-04,FLY\n", "row 2: action 'FLY'"),
        ("timestamp,action\n2018-01-04,BUY\nnot a time,SELL\n", "row 3: 'not a time'"),
        ("timestamp,action\n,BUY\n", "row 2"),
        ("timestamp,action\n", "no signals in file"),
        ("timestamp,action\n2018-01-04,BUY\ninf,SELL\n", "row 3: 'inf' is not a date or time"),
        ("timestamp,action\n1e400,SELL\n", "row 2: '1e400' is not a date or time"),
        ("timestamp,action\n1700-01-01,BUY\n", "row 2: '1700-01-01' reads as 1700-01-01 00:00"),
        ("timestamp,action\n2018-01-04,BUY\n9998-12-31,SELL\n", "row 3: '9998-12-31' reads as"),
        ("timestamp,action\n2018-01-04," + "B" * 200_000 + "\n", "row 2: action 'BBBB"),
        ("", "is empty|cannot read"),
    ],
)
def test_bad_files_are_refused_with_the_row_and_the_reason(text, says):
    with pytest.raises(signals.SignalsError, match=says) as err:
        signals.read(text.encode())
    assert len(str(err.value)) <= 300  # a huge field is never echoed whole


def test_implausible_times_say_the_range_allowed():
    with pytest.raises(signals.SignalsError, match="not between 1900-01-01 and 20"):
        signals.read(b"timestamp,action\n-2208988800001,BUY\n")  # 1899-12-31 in epoch ms


def test_cr_line_endings_and_gzip_read_the_same():
    import gzip

    plain = signals.read(b"timestamp,action\n2018-01-04,BUY\n2018-01-05,SELL\n")
    cr = signals.read(b"timestamp,action\r2018-01-04,BUY\r2018-01-05,SELL\r")
    packed = signals.read(gzip.compress(b"timestamp,action\n2018-01-04,BUY\n2018-01-05,SELL\n"))
    pd.testing.assert_frame_equal(cr, plain)
    pd.testing.assert_frame_equal(packed, plain)


def test_a_byte_order_mark_and_extra_columns_are_fine():
    frame = signals.read("\ufefftimestamp,action,size\n2018-01-05,SELL,3\n".encode())
    assert frame.to_dict("records") == [{"ts": ms("2018-01-05"), "action": "SELL"}]


def test_semicolons_and_tabs_are_read_like_commas():
    for sep in ";\t|":
        frame = signals.read(f"timestamp{sep}action\n2018-01-05{sep}SELL\n".encode())
        assert frame.to_dict("records") == [{"ts": ms("2018-01-05"), "action": "SELL"}]
