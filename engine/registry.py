"""Command kinds and their handlers, registered by kind, one module per family
(`engine/commands/*.py`).

A handler is `fn(ctx, args, command) -> dict`, where `args` is the payload validated by the
handler's pydantic model. Handlers return quickly: long work becomes a job on its own thread.
Anything a person can fix is raised as `CommandError` with a message that says what to do.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError


class CommandError(Exception):
    """A command cannot be carried out; the message is shown to the person who sent it."""


class Payload(BaseModel):
    """Base for payload models: unknown fields are an error, not silently ignored."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class Handler:
    kind: str
    fn: Callable[..., dict[str, Any] | None]
    payload: type[Payload]
    debug: bool
    summary: str


_HANDLERS: dict[str, Handler] = {}


def command(kind: str, payload: type[Payload] = Payload, *, debug: bool = False):
    """Register the decorated function as the handler of `kind`."""

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


def _describe(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"]) or "payload"
        parts.append(f"{where}: {e['msg']}" + (f" (got {e['input']!r})" if "input" in e else ""))
    return "; ".join(parts)


def resolve(kind: str, raw_payload: str | None, debug_enabled: bool) -> tuple[Handler, Payload]:
    """The handler for `kind` and its validated arguments, or CommandError saying why not."""
    handler = _HANDLERS.get(kind)
    if handler is None:
        raise CommandError(
            f"unknown command kind {kind!r}; this engine knows: {', '.join(kinds())}"
        )
    if handler.debug and not debug_enabled:
        raise CommandError(
            f"{kind!r} is a debug command and this engine runs without them; "
            "start it with `python -m engine serve --debug-commands`"
        )
    try:
        data = json.loads(raw_payload) if raw_payload and raw_payload.strip() else {}
    except json.JSONDecodeError as exc:
        raise CommandError(
            f"payload of {kind!r} is not valid JSON ({exc.msg} at line {exc.lineno} column "
            f"{exc.colno}): {raw_payload[:120]!r}; send a JSON object such as {{}}"
        ) from None
    if not isinstance(data, dict):
        raise CommandError(
            f"payload of {kind!r} must be a JSON object, got {type(data).__name__}: "
            f"{raw_payload[:120]!r}"
        )
    try:
        args = handler.payload.model_validate(data)
    except ValidationError as exc:
        raise CommandError(f"invalid payload for {kind!r}: {_describe(exc)}") from None
    return handler, args
