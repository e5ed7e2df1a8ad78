"""Reading the times people write in candle and signals files, one way for both.

Epoch numbers are told apart by size (s / ms / µs / ns); eight digits starting 19 or 20 are
YYYYMMDD dates; other text goes to pandas, nn/nn/yyyy dates read day-first or month-first as the
data says (a part above 12, else the more evenly spaced reading). No zone means UTC.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd


def parse(values: pd.Series) -> tuple[pd.Series, str]:
    """Epoch ms (Int64, NA where unparsable) and a note on how the times were read."""
    stripped = values.str.strip()
    if stripped.notna().any() and stripped.dropna().str.fullmatch(r"(19|20)\d{6}").all():
        parsed = pd.to_datetime(stripped, format="%Y%m%d", utc=True, errors="coerce")
        ms = pd.Series(pd.NA, index=values.index, dtype="Int64")
        ok = parsed.notna()
        ms[ok] = parsed[ok].dt.as_unit("ms").astype("int64")
        return ms, "times read as YYYYMMDD dates (UTC)"
    numeric = pd.to_numeric(stripped, errors="coerce")
    present = stripped.notna() & (stripped != "")
    if present.any() and numeric[present].notna().mean() > 0.9:
        mag = float(numeric[present].abs().median())
        unit, scale = (
            ("nanoseconds", 1e-6) if mag > 1e17 else
            ("microseconds", 1e-3) if mag > 1e14 else
            ("milliseconds", 1.0) if mag > 1e11 else
            ("seconds", 1e3)
        )  # fmt: skip
        ms = (numeric * scale).round()
        return ms.astype("Int64"), f"times read as epoch {unit}"
    note = "times read as dates (UTC unless the file names a zone)"
    dayfirst = _day_first(stripped[present])
    if dayfirst is None:
        return _dates(stripped, present, False), note
    if dayfirst:
        return _dates(stripped, present, True), note + "; day before month (31.12.2024)"
    return _dates(stripped, present, False), note + "; month before day (12/31/2024)"


def _dates(stripped: pd.Series, present: pd.Series, dayfirst: bool) -> pd.Series:
    """Epoch ms from date strings: one format inferred from the data (fast), then whatever it
    missed re-read value by value."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "could not infer format": handled below
        parsed = pd.to_datetime(stripped, utc=True, errors="coerce", dayfirst=dayfirst)
        retry = present & parsed.isna()
        if retry.any():
            parsed[retry] = pd.to_datetime(
                stripped[retry], utc=True, errors="coerce", format="mixed", dayfirst=dayfirst
            )
    ms = pd.Series(pd.NA, index=stripped.index, dtype="Int64")
    ok = parsed.notna()
    ms[ok] = parsed[ok].dt.as_unit("ms").astype("int64")
    return ms


def _day_first(text: pd.Series) -> bool | None:
    """For dates written nn/nn/yyyy (or with . or -): True if the day comes first, False if
    the month does, None when the dates are not written that way. A part above 12 decides;
    otherwise the reading whose times are more evenly spaced (candles are) wins."""
    parts = text.str.extract(r"^(\d{1,2})[./-](\d{1,2})[./-]\d{2,4}\b").astype("float")
    if text.empty or parts.isna().any().any():
        return None
    if (parts[0] > 12).any():
        return True
    if (parts[1] > 12).any():
        return False
    present = pd.Series(True, index=text.index)

    def distinct_steps(dayfirst: bool) -> int:
        ms = _dates(text, present, dayfirst).dropna().astype("int64").to_numpy()
        return len(np.unique(np.abs(np.diff(ms))))

    return distinct_steps(True) < distinct_steps(False)
