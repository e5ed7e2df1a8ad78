"""Annotations: trades people mark on the chart. Deletes are soft, so every delete has an undo;
export and import use one flat record shape (JSON or CSV)."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from typing import Any

import pandas as pd
from sqlalchemy import Engine, bindparam, select, update
from sqlalchemy.orm import Session

from contract.vocab import SIDES
from db import audit, candles
from db.accounts import require, transaction
from db.connection import readonly
from db.models import Annotation, utcnow
from market import timeframes, times
from market.files import CsvLayoutError, clip, load_text

EXPORT_COLUMNS = ["start", "end", "label", "symbol", "timeframe", "author", "note"]


class BadAnnotation(ValueError):
    """An annotation that cannot be stored; the message says which field and why."""


@dataclass(frozen=True)
class AnnotationIn:
    symbol: str
    timeframe: str
    entry_ts: int
    exit_ts: int
    side: str
    note: str | None = None

    def check(self) -> AnnotationIn:
        if self.side not in SIDES:
            raise BadAnnotation(f"side must be long or short, got {self.side!r}")
        if self.entry_ts == self.exit_ts:
            raise BadAnnotation("entry and exit are the same candle: click two different candles")
        if self.entry_ts > self.exit_ts:  # clicked right to left: a trade still runs forward
            return AnnotationIn(
                self.symbol, self.timeframe, self.exit_ts, self.entry_ts, self.side, self.note
            )
        return self


def _insert(conn, ann: AnnotationIn, author: str | None) -> int:
    return conn.execute(
        Annotation.__table__.insert()
        .values(
            symbol=ann.symbol,
            timeframe=ann.timeframe,
            entry_ts=ann.entry_ts,
            exit_ts=ann.exit_ts,
            side=ann.side,
            note=ann.note,
            author=author,
            created_at=utcnow(),
        )
        .returning(Annotation.id)
    ).scalar_one()


def _audit(conn, action: str, by: str, annotation_id: int, ann: AnnotationIn | Annotation):
    entry, exit_ = (times.fmt(ms) for ms in (ann.entry_ts, ann.exit_ts))
    audit.record(conn, action, "ok", actor=by, about=f"annotation {annotation_id}",
                 detail=f"{ann.side} {ann.symbol} {ann.timeframe} {entry} → {exit_}")  # fmt: skip


def create(engine: Engine, ann: AnnotationIn, author: str | None) -> int:
    """Store a new annotation by the account `author` (a trader or admin); returns its id."""
    ann = ann.check()
    with transaction(engine) as conn:
        require(conn, author, "annotation.create")
        aid = _insert(conn, ann, author)
        _audit(conn, "annotation.create", author, aid, ann)
        return aid


def edit(engine: Engine, annotation_id: int, *, by: str | None, **changes: Any) -> None:
    """Change side, note, entry_ts or exit_ts of a live annotation (its author, or an
    admin)."""
    allowed = {"side", "note", "entry_ts", "exit_ts"}
    if unknown := set(changes) - allowed:
        raise BadAnnotation(f"cannot edit {sorted(unknown)}; editable: {sorted(allowed)}")
    current = get(engine, annotation_id)
    merged = AnnotationIn(
        current.symbol,
        current.timeframe,
        changes.get("entry_ts", current.entry_ts),
        changes.get("exit_ts", current.exit_ts),
        changes.get("side", current.side),
        changes.get("note", current.note),
    ).check()
    with transaction(engine) as conn:
        require(conn, by, "annotation.edit", owner=current.author)
        _audit(conn, "annotation.edit", by, annotation_id, merged)
        conn.execute(
            update(Annotation)
            .where(Annotation.id == annotation_id)
            .values(
                entry_ts=merged.entry_ts,
                exit_ts=merged.exit_ts,
                side=merged.side,
                note=merged.note,
                updated_at=utcnow(),
            )
        )


def get(engine: Engine, annotation_id: int) -> Annotation:
    with Session(readonly(engine), expire_on_commit=False) as s:
        row = s.get(Annotation, annotation_id)
    if row is None or row.deleted_at is not None:
        raise BadAnnotation(f"no annotation with id {annotation_id}")
    return row


def delete(engine: Engine, annotation_id: int, by: str | None) -> None:
    """Hide an annotation (undo brings it back): its author, or an admin."""
    current = get(engine, annotation_id)
    with transaction(engine) as conn:
        require(conn, by, "annotation.delete", owner=current.author)
        _audit(conn, "annotation.delete", by, annotation_id, current)
        conn.execute(
            update(Annotation)
            .where(Annotation.id == annotation_id, Annotation.deleted_at.is_(None))
            .values(deleted_at=utcnow(), deleted_by=by)
        )


def list_for(
    engine: Engine, symbol: str | None = None, timeframe: str | None = None
) -> list[Annotation]:
    """Live annotations, oldest entry first, optionally for one dataset."""
    q = select(Annotation).where(Annotation.deleted_at.is_(None))
    if symbol:
        q = q.where(Annotation.symbol == symbol)
    if timeframe:
        q = q.where(Annotation.timeframe == timeframe)
    with Session(readonly(engine), expire_on_commit=False) as s:
        return list(s.scalars(q.order_by(Annotation.entry_ts, Annotation.id)))


_a = Annotation.__table__.c
_OVERLAPPING = (  # built once: a chart redrawn every second only binds its values
    select(_a.id, _a.side, _a.entry_ts, _a.exit_ts, _a.note, _a.author)
    .where(
        _a.symbol == bindparam("symbol"),
        _a.timeframe == bindparam("timeframe"),
        _a.exit_ts >= bindparam("lo"),
        _a.entry_ts <= bindparam("hi"),
        _a.deleted_at.is_(None),
    )  # fmt: skip
    .order_by(_a.entry_ts, _a.id)
)


def overlapping(engine: Engine, symbol: str, timeframe: str, lo: int, hi: int) -> list:
    """Live annotations of one dataset whose trade overlaps the candles lo..hi (ms), oldest
    entry first: what a chart of those candles shades, read as plain rows (a chart redrawn
    every second reads no more). The (symbol, timeframe, exit_ts) index bounds the read by
    `lo`: a chart of the newest candles reads only the annotations that end in it."""
    values = {"symbol": symbol, "timeframe": timeframe, "lo": lo, "hi": hi}
    with readonly(engine).begin() as conn:
        return conn.execute(_OVERLAPPING, values).all()


def to_frame(rows: list[Annotation]) -> pd.DataFrame:
    """The export shape: start, end (ISO UTC), label (long/short), symbol, timeframe, author,
    note — plus id for the views."""
    return pd.DataFrame(
        [
            {
                "id": r.id,
                "start": pd.Timestamp(r.entry_ts, unit="ms", tz="UTC").isoformat(),
                "end": pd.Timestamp(r.exit_ts, unit="ms", tz="UTC").isoformat(),
                "label": r.side,
                "symbol": r.symbol,
                "timeframe": r.timeframe,
                "author": r.author,
                "note": r.note,
            }
            for r in rows
        ],
        columns=["id", *EXPORT_COLUMNS],
    )


def read_file(data: bytes, name: str) -> pd.DataFrame:
    """The rows of an exported annotations file (name ending .json: a list of records; else
    CSV), values as text. Raises BadAnnotation for anything that is not such a file: too large,
    binary, broken CSV or JSON, no rows; never another error, whatever the bytes."""
    try:
        text, short = load_text(data, name)
    except CsvLayoutError as exc:
        raise BadAnnotation(str(exc)) from None
    if name.lower().endswith(".json"):
        try:
            records = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise BadAnnotation(f"{short} is not JSON: {str(exc)[:100]}") from None
        if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
            raise BadAnnotation(f"{short}: expected a list of records like the JSON export")
        frame = pd.DataFrame(records)
    else:
        try:
            frame = pd.read_csv(io.StringIO(text), dtype=str)
        except (ValueError, csv.Error, OverflowError) as exc:  # ParserError is a ValueError
            raise BadAnnotation(f"{short} cannot be read as CSV: {str(exc)[:120]}") from None
    if frame.empty:
        raise BadAnnotation(f"{short} has no annotations in it")
    return frame


def import_frame(engine: Engine, frame: pd.DataFrame, author: str | None) -> list[int]:
    """Store annotations from an exported frame, all or none; rows already stored (same
    dataset, entry, exit and side) are skipped. Raises BadAnnotation naming the bad row (rows
    count from 1, as a spreadsheet shows them under the header).

    Every imported row is authored by `author`, the person importing: an author column in the
    file is ignored, so a file cannot put words in someone else's name. Each row must name a
    dataset with stored candles (the annotation is drawn on them), and start and end must be
    times (ISO text or epoch numbers, market/times.py) from 1900 to a few years ahead.
    """
    missing = [c for c in ("start", "end", "label", "symbol", "timeframe") if c not in frame]
    if missing:
        raise BadAnnotation(f"missing columns {missing}; expected {EXPORT_COLUMNS}")
    frame = frame.reset_index(drop=True)
    start_ms, end_ms = _times(frame, "start"), _times(frame, "end")
    stored = _stored_datasets(engine)
    parsed = []
    for i, row in enumerate(frame.to_dict("records"), start=1):
        label = str(row["label"]).strip().lower()
        note = row.get("note")
        try:
            symbol, timeframe = _dataset(row["symbol"], row["timeframe"], stored)
            ann = AnnotationIn(
                symbol,
                timeframe,
                _time_at(start_ms, i, row["start"], "start"),
                _time_at(end_ms, i, row["end"], "end"),
                label,
                None if note is None or (isinstance(note, float) and pd.isna(note)) else str(note),
            ).check()
        except BadAnnotation as exc:
            raise BadAnnotation(f"row {i}: {exc}") from None
        parsed.append(ann)
    existing = {(r.symbol, r.timeframe, r.entry_ts, r.exit_ts, r.side) for r in list_for(engine)}
    ids = []
    with transaction(engine) as conn:
        require(conn, author, "annotation.import")
        for ann in parsed:
            key = (ann.symbol, ann.timeframe, ann.entry_ts, ann.exit_ts, ann.side)
            if key in existing:
                continue
            existing.add(key)
            ids.append(_insert(conn, ann, author))
        audit.record(conn, "annotation.import", "ok", actor=author,
                     detail=f"{len(ids)} of {len(parsed)} rows stored")  # fmt: skip
    return ids


def _times(frame: pd.DataFrame, column: str) -> pd.Series:
    """A column of times as epoch ms (Int64, NA where unreadable), read as every reader does."""
    text = frame[column].map(lambda v: None if v is None or v is pd.NA else str(v))
    return times.parse(text.astype("string"))[0]


def _time_at(ms: pd.Series, row: int, raw: Any, what: str) -> int:
    value = ms.iloc[row - 1]
    shown = _clip(raw)
    if raw is None or (isinstance(raw, float) and pd.isna(raw)) or str(raw).strip() == "":
        raise BadAnnotation(f"{what} is empty: every row needs a start and an end time")
    if pd.isna(value):
        raise BadAnnotation(
            f"{what} {shown} is not a time: use ISO text (2024-01-01T00:00Z) or epoch ms"
        )
    if times.implausible(pd.Series([value], dtype="Int64")).iloc[0]:
        raise BadAnnotation(f"{what} {shown} is not {times.bounds_text()}")
    return int(value)


def _stored_datasets(engine: Engine) -> dict[str, list[str]]:
    """Timeframes with stored candles, by symbol."""
    sets = candles.datasets(engine)
    out: dict[str, list[str]] = {}
    for symbol, timeframe in zip(sets["symbol"], sets["timeframe"], strict=True):
        out.setdefault(symbol, []).append(timeframe)
    return out


def _dataset(symbol: Any, timeframe: Any, stored: dict[str, list[str]]) -> tuple[str, str]:
    """The row's symbol and timeframe if candles are stored for them; else says what is."""
    symbol, timeframe = str(symbol).strip(), str(timeframe).strip()
    try:
        timeframes.parse(timeframe)
    except timeframes.BadTimeframe as exc:
        raise BadAnnotation(str(exc)[:200]) from None
    if symbol not in stored:
        have = ", ".join(sorted(stored)[:10]) or "none yet"
        raise BadAnnotation(
            f"no candles are stored for symbol {_clip(symbol)} (stored: {have}); import its "
            "candles on the Data page first"
        )
    if timeframe not in stored[symbol]:
        raise BadAnnotation(
            f"{_clip(symbol)} has no {timeframe} candles (stored: {', '.join(stored[symbol])})"
        )
    return symbol, timeframe


def _clip(value: Any, limit: int = 40) -> str:
    """A value for a message: quoted if text, cut so a huge field is never echoed whole."""
    return clip(repr(value) if isinstance(value, str) else value, limit)


def restore(engine: Engine, annotation_id: int, by: str | None) -> bool:
    """Bring back one deleted annotation (an undo, by whoever may delete it); False if it was
    not deleted."""
    with Session(readonly(engine)) as s:
        author = s.scalar(select(Annotation.author).where(Annotation.id == annotation_id))
    with transaction(engine) as conn:
        require(conn, by, "annotation.delete", owner=author)
        audit.record(
            conn, "annotation.restore", "ok", actor=by, about=f"annotation {annotation_id}"
        )
        res = conn.execute(
            update(Annotation)
            .where(Annotation.id == annotation_id, Annotation.deleted_at.is_not(None))
            .values(deleted_at=None, deleted_by=None)
        )
        return res.rowcount == 1
