"""Which migration the database schema is at, without importing Alembic (a cheap check at start)."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine


async def current_revision(engine: AsyncEngine) -> str | None:
    async with engine.connect() as connection:
        exists = await connection.scalar(text("SELECT to_regclass('alembic_version') IS NOT NULL"))
        if not exists:
            return None
        revision = await connection.scalar(text("SELECT version_num FROM alembic_version"))
        return None if revision is None else str(revision)


class SchemaMissingError(Exception):
    """The database has not been migrated: nothing can run against it yet."""

    code = "database_not_migrated"


async def require_schema(engine: AsyncEngine) -> str:
    """The schema's revision; refuses a database that was never migrated."""
    revision = await current_revision(engine)
    if revision is None:
        raise SchemaMissingError("database has no schema: run `orderworker db upgrade` first")
    return revision
