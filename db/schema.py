"""Which migration the database schema is at, without importing Alembic (a cheap check at start)."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

# The migration this code needs, at least (tests/unit/test_schema.py holds it to Alembic's head).
# A later one is fine: migrations only add, so a replica not yet upgraded runs on.
REQUIRED_REVISION = "0003"


async def current_revision(engine: AsyncEngine) -> str | None:
    async with engine.connect() as connection:
        exists = await connection.scalar(text("SELECT to_regclass('alembic_version') IS NOT NULL"))
        if not exists:
            return None
        revision = await connection.scalar(text("SELECT version_num FROM alembic_version"))
        return None if revision is None else str(revision)


class SchemaMissingError(Exception):
    """The database has not been migrated (as far as this code needs): nothing can run yet."""

    code = "database_not_migrated"


async def require_schema(engine: AsyncEngine) -> str:
    """The schema's revision; refuses a database that was never migrated, or not as far as this
    code needs (revisions are numbered in order)."""
    revision = await current_revision(engine)
    if revision is None:
        raise SchemaMissingError("database has no schema: run `orderworker db upgrade` first")
    if revision < REQUIRED_REVISION:
        raise SchemaMissingError(
            f"database is at revision {revision}, this version needs {REQUIRED_REVISION}:"
            " run `orderworker db upgrade` first"
        )
    return revision
