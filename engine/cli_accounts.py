"""The CLI's accounts, quotas and audit log: `python -m engine user|quota|audit …`.

Run on the engine host by whoever holds the database's URL, which is an admin's power already:
these act as the `system` account (or `--user NAME`, which must be an enabled admin).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import UTC, datetime

import db
from contract.access import QUOTAS, ROLES, SYSTEM_ACCOUNT
from db import accounts, audit, quotas


def acting_user() -> str:
    """Whom the CLI acts as: CANDLELAB_USER, else the system account."""
    return os.environ.get("CANDLELAB_USER") or SYSTEM_ACCOUNT


def app_url() -> str:
    """Where the app listens, for the sign-in links the CLI prints."""
    return os.environ.get("CANDLELAB_APP_URL", "http://127.0.0.1:8501").rstrip("/")


def signin_link(token: str) -> str:
    return f"{app_url()}/?signin={token}"


def _user(args) -> int:
    engine = db.init()
    by = args.user
    try:
        if args.action == "add":
            password = sys.stdin.readline().rstrip("\n") if args.password_stdin else None
            token = accounts.add(engine, args.name, args.role, by=by, email=args.email,
                                 password=password)  # fmt: skip
            print(f"added {accounts.clean_name(args.name)} ({args.role})")
            if token:
                print(
                    f"one-time sign-in link (valid {accounts.LINK_HOURS} h): {signin_link(token)}"
                )
        elif args.action == "list":
            return _print_accounts(engine, args.json)
        elif args.action == "set-role":
            accounts.change(engine, args.name, by=by, role=args.role)
        elif args.action in ("disable", "enable"):
            accounts.change(engine, args.name, by=by, disabled=args.action == "disable")
        elif args.action == "set-email":
            accounts.change(engine, args.name, by=by, email=args.email)
        elif args.action == "reset-password":
            token = accounts.reset_password(engine, args.name, by=by)
            print(f"one-time sign-in link (valid {accounts.LINK_HOURS} h): {signin_link(token)}")
        elif args.action == "first-admin":
            token = accounts.first_admin_link(engine)
            if token:
                print(f"First start: sign in as admin with this one-time link (valid "
                      f"{accounts.LINK_HOURS} h), then choose a password:\n  {signin_link(token)}",
                      flush=True)  # fmt: skip
    except (accounts.AccountError, accounts.Refused) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.action not in ("add", "list", "reset-password", "first-admin"):
        print("done")
    return 0


def _print_accounts(engine, as_json: bool) -> int:
    rows = [
        {"name": a.name, "role": a.role, "email": a.email, "disabled": a.disabled,
         "password": "set" if a.password_hash else ("link pending" if a.must_set_password
                                                      else "none"),
         "last_signin": a.last_signin_at.isoformat() if a.last_signin_at else None,
         "created_by": a.created_by}
        for a in accounts.all_(engine)
    ]  # fmt: skip
    if as_json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        state = "DISABLED" if r["disabled"] else r["password"]
        print(f"{r['name']:<24} {r['role']:<7} {state:<13} {r['email'] or '-':<30} "
              f"last sign-in {r['last_signin'] or 'never'}")  # fmt: skip
    return 0


def _quota(args) -> int:
    engine = db.init()
    if args.action == "set":
        try:
            quotas.set_(engine, args.role, args.name, args.value, by=args.user)
        except (accounts.AccountError, accounts.Refused) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    table = quotas.table(engine)
    print(f"{'role':<8} " + " ".join(f"{q:>10}" for q in QUOTAS))
    for role, limits in table.items():
        print(f"{role:<8} " + " ".join(f"{limits[q]:>10}" for q in QUOTAS))
    return 0


def _since(text: str) -> datetime:
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date or ISO time") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _audit(args) -> int:
    where = audit.Filter(actor=args.user_filter, action=args.action, outcome=args.outcome,
                         since=args.since, until=args.until)  # fmt: skip
    rows = audit.query(db.init(), where, limit=args.limit)
    if args.json:
        print(json.dumps([audit.as_dict(r) for r in rows], indent=2))
        return 0
    for r in reversed(rows):  # oldest first, as a log reads
        print(f"{r.at:%Y-%m-%d %H:%M:%S} {r.actor or '-':<16} {r.action:<22} {r.outcome:<8} "
              f"{r.target or '':<14} {(r.detail or '').replace(chr(10), ' ')[:120]}"
              + (f" [{r.address}]" if r.address else ""))  # fmt: skip
    return 0


def register(sub) -> None:
    """Add `user`, `quota` and `audit` to the CLI's subcommands."""
    u = sub.add_parser("user", help="accounts: add, list, set-role, reset-password, disable …")
    u.add_argument("--user", default=acting_user(), help=argparse.SUPPRESS)
    actions = u.add_subparsers(dest="action", required=True)
    a = actions.add_parser("add", help="add an account; prints a one-time sign-in link")
    a.add_argument("name")
    a.add_argument("--role", choices=ROLES, required=True)
    a.add_argument("--email", help="the address single sign-on reports for this person")
    a.add_argument("--password-stdin", action="store_true",
                   help="read a password from standard input instead of printing a link")  # fmt: skip
    a = actions.add_parser("list", help="every account")
    a.add_argument("--json", action="store_true")
    a = actions.add_parser("set-role", help="change an account's role")
    a.add_argument("name")
    a.add_argument("role", choices=ROLES)
    for name, what in (("disable", "sign an account out and keep it out"),
                       ("enable", "let a disabled account sign in again"),
                       ("reset-password", "clear a password; prints a one-time sign-in link")):  # fmt: skip
        actions.add_parser(name, help=what).add_argument("name")
    a = actions.add_parser("set-email", help="the e-mail single sign-on maps to this account")
    a.add_argument("name")
    a.add_argument("email")
    actions.add_parser("first-admin", help="on a fresh install, create the admin and print a "
                       "one-time sign-in link (nothing once someone has signed in)")  # fmt: skip
    u.set_defaults(fn=_user)

    q = sub.add_parser("quota", help="per-role limits: print them, or `quota set ROLE NAME N`")
    q.add_argument("--user", default=acting_user(), help=argparse.SUPPRESS)
    qa = q.add_subparsers(dest="action")
    s = qa.add_parser("set")
    s.add_argument("role", choices=ROLES)
    s.add_argument("name", choices=list(QUOTAS))
    s.add_argument("value", type=int)
    q.set_defaults(fn=_quota)

    a = sub.add_parser("audit", help="the audit log, oldest first (newest with --json)")
    a.add_argument("--user", dest="user_filter", help="only this account's events")
    a.add_argument("--action", help="only actions starting with this (signin, session, …)")
    a.add_argument("--outcome", choices=["ok", "refused", "failed"])
    a.add_argument("--since", type=_since, help="from this date or ISO time (UTC)")
    a.add_argument("--until", type=_since, help="before this date or ISO time (UTC)")
    a.add_argument("--limit", type=int, default=500, help="at most this many events (newest)")
    a.add_argument("--json", action="store_true")
    a.set_defaults(fn=_audit)
