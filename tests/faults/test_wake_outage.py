"""Redis goes away under an idle replica: its wake-up subscription comes back with the backoff (the
replica never dies of it), and a wake-up after the outage still ends its wait at once."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from arq.constants import job_key_prefix, result_key_prefix
from pydantic import SecretStr
from redis.asyncio import Redis

from jobs.lanes import wake_channel
from jobs.serialization import serialize
from tests.conftest import StartWorker, poll_until
from worker.harness.servers import PrivateRedis
from worker.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

POLL_DELAY_S = 8.0  # long: only a wake-up can serve the job quickly


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


async def subscribers(redis: Redis, channel: str) -> int:
    [(_, count)] = await redis.pubsub_numsub(channel)
    return int(count)


async def test_the_wake_subscription_survives_a_redis_outage(
    seeded: None,
    private_redis: PrivateRedis,  # before start_worker: stopped after the replica is
    settings: Settings,
    start_worker: StartWorker,
    queue_name: str,
) -> None:
    tuning = settings.worker.model_copy(update={"poll_delay_s": POLL_DELAY_S})
    worker = await start_worker(redis_url=SecretStr(private_redis.url), worker=tuning)
    await poll_until(lambda: worker.wakeups.subscribed, "subscribed")

    private_redis.stop()
    await poll_until(lambda: not worker.wakeups.subscribed, "subscription lost")
    private_redis.start()  # the same port
    await poll_until(lambda: worker.wakeups.subscribed, "subscribed again")
    redis = Redis.from_url(private_redis.url)
    try:
        assert await subscribers(redis, wake_channel(queue_name)) == 1
        assert worker.main_task is not None and not worker.main_task.done()
        await poll_until(lambda: worker.backoff.failures == 0, "poll loop recovered")

        job_id = f"{queue_name}:after-outage"
        envelope = {"t": 1, "f": "compute_order_total", "a": [], "k": {"order_id": 1}, "et": 1}
        await redis.set(job_key_prefix + job_id, serialize(envelope))
        started = time.monotonic()
        await redis.zadd(queue_name, {job_id: int(time.time() * 1000)})
        await redis.publish(wake_channel(queue_name), "1")

        async def stored() -> bool:
            return bool(await redis.exists(result_key_prefix + job_id))

        await poll_until(stored, "result after the outage")
        assert time.monotonic() - started < POLL_DELAY_S / 4
        result = json.loads(await redis.get(result_key_prefix + job_id) or b"{}")
        assert result["s"] is True
    finally:
        await redis.aclose()
