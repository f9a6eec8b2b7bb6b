"""Done notices on a real Redis: a waiter whose listener connection is killed still gets its result
(the fallback read, or the read after resubscribing), and the listener subscribes again."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from arq import ArqRedis
from arq.constants import result_key_prefix
from redis.asyncio import Redis

from jobs.batches import FALLBACK_WINDOW, BatchRun, chunk_job_id
from jobs.client import OrderClient
from jobs.lanes import done_channel
from jobs.notices import FALLBACK_READ_S
from tests.conftest import poll_until
from tests.unit.conftest import result_bytes
from tests.unit.test_notices import wait_past_first_read

pytestmark = pytest.mark.integration

MARGIN_S = 10.0  # generous: the bound under test is FALLBACK_READ_S
NEVER_S = 3600.0
RESULT = result_bytes({"order_id": 7, "total": "1.00"}, function="place_order")


@pytest.fixture
def client_name() -> str:
    return f"notices-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def named_client(
    redis_url: str, queue_name: str, client_name: str
) -> AsyncIterator[OrderClient]:
    """A client whose connections carry a name of their own, so its listener can be found."""
    redis = ArqRedis.from_url(redis_url, client_name=client_name)
    client = OrderClient(redis, queue_name)
    yield client
    await client.close()


async def listener_ids(redis: Redis, client_name: str) -> list[str]:
    clients = await redis.client_list(_type="pubsub")
    return [str(entry["id"]) for entry in clients if entry.get("name") == client_name]


async def test_a_killed_listener_loses_the_notice_but_not_the_wait(
    named_client: OrderClient, redis: Redis, client_name: str, queue_name: str
) -> None:
    waiting = asyncio.create_task(named_client.wait("lost", timeout_s=60))
    await poll_until(lambda: named_client.notices.subscriptions == 1, "the listener subscribed")
    [first] = await listener_ids(redis, client_name)
    assert await redis.client_kill_filter(_id=first) == 1
    # The result lands while the listener is away: its notice reaches nobody.
    await redis.set(result_key_prefix + "lost", RESULT)
    await redis.publish(done_channel(queue_name), "lost")
    outcome = await asyncio.wait_for(waiting, FALLBACK_READ_S + MARGIN_S)
    assert outcome.result == {"order_id": 7, "total": "1.00"}
    await poll_until(lambda: named_client.notices.subscriptions == 2, "the listener resubscribed")
    assert (await listener_ids(redis, client_name)) not in ([], [first])


async def test_after_resubscribing_a_notice_ends_a_wait_again(
    named_client: OrderClient,
    redis: Redis,
    client_name: str,
    queue_name: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await named_client.notices.subscribed(MARGIN_S)
    [first] = await listener_ids(redis, client_name)
    assert await redis.client_kill_filter(_id=first) == 1
    await poll_until(lambda: named_client.notices.subscriptions == 2, "the listener resubscribed")
    monkeypatch.setattr("jobs.client.FALLBACK_READ_S", NEVER_S)  # only the notice can end it
    waiting, _ = await wait_past_first_read(named_client, monkeypatch, "notified", 60)
    await redis.set(result_key_prefix + "notified", RESULT)
    await redis.publish(done_channel(queue_name), "notified")
    assert (await asyncio.wait_for(waiting, MARGIN_S)).success


async def test_a_batch_reads_every_pending_chunk_after_its_listener_resubscribes(
    named_client: OrderClient, redis: Redis, client_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("jobs.batches.FALLBACK_READ_S", NEVER_S)  # only the resync can end it
    run = BatchRun(named_client, batch_id=f"resync-{uuid.uuid4().hex[:8]}")
    chunks = FALLBACK_WINDOW + 200
    await run.submit_chunks([[n] for n in range(1, chunks + 1)])
    seen: list[int] = []
    waiting = asyncio.create_task(run.wait(lambda summary: seen.append(summary.finished_jobs)))
    await poll_until(lambda: seen == [0], "the batch's first read")
    result = result_bytes({"computed": 1, "missing": [], "total_sum": "1.00"})
    async with redis.pipeline(transaction=False) as pipe:
        for n in range(chunks):  # stored, but their notices are lost
            pipe.set(result_key_prefix + chunk_job_id(run.summary.batch_id, n), result)
        await pipe.execute()
    [listener] = await listener_ids(redis, client_name)
    assert await redis.client_kill_filter(_id=listener) == 1
    await asyncio.wait_for(waiting, MARGIN_S)
    assert (run.summary.finished_jobs, run.summary.computed) == (chunks, chunks)
