"""Lanes and notices from the producer's side, on fakeredis: where jobs are written, the wake-up
each write publishes, and waiters woken by done notices (or their fallback read without one)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import pytest
from arq import ArqRedis
from arq.constants import result_key_prefix

from jobs import batches, client
from jobs.batches import BatchRun, chunk_job_id
from jobs.client import PIPELINE_BATCH, JobOutcome, JobRequest, OrderClient
from jobs.lanes import done_channel, lane_queue, wake_channel
from jobs.notices import FALLBACK_READ_S
from tests.unit.conftest import UNIT_QUEUE, poll_until, result_bytes, store_result

BATCH_LANE = lane_queue(UNIT_QUEUE, "batch")
DONE = done_channel(UNIT_QUEUE)
NEVER_S = 3600.0  # a fallback read that never comes within a test: only a notice can end a wait


@pytest.fixture(autouse=True)
async def _listener_closed(order_client: OrderClient) -> AsyncIterator[None]:
    yield
    await order_client.notices.close()


async def done_subscribers(redis: ArqRedis) -> int:
    [(_, count)] = await redis.pubsub_numsub(DONE)
    return int(count)


async def one_subscriber(redis: ArqRedis) -> bool:
    return await done_subscribers(redis) == 1


async def finish(redis: ArqRedis, job_id: str, result: dict[str, object]) -> None:
    """What a replica does: store the result, then publish the job's id."""
    await store_result(redis, job_id, result)
    await redis.publish(DONE, job_id)


def count_reads(order_client: OrderClient, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many result reads the client made so far (one entry per read)."""
    reads: list[int] = []
    outcomes = order_client.outcomes

    async def counted(job_ids: Sequence[str]) -> dict[str, JobOutcome]:
        reads.append(len(job_ids))
        return await outcomes(job_ids)

    monkeypatch.setattr(order_client, "outcomes", counted)
    return reads


async def wait_past_first_read(
    order_client: OrderClient, monkeypatch: pytest.MonkeyPatch, job_id: str, timeout_s: float
) -> tuple[asyncio.Task[JobOutcome], list[int]]:
    """A wait that has subscribed and read once (finding nothing): only what follows can end it."""
    reads = count_reads(order_client, monkeypatch)
    waiting = asyncio.create_task(order_client.wait(job_id, timeout_s=timeout_s))
    await poll_until(lambda: reads == [1], "the waiter's first read, after subscribing")
    return waiting, reads


async def test_batch_jobs_go_to_the_batch_lane_and_others_to_the_queue(
    order_client: OrderClient, fake_redis: ArqRedis
) -> None:
    place = await order_client.place_order(1, [{"item_id": 1, "quantity": 1}])
    chunk = await order_client.enqueue("compute_batch_totals", order_ids=[1])
    await order_client.enqueue_many(
        [
            JobRequest("compute_order_total", {"order_id": 1}, "total-1"),
            JobRequest("compute_batch_totals", {"order_ids": [2]}, "chunk-2"),
        ]
    )
    assert sorted(await fake_redis.zrange(UNIT_QUEUE, 0, -1)) == sorted(
        [place.encode(), b"total-1"]
    )
    assert sorted(await fake_redis.zrange(BATCH_LANE, 0, -1)) == sorted(
        [chunk.encode(), b"chunk-2"]
    )


async def test_every_write_publishes_one_wake_up(
    order_client: OrderClient, fake_redis: ArqRedis
) -> None:
    pubsub = fake_redis.pubsub()
    await pubsub.subscribe(wake_channel(UNIT_QUEUE))
    assert (await pubsub.get_message(timeout=5))["type"] == "subscribe"
    await order_client.compute_order_total(1)
    # Three pipelined writes: three wake-ups, not one per job.
    count = 2 * PIPELINE_BATCH + 1
    await order_client.enqueue_many(
        JobRequest("compute_order_total", {"order_id": n}, f"t-{n}") for n in range(count)
    )
    wakes = []
    while (message := await pubsub.get_message(timeout=0.5)) is not None:
        wakes.append(message["data"])
    await pubsub.aclose()  # type: ignore[no-untyped-call]
    assert wakes == [b"1"] * 4


async def test_a_refused_enqueue_publishes_nothing(
    order_client: OrderClient, fake_redis: ArqRedis
) -> None:
    await order_client.enqueue("compute_order_total", job_id="once", order_id=1)
    pubsub = fake_redis.pubsub()
    await pubsub.subscribe(wake_channel(UNIT_QUEUE))
    await pubsub.get_message(timeout=5)
    with pytest.raises(ValueError, match="already queued"):
        await order_client.enqueue("compute_order_total", job_id="once", order_id=1)
    assert await pubsub.get_message(timeout=0.2) is None
    await pubsub.aclose()  # type: ignore[no-untyped-call]
    assert await fake_redis.zcard(UNIT_QUEUE) == 1


async def test_wait_returns_on_the_done_notice(
    order_client: OrderClient, fake_redis: ArqRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(client, "FALLBACK_READ_S", NEVER_S)
    waiting, _ = await wait_past_first_read(order_client, monkeypatch, "job-1", 60)
    await finish(fake_redis, "job-1", {"order_id": 1, "total": "3.00"})
    outcome = await asyncio.wait_for(waiting, 30)
    assert outcome == JobOutcome("job-1", True, {"order_id": 1, "total": "3.00"})


async def test_enqueue_and_wait_reads_the_result_once_on_its_notice(
    order_client: OrderClient, fake_redis: ArqRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(client, "FALLBACK_READ_S", NEVER_S)
    reads = count_reads(order_client, monkeypatch)
    waiting = asyncio.create_task(
        order_client.enqueue_and_wait("compute_order_total", 60, job_id="j-1", order_id=1)
    )
    await poll_until(lambda: queued(fake_redis, "j-1"), "the job queued")
    assert reads == []  # watched before the job existed: nothing to read until its notice
    await finish(fake_redis, "j-1", {"order_id": 1, "total": "3.00"})
    outcome = await asyncio.wait_for(waiting, 30)
    assert outcome == JobOutcome("j-1", True, {"order_id": 1, "total": "3.00"})
    assert reads == [1]


async def test_enqueue_and_wait_falls_back_to_a_read_when_no_notice_comes(
    order_client: OrderClient, fake_redis: ArqRedis
) -> None:
    waiting = asyncio.create_task(
        order_client.enqueue_and_wait("compute_order_total", 60, job_id="j-2", order_id=2)
    )
    await poll_until(lambda: queued(fake_redis, "j-2"), "the job queued")
    await store_result(fake_redis, "j-2", {"order_id": 2, "total": "1.00"})  # a plain arq worker
    outcome = await asyncio.wait_for(waiting, FALLBACK_READ_S + 10)
    assert outcome.result == {"order_id": 2, "total": "1.00"}


async def queued(redis: ArqRedis, job_id: str) -> bool:
    return await redis.zscore(UNIT_QUEUE, job_id) is not None


async def test_a_notice_for_another_job_does_not_end_a_wait(
    order_client: OrderClient, fake_redis: ArqRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(client, "FALLBACK_READ_S", NEVER_S)
    waiting, reads = await wait_past_first_read(order_client, monkeypatch, "mine", 1.0)
    await finish(fake_redis, "theirs", {"order_id": 9})
    with pytest.raises(TimeoutError, match="job mine did not finish"):
        await waiting
    assert reads == [1, 1]  # read once more at its deadline, never for the other job's notice


async def test_wait_falls_back_to_a_read_when_no_notice_comes(
    order_client: OrderClient, fake_redis: ArqRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    waiting, _ = await wait_past_first_read(order_client, monkeypatch, "plain-arq", 60)
    await store_result(fake_redis, "plain-arq", {"order_id": 4, "total": "1.00"})  # no notice
    outcome = await asyncio.wait_for(waiting, FALLBACK_READ_S + 10)
    assert outcome.result == {"order_id": 4, "total": "1.00"}


async def test_waits_share_one_subscription_that_close_ends(
    order_client: OrderClient, fake_redis: ArqRedis
) -> None:
    await store_result(fake_redis, "early", {"order_id": 1})  # before anyone subscribed
    assert (await order_client.wait("early", timeout_s=5)).result == {"order_id": 1}
    waits = [asyncio.create_task(order_client.wait(f"w-{n}", timeout_s=60)) for n in range(5)]
    await poll_until(lambda: one_subscriber(fake_redis), "one subscription")
    for n in range(5):
        await finish(fake_redis, f"w-{n}", {"order_id": n})
    assert [outcome.result for outcome in await asyncio.gather(*waits)] == [
        {"order_id": n} for n in range(5)
    ]
    assert (await done_subscribers(fake_redis), order_client.notices.subscriptions) == (1, 1)
    await order_client.notices.close()
    await poll_until(lambda: done_subscribers_are(fake_redis, 0), "the subscription closed")


async def done_subscribers_are(redis: ArqRedis, count: int) -> bool:
    return await done_subscribers(redis) == count


async def test_a_batch_of_many_chunks_waits_on_one_subscription(
    order_client: OrderClient, fake_redis: ArqRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(batches, "FALLBACK_READ_S", NEVER_S)
    run = BatchRun(order_client, batch_id="many")
    chunks = 2000
    await run.submit_chunks([[n] for n in range(1, chunks + 1)])
    await store_result(
        fake_redis, chunk_job_id("many", 0), {"computed": 1, "missing": [], "total_sum": "1.00"}
    )
    seen: list[int] = []
    waiting = asyncio.create_task(run.wait(lambda summary: seen.append(summary.finished_jobs)))
    await poll_until(lambda: one_subscriber(fake_redis), "the batch subscribed")
    await poll_until(lambda: seen == [1], "the first read found the early chunk")
    result = {"computed": 1, "missing": [], "total_sum": "1.00"}
    async with fake_redis.pipeline(transaction=False) as pipe:
        for n in range(1, chunks):
            pipe.set(result_key_prefix + chunk_job_id("many", n), result_bytes(result))
            pipe.publish(DONE, chunk_job_id("many", n))
        await pipe.execute()
    await asyncio.wait_for(waiting, 60)
    assert (run.summary.finished_jobs, run.summary.computed) == (chunks, chunks)
    assert seen[-1] == chunks and seen == sorted(seen)
    assert (await done_subscribers(fake_redis), order_client.notices.subscriptions) == (1, 1)


async def test_a_batch_reads_unnotified_results_in_its_fallback_window(
    order_client: OrderClient, fake_redis: ArqRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = BatchRun(order_client, batch_id="plain")
    await run.submit_chunks([[1], [2]])
    reads = count_reads(order_client, monkeypatch)
    waiting = asyncio.create_task(run.wait(timeout_s=60))
    await poll_until(lambda: reads == [2], "the batch's first read, after subscribing")
    for n in range(2):
        result = {"computed": 1, "missing": [], "total_sum": "2.50"}
        await store_result(fake_redis, chunk_job_id("plain", n), result)  # no notices
    await asyncio.wait_for(waiting, FALLBACK_READ_S + 10)
    assert run.summary.ok and str(run.summary.total_sum) == "5.00"
