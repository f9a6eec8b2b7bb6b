"""Redis restarted mid-batch: replicas reconnect with backoff and carry on (they never exit), the
batch completes, and with AOF no job enqueued before the restart is lost."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from jobs.client import OrderClient
from tests.conftest import poll_until
from tests.faults.conftest import (
    BATCH_DEADLINE_S,
    CHUNK_SIZE,
    CONCURRENCY,
    PrivateStack,
    SpawnWorker,
    StallBatch,
    assert_batch_exact,
    job_tries,
    totals_reach,
    wait_for_batch,
)
from worker.harness.replicas import Replica
from worker.replica import MAX_RECONNECT_DELAY_S

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

FULL_CONCURRENCY = 20  # the default
# Once Redis is back, a replica sleeps at most one reconnect delay before it takes jobs again.
RESUME_BOUND_S = MAX_RECONNECT_DELAY_S + 2


@dataclass
class RedisRestart:
    workers: list[Replica]
    recovered_s: float  # from Redis being back to every replica taking jobs again


async def _restart_redis_mid_batch(
    stack: PrivateStack,
    spawn_worker: SpawnWorker,
    stall_batch: StallBatch,
    engine: AsyncEngine,
    client: OrderClient,
    concurrency: int,
    reconnect_deadline_s: float = BATCH_DEADLINE_S,
) -> RedisRestart:
    env = {
        "ORDERWORKER_WORKER__CONCURRENCY": str(concurrency),
        "ORDERWORKER_DATABASE__POOL_SIZE": str(concurrency),
    }
    workers = list(await asyncio.gather(spawn_worker(**env), spawn_worker(**env)))
    stalled = await stall_batch(locked=2 * concurrency)
    queued = {job_id.decode() for job_id in await client.redis.zrange(client.queue_name, 0, -1)}
    assert len(queued) > 2 * concurrency  # chunks not yet started, besides the blocked ones

    await asyncio.to_thread(stack.redis.stop)
    # The blocked chunks now commit their totals but cannot store their results: those are lost
    # with the connection, and the chunks run again once their in-progress keys expire.
    await stalled.release()
    committed = stalled.totals_at_stall + 2 * concurrency * CHUNK_SIZE
    await poll_until(lambda: totals_reach(engine, committed), "blocked chunks committed")
    # Keep Redis down until every replica has hit the outage in its own poll loop: a restart
    # quicker than that would be hidden by the client's reconnects and prove nothing.
    await poll_until(
        lambda: all(worker.events("worker.redis_unavailable") for worker in workers),
        "every replica saw the outage",
    )
    for worker in workers:
        assert worker.alive(), worker.excerpt()
    await asyncio.to_thread(stack.redis.start)
    back_at = time.monotonic()
    await poll_until(
        lambda: all(worker.events("worker.redis_recovered") for worker in workers),
        "every replica reconnected",
        reconnect_deadline_s,
    )
    recovered_s = time.monotonic() - back_at
    summary = await wait_for_batch(stalled.run, BATCH_DEADLINE_S)
    print(
        f"\nRedis restart, concurrency {concurrency}: replicas reconnected {recovered_s:.1f}s "
        f"after Redis was back; batch complete after {time.monotonic() - back_at:.1f}s"
    )

    await assert_batch_exact(summary, engine)
    tries = await job_tries(client.redis, sorted(queued))
    assert set(tries) == queued  # every job queued before the restart finished after it
    for worker in workers:
        assert worker.alive(), worker.excerpt()
    return RedisRestart(workers, recovered_s)


async def test_replicas_survive_a_redis_restart_and_no_enqueued_job_is_lost(
    private_stack: PrivateStack,
    spawn_worker: SpawnWorker,
    stall_batch: StallBatch,
    fault_engine: AsyncEngine,
    fault_client: OrderClient,
) -> None:
    await _restart_redis_mid_batch(
        private_stack, spawn_worker, stall_batch, fault_engine, fault_client, CONCURRENCY
    )


async def test_replicas_at_full_concurrency_resume_promptly_after_a_redis_restart(
    private_stack: PrivateStack,
    spawn_worker: SpawnWorker,
    stall_batch: StallBatch,
    fault_engine: AsyncEngine,
    fault_client: OrderClient,
) -> None:
    restart = await _restart_redis_mid_batch(
        private_stack,
        spawn_worker,
        stall_batch,
        fault_engine,
        fault_client,
        FULL_CONCURRENCY,
        reconnect_deadline_s=RESUME_BOUND_S,
    )
    assert restart.recovered_s < RESUME_BOUND_S
    for worker in restart.workers:
        errors = [event for event in worker.events() if event.get("level") == "error"]
        assert errors == [], [event["event"][:120] for event in errors]
