"""`python -m engine migrate-to URL`: move this installation into an empty PostgreSQL database.

The source is the database this installation uses (DATABASE_URL, by default the SQLite file in
CANDLELAB_HOME); every table is copied (db/transfer.py), and the checkpoint weights and
working-model state the rows point at are copied into the target's checkpoint store (by default
PostgreSQL's `blobs` table). The source is only read. docs/several-machines.md, "Moving an
installation from SQLite to PostgreSQL", has the operator's steps.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from alembic.util.exc import CommandError
from sqlalchemy import Connection, Engine, make_url, select
from sqlalchemy.exc import DBAPIError, OperationalError

import db
from db import blobs, engines, settings, transfer
from db.connection import readonly
from db.migrate import current_revision, head_revision
from db.models import Blob, EngineInstance, utcnow


def register(sub) -> None:
    """Add `migrate-to` to the CLI's subcommands."""
    s = sub.add_parser(
        "migrate-to",
        help="move this installation (every table, and the checkpoint weights) into an empty "
        "PostgreSQL database",
        description="Copy the database this installation uses (DATABASE_URL, default the SQLite "
        "file in CANDLELAB_HOME) and its checkpoint weights into the empty PostgreSQL database "
        "at URL. Stop the engine and the app first. The source is only read.",
    )
    s.add_argument("url", help="the target, e.g. postgresql://candlelab:PASSWORD@db-host/candlelab")
    s.add_argument(
        "--force",
        action="store_true",
        help="move even while an engine runs on the source (what it does later stays behind)",
    )
    s.add_argument(
        "--check", action="store_true", help="only report what would move; change nothing"
    )
    s.add_argument(
        "--json", action="store_true", help="print the summary as JSON (progress goes to stderr)"
    )
    s.set_defaults(fn=_migrate_to)


def shown(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=True)


def _refuse(message: str) -> int:
    print(f"migrate-to refused: {message}", file=sys.stderr)
    print("nothing was changed", file=sys.stderr)
    return 1


def _store(engine: Engine) -> str:
    """The checkpoint store of `engine`'s database, in words."""
    chosen = settings.checkpoint_store(str(engine.url))
    return "the database's blobs table" if chosen == "database" else f"the directory {chosen}"


def _migrate_to(args) -> int:
    target_url = settings.normalise_url(args.url)
    if not target_url.startswith("postgresql"):
        return _refuse(f"the target must be a PostgreSQL URL (postgresql://USER:PASSWORD@HOST/"
                       f"DATABASE), not {args.url.split(':', 1)[0]}:…")  # fmt: skip
    source_url = settings.database_url()
    if source_url.startswith("sqlite:///") and not Path(source_url[10:]).is_file():
        return _refuse(f"there is no database at {source_url[10:]} to move: is CANDLELAB_HOME "
                       "(or DATABASE_URL) the installation's?")  # fmt: skip
    source, target = db.get_engine(source_url), db.get_engine(target_url)
    if source.url.render_as_string(False) == target.url.render_as_string(False):
        return _refuse(f"{shown(target)} is the database this installation already uses")
    log = sys.stderr if args.json else sys.stdout

    def say(line: str = "") -> None:
        print(line, file=log, flush=True)

    say(f"source: {shown(source)} (weights in {_store(source)})")
    say(f"target: {shown(target)} (weights in {_store(target)})")
    try:
        with readonly(target).connect() as conn:
            left = transfer.user_rows(conn)
    except OperationalError as exc:
        return _refuse(f"cannot reach the target database: {exc.orig or exc}".strip())
    if args.check:
        return _check(source, target, left, args, say)
    if left:
        return _refuse(transfer.not_empty(left))
    at = current_revision(source)
    if at is None:
        return _refuse(_no_schema(source))
    live = _alive(source)
    if live and not args.force:
        return _refuse(_alive_message(live))
    if at != head_revision():
        say(f"upgrading the source's schema from {at} to {head_revision()} first")
        db.upgrade(source)
    for row in live:
        say(f"warning: engine {row.id} on {row.host} (pid {row.pid}) is running on the source; "
            "whatever it does from now on stays behind (--force)")  # fmt: skip
    say(f"upgrading the target's schema to {head_revision()}")
    try:
        db.upgrade(target)
    except CommandError as exc:  # a revision this code does not know: a newer Candle Lab's
        return _refuse(f"the target's schema is at a revision this version does not know "
                       f"({exc}): run the same Candle Lab version on both")  # fmt: skip
    say(f"copying {len(transfer.tables())} tables in chunks of {transfer.CHUNK:,} rows")
    try:
        out = transfer.copy(source, target, _FileCopier(source, target), _progress(say))
    except transfer.Refused as exc:  # someone wrote to the target since the first look
        return _refuse(str(exc))
    except (transfer.CopyFailed, DBAPIError) as exc:
        print(f"migrate-to failed: {exc}", file=sys.stderr)
        print("the target was rolled back (its schema stays, empty); the source is unchanged: "
              "fix the cause and run migrate-to again", file=sys.stderr)  # fmt: skip
        return 1
    if args.json:
        print(json.dumps(out.as_dict(), indent=2))
    _summary(out, source, args.url, target, say)
    return 1 if out.mismatched else 0


def _no_schema(source: Engine) -> str:
    return (
        f"{shown(source)} holds no Candle Lab data (no schema): is CANDLELAB_HOME (or "
        "DATABASE_URL) the installation's?"
    )


def _alive(source: Engine) -> list:
    """The engines running on the source now (`db.engines.alive`; on a schema older than this
    code, the same test on the columns every revision has)."""
    if current_revision(source) == head_revision():
        return engines.alive(source)
    e = EngineInstance
    with readonly(source).connect() as conn:
        rows = conn.execute(
            select(e.id, e.host, e.pid, e.last_beat, e.stopped_at).where(e.stopped_at.is_(None))
        ).all()
    now = utcnow()
    return [r for r in rows if engines.is_alive(r, now)]


def _alive_message(live) -> str:
    which = ", ".join(f"{r.id} on {r.host} (pid {r.pid})" for r in live)
    return (
        f"an engine is running on the source database: {which}. Stop it (and the app) first, "
        "so that nothing changes while it is copied and no work is left behind; wait until "
        "`python -m engine status` says OFFLINE. --force moves anyway"
    )


def _progress(say):
    last = {"at": time.monotonic()}

    def progress(table: str, copied: int, finished: bool) -> None:
        now = time.monotonic()
        if finished:
            say(f"  {table:<22} {copied:>12,} rows")
            last["at"] = now
        elif now - last["at"] >= 5:
            say(f"  {table:<22} {copied:>12,} rows so far …")
            last["at"] = now

    return progress


def _summary(out: transfer.Outcome, source: Engine, url: str, target: Engine, say) -> None:
    total = sum(out.source_rows.values())
    say(f"copied {len(out.source_rows)} tables, {total:,} rows, in {out.seconds:.1f} s")
    f = out.files
    say(f"checkpoint weights: {len(f['copied'])} file(s) copied into {_store(target)}, "
        f"{len(f['present'])} already there, {len(f['missing'])} missing")  # fmt: skip
    for path in f["missing"]:
        refs = ", ".join(out.file_refs.get(path, []))
        say(f"  warning: {path} ({refs}) is not in the source's checkpoint store "
            f"({_store(source)}): moved without its weights")  # fmt: skip
    if out.engines_stopped:
        say(f"engines: {len(out.engines_stopped)} recorded as running on the source, marked "
            f"stopped (\"{transfer.MOVED}\"): {', '.join(out.engines_stopped)}")  # fmt: skip
        say(f"  their work was closed out as for a dead engine: {len(out.commands_failed)} "
            f"running command(s) failed, {len(out.jobs_interrupted)} job(s) interrupted, "
            f"{out.commands_released} waiting command(s) routed afresh")  # fmt: skip
    if out.pending_commands or out.running_sessions:
        say(f"moved as they are: {out.pending_commands} pending command(s), which the new "
            f"engines will run, and {out.running_sessions} running session(s), which they "
            "will resume from their last candle")  # fmt: skip
    say("verification, rows per table (source → target):")
    for table, n in out.source_rows.items():
        m, want = out.target_rows.get(table), out.expected(table)
        note = f" (+{want - n} weights files)" if want != n else ""
        say(f"  {table:<22} {n:>12,} {m:>12,}  {'ok' if m == want else 'MISMATCH'}{note}")
    if out.mismatched:
        say(f"VERIFICATION FAILED: {', '.join(out.mismatched)} differ")
        return
    say(f"all {len(out.source_rows)} tables match.")
    say(f"next: set DATABASE_URL={make_url(url).render_as_string(hide_password=True)} (with "
        "its password) for the app and every engine, then start them; the old database is "
        "no longer used")  # fmt: skip


def _check(source: Engine, target: Engine, left: dict[str, int], args, say) -> int:
    """--check: what would move, and whether the move would go ahead. Changes nothing."""
    head, at = head_revision(), current_revision(source)
    report: dict = {"source": shown(source), "target": shown(target), "refusals": []}
    if at is None:
        report["refusals"].append(_no_schema(source))
    elif at != head:
        say(f"the source's schema is at {at}: the move upgrades it to {head} first")
    with readonly(source).connect() as conn:
        rows = transfer.counts(conn, existing_only=True)
        refs = transfer.files(conn)
    say("rows per table that would move:")
    for table, n in rows.items():
        say(f"  {table:<22} {n:>12,}")
    copier = _FileCopier(source, target)
    missing = [p for p in refs if copier.read(p) is None]
    say(f"checkpoint files: {len(refs)} referenced, {len(missing)} missing from the source's "
        f"store ({_store(source)})")  # fmt: skip
    for path in missing:
        say(f"  warning: {path} ({', '.join(refs[path])}) is missing: it would move without "
            "its weights")  # fmt: skip
    if at is not None and (live := _alive(source)):
        report["refusals"].append(_alive_message(live))
    if left:
        report["refusals"].append(transfer.not_empty(left))
    target_at = current_revision(target)
    say(f"target schema: {target_at or 'none yet'} (the move brings it to {head})")
    for why in report["refusals"]:
        say(f"would refuse: {why}")
    if not report["refusals"]:
        say("the move would go ahead")
    if args.json:
        report.update(tables=rows, files=list(refs), missing_files=missing,
                      target_revision=target_at, would_move=not report["refusals"])  # fmt: skip
        print(json.dumps(report, indent=2))
    return 1 if report["refusals"] else 0


FOLDER = "checkpoints"  # engine/checkpoints.py DIR: every stored file lives under it


def _under(root: Path, relative: str) -> Path | None:
    """`relative` inside the file store at `root`, or None for a path that would leave its
    checkpoint folder (never followed)."""
    base = (root / FOLDER).resolve()
    path = (root / relative).resolve()
    return path if base in path.parents else None


class _FileCopier:
    """Copies the files the rows point at (checkpoint weights, working-model state) from the
    source's checkpoint store to the target's, as bytes: nothing is unpickled, and torch is not
    needed. A source file is looked for in the source's store first, then wherever else the
    installation may have kept it: the data directory (the SQLite default) and the source
    database's blobs table."""

    def __init__(self, source: Engine, target: Engine) -> None:
        self.source, self.target = source, target
        self.source_store = settings.checkpoint_store(str(source.url))
        self.target_store = settings.checkpoint_store(str(target.url))

    def _source_file(self, root: Path, relative: str) -> bytes | None:
        path = _under(root, relative)
        return path.read_bytes() if path is not None and path.is_file() else None

    def read(self, relative: str) -> bytes | None:
        """The bytes of a source file, or None where it is nowhere to be found."""

        def in_blobs():
            try:
                return blobs.get(self.source, relative)
            except DBAPIError:  # (--check on a source older than the blobs table)
                return None

        def in_data_directory():
            return self._source_file(settings.home(), relative)

        def in_store():
            if self.source_store == "database":
                return in_blobs()
            return self._source_file(Path(self.source_store).expanduser(), relative)

        for place in (in_store, in_data_directory, in_blobs):
            data = place()
            if data is not None:
                return data
        return None

    def __call__(self, conn: Connection, relative: str) -> str:
        """Copy one file into the target's store (inside the copy's transaction when that is
        the database): "copied", "present" (already there) or "missing"."""
        if self.target_store == "database":
            if self.source_store == "database" and conn.scalar(
                select(Blob.path).where(Blob.path == relative)
            ) is not None:  # fmt: skip
                return "present"  # it was in the source's blobs table, copied with the rows
            data = self.read(relative)
            if data is None:
                return "missing"
            blobs.put(conn, relative, data)
            return "copied"
        path = _under(Path(self.target_store).expanduser(), relative)
        if path is None:
            return "missing"
        if self.source_store == self.target_store and path.is_file():
            return "present"  # one directory serves both (CANDLELAB_CHECKPOINT_STORE)
        data = self.read(relative)
        if data is None:
            return "missing"
        blobs.write_file(path, data)
        return "copied"
