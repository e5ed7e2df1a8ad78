"""Annotations: trades people mark on the chart. Deletes are soft, so every delete has an undo;
export and import use one flat record shape (JSON or CSV)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd
from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session

from db.connection import readonly
from db.models import Annotation, utcnow

SIDES = ("long", "short")
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


def create(engine: Engine, ann: AnnotationIn, author: str | None) -> int:
    """Store a new annotation; returns its id."""
    ann = ann.check()
    with engine.begin() as conn:
        return _insert(conn, ann, author)


def edit(engine: Engine, annotation_id: int, **changes: Any) -> None:
    """Change side, note, entry_ts or exit_ts of a live annotation."""
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
    with engine.begin() as conn:
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
    """Hide an annotation (undo brings it back)."""
    with engine.begin() as conn:
        conn.execute(
            update(Annotation)
            .where(Annotation.id == annotation_id, Annotation.deleted_at.is_(None))
            .values(deleted_at=utcnow(), deleted_by=by)
        )


def undo_delete(engine: Engine, by: str | None = None) -> int | None:
    """Restore the most recent delete (by `by` if given); the restored id, or None."""
    q = select(Annotation.id).where(Annotation.deleted_at.is_not(None))
    if by is not None:
        q = q.where(Annotation.deleted_by == by)
    q = q.order_by(Annotation.deleted_at.desc()).limit(1)
    with engine.begin() as conn:
        aid = conn.scalar(q)
        if aid is not None:
            conn.execute(
                update(Annotation)
                .where(Annotation.id == aid)
                .values(deleted_at=None, deleted_by=None)
            )
    return aid


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


def import_frame(engine: Engine, frame: pd.DataFrame, author: str | None) -> list[int]:
    """Store annotations from an exported frame, all or none; rows already stored (same
    dataset, entry, exit and side) are skipped. Raises BadAnnotation naming the bad row."""
    missing = [c for c in ("start", "end", "label", "symbol", "timeframe") if c not in frame]
    if missing:
        raise BadAnnotation(f"missing columns {missing}; expected {EXPORT_COLUMNS}")
    parsed = []
    for i, row in enumerate(frame.to_dict("records"), start=1):
        try:
            start = pd.Timestamp(row["start"])
            end = pd.Timestamp(row["end"])
        except (ValueError, TypeError) as exc:
            raise BadAnnotation(f"row {i}: start/end are not times: {exc}") from None
        start = start.tz_localize("UTC") if start.tzinfo is None else start
        end = end.tz_localize("UTC") if end.tzinfo is None else end
        label = str(row["label"]).strip().lower()
        note = row.get("note")
        try:
            ann = AnnotationIn(
                str(row["symbol"]),
                str(row["timeframe"]),
                int(start.value // 1_000_000),
                int(end.value // 1_000_000),
                label,
                None if note is None or pd.isna(note) else str(note),
            ).check()
        except BadAnnotation as exc:
            raise BadAnnotation(f"row {i}: {exc}") from None
        parsed.append((ann, row.get("author") if isinstance(row.get("author"), str) else author))
    existing = {(r.symbol, r.timeframe, r.entry_ts, r.exit_ts, r.side) for r in list_for(engine)}
    ids = []
    with engine.begin() as conn:
        for ann, who in parsed:
            key = (ann.symbol, ann.timeframe, ann.entry_ts, ann.exit_ts, ann.side)
            if key in existing:
                continue
            existing.add(key)
            ids.append(_insert(conn, ann, who))
    return ids
