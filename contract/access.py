"""Who may do what: the roles, the rule of every command kind and of every write a page makes
directly, and the per-role quotas. The engine enforces the command rules (a hidden button or a
command written straight to the table changes nothing), `db/` enforces the direct-write rules
inside the write's own transaction, and the pages read the same table to hide what a role
cannot do. The README's role table is checked against `decide` by the tests.

Standard library only: the pages, `db/` and the engine all import it.
"""

from __future__ import annotations

from dataclasses import dataclass

ROLES = ("viewer", "trader", "admin")
# The engine host's own account: the CLI acts as it unless told `--user NAME`. It is an admin
# that can never sign in (it has no password and sign-in refuses it): whoever runs the CLI
# with the database's URL can already do anything an admin can.
SYSTEM_ACCOUNT = "system"

# The rules. EVERYONE: any signed-in account. TRADER: traders and admins. OWNER: traders on
# what they created, admins on everything. ADMIN: admins only.
EVERYONE, TRADER, OWNER, ADMIN = "everyone", "trader", "owner", "admin"
ALLOWED = {
    EVERYONE: {"viewer", "trader", "admin"},
    TRADER: {"trader", "admin"},
    OWNER: {"trader", "admin"},
    ADMIN: {"admin"},
}

# Command kinds (the bus), as the engine checks them.
COMMAND_RULES = {
    "ping": EVERYONE,
    "session.start": TRADER,
    "session.stop": OWNER,
    "session.set_mode": OWNER,
    "session.train_manual": OWNER,
    "backtest.start": TRADER,
    "train.start": TRADER,
    "checkpoint.activate": ADMIN,
    "model.save": OWNER,
    "debug.sleep": ADMIN,
    "debug.fail": ADMIN,
    "debug.load": ADMIN,
    "debug.load_stats": ADMIN,
    "debug.hold_lock": ADMIN,
}
# What an OWNER rule is about: the payload field naming it and the kind of row it names.
OWNED = {
    "session.stop": ("session_id", "session"),
    "session.set_mode": ("session_id", "session"),
    "session.train_manual": ("session_id", "session"),
    "model.save": ("working_model_id", "working model"),
}

# Payload fields that ask for another action too, whatever the command: `activate: true` (a
# trader's training run or save must not make its checkpoint the active one) and an existing
# working model (training it, or a session sharing it, is for its creator or an admin: its
# weights are what their sessions trade on). field → (action, the row it names or None).
IMPLIED = {
    "activate": ("checkpoint.activate", None),
    "working_model_id": ("model.train", "working model"),
}

# Writes the pages make through `db/` directly, as `db/` checks them.
ACTION_RULES = {
    "model.train": OWNER,
    "annotation.create": TRADER,
    "annotation.edit": OWNER,
    "annotation.delete": OWNER,
    "annotation.import": TRADER,
    "data.import": TRADER,
    "job.cancel": OWNER,
    "account.manage": ADMIN,
    "quota.set": ADMIN,
    "audit.read": ADMIN,
}
RULES = {**COMMAND_RULES, **ACTION_RULES}

# Per-role limits; an admin changes them (`python -m engine quota set`, the Admin page).
QUOTAS = {
    "sessions": "running live sessions per person",
    "jobs": "queued and running jobs (backtests, training) per person",
    "upload_mb": "size of one uploaded file, MB",
}
DEFAULT_QUOTAS = {
    "viewer": {"sessions": 0, "jobs": 0, "upload_mb": 0},
    "trader": {"sessions": 4, "jobs": 4, "upload_mb": 200},
    "admin": {"sessions": 20, "jobs": 20, "upload_mb": 200},
}
# Which quota a command counts against.
COMMAND_QUOTA = {"session.start": "sessions", "backtest.start": "jobs", "train.start": "jobs"}


@dataclass(frozen=True)
class Actor:
    """Who is asking: an account's name and role, read from the database at the moment of the
    check (never from a form, a cookie, or what a page remembered)."""

    name: str
    role: str


def refusal(actor: Actor, action: str, owner: str | None = None) -> str | None:
    """Why `actor` may not do `action` (a command kind or a direct write), or None if they may.
    `owner` is who created the row an OWNER rule is about."""
    rule = RULES.get(action)
    if rule is None:
        return f"{action!r} is not an action anyone may take"
    if actor.role not in ALLOWED[rule]:
        return f"{actor.name} ({actor.role}) may not {describe(action)}: {WHO[rule]}"
    if rule == OWNER and actor.role != "admin" and owner != actor.name:
        whose = f"it is {owner}'s" if owner else "it is not theirs"
        return f"{actor.name} ({actor.role}) may not {describe(action)}: {whose}, and {WHO[rule]}"
    return None


def can(role: str | None, action: str) -> bool:
    """Whether `role` may ever take `action` (on its own rows, for OWNER rules): what a page
    shows. The engine and `db/` still decide each case with `refusal`."""
    return role in ALLOWED.get(RULES.get(action, ADMIN), set())


def may_touch(actor: Actor | None, action: str, owner: str | None) -> bool:
    """Whether a page should offer `action` on a row created by `owner`."""
    return actor is not None and refusal(actor, action, owner) is None


WHO = {
    EVERYONE: "every signed-in account may",
    TRADER: "traders and admins may",
    OWNER: "traders may on their own, admins on anyone's",
    ADMIN: "only admins may",
}
_WHAT = {
    "ping": "ping the engine",
    "session.start": "start live sessions",
    "session.stop": "stop the session",
    "session.set_mode": "switch the mode",
    "session.train_manual": "train the session",
    "backtest.start": "start backtests",
    "train.start": "start training",
    "checkpoint.activate": "activate checkpoints",
    "model.save": "save the working model",
    "model.train": "train or share the working model",
    "annotation.create": "annotate",
    "annotation.edit": "edit the annotation",
    "annotation.delete": "delete the annotation",
    "annotation.import": "import annotations",
    "data.import": "import market data",
    "job.cancel": "cancel the job",
    "account.manage": "manage accounts",
    "quota.set": "change quotas",
    "audit.read": "read the audit log",
}


def describe(action: str) -> str:
    """`action` as words ("stop the session"); debug commands as their kind."""
    return _WHAT.get(action, f"run {action}")
