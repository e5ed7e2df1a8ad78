"""System commands: liveness and identity."""

from __future__ import annotations

from engine import __version__
from engine.registry import command


@command("ping")
def ping(ctx, args, cmd) -> dict:
    """Answer with this engine's id, version and uptime."""
    return {
        "engine_id": ctx.instance_id,
        "version": __version__,
        "uptime_s": round(ctx.uptime_s(), 3),
    }
