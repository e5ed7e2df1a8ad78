"""Command families. Importing this package registers every handler."""

from engine.commands import debug, session, system, train  # noqa: F401
