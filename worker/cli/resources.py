"""The database engine and the producer client a command uses, closed when it ends."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncEngine

from db.engine import create_engine
from db.schema import require_schema
from jobs.client import OrderClient, Replication
from jobs.connection import redis_settings_from_url
from worker.settings import Settings


@asynccontextmanager
async def database(settings: Settings, *, migrated: bool = True) -> AsyncIterator[AsyncEngine]:
    """An engine for a command; unless `migrated=False`, only on a migrated database (the check
    also connects, so an unreachable server is reported before any work starts)."""
    engine = create_engine(
        settings.database_dsn(),
        pool_size=2,
        statement_cache_size=settings.database.statement_cache_size,
        connect_timeout_s=settings.database.connect_timeout_s,
        application_name="orderworker-cli",
    )
    try:
        if migrated:
            await require_schema(engine)
        yield engine
    finally:
        await engine.dispose()


@asynccontextmanager
async def producer(settings: Settings) -> AsyncIterator[OrderClient]:
    """The producer client; a Redis error, on connecting or later, names the server. No
    connection retries with their warnings: each command already retries a dropped connection."""
    redis_settings = redis_settings_from_url(settings.redis_dsn(), conn_retries=0)
    try:
        client = await OrderClient.connect(
            redis_settings,
            settings.queue_name,
            Replication(settings.redis.wait_replicas, settings.redis.wait_timeout_ms),
        )
        try:
            yield client
        finally:
            await client.close()
    except RedisError as error:
        from worker.cli.failures import redis_error  # only once something failed

        raise redis_error(error, redis_settings) from error
