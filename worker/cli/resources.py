"""The database engine and the producer client a command uses, closed when it ends."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.ext.asyncio import AsyncEngine

from db.engine import create_engine
from jobs.client import OrderClient, Replication
from jobs.connection import redis_settings_from_url
from worker.settings import Settings


@asynccontextmanager
async def database(settings: Settings) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(
        settings.database_dsn(),
        pool_size=2,
        statement_cache_size=settings.database.statement_cache_size,
        connect_timeout_s=settings.database.connect_timeout_s,
        application_name="orderworker-cli",
    )
    try:
        yield engine
    finally:
        await engine.dispose()


@asynccontextmanager
async def producer(settings: Settings) -> AsyncIterator[OrderClient]:
    client = await OrderClient.connect(
        redis_settings_from_url(settings.redis_dsn(), conn_retries=2),
        settings.queue_name,
        Replication(settings.redis.wait_replicas, settings.redis.wait_timeout_ms),
    )
    try:
        yield client
    finally:
        await client.close()
