"""The servers a benchmark runs against, its data, and `Bench`, the handle every measurement takes:
a private local stack by default, or the servers named by ORDERWORKER_BENCH_DATABASE_URL /
ORDERWORKER_BENCH_REDIS_URL (then in a fresh database of its own). Orders are loaded with set-based
SQL, never through the ORM."""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from bench.processes import Child, Finished
from db.engine import create_engine, create_sessionmaker
from db.migrate import upgrade_to_head
from db.seed import count_orders, generate_orders, load_sample
from jobs.lanes import lane_queue
from worker.harness.databases import create_database
from worker.harness.polling import poll_until
from worker.harness.replicas import replica_env
from worker.harness.servers import LocalStack, StackUrls
from worker.health import live_replicas

DATABASE_VARIABLE = "ORDERWORKER_BENCH_DATABASE_URL"
REDIS_VARIABLE = "ORDERWORKER_BENCH_REDIS_URL"
BENCH_DATABASE = "orderworker_bench"
READY_TIMEOUT_S = 60.0
RUN_TIMEOUT_S = 900.0


@dataclass(frozen=True, slots=True)
class BenchServers(StackUrls):
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


# CHECKPOINT takes a superuser, or from PostgreSQL 15 the pg_checkpoint role; without, none.
CHECKPOINT_ALLOWED = text(
    "SELECT rolsuper OR EXISTS (SELECT FROM pg_roles AS r WHERE r.rolname = 'pg_checkpoint'"
    " AND pg_has_role(current_user, r.oid, 'MEMBER')) FROM pg_roles WHERE rolname = current_user"
)


async def truncate_totals(engine: AsyncEngine) -> None:
    """An empty order_totals, and a CHECKPOINT: the next measurement starts with nothing the
    last one wrote still to be flushed, which would otherwise slow it by up to a fifth."""
    async with engine.begin() as connection:
        await connection.execute(text("TRUNCATE order_totals"))
    async with engine.connect() as connection:  # after the TRUNCATE's commit
        if await connection.scalar(CHECKPOINT_ALLOWED):
            await connection.execute(text("CHECKPOINT"))


async def order_id_range(engine: AsyncEngine) -> tuple[int, int]:
    async with engine.connect() as connection:
        row = (await connection.execute(text("SELECT min(id), max(id) FROM orders"))).one()
    return int(row[0]), int(row[1])


async def clear_queue_keys(
    redis: Redis, queue_name: str, job_ids: list[str], batch_ids: Sequence[str] = ()
) -> None:
    """Remove a measurement's queue and every key its jobs left (never a whole Redis db); with
    `batch_ids`, every key of those batches' chunk jobs too (named totals:{batch_id}:{n})."""
    prefixes = ("arq:job:", "arq:result:", "arq:retry:", "arq:in-progress:")
    keys: list[str | bytes] = [queue_name, lane_queue(queue_name, "batch")]
    keys += [f"{queue_name}:health-check", *(p + job for job in job_ids for p in prefixes)]
    for batch_id in batch_ids:
        pattern = f"arq:*:totals:{batch_id}:*"
        keys += [key async for key in redis.scan_iter(match=pattern, count=1000)]
    for start in range(0, len(keys), 1000):
        await redis.delete(*keys[start : start + 1000])


@dataclass(slots=True)
class Bench:
    database_url: str
    redis_url: str
    engine: AsyncEngine
    redis: Redis
    log_dir: Path
    first_id: int
    last_id: int
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    @property
    def orders(self) -> int:
        return self.last_id - self.first_id + 1

    def queue(self, label: str) -> str:
        return f"bench:{self.run_id}:{label}"

    def env(self, queue: str) -> dict[str, str]:
        return replica_env(self.database_url, self.redis_url, queue)

    async def cli(self, label: str, queue: str, *args: str) -> tuple[Finished, dict[str, Any]]:
        """`orderworker *args --json` run to its end, and the JSON summary it printed."""
        child = Child(["worker", *args, "--json"], self.env(queue), self.log_dir, label)
        finished = await child.finished(RUN_TIMEOUT_S)
        try:
            return finished, json.loads(finished.stdout)
        except json.JSONDecodeError:
            raise RuntimeError(f"{label}: no JSON on stdout (exit {finished.returncode})") from None

    async def start_replicas(self, label: str, queue: str, count: int) -> list[Child]:
        """`python -m worker worker` x count, once every one of them reports a heartbeat."""
        env = self.env(queue)
        replicas = [
            Child(["worker", "worker"], env, self.log_dir, f"{label}-w{n}")
            for n in range(1, count + 1)
        ]

        async def all_live() -> bool:
            for replica in replicas:
                replica.check_alive()
            return len(await live_replicas(self.redis, queue)) >= count

        await poll_until(all_live, f"{count} live replicas", READY_TIMEOUT_S)
        return replicas


@asynccontextmanager
async def open_bench(servers: BenchServers, orders: int, log_dir: Path) -> AsyncIterator[Bench]:
    """A fresh database loaded with `orders` generated orders, and clients for both servers."""
    database_url = await fresh_database(servers)
    engine = create_engine(database_url, pool_size=2)
    redis = Redis.from_url(servers.redis_url)
    try:
        say(f"loading {orders:,} orders (set-based SQL) ...")
        loaded, seconds = await load_orders(engine, orders)
        say(f"  {loaded:,} orders in {seconds:.1f}s (with VACUUM ANALYZE)")
        first_id, last_id = await order_id_range(engine)
        yield Bench(database_url, servers.redis_url, engine, redis, log_dir, first_id, last_id)
    finally:
        await redis.aclose()
        await engine.dispose()


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
