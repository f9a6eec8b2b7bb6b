"""The connections one replica holds, as README's capacity table gives them, counted on a real
replica process: PostgreSQL's by application_name in pg_stat_activity, Redis's by client name in
CLIENT LIST (both `orderworker-<replica id>`)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import dataclass

from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from jobs.client import JobRequest, OrderClient
from tests.conftest import poll_until
from worker.health import live_replicas

POOL_SIZE = 4  # = concurrency, as the defaults (20 and 20)
CONCURRENCY = 4
JOBS = 3000  # enough for every slot to hold a database connection at once
# Idle: the connection of the start-up check; Redis: one pooled connection and the wake listener.
IDLE = (1, 2)
# Busy: at most the pool; Redis at most a pooled connection per slot, the poll loop's, the
# lease and heartbeat tasks', and the wake listener.
REDIS_BUSY_AT_MOST = CONCURRENCY + 4


@dataclass
class Held:
    postgres: int
    redis: int
    subscribers: int


async def held_by(name: str, engine: AsyncEngine, redis: Redis) -> Held:
    async with engine.connect() as connection:
        query = text("SELECT count(*) FROM pg_stat_activity WHERE application_name = :name")
        postgres = int((await connection.execute(query, {"name": name})).scalar_one())
    clients = [client for client in await redis.client_list() if client.get("name") == name]
    subscribers = sum(int(client["sub"]) > 0 for client in clients)
    return Held(postgres, len(clients), subscribers)


async def test_a_replica_holds_one_database_connection_idle_and_its_pool_when_busy(
    seeded: None,
    worker_processes: Callable[..., subprocess.Popen[str]],
    engine: AsyncEngine,
    redis: Redis,
    client: OrderClient,
    queue_name: str,
) -> None:
    worker_processes(
        ORDERWORKER_WORKER__CONCURRENCY=str(CONCURRENCY),
        ORDERWORKER_DATABASE__POOL_SIZE=str(POOL_SIZE),
        ORDERWORKER_LOG__LEVEL="WARNING",
    )
    await poll_until(lambda: _reporting(redis, queue_name), "the replica's heartbeat")
    [beat] = await live_replicas(redis, queue_name)
    name = f"orderworker-{beat['replica_id']}"

    async def idle() -> bool:
        held = await held_by(name, engine, redis)
        return (held.postgres, held.redis) == IDLE and held.subscribers == 1

    await poll_until(idle, f"{IDLE} connections held by an idle replica")
    requests = [
        JobRequest("compute_order_total", {"order_id": 1 + n % 3}, f"{queue_name}:{n}")
        for n in range(JOBS)
    ]
    await client.enqueue_many(requests)
    peak = Held(0, 0, 0)

    async def drained() -> bool:
        held = await held_by(name, engine, redis)
        peak.postgres, peak.redis = max(peak.postgres, held.postgres), max(peak.redis, held.redis)
        peak.subscribers = max(peak.subscribers, held.subscribers)
        queued: int = await redis.zcard(client.lane_queue_of("compute_order_total"))
        return queued == 0

    await poll_until(drained, "the jobs done")
    print(f"replica connections: idle {IDLE}, busy at most {peak}")
    assert len(await client.outcomes([request.job_id for request in requests])) == JOBS

    assert peak.postgres == POOL_SIZE  # reached, never passed
    assert CONCURRENCY < peak.redis <= REDIS_BUSY_AT_MOST
    assert peak.subscribers == 1
    after = await held_by(name, engine, redis)
    assert after.postgres == POOL_SIZE  # pooled connections are kept once opened


async def _reporting(redis: Redis, queue_name: str) -> bool:
    return bool(await live_replicas(redis, queue_name))
