"""Accounts, passwords, sign-in and signed-in browsers (docs/access.md).

- Passwords are hashed with Argon2id (argon2-cffi); a name that does not exist costs the same
  hash as a wrong password, so timing does not tell which names exist.
- A browser is signed in by a random token it keeps in a cookie; the database holds only the
  token's SHA-256 and its expiry (`SESSION_HOURS`). Who is at the keyboard is read from that
  row on every page run, never from anything the person typed.
- Failed sign-ins are counted per account and per address in the audit log: past
  `MAX_FAILURES_PER_ACCOUNT` (or `MAX_FAILURES_PER_ADDRESS`) within `LOCKOUT`, sign-in is
  refused until the window has passed, right password or not.
- One-time links sign a person in once (the first admin, a new person, a reset) and make them
  choose a password.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Connection, Engine, delete, func, insert, select, update

from contract.access import ROLES, SYSTEM_ACCOUNT, Actor, refusal
from contract.vocab import EMAIL_CHARS
from db import audit
from db.connection import readonly
from db.models import Account, AuditEvent, SignInToken, utcnow

NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9._@-]{0,63}")
MIN_PASSWORD_CHARS = 10
MAX_PASSWORD_CHARS = 1024  # longer is not a password, it is a way to make hashing slow
LINK_HOURS = 24
LOCKOUT = timedelta(minutes=15)
MAX_FAILURES_PER_ACCOUNT = 5
MAX_FAILURES_PER_ADDRESS = 20  # several people behind one office address still get in

_hasher = PasswordHasher()
# Each Argon2 verification takes 64 MiB and tens of ms: at most this many at once, so a flood
# of sign-in attempts queues instead of exhausting the app's memory.
_HASHING = threading.BoundedSemaphore(2)
_DUMMY_HASH = _hasher.hash(secrets.token_hex(16))


def session_hours() -> float:
    """How long a signed-in browser stays signed in (`CANDLELAB_SESSION_HOURS`, default 12)."""
    return float(os.environ.get("CANDLELAB_SESSION_HOURS", "12"))


class AccountError(ValueError):
    """A request about accounts that cannot be carried out; the message says why."""


class Refused(PermissionError):
    """An account may not do what it asked; the message names the rule."""

    def __init__(self, reason: str, action: str, actor: str | None) -> None:
        super().__init__(reason)
        self.action, self.actor = action, actor


@contextmanager
def transaction(engine: Engine) -> Iterator[Connection]:
    """`engine.begin()` for a guarded write: a Refused raised inside rolls the write back and
    is then recorded in the audit log (in its own transaction: SQLite has one writer)."""
    try:
        with engine.begin() as conn:
            yield conn
    except Refused as exc:
        audit.record(engine, exc.action, "refused", actor=exc.actor, detail=str(exc))
        raise


@dataclass(frozen=True)
class SignIn:
    """The outcome of a sign-in attempt: a token for the browser, or why not."""

    token: str | None = None
    account: Account | None = None
    error: str | None = None


# -- accounts ---------------------------------------------------------------------------------


def clean_name(name: str) -> str:
    """`name` as stored (trimmed, lower case), or AccountError saying what a name may be."""
    name = (name or "").strip().lower()
    if not NAME_PATTERN.fullmatch(name):
        raise AccountError(
            "an account name is 1-64 characters: letters, digits and . _ @ - "
            "(starting with a letter or digit)"
        )
    return name


def _clean_email(email: str | None) -> str | None:
    email = (email or "").strip().lower() or None
    if email and (len(email) > EMAIL_CHARS or not re.fullmatch(r"[^@\s]+@[^@\s]+", email)):
        raise AccountError(f"{email[:60]!r} is not an e-mail address")
    return email


def _check_role(role: str) -> str:
    if role not in ROLES:
        raise AccountError(f"unknown role {role[:20]!r}; roles: {', '.join(ROLES)}")
    return role


def get(engine: Engine, name: str) -> Account | None:
    """The account called `name` (any case), or None."""
    with readonly(engine).connect() as conn:
        return conn.execute(select(Account).where(Account.name == name.strip().lower())).first()


def by_email(engine: Engine, email: str) -> Account | None:
    """The account whose e-mail is `email` (single sign-on), or None."""
    with readonly(engine).connect() as conn:
        return conn.execute(select(Account).where(Account.email == email.strip().lower())).first()


def all_(engine: Engine) -> list[Account]:
    """Every account, by name."""
    with readonly(engine).connect() as conn:
        return list(conn.execute(select(Account).order_by(Account.name)))


def actor(conn: Connection, name: str | None) -> Actor | None:
    """The enabled account `name` as an Actor, read in `conn`'s transaction; None if there is
    no such account or it is disabled."""
    if not name:
        return None
    row = conn.execute(
        select(Account.name, Account.role).where(Account.name == name, Account.disabled.is_(False))
    ).first()
    return Actor(row.name, row.role) if row else None


def require(conn: Connection, name: str | None, action: str, owner: str | None = None) -> Actor:
    """The account `name` if it may take `action` (on a row created by `owner`); otherwise
    Refused. Called inside the write's own `transaction`, which records the refusal."""
    who = actor(conn, name)
    reason = refusal(who, action, owner) if who else f"{name or 'nobody'} is not an enabled account"
    if reason:
        raise Refused(reason, action, name)
    return who


def add(engine: Engine, name: str, role: str, *, by: str, email: str | None = None,
        password: str | None = None) -> str | None:  # fmt: skip
    """Create an account. With no password, returns a one-time sign-in token with which the
    person chooses one; otherwise None."""
    name, role, email = clean_name(name), _check_role(role), _clean_email(email)
    if password is not None:
        _check_password(password, name)
    with transaction(engine) as conn:
        require(conn, by, "account.manage")
        if conn.scalar(select(Account.id).where(Account.name == name)):
            raise AccountError(f"an account called {name!r} exists")
        if email and conn.scalar(select(Account.id).where(Account.email == email)):
            raise AccountError(f"another account has the e-mail {email!r}")
        account_id = conn.scalar(
            insert(Account)
            .values(
                name=name,
                role=role,
                email=email,
                created_by=by,
                created_at=utcnow(),
                password_hash=_hasher.hash(password) if password else None,
                must_set_password=password is None,
            )  # fmt: skip
            .returning(Account.id)
        )
        audit.record(conn, "account.add", "ok", actor=by, about=name,
                     detail=f"role {role}" + (f", e-mail {email}" if email else ""))  # fmt: skip
        return None if password else _new_token(conn, account_id, "link", LINK_HOURS)


def change(engine: Engine, name: str, *, by: str, role: str | None = None,
           disabled: bool | None = None, email: str | None = None) -> None:  # fmt: skip
    """Change an account's role, enabled state or e-mail. Disabling signs it out everywhere.
    The last enabled admin cannot be demoted or disabled, and nobody changes `system`."""
    name = clean_name(name)
    values = {}
    if role is not None:
        values["role"] = _check_role(role)
    if disabled is not None:
        values["disabled"] = disabled
    if email is not None:
        values["email"] = _clean_email(email)
    with transaction(engine) as conn:
        require(conn, by, "account.manage")
        row = _changeable(conn, name)
        taken = values.get("email") and conn.scalar(
            select(Account.name).where(Account.email == values["email"], Account.id != row.id)
        )
        if taken:
            raise AccountError(f"{taken} already has the e-mail {values['email']!r}")
        if row.role == "admin" and (values.get("role", "admin") != "admin" or disabled):
            _keep_an_admin(conn, name)
        conn.execute(update(Account).where(Account.id == row.id).values(**values))
        if disabled:
            conn.execute(delete(SignInToken).where(SignInToken.account_id == row.id))
        detail = ", ".join(f"{k} {v}" for k, v in values.items())
        audit.record(conn, "account.change", "ok", actor=by, about=name, detail=detail)


def reset_password(engine: Engine, name: str, *, by: str) -> str:
    """Clear an account's password and sign it out; the one-time token that lets the person
    choose a new one (failed sign-ins no longer count against the account)."""
    name = clean_name(name)
    with transaction(engine) as conn:
        require(conn, by, "account.manage")
        row = _changeable(conn, name)
        conn.execute(
            update(Account)
            .where(Account.id == row.id)
            .values(password_hash=None, must_set_password=True)
        )
        conn.execute(delete(SignInToken).where(SignInToken.account_id == row.id))
        audit.record(conn, "account.reset_password", "ok", actor=by, about=name)
        return _new_token(conn, row.id, "link", LINK_HOURS)


def _changeable(conn: Connection, name: str) -> Account:
    if name == SYSTEM_ACCOUNT:
        raise AccountError("the system account is the engine host's own and cannot be changed")
    row = conn.execute(select(Account).where(Account.name == name)).first()
    if row is None:
        raise AccountError(f"no account called {name!r}")
    return row


def _keep_an_admin(conn: Connection, name: str) -> None:
    others = conn.scalar(
        select(func.count()).where(
            Account.role == "admin",
            Account.disabled.is_(False),
            Account.name.not_in([name, SYSTEM_ACCOUNT]),
        )  # fmt: skip
    )
    if not others:
        raise AccountError(f"{name} is the last admin who can sign in; make another admin first")


# -- the first admin --------------------------------------------------------------------------


def first_admin_link(engine: Engine, name: str = "admin") -> str | None:
    """On a fresh install (no account but `system`), create the admin account `name` and
    return a one-time sign-in token for it; also while that admin has never signed in (a new
    token: whoever lost the first one starts the app again). None once anyone has signed in."""
    with engine.begin() as conn:
        people = list(conn.execute(select(Account).where(Account.name != SYSTEM_ACCOUNT)))
        if any(p.last_signin_at for p in people) or any(p.name != name for p in people):
            return None
        if people:
            account_id = people[0].id
            conn.execute(
                delete(SignInToken).where(
                    SignInToken.account_id == account_id, SignInToken.purpose == "link"
                )
            )
        else:
            account_id = conn.scalar(
                insert(Account)
                .values(
                    name=name,
                    role="admin",
                    must_set_password=True,
                    created_by=SYSTEM_ACCOUNT,
                    created_at=utcnow(),
                )  # fmt: skip
                .returning(Account.id)
            )
            audit.record(conn, "account.add", "ok", actor=SYSTEM_ACCOUNT, about=name,
                         detail="role admin (first start)")  # fmt: skip
        return _new_token(conn, account_id, "link", LINK_HOURS)


# -- passwords and sign-in --------------------------------------------------------------------


def _check_password(password: str, name: str) -> None:
    if not MIN_PASSWORD_CHARS <= len(password) <= MAX_PASSWORD_CHARS:
        raise AccountError(f"a password is {MIN_PASSWORD_CHARS} to {MAX_PASSWORD_CHARS} characters")
    if password.strip().lower() == name:
        raise AccountError("a password cannot be the account's name")


def set_password(engine: Engine, name: str, password: str) -> None:
    """The signed-in person `name` chooses a new password."""
    name = clean_name(name)
    _check_password(password, name)
    hashed = _hasher.hash(password)
    with engine.begin() as conn:
        row = _changeable(conn, name)
        conn.execute(
            update(Account)
            .where(Account.id == row.id)
            .values(password_hash=hashed, must_set_password=False)
        )
        audit.record(conn, "password.set", "ok", actor=name, about=name)


def locked_until(engine: Engine, name: str, address: str | None) -> datetime | None:
    """When sign-in opens again for `name` from `address`, if too many recent failures
    closed it; None if it is open."""
    now = utcnow()
    with readonly(engine).connect() as conn:
        last_ok = conn.scalar(
            select(func.max(AuditEvent.at)).where(
                AuditEvent.action == "signin", AuditEvent.actor == name
            )  # fmt: skip
        )
        since = max(now - LOCKOUT, last_ok) if last_ok else now - LOCKOUT
        limits = [(dict(actor=name), since, MAX_FAILURES_PER_ACCOUNT)]
        if address:
            limits.append((dict(address=address), now - LOCKOUT, MAX_FAILURES_PER_ADDRESS))
        for where, start, limit in limits:
            if audit.count(conn, "signin.failed", start, **where) >= limit:
                newest = conn.scalar(
                    select(func.max(AuditEvent.at)).where(
                        AuditEvent.action == "signin.failed",
                        *(getattr(AuditEvent, k) == v for k, v in where.items()),
                    )
                )
                return newest + LOCKOUT
    return None


def sign_in(engine: Engine, name: str, password: str, address: str | None = None) -> SignIn:
    """Check a name and password; on success a new browser session token."""
    typed = (name or "").strip().lower()[:80]
    until = locked_until(engine, typed, address)
    if until is not None:
        audit.record(engine, "signin.locked", "refused", actor=typed, address=address,
                     detail=f"too many failed sign-ins; locked until {until:%H:%M:%S} UTC")  # fmt: skip
        return SignIn(error=f"Too many failed sign-ins. Try again after {until:%H:%M} UTC.")
    row = get(engine, typed) if NAME_PATTERN.fullmatch(typed) else None
    ok = _verify(row.password_hash if row else None, (password or "")[:MAX_PASSWORD_CHARS])
    if not ok or row is None or row.disabled or row.name == SYSTEM_ACCOUNT:
        why = "disabled" if ok and row is not None and row.disabled else "wrong name or password"
        audit.record(engine, "signin.failed", "refused", actor=typed, detail=why, address=address)
        return SignIn(error="That name and password do not match an enabled account.")
    if _hasher.check_needs_rehash(row.password_hash):
        _rehash(engine, row.id, password)
    return _open_session(engine, row, address, how="password", method="password")


def _verify(hashed: str | None, password: str) -> bool:
    try:
        with _HASHING:
            return _hasher.verify(hashed or _DUMMY_HASH, password) and hashed is not None
    except (VerificationError, InvalidHashError):
        return False


def _rehash(engine: Engine, account_id: int, password: str) -> None:
    with engine.begin() as conn:
        conn.execute(
            update(Account)
            .where(Account.id == account_id)
            .values(password_hash=_hasher.hash(password))
        )


def redeem_link(engine: Engine, token: str, address: str | None = None) -> SignIn:
    """Sign in with a one-time link's token (it works once, before it expires)."""
    with engine.begin() as conn:
        row = conn.execute(
            delete(SignInToken)
            .where(SignInToken.token_hash == _digest(token), SignInToken.purpose == "link")
            .returning(SignInToken.account_id, SignInToken.expires_at)
        ).first()
    account = _account_by_id(engine, row.account_id) if row else None
    if row is None or row.expires_at < utcnow() or account is None or account.disabled:
        audit.record(engine, "signin.failed", "refused", actor=account.name if account else None,
                     detail="one-time link used, expired or unknown", address=address)  # fmt: skip
        return SignIn(error="This sign-in link has been used or has expired; ask an admin.")
    return _open_session(engine, account, address, how="one-time link", method="link")


def sign_in_by_email(engine: Engine, email: str, verified: bool,
                     address: str | None = None) -> SignIn:  # fmt: skip
    """Open a browser session for the account mapped to a single-sign-on e-mail address, if
    the provider says it verified that address (some let people type any address)."""
    if not verified:
        audit.record(engine, "signin.failed", "refused", actor=None, address=address,
                     detail=f"single sign-on as {email[:100]}: e-mail not verified")  # fmt: skip
        return SignIn(error=f"Your provider has not verified {email}; verify it there first.")
    row = by_email(engine, email)
    if row is None or row.disabled:
        audit.record(engine, "signin.failed", "refused", actor=None, address=address,
                     detail=f"single sign-on as {email[:100]}: no enabled account")  # fmt: skip
        return SignIn(error=f"{email} has no enabled account here; ask an admin to add you.")
    return _open_session(engine, row, address, how=f"single sign-on ({email})", method="sso")


def _open_session(engine: Engine, row: Account, address: str | None, how: str,
                  method: str) -> SignIn:  # fmt: skip
    with engine.begin() as conn:
        token = _new_token(conn, row.id, "session", session_hours(), address, method)
        conn.execute(update(Account).where(Account.id == row.id).values(last_signin_at=utcnow()))
        audit.record(conn, "signin", "ok", actor=row.name, detail=how, address=address)
    return SignIn(token=token, account=_account_by_id(engine, row.id))


def signed_in(engine: Engine, token: str | None) -> Account | None:
    """The enabled account a browser's session token belongs to, if it has not expired; the
    row also carries `method`, how that session signed in."""
    if not token:
        return None
    with readonly(engine).connect() as conn:
        return conn.execute(
            select(Account, SignInToken.method)
            .join(SignInToken, SignInToken.account_id == Account.id)
            .where(
                SignInToken.token_hash == _digest(token),
                SignInToken.purpose == "session",
                SignInToken.expires_at > utcnow(),
                Account.disabled.is_(False),
            )  # fmt: skip
        ).first()


def sign_out(engine: Engine, token: str | None) -> None:
    """End a browser session (and sweep expired tokens while at it)."""
    if not token:
        return
    with engine.begin() as conn:
        gone = conn.execute(
            delete(SignInToken)
            .where(SignInToken.token_hash == _digest(token))
            .returning(SignInToken.account_id)
        ).first()
        conn.execute(delete(SignInToken).where(SignInToken.expires_at < utcnow()))
        if gone:
            name = conn.scalar(select(Account.name).where(Account.id == gone.account_id))
            audit.record(conn, "signout", "ok", actor=name)


# -- tokens -----------------------------------------------------------------------------------


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _new_token(conn: Connection, account_id: int, purpose: str, hours: float,
               address: str | None = None, method: str | None = None) -> str:  # fmt: skip
    token = secrets.token_urlsafe(32)
    now = utcnow()
    conn.execute(
        insert(SignInToken).values(
            token_hash=_digest(token),
            account_id=account_id,
            purpose=purpose,
            method=method,
            created_at=now,
            expires_at=now + timedelta(hours=hours),
            address=(address or "")[:64] or None,
        )  # fmt: skip
    )
    return token


def _account_by_id(engine: Engine, account_id: int) -> Account | None:
    with readonly(engine).connect() as conn:
        return conn.execute(select(Account).where(Account.id == account_id)).first()
