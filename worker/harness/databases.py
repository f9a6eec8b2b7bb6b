"""Databases of their own for a demo, a test or a benchmark run: created and dropped on an
AUTOCOMMIT admin connection (CREATE/DROP DATABASE cannot run inside a transaction)."""

from __future__ import annotations

from sqlalchemy import make_url, text

from db.engine import create_engine


def database_url_named(url: str, name: str) -> str:
    return make_url(url).set(database=name).render_as_string(hide_password=False)


async def admin_execute(admin_database_url: str, *statements: str) -> None:
    """Run statements outside a transaction (CREATE/DROP DATABASE) on an admin connection."""
    engine = create_engine(admin_database_url, pool_size=1)
    try:
        async with engine.connect() as connection:
            autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
            for statement in statements:
                await autocommit.execute(text(statement))
    finally:
        await engine.dispose()


async def create_database(
    admin_database_url: str, name: str, *, template: str | None = None, replace: bool = False
) -> str:
    """CREATE DATABASE `name` (a copy of `template` when given; dropped first when `replace`);
    returns its URL."""
    statements = [f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"] if replace else []
    statements.append(f"CREATE DATABASE {name}" + (f" TEMPLATE {template}" if template else ""))
    await admin_execute(admin_database_url, *statements)
    return database_url_named(admin_database_url, name)


async def drop_database(admin_database_url: str, name: str) -> None:
    await admin_execute(admin_database_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


# Every table but Alembic's own, and every sequence.
LIST_TABLES = text(
    "SELECT quote_ident(tablename) FROM pg_tables"
    " WHERE schemaname = 'public' AND tablename <> 'alembic_version'"
)
RESTART_SEQUENCES = text(
    "SELECT setval(c.oid, s.seqstart, false)"
    " FROM pg_class c JOIN pg_sequence s ON s.seqrelid = c.oid"
)
END_OTHER_SESSIONS = text(
    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
)


async def empty_database(database_url: str) -> None:
    """Back to just migrated: every row gone, every sequence restarted, no other session left.
    DELETE, not TRUNCATE or a new copy of a template: both write and sync new files, which takes
    far longer than deleting the few rows a test leaves."""
    engine = create_engine(database_url, pool_size=1)
    try:
        async with engine.begin() as connection:
            await connection.execute(END_OTHER_SESSIONS)
            # Rows go in any order: no foreign-key trigger fires for this session.
            await connection.execute(text("SET LOCAL session_replication_role = replica"))
            for table in (await connection.execute(LIST_TABLES)).scalars():
                await connection.execute(text(f"DELETE FROM {table}"))
            await connection.execute(RESTART_SEQUENCES)
    finally:
        await engine.dispose()
