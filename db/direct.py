"""Statements sent straight to a session's asyncpg connection, as one transaction each.

For one small statement, SQLAlchemy's statement and result layers cost more CPU than the database's
work does, and a transactional session adds BEGIN and COMMIT round trips around it. The hot paths
of the single-order jobs use this instead; the session must be on an AUTOCOMMIT engine.
"""

from __future__ import annotations

from typing import Any

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession


async def fetch_row(session: AsyncSession, sql: str, *args: Any) -> asyncpg.Record | None:
    """The first row of `sql` (asyncpg's $n placeholders), run as a transaction of its own; a
    driver error raised as SQLAlchemy's DBAPIError, so it is classified like any other's."""
    connection = await session.connection()
    options = (
        connection.sync_connection.get_execution_options() if connection.sync_connection else {}
    )
    if options.get("isolation_level") != "AUTOCOMMIT":
        raise ValueError("a direct statement needs a session on an AUTOCOMMIT engine")
    driver = (await connection.get_raw_connection()).driver_connection
    assert driver is not None  # a checked-out connection always has one
    try:
        return await driver.fetchrow(sql, *args)
    except (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError) as error:
        if isinstance(error, asyncpg.InternalClientError):
            # The protocol is out of step with the server (seen when the server ended the session
            # under an idle pooled connection while a statement began): this connection is done.
            driver.terminate()
        # A dead connection needs nothing more: the session's reset on close takes it out of the
        # pool.
        raise DBAPIError(
            sql, None, error, hide_parameters=True, connection_invalidated=driver.is_closed()
        ) from error
