"""Lanes on a real Redis and PostgreSQL: an interactive job overtakes queued batch chunks, batch
jobs written into arq's queue by any producer run in their lane with exact totals, wake-ups end a
replica's wait at once and producers that send none are still served."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest
from arq.connections import ArqRedis, create_pool
from arq.constants import job_key_prefix, result_key_prefix, retry_key_prefix
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.seed import generate_orders
from jobs.batches import chunked
from jobs.connection import redis_settings_from_url
from jobs.lanes import done_channel, lane_queue, wake_channel
from jobs.serialization import make_deserializer, serialize
from tests.conftest import StartWorker, poll_until
from tests.integration.test_queries import expected_totals, totals_rows
from tests.integration.test_queue_scripts import next_message
from worker.settings import Settings, WorkerTuning

Sessions = async_sessionmaker[AsyncSession]
CHUNKS = 200
JOB_EXPIRY_MS = 600_000
MARGIN_S = 2.0  # generous on a loaded two-core machine


def now_ms() -> int:
    return int(time.time() * 1000)


def envelope(function: str, **kwargs: Any) -> bytes:
    return serialize({"t": 1, "f": function, "a": [], "k": kwargs, "et": now_ms()})


async def results(redis: Redis, job_ids: list[str]) -> dict[str, dict[str, Any]]:
    """Every job's stored result, once all of them are stored."""
    keys = [result_key_prefix + job_id for job_id in job_ids]

    async def all_stored() -> bool:
        return int(await redis.exists(*keys)) == len(keys)

    await poll_until(all_stored, f"{len(keys)} results", timeout_s=60)
    stored = await redis.mget(keys)
    return {job_id: json.loads(data) for job_id, data in zip(job_ids, stored, strict=True)}


async def test_an_interactive_job_overtakes_200_queued_batch_chunks(
    seeded: None, start_worker: StartWorker, redis: Redis, queue_name: str
) -> None:
    due = now_ms() - 10_000
    chunk_ids = [f"{queue_name}:chunk-{n}" for n in range(CHUNKS)]
    async with redis.pipeline(transaction=False) as pipe:
        for n, job_id in enumerate(chunk_ids):
            data = envelope("compute_batch_totals", order_ids=[1, 2, 3], batch_id=f"b{n}")
            pipe.set(job_key_prefix + job_id, data, px=JOB_EXPIRY_MS)
            # Half as OrderClient writes them (the batch lane), half as a raw producer does.
            lane = lane_queue(queue_name, "batch" if n % 2 else "interactive")
            pipe.zadd(lane, {job_id: due + n})
        await pipe.execute()
    interactive = f"{queue_name}:checkout"
    await redis.set(job_key_prefix + interactive, envelope("compute_order_total", order_id=1))
    await redis.zadd(queue_name, {interactive: now_ms()})  # behind every chunk
    await start_worker()
    stored = await results(redis, [*chunk_ids, interactive])
    assert all(result["s"] for result in stored.values())
    finished_at = stored.pop(interactive)["ft"]
    earlier = sum(1 for result in stored.values() if result["ft"] < finished_at)
    assert earlier < CHUNKS // 4, f"{earlier} of {CHUNKS} chunks finished first"
    assert await redis.zcard(queue_name) == await redis.zcard(lane_queue(queue_name, "batch")) == 0


def polling_every(settings: Settings, poll_delay_s: float) -> WorkerTuning:
    return settings.worker.model_copy(update={"poll_delay_s": poll_delay_s})


async def served_after(
    settings: Settings, start_worker: StartWorker, redis: Redis, poll_delay_s: float, wake: bool
) -> float:
    """Seconds from enqueueing a job to its result, on an idle replica polling every
    `poll_delay_s`; with `wake`, the producer publishes a wake-up after the enqueue."""
    worker = await start_worker(worker=polling_every(settings, poll_delay_s))
    await poll_until(lambda: worker.wakeups.subscribed, "wake-up subscription")
    queue_name = settings.queue_name
    job_id = f"{queue_name}:served"
    await redis.set(job_key_prefix + job_id, envelope("compute_order_total", order_id=1))
    started = time.monotonic()
    await redis.zadd(queue_name, {job_id: now_ms()})
    if wake:
        await redis.publish(wake_channel(queue_name), "1")
    [result] = (await results(redis, [job_id])).values()
    assert result["s"] is True
    return time.monotonic() - started


async def test_a_producer_that_sends_no_wake_up_is_served_within_the_poll_delay(
    seeded: None, settings: Settings, start_worker: StartWorker, redis: Redis
) -> None:
    poll_delay_s = 0.5
    waited_s = await served_after(settings, start_worker, redis, poll_delay_s, wake=False)
    assert waited_s < poll_delay_s + MARGIN_S


async def test_a_wake_up_ends_the_wait_long_before_the_poll_delay(
    seeded: None, settings: Settings, start_worker: StartWorker, redis: Redis
) -> None:
    poll_delay_s = 8.0
    waited_s = await served_after(settings, start_worker, redis, poll_delay_s, wake=True)
    assert waited_s < poll_delay_s / 4


@pytest.fixture
async def arq_producer(redis_url: str, queue_name: str) -> AsyncIterator[ArqRedis]:
    """A plain arq producer with our JSON serializer: it writes every job into arq's queue."""
    pool = await create_pool(
        redis_settings_from_url(redis_url),
        job_serializer=serialize,
        job_deserializer=make_deserializer(),
        default_queue_name=queue_name,
    )
    yield pool
    await pool.aclose()


async def test_two_replicas_and_a_plain_arq_producer_share_one_queue(
    seeded: None,
    start_worker: StartWorker,
    arq_producer: ArqRedis,
    redis: Redis,
    queue_name: str,
    sessionmaker: Sessions,
) -> None:
    async with sessionmaker.begin() as session:
        await generate_orders(session, 1000)
    expected = await expected_totals(sessionmaker)
    await start_worker()
    await start_worker()
    job_ids: list[str] = []
    for n, chunk in enumerate(chunked(sorted(expected), 40)):
        job_ids.append(f"{queue_name}:chunk-{n}")
        await arq_producer.enqueue_job(
            "compute_batch_totals", _job_id=job_ids[-1], order_ids=chunk, batch_id=f"c{n}"
        )
        job_ids.append(f"{queue_name}:single-{n}")
        await arq_producer.enqueue_job("compute_order_total", _job_id=job_ids[-1], order_id=3)
    stored = await results(redis, job_ids)
    assert {result["t"] for result in stored.values()} == {1}  # every job ran once, first try
    chunks = [result["r"] for job_id, result in stored.items() if ":chunk-" in job_id]
    assert sum(chunk["computed"] for chunk in chunks) == len(expected)
    assert sum(Decimal(chunk["total_sum"]) for chunk in chunks) == sum(expected.values())
    assert dict(await totals_rows(sessionmaker)) == expected
    assert await redis.zcard(queue_name) == await redis.zcard(lane_queue(queue_name, "batch")) == 0


async def test_a_retried_batch_job_is_rescored_in_the_batch_lane(
    seeded: None,
    settings: Settings,
    start_worker: StartWorker,
    redis: Redis,
    queue_name: str,
    sessionmaker: Sessions,
) -> None:
    batch_lane = lane_queue(queue_name, "batch")
    job_id = f"{queue_name}:blocked-chunk"
    await redis.set(job_key_prefix + job_id, envelope("compute_batch_totals", order_ids=[1]))
    queued_at = now_ms()
    await redis.zadd(batch_lane, {job_id: queued_at})
    async with sessionmaker() as session:
        # The chunk waits on this lock past its timeout: a transient failure, so a retry.
        await session.execute(text("SELECT id FROM orders WHERE id = 1 FOR UPDATE"))
        # A retry delay of 0 would leave the score as it is: arq re-scores only a deferred job.
        tuning = {"job_timeout_s": 0.3, "retry_base_delay_s": 0.2, "retry_max_delay_s": 0.5}
        await start_worker(worker=settings.worker.model_copy(update=tuning))

        async def retried() -> bool:
            return int(await redis.get(retry_key_prefix + job_id) or 0) >= 2

        await poll_until(retried, "a second try")
        # arq's own finish_job would ZINCRBY arq's queue, creating the job there.
        assert await redis.zscore(queue_name, job_id) is None
        score = await redis.zscore(batch_lane, job_id)
        assert score is not None and score >= queued_at
    [result] = (await results(redis, [job_id])).values()
    assert result["s"] is True and result["t"] >= 2
    assert await redis.zcard(batch_lane) == await redis.zcard(queue_name) == 0


async def test_a_batch_job_arq_fails_before_it_runs_leaves_its_lane_with_a_done_notice(
    seeded: None, start_worker: StartWorker, redis: Redis, queue_name: str
) -> None:
    batch_lane = lane_queue(queue_name, "batch")
    job_id = f"{queue_name}:worn-out"
    await redis.set(job_key_prefix + job_id, envelope("compute_batch_totals", order_ids=[1]))
    await redis.set(retry_key_prefix + job_id, b"5")  # max_tries used up: arq fails it itself
    async with redis.pubsub() as pubsub:
        await pubsub.subscribe(done_channel(queue_name))
        await redis.zadd(batch_lane, {job_id: now_ms()})
        await start_worker()
        assert await next_message(pubsub) == job_id.encode()
    [result] = (await results(redis, [job_id])).values()
    assert result["s"] is False and result["r"]["code"] == "retries_exhausted"
    assert await redis.zcard(batch_lane) == 0
