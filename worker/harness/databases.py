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
