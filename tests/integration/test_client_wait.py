"""An OrderClient that waits for replicas (Redis WAIT): against a Redis with none, each enqueue is
written but reported as not replicated, one job or many; without waiting nothing changes."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from arq.constants import job_key_prefix
from redis.asyncio import Redis

from jobs.client import JobRequest, NotReplicatedError, OrderClient, Replication
from jobs.connection import redis_settings_from_url


@pytest.fixture
async def waiting_client(redis_url: str, queue_name: str) -> AsyncIterator[OrderClient]:
    settings = redis_settings_from_url(redis_url)
    client = await OrderClient.connect(settings, queue_name, Replication(1, wait_timeout_ms=50))
    try:
        yield client
    finally:
        await client.close()


async def test_an_enqueue_no_replica_acknowledged_says_so_and_is_still_queued(
    waiting_client: OrderClient, redis: Redis, queue_name: str
) -> None:
    one, many = f"wait-{uuid.uuid4().hex}", f"wait-{uuid.uuid4().hex}"
    with pytest.raises(NotReplicatedError, match="0 of 1 replicas"):
        await waiting_client.enqueue("compute_order_total", job_id=one, order_id=1)
    with pytest.raises(NotReplicatedError):
        await waiting_client.enqueue_many(
            [JobRequest("compute_order_total", {"order_id": 2}, many)]
        )

    assert await redis.exists(job_key_prefix + one, job_key_prefix + many) == 2
    assert await redis.zscore(waiting_client.lane_queue_of("compute_order_total"), one)
    with pytest.raises(ValueError, match="already queued"):
        await waiting_client.enqueue("compute_order_total", job_id=one, order_id=1)


async def test_without_waiting_an_enqueue_returns_once_the_primary_has_it(
    client: OrderClient, redis: Redis
) -> None:
    assert client.replicas_to_wait == 0
    job_id = await client.enqueue("compute_order_total", order_id=1)

    assert await redis.exists(job_key_prefix + job_id) == 1
