"""Per-replica heartbeat keys in Redis: written with an expiry, listed per queue, forgotten."""

from __future__ import annotations

import time
from dataclasses import asdict, replace

from arq import ArqRedis

from tests.unit.conftest import poll_until
from worker.health import Heartbeat, beat, forget, live_replicas, replica_key


def heartbeat(replica_id: str, queue_name: str = "q", started_at: float = 100.0) -> Heartbeat:
    return Heartbeat(
        replica_id=replica_id,
        host="host-1",
        pid=4242,
        queue_name=queue_name,
        jobs_done=3,
        jobs_failed=1,
        jobs_retried=2,
        in_flight=0,
        last_beat=time.time(),
        started_at=started_at,
    )


async def test_a_beat_is_listed_with_all_its_fields(fake_redis: ArqRedis) -> None:
    sent = heartbeat("r1")
    await beat(fake_redis, sent, ttl_s=30)
    assert await live_replicas(fake_redis, "q") == [asdict(sent)]


async def test_the_key_carries_the_expiry(fake_redis: ArqRedis) -> None:
    await beat(fake_redis, heartbeat("r1"), ttl_s=15)
    assert 0 < await fake_redis.pttl(replica_key("q", "r1")) <= 15_000


async def test_no_beats_means_no_live_replicas(fake_redis: ArqRedis) -> None:
    assert await live_replicas(fake_redis, "q") == []


async def test_replicas_are_listed_oldest_first(fake_redis: ArqRedis) -> None:
    for replica_id, started_at in [("c", 300.0), ("a", 100.0), ("b", 100.0)]:
        await beat(fake_redis, heartbeat(replica_id, started_at=started_at), ttl_s=30)
    assert [found["replica_id"] for found in await live_replicas(fake_redis, "q")] == [
        "a",
        "b",
        "c",
    ]


async def test_a_new_beat_replaces_the_last_one(fake_redis: ArqRedis) -> None:
    first = heartbeat("r1")
    await beat(fake_redis, first, ttl_s=30)
    await beat(fake_redis, replace(first, jobs_done=99), ttl_s=30)
    assert [found["jobs_done"] for found in await live_replicas(fake_redis, "q")] == [99]


async def test_replicas_of_another_queue_are_not_listed(fake_redis: ArqRedis) -> None:
    await beat(fake_redis, heartbeat("mine", queue_name="orders"), ttl_s=30)
    await beat(fake_redis, heartbeat("theirs", queue_name="reports"), ttl_s=30)
    assert [found["replica_id"] for found in await live_replicas(fake_redis, "orders")] == ["mine"]


async def test_replicas_of_a_queue_whose_name_extends_this_one_are_not_listed(
    fake_redis: ArqRedis,
) -> None:
    await beat(fake_redis, heartbeat("mine", queue_name="arq:queue"), ttl_s=30)
    await beat(fake_redis, heartbeat("theirs", queue_name="arq:queue:high"), ttl_s=30)
    listed = [found["replica_id"] for found in await live_replicas(fake_redis, "arq:queue")]
    assert listed == ["mine"]


async def test_forget_removes_only_that_replica(fake_redis: ArqRedis) -> None:
    await beat(fake_redis, heartbeat("r1"), ttl_s=30)
    await beat(fake_redis, heartbeat("r2"), ttl_s=30)
    await forget(fake_redis, "q", "r1")
    assert [found["replica_id"] for found in await live_replicas(fake_redis, "q")] == ["r2"]
    await forget(fake_redis, "q", "never-there")  # forgetting twice or never is harmless


async def test_a_replica_that_stops_beating_disappears(fake_redis: ArqRedis) -> None:
    await beat(fake_redis, heartbeat("silent"), ttl_s=0.05)
    await beat(fake_redis, heartbeat("steady"), ttl_s=30)

    async def only_steady_left() -> bool:
        return [found["replica_id"] for found in await live_replicas(fake_redis, "q")] == ["steady"]

    await poll_until(only_steady_left, "the silent replica's key to expire", timeout_s=5)
    assert await fake_redis.exists(replica_key("q", "silent")) == 0
