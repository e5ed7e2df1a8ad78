"""Annotations: create, edit, delete, undo, export and import."""

from __future__ import annotations

import io
import json

import pandas as pd
import pytest

from contract.access import SYSTEM_ACCOUNT
from db import annotations as A
from db import candles
from tests.conftest import make_account

T0 = 1_700_000_000_000
H = 3_600_000


def stored(database, *datasets: tuple[str, str]):
    """Store a few candles for each (symbol, timeframe): annotations import only onto data."""
    for symbol, timeframe in datasets:
        rows = pd.DataFrame(
            {"ts": [T0, T0 + H], "open": 1.0, "high": 2.0, "low": 0.5, "close": 1.5, "volume": 1.0}
        )
        candles.store(
            database, rows, symbol=symbol, timeframe=timeframe, source="test", sha256="0" * 64,
            format="generic", rows_in_file=2, rows_skipped=0, created_by=SYSTEM_ACCOUNT,
        )  # fmt: skip
    return database


@pytest.fixture
def database(database):
    """The test database with the traders ana, bo and cy, and the admin x."""
    for name in ("ana", "bo", "cy"):
        make_account(database, name)
    make_account(database, "x", "admin")
    return database


def test_create_edit_delete_undo(database):
    aid = A.create(
        database, A.AnnotationIn("BTC/USDT", "1h", T0, T0 + 5 * H, "long", "breakout"), "ana"
    )
    A.edit(database, aid, by="ana", side="short", note="fakeout")
    row = A.get(database, aid)
    assert (row.side, row.note, row.author) == ("short", "fakeout", "ana") and row.updated_at
    A.delete(database, aid, by="x")  # an admin may delete anyone's
    assert A.list_for(database, "BTC/USDT", "1h") == []
    assert A.restore(database, aid, by="ana") is True
    assert A.restore(database, aid, by="ana") is False  # not deleted any more
    assert [r.id for r in A.list_for(database, "BTC/USDT", "1h")] == [aid]


def test_clicking_exit_before_entry_still_makes_a_forward_trade(database):
    aid = A.create(database, A.AnnotationIn("X", "1h", T0 + 9 * H, T0 + 2 * H, "short"), "ana")
    row = A.get(database, aid)
    assert (row.entry_ts, row.exit_ts) == (T0 + 2 * H, T0 + 9 * H)


@pytest.mark.parametrize(
    ("ann", "msg"),
    [
        (A.AnnotationIn("X", "1h", T0, T0, "long"), "same candle"),
        (A.AnnotationIn("X", "1h", T0, T0 + H, "sideways"), "long or short"),
    ],
)
def test_bad_annotations_are_refused_with_a_reason(database, ann, msg):
    with pytest.raises(A.BadAnnotation, match=msg):
        A.create(database, ann, None)


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_export_then_import_round_trips_and_skips_what_is_stored(database, home, fmt):
    stored(database, ("SP500", "1d"), ("ETH/USDT", "4h"))
    A.create(
        database, A.AnnotationIn("SP500", "1d", T0, T0 + 48 * H, "long", "note, with comma"), "ana"
    )
    A.create(database, A.AnnotationIn("ETH/USDT", "4h", T0, T0 + 8 * H, "short"), "bo")
    frame = A.to_frame(A.list_for(database)).drop(columns=["id"])
    blob = frame.to_csv(index=False) if fmt == "csv" else json.dumps(frame.to_dict("records"))
    assert A.import_frame(database, _read(blob, fmt), "cy") == []  # already there

    for row in A.list_for(database):
        A.delete(database, row.id, by="x")
    ids = A.import_frame(database, _read(blob, fmt), "cy")
    back = A.to_frame(A.list_for(database)).drop(columns=["id"])
    assert len(ids) == 2
    assert set(back.author) == {"cy"}  # the importer, not the names in the file
    pd.testing.assert_frame_equal(
        back.drop(columns="author").sort_values("symbol").reset_index(drop=True),
        frame.drop(columns="author").sort_values("symbol").reset_index(drop=True),
        check_dtype=False,
    )


def test_import_is_all_or_nothing_and_names_the_bad_row(database):
    stored(database, ("X", "1h"))
    frame = pd.DataFrame(
        [
            {
                "start": "2024-01-01T00:00Z",
                "end": "2024-01-02T00:00Z",
                "label": "long",
                "symbol": "X",
                "timeframe": "1h",
            },
            {
                "start": "2024-01-03T00:00Z",
                "end": "not a time",
                "label": "long",
                "symbol": "X",
                "timeframe": "1h",
            },
        ]
    )
    with pytest.raises(A.BadAnnotation, match="row 2"):
        A.import_frame(database, frame, "ana")
    assert A.list_for(database) == []


def _read(blob: str, fmt: str) -> pd.DataFrame:
    return pd.read_csv(io.StringIO(blob)) if fmt == "csv" else pd.DataFrame(json.loads(blob))


GOOD = {"start": "2024-01-01T00:00Z", "end": "2024-01-02T00:00Z", "label": "long",
        "symbol": "X", "timeframe": "1h"}  # fmt: skip


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"start": None}, "row 2: start is empty"),
        ({"end": ""}, "row 2: end is empty"),
        ({"start": "yesterday-ish"}, "row 2: start 'yesterday-ish' is not a time"),
        ({"end": "inf"}, "row 2: end 'inf' is not a time"),
        ({"start": "1700-01-01"}, "row 2: start '1700-01-01' is not between 1900-01-01"),
        ({"end": "9998-01-01"}, "row 2: end '9998-01-01' is not between 1900-01-01"),
        ({"timeframe": "1x"}, "row 2: timeframe '1x' is not understood"),
        ({"timeframe": "4h"}, r"row 2: 'X' has no 4h candles \(stored: 1h\)"),
        ({"symbol": "NOPE"}, r"row 2: no candles are stored for symbol 'NOPE' \(stored: X\)"),
        ({"symbol": "A" * 5000}, "row 2: no candles are stored for symbol 'AAAA"),
    ],
)
def test_rows_with_bad_times_or_unknown_datasets_are_refused(database, change, says):
    stored(database, ("X", "1h"))
    frame = pd.DataFrame([GOOD, {**GOOD, **change}])
    with pytest.raises(A.BadAnnotation, match=says) as err:
        A.import_frame(database, frame, "ana")
    assert len(str(err.value)) <= 300
    assert A.list_for(database) == []


def test_an_author_column_in_the_file_is_ignored(database):
    stored(database, ("X", "1h"))
    A.import_frame(database, pd.DataFrame([{**GOOD, "author": "someone else"}]), "ana")
    assert [r.author for r in A.list_for(database)] == ["ana"]
