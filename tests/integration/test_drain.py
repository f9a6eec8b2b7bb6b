"""SIGTERM mid-batch, at the racy moments: one or two stop requests while chunk jobs are being
claimed, started and finished. Every drain ends cleanly, and every job is either finished or back
in the queue, unclaimed, with its try given back."""

from __future__ import annotations

import asyncio
import random
import signal

from arq.constants import in_progress_key_prefix, result_key_prefix, retry_key_prefix
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from jobs.client import OrderClient
from jobs.lanes import lane_queue
from tests.conftest import poll_until, queued_ids
from worker.replica import OrderWorker, run_until_stopped
from worker.settings import Settings

ROUNDS = 12
CHUNKS = 40
CHUNK_SIZE = 20


async def enqueue_chunks(client: OrderClient, round_no: int) -> list[str]:
    job_ids = []
    for chunk in range(CHUNKS):
        start = (round_no * CHUNKS + chunk) * CHUNK_SIZE + 1
        order_ids = list(range(start, start + CHUNK_SIZE))  # unknown orders: counted as missing
        job_ids.append(await client.enqueue("compute_batch_totals", order_ids=order_ids))
    return job_ids


async def stop_at_a_racy_moment(worker: OrderWorker, rng: random.Random) -> None:
    taken = rng.randrange(0, 12)  # after this many jobs were claimed (running or done)
    await poll_until(lambda: worker.jobs_complete + len(worker.tasks) >= taken, "claims")
    for _ in range(rng.randrange(0, 4)):
        await asyncio.sleep(0)  # a few loop turns: into a claim, a start, a finish
    worker.request_stop(signal.SIGTERM)
    if rng.random() < 0.7:  # uv forwards SIGTERM to the process group: a second one follows
        for _ in range(rng.randrange(0, 3)):
            await asyncio.sleep(0)
        worker.request_stop(signal.SIGTERM)


async def assert_finished_or_requeued(redis: Redis, queue_name: str, job_ids: list[str]) -> int:
    """Returns how many jobs went back to the queue."""
    requeued = 0
    for job_id in job_ids:
        queued = job_id in await queued_ids(redis, queue_name)
        if await redis.exists(result_key_prefix + job_id):
            assert not queued
            continue
        requeued += 1
        assert queued, job_id
        assert not await redis.exists(in_progress_key_prefix + job_id), job_id
        tries = await redis.get(retry_key_prefix + job_id)
        assert int(tries or 0) == 0, (job_id, tries)
    return requeued


async def test_a_drain_at_any_moment_ends_cleanly_and_requeues_without_using_a_try(
    seeded: None, settings: Settings, client: OrderClient, redis: Redis, queue_name: str
) -> None:
    rng = random.Random(20_000)
    tuning = settings.worker.model_copy(update={"concurrency": 20, "shutdown_grace_s": 0.05})
    requeued_in_all = 0
    for round_no in range(ROUNDS):
        job_ids = await enqueue_chunks(client, round_no)
        worker = OrderWorker(settings.model_copy(update={"worker": tuning}), max_jobs=20)
        run = asyncio.create_task(run_until_stopped(worker))
        await stop_at_a_racy_moment(worker, rng)
        await asyncio.wait_for(run, 30)  # raises whatever escaped the replica
        assert worker.stopping
        unfinished = await assert_finished_or_requeued(redis, queue_name, job_ids)
        assert len(worker.drain.requeued) <= unfinished
        assert set(worker.drain.requeued) <= set(await queued_ids(redis, queue_name))
        assert worker.jobs_retried == 0  # a requeued job used no try: it was not retried
        requeued_in_all += unfinished
        # The next round starts from empty lanes.
        await redis.delete(queue_name, lane_queue(queue_name, "batch"))
    assert requeued_in_all > 0  # the rounds did stop mid-batch


async def test_a_job_whose_lease_was_taken_over_is_not_named_as_requeued(
    seeded: None,
    settings: Settings,
    client: OrderClient,
    redis: Redis,
    queue_name: str,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    tuning = settings.worker.model_copy(update={"shutdown_grace_s": 0.05})
    worker = OrderWorker(settings.model_copy(update={"worker": tuning}), max_jobs=4)
    async with sessionmaker.begin() as session:  # held: the chunk's write waits on these rows
        await session.execute(text("SELECT id FROM orders WHERE id IN (1, 2) FOR UPDATE"))
        job_id = await client.enqueue("compute_batch_totals", order_ids=[1, 2])
        run = asyncio.create_task(run_until_stopped(worker))
        await poll_until(lambda: job_id in worker.drain.intake.started, "the chunk started")
        # Another replica took the job over meanwhile: its claim is no longer ours.
        await redis.set(in_progress_key_prefix + job_id, "another-replica")
        worker.request_stop(signal.SIGTERM)
        await asyncio.wait_for(run, 30)
    assert worker.drain.cut_off == [job_id]
    assert worker.drain.requeued == []  # not ours to put back: worker.drained does not name it
    assert await redis.get(in_progress_key_prefix + job_id) == b"another-replica"
