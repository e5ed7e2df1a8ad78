"""Alembic environment: runs on the connection `db.migrate` hands in, or on DATABASE_URL."""

from alembic import context

from db.connection import make_engine
from db.models import Base, UTCDateTime

config = context.config


def render_item(type_, obj, autogen_context):
    # Migrations stay plain SQLAlchemy: UTCDateTime is a DateTime in the database.
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime()"
    return False


def run() -> None:
    connection = config.attributes.get("connection")
    if connection is None:
        with make_engine(config.get_main_option("sqlalchemy.url") or None).connect() as conn:
            _run_on(conn)
    else:
        _run_on(connection)


def _run_on(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=True,  # SQLite can only ALTER by copying the table
        render_item=render_item,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


run()
