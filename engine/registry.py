"""Command kinds and their handlers, registered by kind, one module per family
(`engine/commands/*.py`).

A handler is `fn(ctx, args, command) -> dict`, where `args` is the payload validated against
the command contract (`contract/payloads.py`, shared with the pages). Handlers return quickly:
long work becomes a job on its own thread.
Anything a person can fix is raised as `CommandError` with a message that says what to do.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from contract.payloads import PAYLOADS, Payload, PayloadError, parse, quote


class CommandError(Exception):
    """A command cannot be carried out; the message is shown to the person who sent it."""


@dataclass(frozen=True)
class Handler:
    kind: str
    fn: Callable[..., dict[str, Any] | None]
    payload: type[Payload]
    debug: bool
    summary: str


_HANDLERS: dict[str, Handler] = {}


def command(kind: str, *, debug: bool = False):
    """Register the decorated function as the handler of `kind`, whose payload model is the
    contract's (`contract.payloads.PAYLOADS`)."""
    payload = PAYLOADS[kind]

    def register(fn):
        if kind in _HANDLERS:
            raise RuntimeError(f"command kind {kind!r} registered twice")
        summary = (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else ""
        _HANDLERS[kind] = Handler(kind, fn, payload, debug, summary)
        return fn

    return register


def kinds(include_debug: bool = False) -> list[str]:
    """The registered kinds, sorted."""
    return sorted(k for k, h in _HANDLERS.items() if include_debug or not h.debug)


def resolve(kind: str, raw_payload: str | None, debug_enabled: bool) -> tuple[Handler, Payload]:
    """The handler for `kind` and its validated arguments, or CommandError saying why not."""
    handler = _HANDLERS.get(kind)
    if handler is None:
        raise CommandError(
            f"unknown command kind {quote(kind)}; this engine knows: {', '.join(kinds())}"
        )
    if handler.debug and not debug_enabled:
        raise CommandError(
            f"{kind!r} is a debug command and this engine runs without them; "
            "start it with `python -m engine serve --debug-commands`"
        )
    try:
        return handler, parse(kind, raw_payload)
    except PayloadError as exc:
        raise CommandError(str(exc)) from None
