"""The servers a benchmark runs against, and its data: a private local stack by default, or the
servers named by ORDERWORKER_BENCH_DATABASE_URL / ORDERWORKER_BENCH_REDIS_URL (then in a fresh
database of its own). Orders are loaded with set-based SQL, never through the ORM."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from db.engine import create_sessionmaker
from db.migrate import upgrade_to_head
from db.seed import count_orders, generate_orders, load_sample
from jobs.lanes import lane_queue
from worker.harness.databases import create_database
from worker.harness.servers import LocalStack

DATABASE_VARIABLE = "ORDERWORKER_BENCH_DATABASE_URL"
REDIS_VARIABLE = "ORDERWORKER_BENCH_REDIS_URL"
BENCH_DATABASE = "orderworker_bench"


@dataclass(frozen=True, slots=True)
class BenchServers:
    database_url: str
    redis_url: str
    private: bool  # a local stack started for this run (so its Redis may be flushed)


@contextmanager
def bench_servers() -> Iterator[BenchServers]:
    database_url = os.environ.get(DATABASE_VARIABLE)
    redis_url = os.environ.get(REDIS_VARIABLE)
    if database_url and redis_url:
        yield BenchServers(database_url, redis_url, private=False)
        return
    if database_url or redis_url:
        raise SystemExit(f"set both {DATABASE_VARIABLE} and {REDIS_VARIABLE}, or neither")
    stack = LocalStack(name="bench")
    stack.wipe()  # fresh on every run: the same data, the same figures
    with stack as urls:
        yield BenchServers(urls.database_url, urls.redis_url, private=True)


async def fresh_database(servers: BenchServers) -> str:
    """The URL of an empty database for this run: the stack's own, or a re-created one."""
    if servers.private:
        return servers.database_url
    return await create_database(servers.database_url, BENCH_DATABASE, replace=True)


async def load_orders(engine: AsyncEngine, generated: int) -> tuple[int, float]:
    """Migrate, load the sample data plus `generated` orders, then VACUUM ANALYZE; the orders
    in the database, and the seconds it took."""
    started = time.perf_counter()
    await upgrade_to_head(engine)
    sessions = create_sessionmaker(engine)
    async with sessions.begin() as session:  # as `orderworker db seed --orders N` does
        if await session.scalar(text("SELECT current_setting('is_superuser')")) == "on":
            # The generated rows are consistent by construction; the per-row foreign-key triggers
            # would make loading ~5x slower (about a minute per million orders on 2 cores).
            await session.execute(text("SET LOCAL session_replication_role = replica"))
        await load_sample(session)
        await generate_orders(session, generated)
    async with engine.connect() as connection:
        autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
        await autocommit.execute(text("VACUUM ANALYZE"))
    async with sessions() as session:
        orders = await count_orders(session)
    return orders, time.perf_counter() - started


async def server_versions(engine: AsyncEngine, redis: Redis) -> tuple[str, str]:
    async with engine.connect() as connection:
        postgres = str((await connection.execute(text("SHOW server_version"))).scalar_one())
    info = await redis.info("server")
    return f"PostgreSQL {postgres.split()[0]}", f"Redis {info.get('redis_version', '?')}"


async def truncate_totals(engine: AsyncEngine) -> None:
    async with engine.begin() as connection:
        await connection.execute(text("TRUNCATE order_totals"))


async def order_id_range(engine: AsyncEngine) -> tuple[int, int]:
    async with engine.connect() as connection:
        row = (await connection.execute(text("SELECT min(id), max(id) FROM orders"))).one()
    return int(row[0]), int(row[1])


async def clear_queue_keys(
    redis: Redis, queue_name: str, job_ids: list[str], batch_id: str | None = None
) -> None:
    """Remove a measurement's queue and every key its jobs left (never a whole Redis db); with
    `batch_id`, every key of that batch's chunk jobs too (named totals:{batch_id}:{n})."""
    prefixes = ("arq:job:", "arq:result:", "arq:retry:", "arq:in-progress:")
    keys: list[str | bytes] = [queue_name, lane_queue(queue_name, "batch")]
    keys += [f"{queue_name}:health-check", *(p + job for job in job_ids for p in prefixes)]
    if batch_id is not None:
        pattern = f"arq:*:totals:{batch_id}:*"
        keys += [key async for key in redis.scan_iter(match=pattern, count=1000)]
    for start in range(0, len(keys), 1000):
        await redis.delete(*keys[start : start + 1000])
