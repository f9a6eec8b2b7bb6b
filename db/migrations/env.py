"""Alembic environment (async template). Migrations run through `orderworker db upgrade`, which
passes in a live connection (`db.migrate.upgrade_to_head`): this package reads no settings."""

from alembic import context
from sqlalchemy import Connection

from db.models import Base

target_metadata = Base.metadata


def run_with_connection(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


given = context.config.attributes.get("connection")
if given is None:
    raise RuntimeError("run migrations with `orderworker db upgrade` (db.migrate.upgrade_to_head)")
run_with_connection(given)
