"""Command families. Importing this package registers every handler."""

from engine.commands import backtest, debug, session, system, train  # noqa: F401
