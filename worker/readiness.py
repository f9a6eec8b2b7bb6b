"""Readiness: can this configuration reach PostgreSQL and Redis now? One short connection to
each, both at once, with neither the engine nor the producer client (cheap to import)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit

from arq.connections import ArqRedis, create_pool

from db.connect_errors import endpoint
from jobs.connection import redacted, redis_settings_from_url

READY_TIMEOUT_S = 3.0
# The URL's query parameters that asyncpg's DSN reads; SQLAlchemy's own (and `ssl`, its
# spelling of `sslmode`) would reach PostgreSQL as unknown server settings.
ASYNCPG_DSN_PARAMS = {"sslmode", "sslcert", "sslkey", "sslrootcert", "sslcrl", "host", "port"}


@dataclass(frozen=True, slots=True)
class Check:
    service: str  # "postgresql" or "redis"
    where: str  # host and port (never the password)
    error: str | None  # None: it answered
    elapsed_ms: float

    @property
    def ok(self) -> bool:
        return self.error is None


@asynccontextmanager
async def redis_connection(url: str, *, conn_retries: int) -> AsyncIterator[ArqRedis]:
    """A bare arq pool on the URL (Sentinel too), for reading keys: no serializers, no client."""
    pool = await create_pool(redis_settings_from_url(url, conn_retries=conn_retries))
    try:
        yield pool
    finally:
        await pool.aclose()


def postgresql_where(database_url: str) -> str:
    return f"postgresql {endpoint(database_url)}{urlsplit(database_url).path}"


def asyncpg_dsn(database_url: str) -> str:
    """`postgresql+asyncpg://…` (SQLAlchemy's form) as the `postgresql://…` asyncpg reads."""
    parts = urlsplit(database_url)
    query = []
    for name, value in parse_qsl(parts.query):
        if name == "ssl":
            name = "sslmode"
        if name in ASYNCPG_DSN_PARAMS:
            query.append((name, value))
    return parts._replace(scheme="postgresql", query=urlencode(query)).geturl()


async def check_postgresql(database_url: str, timeout_s: float = READY_TIMEOUT_S) -> Check:
    import asyncpg  # type: ignore[import-untyped]  # only for this check: the list never needs it

    async def select_one() -> None:
        connection = await asyncpg.connect(
            asyncpg_dsn(database_url),
            timeout=timeout_s,
            statement_cache_size=0,  # one simple query; also safe through PgBouncer
            server_settings={"application_name": "orderworker-probe"},
        )
        try:
            await connection.execute("SELECT 1")
        finally:
            await connection.close(timeout=timeout_s)

    return await _timed("postgresql", postgresql_where(database_url), select_one, timeout_s)


async def check_redis(redis_url: str, timeout_s: float = READY_TIMEOUT_S) -> Check:
    async def ping() -> None:
        async with redis_connection(redis_url, conn_retries=0) as redis:
            await redis.ping()

    where = redacted(redis_settings_from_url(redis_url))
    return await _timed("redis", where, ping, timeout_s)


async def readiness(
    database_url: str, redis_url: str, timeout_s: float = READY_TIMEOUT_S
) -> list[Check]:
    return list(
        await asyncio.gather(
            check_postgresql(database_url, timeout_s), check_redis(redis_url, timeout_s)
        )
    )


async def _timed(
    service: str, where: str, attempt: Callable[[], Awaitable[None]], timeout_s: float
) -> Check:
    started = time.perf_counter()
    error: str | None = None
    try:
        async with asyncio.timeout(timeout_s):
            await attempt()
    except TimeoutError:
        error = f"no answer within {timeout_s:g} s"
    except Exception as failure:  # whatever it is, the probe reports it in one line
        text = str(failure).strip().splitlines()
        error = f"{type(failure).__name__}: {text[0] if text else 'failed'}"
    elapsed_ms = round((time.perf_counter() - started) * 1000, 1)
    return Check(service=service, where=where, error=error, elapsed_ms=elapsed_ms)
