"""`python -m engine [serve|status|submit|import-csv|migrate|seed]`."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

import db
from db import bus, candles, engines, jobs, sessions, settings


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
    }
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        if st.online:
            print(f"engine online: {st.instance.id}, heartbeat {out['heartbeat_age_s']} s ago")
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
    cid = bus.submit(engine, args.kind, payload, request_id=args.request_id, created_by=args.user)
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
            allow_gaps=args.allow_gaps,
            adjust=args.adjust,
            created_by=args.user,
        )
    except ImportRejected as exc:
        print(
            str(exc)
            .replace("'skip bad rows'", "--skip-bad-rows")
            .replace("'allow gaps'", "--allow-gaps"),
            file=sys.stderr,
        )
        if args.json:
            print(json.dumps({"imported": False, "report": exc.report.to_dict()}, indent=2))
        return 1
    except (CsvLayoutError, BadSymbol, BadTimeframe, FileNotFoundError, IsADirectoryError) as exc:
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
    from db import sessions, working_models

    engine = db.init()
    summary = {"session": sessions.summary, "model": working_models.summary}[args.what]
    try:
        out = summary(engine, args.id)
    except LookupError as exc:
        print(str(exc), file=sys.stderr)
        return 2
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


def _keep_report(engine, args, report: dict, checkpoint_id: int | None) -> int:
    """Store a finished headless backtest as a report row (as the backtest job does)."""
    from db import backtests

    ts = report["equity"]["ts"]
    bid = backtests.create(
        engine, name=args.name, symbol=args.symbol, timeframe=args.timeframe,
        start_ts=ts[0] if ts else None, end_ts=ts[-1] if ts else None,
        checkpoint_id=checkpoint_id, signals_name=Path(args.signals).name if args.signals else None,
        settings={**report["settings"], "headless": True}, created_by=args.user or "cli",
    )  # fmt: skip
    if report["predictions"] is not None:
        backtests.add_predictions(engine, bid, report["predictions"])
    backtests.finish(
        engine, bid, report["status"], metrics=report["metrics"],
        trades={"rows": report["trades"]}, equity=report["equity"],
    )  # fmt: skip
    return bid


def _backtest(args) -> int:
    from tqdm import tqdm

    from engine import backtest_run, checkpoints
    from engine.model import CandleTransformer

    engine = db.init()
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
    if not args.no_save:  # kept as a report page like the app's backtests
        bid = _keep_report(engine, args, report, cid if args.checkpoint is not None else None)
        print(f"kept as report #{bid}: the app's Report page, /report?id={bid}")
    if args.json:
        preds = report["predictions"]
        if preds is not None:  # columns as arrays, like the equity curve
            report["predictions"] = {c: preds[c].tolist() for c in preds.columns}
        Path(args.json).write_text(json.dumps(report, indent=1, default=str))
        print(f"report written to {args.json}")
    return 0


def _migrate(args) -> int:
    engine = db.get_engine()
    db.upgrade(engine)
    from db.migrate import current_revision

    print(f"database at revision {current_revision(engine)}")
    return 0


def _seed(args) -> int:
    from market.importer import seed_samples

    for outcome in seed_samples(db.init(), created_by=args.user or "seed"):
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
    s.add_argument("--user", default=os.environ.get("USER"), help="recorded as created_by")
    s.add_argument("--raw", action="store_true", help="send --payload even if it is not valid JSON")
    s.set_defaults(fn=_submit)

    s = sub.add_parser("import-csv", help="import a candle CSV (generic, Yahoo, Binance klines)")
    s.add_argument("path")
    s.add_argument("--symbol", required=True)
    s.add_argument("--timeframe", required=True, help="e.g. 1m, 1h, 1d")
    s.add_argument(
        "--skip-bad-rows", action="store_true", help="import the good rows of a file with bad ones"
    )
    s.add_argument("--allow-gaps", action="store_true", help="import even if candles are missing")
    s.add_argument(
        "--adjust", action="store_true", help="scale OHLC by Adj Close / Close (Yahoo files)"
    )
    s.add_argument("--user", default=os.environ.get("USER"), help="recorded as created_by")
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
    s.add_argument("--fee-bps", type=float, default=10.0, help="fee per fill in basis points")
    s.add_argument(
        "--slippage-bps", type=float, default=0.0, help="price moved against each fill, in bps"
    )
    s.add_argument(
        "--long-only", action="store_true", help="SELL closes a long instead of shorting"
    )
    s.add_argument("--cash", type=float, default=10_000.0)
    s.add_argument("--json", help="write the report (metrics, trades, equity) to this file")
    s.add_argument("--name", help="a name for the report")
    s.add_argument("--user", default=os.environ.get("USER"), help="recorded as created_by")
    s.add_argument(
        "--no-save", action="store_true", help="do not keep the result as a report in the app"
    )
    s.set_defaults(fn=_backtest)

    s = sub.add_parser(
        "show", help="print an object as JSON: show session ID, show model ID (a working model)"
    )
    s.add_argument("what", choices=["session", "model"])
    s.add_argument("id", type=int)
    s.set_defaults(fn=_show)

    s = sub.add_parser("migrate", help="create or upgrade the database schema")
    s.set_defaults(fn=_migrate)

    s = sub.add_parser("seed", help="import the packaged sample market data if missing")
    s.add_argument("--user")
    s.set_defaults(fn=_seed)
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
    return args.fn(args)
