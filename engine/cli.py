"""`python -m engine [serve|status|submit|import-csv|backtest|list|show|migrate|seed]`."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

import db
from contract import vocab
from contract.access import refusal
from contract.payloads import MAX_ID
from db import accounts, bus, candles, engines, jobs, sessions, settings
from engine import cli_accounts, cli_migrate
from engine.cli_accounts import acting_user

USER_HELP = "the account this acts as (default: CANDLELAB_USER, else the system account)"


def _count(text: str) -> int:
    """A capacity: a whole number, 0 or more (0: no limit)."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative: use 0 for no limit")
    return value


def _serve(args) -> int:
    import engine.commands  # noqa: F401  (registers the handlers)
    from engine.service import EngineService, Settings

    service = EngineService(
        db.get_engine(),
        Settings(
            poll_interval_s=args.poll_interval,
            heartbeat_s=args.heartbeat,
            debug_commands=args.debug_commands,
            seed=not args.no_seed and os.environ.get("CANDLELAB_SEED", "1") != "0",
            lock_timeout_s=args.lock_timeout,
            name=args.name,
            max_jobs=args.max_jobs or None,
            max_sessions=args.max_sessions or None,
        ),
    )
    service.install_signal_handlers()
    service.serve_forever()
    return 0


def _status(args) -> int:
    engine = db.init()
    st = engines.status(engine)
    out = {
        "online": st.online,
        "engine_id": st.instance.id if st.instance else None,
        "version": st.instance.version if st.instance else None,
        "heartbeat_age_s": round(st.heartbeat_age_s, 3) if st.heartbeat_age_s is not None else None,
        "queue_depth": bus.queue_depth(engine),
        "running_jobs": jobs.running_count(engine),
        "running_sessions": sessions.running_count(engine),
        "database": engine.url.render_as_string(hide_password=True),
        "engines": [
            {
                "id": load.row.id,
                "name": load.row.name,
                "host": load.row.host,
                "sessions": load.sessions,
                "max_sessions": load.row.max_sessions,
                "jobs": load.jobs,
                "max_jobs": load.row.max_jobs,
                "working_models": load.working_models,
            }
            for load in engines.loads(engine)
        ],  # fmt: skip
    }
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        if st.online:
            print(f"engine online: {st.instance.id}, heartbeat {out['heartbeat_age_s']} s ago")
            for e in out["engines"]:
                print(f"  {e['name']} ({e['id']}): {e['sessions']} sessions, {e['jobs']} jobs, "
                      f"{e['working_models']} working models")  # fmt: skip
        elif st.instance is None:
            print("engine OFFLINE: no engine has ever run on this database")
        else:
            i = st.instance
            how = (
                f"stopped {i.stopped_at:%Y-%m-%d %H:%M:%S} UTC ({i.stop_reason})"
                if i.stopped_at
                else f"no heartbeat for {out['heartbeat_age_s']} s"
            )
            print(f"engine OFFLINE: last instance {i.id} {how}")
        print(
            f"queue depth {out['queue_depth']}, running jobs {out['running_jobs']}, "
            f"running sessions {out['running_sessions']}"
        )
        print(f"database {out['database']}")
    return 0 if st.online else 1


def _submit(args) -> int:
    engine = db.init()
    payload = args.payload
    try:
        json.loads(payload)
    except json.JSONDecodeError as exc:
        if not args.raw:
            print(
                f"--payload is not valid JSON ({exc}); pass --raw to send it anyway",
                file=sys.stderr,
            )
            return 2
    try:
        cid = bus.submit(
            engine, args.kind, payload, request_id=args.request_id, created_by=args.user
        )
    except ValueError as exc:  # a field longer than its column
        print(f"not submitted: {exc}", file=sys.stderr)
        return 2
    if args.wait is None:
        print(json.dumps({"id": cid}))
        return 0
    row = bus.wait(engine, cid, args.wait)
    print(json.dumps(bus.as_dict(row), indent=2))
    if row.status not in bus.FINAL:
        print(f"command {cid} still {row.status} after {args.wait} s", file=sys.stderr)
    return 0 if row.status == "done" else 1


def _import_csv(args) -> int:
    from market.csv_import import CsvLayoutError, ImportRejected
    from market.importer import import_candles
    from market.symbols import BadSymbol
    from market.timeframes import BadTimeframe

    engine = db.init()
    try:
        outcome = import_candles(
            engine,
            args.path,
            args.symbol,
            args.timeframe,
            skip_bad_rows=args.skip_bad_rows,
            strict_gaps=args.strict,
            adjust=args.adjust,
            created_by=args.user,
        )
    except ImportRejected as exc:
        print(
            str(exc)
            .replace("'skip bad rows'", "--skip-bad-rows")
            .replace("turn off 'refuse gaps (strict)'", "leave out --strict"),
            file=sys.stderr,
        )
        if args.json:
            print(json.dumps({"imported": False, "report": exc.report.to_dict()}, indent=2))
        return 1
    except (CsvLayoutError, BadSymbol, BadTimeframe, OSError, ValueError) as exc:
        # OSError: a path that cannot be read; ValueError: CANDLELAB_MAX_UPLOAD_MB unreadable
        print(f"not imported: {exc}", file=sys.stderr)
        return 2
    if args.json:
        r = outcome.result
        print(
            json.dumps(
                {
                    "imported": True,
                    "added": r.added,
                    "existing": r.existing,
                    "differing": r.differing,
                    "import_id": r.import_id,
                    "report": outcome.report.to_dict(),
                },
                indent=2,
            )
        )
    else:
        print(outcome.message())
        for note in outcome.report.notes:
            print(f"  note: {note}")
        for p in outcome.report.problems:
            print(f"  {'skipped' if p.kind != 'gaps' else 'allowed'}: {p.headline()}")
    return 0


def _show(args) -> int:
    from db import backtests, checkpoints, sessions, working_models

    engine = db.init()
    summary = {
        "session": sessions.summary,
        "model": working_models.summary,
        "checkpoint": checkpoints.summary,
        "backtest": backtests.report if args.json else backtests.summary,
    }[args.what]
    try:
        out = summary(engine, args.id)
    except LookupError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    if args.what == "backtest" and args.json:  # byte for byte the app's download
        print(backtests.report_json(out))
    else:
        print(json.dumps(out, indent=2, default=str))
    return 0


def _checkpoint_id(engine, ref: str) -> int:
    """A checkpoint given as an id, a name (the newest of that name) or "active"."""
    from db import checkpoints as rows
    from engine import checkpoints

    if ref.strip().lower() == "active":
        return checkpoints.ensure_default(engine)  # a fresh data directory gets the default model
    if ref.strip().isdigit():
        return rows.get(engine, int(ref)).id
    named = [c for c in rows.all_(engine) if c.name == ref]
    if not named:
        known = ", ".join(f"#{c.id} {c.name!r}" for c in rows.all_(engine)[:10]) or "none yet"
        raise LookupError(f"no checkpoint named {ref!r} (newest: {known})")
    return named[0].id


def _report_fields(args, report: dict, checkpoint_id: int | None) -> dict:
    """A headless run's report row fields, as the backtest job stores them."""
    ts = report["arrays"]["ts"] if report["arrays"] is not None else []
    return dict(
        name=args.name, symbol=args.symbol, timeframe=args.timeframe,
        start_ts=int(ts[0]) if len(ts) else None, end_ts=int(ts[-1]) if len(ts) else None,
        checkpoint_id=checkpoint_id, signals_name=Path(args.signals).name if args.signals else None,
        settings={**report["settings"], "headless": True}, created_by=args.user,
    )  # fmt: skip


def _keep_report(engine, fields: dict, report: dict) -> int:
    """Store a finished headless backtest as a report row (as the backtest job does)."""
    from db import backtests

    bid = backtests.create(engine, **fields)
    backtests.finish(
        engine, bid, report["status"], metrics=report["metrics"],
        arrays=report["arrays"],
    )  # fmt: skip
    return bid


def _backtest(args) -> int:
    from tqdm import tqdm

    from engine import backtest_run, checkpoints
    from engine.model import CandleTransformer

    engine = db.init()
    with engine.connect() as conn:  # the account it runs as must exist and may backtest
        who = accounts.actor(conn, args.user)
    reason = refusal(who, "backtest.start") if who else f"{args.user!r} is not an enabled account"
    if reason:
        print(f"not run: {reason}", file=sys.stderr)
        return 2
    model = None
    if args.checkpoint is not None:
        try:
            cid = _checkpoint_id(engine, args.checkpoint)
            cfg, state, _ = checkpoints.load(engine, cid)
        except (LookupError, ValueError) as exc:
            print(f"not run: {exc}", file=sys.stderr)
            return 2
        model = CandleTransformer(cfg).eval()
        model.load_state_dict(state)
    bar = tqdm(total=100, desc="backtest", unit="%", file=sys.stderr, disable=None)

    def progress(fraction: float) -> None:
        bar.update(round(fraction * 100) - bar.n)

    try:
        report = backtest_run.run(
            engine, symbol=args.symbol, timeframe=args.timeframe, start=args.start, end=args.end,
            model=model, signals=args.signals, fee_bps=args.fee_bps, long_only=args.long_only,
            cash=args.cash, slippage_bps=args.slippage_bps, progress=progress,
        )  # fmt: skip
    except backtest_run.BacktestError as exc:
        bar.close()
        print(f"not run: {exc}", file=sys.stderr)
        return 2
    bar.close()
    if args.checkpoint is not None:
        report["settings"]["checkpoint_id"] = cid
    if report["settings"].get("signals_warning"):
        print(f"note: {report['settings']['signals_warning']}", file=sys.stderr)
    for key, value in report["metrics"].items():
        print(f"{key:<24}{value:>14.4f}" if isinstance(value, float) else f"{key:<24}{value!s:>14}")
    fields = _report_fields(args, report, cid if args.checkpoint is not None else None)
    bid = None
    if not args.no_save:  # kept as a report page like the app's backtests
        bid = _keep_report(engine, fields, report)
        print(f"kept as report #{bid}: the app's Report page, /report?id={bid}")
    if args.json:
        Path(args.json).write_text(_report_json(engine, bid, fields, report))
        print(f"report written to {args.json}")
    return 0


def _report_json(engine, bid: int | None, fields: dict, report: dict) -> str:
    """The report in the layout of the app's 'Download report (JSON)': read back when kept, so
    the two files match; built from the run when --no-save kept nothing."""
    from db import backtests
    from db.models import Backtest

    if bid is not None:
        return backtests.report_json(backtests.report(engine, bid))
    row = Backtest(**fields, status=report["status"], metrics=report["metrics"])
    return backtests.report_json(backtests.report_dict(row, report["arrays"]))


def _backtest_rows(engine, limit: int) -> list[dict]:
    from db import backtests

    def when(ms):
        return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC)

    return [
        {"id": r.id, "name": r.name, "status": r.status, "source": backtests.source(r),
         "symbol": r.symbol, "timeframe": r.timeframe, "from": when(r.start_ts), "to": when(r.end_ts),
         "return_pct": (r.metrics or {}).get("Return [%]"), "trades": (r.metrics or {}).get("# Trades"),
         "trained_during_run": bool(backtests.training_note(r.settings)),
         "by": r.created_by, "created": r.created_at}
        for r in backtests.all_(engine, limit)
    ]  # fmt: skip


def _checkpoint_rows(engine, limit: int) -> list[dict]:
    from db import checkpoints

    return [
        {"id": c.id, "name": c.name, "parent": c.parent_id, "steps": c.steps,
         "active": c.is_active, "by": c.created_by, "created": c.created_at}
        for c in checkpoints.all_(engine)[:limit]
    ]  # fmt: skip


def _dataset_rows(engine, limit: int) -> list[dict]:
    sets = candles.datasets(engine).head(limit)
    return [
        {"symbol": r.symbol, "timeframe": r.timeframe, "candles": int(r.candles),
         "first": r.first.to_pydatetime(), "last": r.last.to_pydatetime()}
        for r in sets.itertuples()
    ]  # fmt: skip


def _session_rows(engine, limit: int) -> list[dict]:
    return [
        {"id": r.id, "status": r.status, "mode": r.mode, "symbol": r.symbol,
         "timeframe": r.timeframe, "model": f"checkpoint #{r.checkpoint_id}"
         if r.working_model_id is None else f"W{r.working_model_id}",
         "candles": r.candles, "by": r.created_by, "created": r.created_at, "stopped": r.stopped_at}
        for r in sessions.all_(engine, limit)
    ]  # fmt: skip


def _model_rows(engine, limit: int) -> list[dict]:
    from db import working_models

    return [
        {"id": m["id"], "name": m["name"], "base_checkpoint": m["base_checkpoint_id"],
         "steps": m["steps"], "trained_now_by": m["trained_now_by"],
         "last_checkpoint": m["last_checkpoint_id"], "lost_steps": m["lost_steps"],
         "by": m["created_by"]}
        for m in working_models.overview(engine, limit)
    ]  # fmt: skip


LISTS = {"backtests": _backtest_rows, "checkpoints": _checkpoint_rows, "datasets": _dataset_rows,
         "sessions": _session_rows, "models": _model_rows}  # fmt: skip


def _list(args) -> int:
    rows = LISTS[args.what](db.init(), args.limit)
    if args.json:
        print(json.dumps(rows, indent=2, default=_json_value))
    elif rows:
        print(_table(rows))
    else:
        print(f"no {args.what} yet")
    return 0


def _json_value(value):
    """Times as ISO text (UTC) in --json output."""
    return value.isoformat() if isinstance(value, datetime) else str(value)


def _cell(value) -> str:
    """One table cell: short times and figures, and names cut to 40 characters without control
    characters (anyone can name a report; a name must not drive the terminal)."""
    if value is None or value is False:
        return ""
    if value is True:
        return "yes"
    if isinstance(value, datetime):
        return f"{value:%Y-%m-%d %H:%M}"
    if isinstance(value, float):
        return f"{value:,.2f}"
    if isinstance(value, list):
        value = ", ".join(map(str, value))
    text = "".join(ch if ch.isprintable() else "?" for ch in str(value))
    return text if len(text) <= 40 else text[:39] + "…"


def _table(rows: list[dict]) -> str:
    """Rows as aligned columns under their keys; numbers right-aligned."""
    columns = list(rows[0])
    cells = [[_cell(r[c]) for c in columns] for r in rows]
    widths = [max(len(c), *(len(line[i]) for line in cells)) for i, c in enumerate(columns)]
    numeric = [
        all(isinstance(r[c], int | float) and not isinstance(r[c], bool) or r[c] is None
            for r in rows)
        for c in columns
    ]  # fmt: skip

    def line(values) -> str:
        return "  ".join(
            v.rjust(w) if num else v.ljust(w)
            for v, w, num in zip(values, widths, numeric, strict=True)
        ).rstrip()

    return "\n".join([line(columns), *(line(c) for c in cells)])


def _row_id(value: str) -> int:
    """An id as the database stores it (INTEGER): a typo is an argument error, not an overflow."""
    if not (value.isascii() and value.isdecimal()) or not 1 <= int(value) <= MAX_ID:
        raise argparse.ArgumentTypeError(f"give an id from 1 to {MAX_ID}, not {value[:40]!r}")
    return int(value)


def _limit(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"give a whole number of rows, 1 or more, not {value!r}")
    return int(value)


def _migrate(args) -> int:
    engine = db.get_engine()
    db.upgrade(engine)
    from db.migrate import current_revision

    print(f"database at revision {current_revision(engine)}")
    return 0


def _seed(args) -> int:
    from market.importer import seed_samples

    for outcome in seed_samples(db.init(), created_by=args.user):
        print(outcome.message())
    print(
        candles.datasets(db.get_engine())[
            ["symbol", "timeframe", "candles", "first", "last"]
        ].to_string(index=False)
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m engine",
        description="Candle Lab engine. Data directory: CANDLELAB_HOME (default ~/.candlelab); "
        "database: DATABASE_URL (default SQLite in the data directory).",
    )
    p.add_argument("--log-level", default=os.environ.get("CANDLELAB_LOG_LEVEL", "INFO"))
    sub = p.add_subparsers(dest="cmd")

    s = sub.add_parser("serve", help="run the engine until SIGTERM / SIGINT (the default)")
    s.add_argument(
        "--poll-interval",
        type=float,
        default=float(os.environ.get("CANDLELAB_POLL_INTERVAL", "0.1")),
        help="seconds between queue polls when not woken (default 0.1)",
    )
    s.add_argument("--heartbeat", type=float, default=1.0, help="seconds between heartbeats")
    s.add_argument(
        "--name",
        default=os.environ.get("CANDLELAB_ENGINE_NAME"),
        help="what the views call this engine (default: the host name)",
    )
    s.add_argument(
        "--max-jobs",
        type=_count,
        default=int(os.environ.get("CANDLELAB_MAX_JOBS", vocab.MAX_JOBS)),
        help=f"background jobs (backtests, batch training) run at once; more wait for a free "
        f"engine (default {vocab.MAX_JOBS}; 0: no limit)",
    )
    s.add_argument(
        "--max-sessions",
        type=_count,
        default=int(os.environ.get("CANDLELAB_MAX_SESSIONS", "0")),
        help="live sessions run at once; new ones go to engines with room (default 0: no limit)",
    )
    s.add_argument("--no-seed", action="store_true", help="do not import sample data on first run")
    s.add_argument(
        "--lock-timeout",
        type=float,
        default=float(os.environ.get("CANDLELAB_LOCK_TIMEOUT", "30")),
        help="seconds a weight update waits for a model's training lock (default 30)",
    )
    s.add_argument(
        "--debug-commands",
        action="store_true",
        default=os.environ.get("CANDLELAB_DEBUG_COMMANDS") == "1",
        help="accept debug.* commands (tests, benchmarks)",
    )
    s.set_defaults(fn=_serve)

    s = sub.add_parser("status", help="is an engine online? exit 0 if so, 1 if not")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=_status)

    s = sub.add_parser("submit", help="submit a command as a view would")
    s.add_argument("kind")
    s.add_argument("--payload", default="{}", help="JSON object")
    s.add_argument(
        "--wait", type=float, help="wait up to this many seconds and print the final row"
    )
    s.add_argument("--request-id", help="idempotency key (default: random)")
    s.add_argument("--user", default=acting_user(), help=USER_HELP)
    s.add_argument("--raw", action="store_true", help="send --payload even if it is not valid JSON")
    s.set_defaults(fn=_submit)

    s = sub.add_parser("import-csv", help="import a candle CSV (generic, Yahoo, Binance klines)")
    s.add_argument("path")
    s.add_argument("--symbol", required=True)
    s.add_argument("--timeframe", required=True, help="e.g. 1m, 1h, 1d")
    s.add_argument(
        "--skip-bad-rows", action="store_true", help="import the good rows of a file with bad ones"
    )
    s.add_argument(
        "--strict", action="store_true", help="refuse a file with gaps (missing candles)"
    )
    s.add_argument(  # gaps are imported by default now; kept so old scripts still run
        "--allow-gaps", action="store_true", help=argparse.SUPPRESS
    )
    s.add_argument(
        "--adjust", action="store_true", help="scale OHLC by Adj Close / Close (Yahoo files)"
    )
    s.add_argument("--user", default=acting_user(), help=USER_HELP)
    s.add_argument("--json", action="store_true", help="print the full report as JSON")
    s.set_defaults(fn=_import_csv)

    s = sub.add_parser("backtest", help="backtest a checkpoint or a signals file on stored candles")
    s.add_argument("--symbol", required=True)
    s.add_argument("--timeframe", required=True)
    s.add_argument("--start", help="first candle (date, ISO time or epoch ms); default: the first")
    s.add_argument("--end", help="last candle; default: the last")
    which = s.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--checkpoint", help='checkpoint whose predictions to trade: an id, a name or "active"'
    )
    which.add_argument("--signals", help="CSV with columns timestamp,action (BUY/SELL/HOLD)")
    s.add_argument(
        "--fee-bps", type=float, default=vocab.FEE_BPS, help="fee per fill in basis points"
    )
    s.add_argument(
        "--slippage-bps",
        type=float,
        default=vocab.SLIPPAGE_BPS,
        help="price moved against each fill, in bps",
    )
    s.add_argument(
        "--long-only", action="store_true", help="SELL closes a long instead of shorting"
    )
    s.add_argument("--cash", type=float, default=vocab.CASH)
    s.add_argument("--json", help="write the report (metrics, trades, equity) to this file")
    s.add_argument("--name", help="a name for the report")
    s.add_argument("--user", default=acting_user(), help=USER_HELP)
    s.add_argument(
        "--no-save", action="store_true", help="do not keep the result as a report in the app"
    )
    s.set_defaults(fn=_backtest)

    s = sub.add_parser(
        "list", help="a table of the newest backtests, checkpoints, sessions, working models, or "
        "the stored datasets (by symbol)",
    )  # fmt: skip
    s.add_argument("what", choices=list(LISTS))
    s.add_argument("--limit", type=_limit, default=50, help="at most this many rows (default 50)")
    s.add_argument("--json", action="store_true", help="print the rows as JSON")
    s.set_defaults(fn=_list)

    s = sub.add_parser(
        "show", help="print an object as JSON: show session|model|checkpoint|backtest ID "
        "(model: a working model)",
    )  # fmt: skip
    s.add_argument("what", choices=["session", "model", "checkpoint", "backtest"])
    s.add_argument("id", type=_row_id)
    s.add_argument(
        "--json", action="store_true", help="backtest: the whole report (trades, equity, "
        "predictions) as the app's 'Download report (JSON)' has it; the others print JSON anyway",
    )  # fmt: skip
    s.set_defaults(fn=_show)

    s = sub.add_parser("migrate", help="create or upgrade the database schema")
    s.set_defaults(fn=_migrate)

    s = sub.add_parser("seed", help="import the packaged sample market data if missing")
    s.add_argument("--user", default=acting_user(), help=USER_HELP)
    s.set_defaults(fn=_seed)
    cli_accounts.register(sub)
    cli_migrate.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.cmd is None:
        args = parser.parse_args([*(argv or sys.argv[1:]), "serve"])
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.Formatter.converter = lambda *a: datetime.now(UTC).timetuple()
    settings.home()
    if args.cmd == "serve":
        return args.fn(args)
    try:
        code = args.fn(args)
        sys.stdout.flush()  # a closed pipe fails here, not in the interpreter's flush at exit
    except BrokenPipeError:
        # `... | head -1` closed stdout: the reader has what it wanted. Point stdout at /dev/null
        # so the flush at exit does not fail again, and exit as a program killed by SIGPIPE.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    return code
