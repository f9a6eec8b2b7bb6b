"""The PgBouncer run only (`-m pooler`, which .ci/run selects): the product's connections really go
through a PgBouncer in transaction pooling mode, with asyncpg's statement cache off."""

from __future__ import annotations

import asyncpg  # type: ignore[import-untyped]
import pytest
from sqlalchemy import make_url, text

from db.engine import create_engine
from tests.conftest import POOLER_URL_VARIABLE, Servers
from worker.settings import Settings

pytestmark = pytest.mark.pooler


def pooler_url(servers: Servers) -> str:
    if servers.pooler_url is None:  # this test exists to prove the pooler path: never a skip
        pytest.fail(f"{POOLER_URL_VARIABLE} is not set: run this test through PgBouncer", False)
    return servers.pooler_url


async def test_the_product_database_url_leads_to_pgbouncer(
    servers: Servers, settings: Settings
) -> None:
    pooler = make_url(pooler_url(servers))
    product = make_url(settings.database_dsn())
    assert (product.host, product.port) == (pooler.host, pooler.port)
    assert settings.database.statement_cache_size == 0
    # Only PgBouncer answers on a database named "pgbouncer" with SHOW POOLS: PostgreSQL has none.
    console = await asyncpg.connect(
        host=pooler.host, port=pooler.port, user=pooler.username, database="pgbouncer"
    )
    try:
        assert await console.execute("SHOW POOLS") == "SHOW"
    finally:
        await console.close()


async def test_two_product_connections_share_one_server_connection(
    servers: Servers, settings: Settings
) -> None:
    """Transaction pooling: each client holds a server connection only for a transaction, so two
    open clients that take turns are served by one PostgreSQL backend. Directly, or in session
    pooling, each client has a backend of its own and the pids differ."""
    pooler_url(servers)
    engine = create_engine(settings.database_dsn(), pool_size=2, statement_cache_size=0)
    try:
        async with engine.connect() as first, engine.connect() as second:
            pids = []
            for connection in (first, second):
                pids.append((await connection.execute(text("SELECT pg_backend_pid()"))).scalar())
                await connection.commit()
        assert pids[0] == pids[1]
    finally:
        await engine.dispose()
