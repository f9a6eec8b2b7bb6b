"""Per-replica heartbeats in Redis: each replica writes its own key with a short expiry."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from redis.asyncio import Redis

REPLICA_KEY_PREFIX = "orderworker:replica:"


def replica_key(queue_name: str, replica_id: str) -> str:
    return f"{REPLICA_KEY_PREFIX}{queue_name}:{replica_id}"


@dataclass(frozen=True, slots=True)
class Heartbeat:
    replica_id: str
    host: str
    pid: int
    queue_name: str
    jobs_done: int
    jobs_failed: int
    jobs_retried: int
    in_flight: int
    last_beat: float
    started_at: float
    # Per lane: {"in_use": slots running its jobs, "slots": how many it may use}.
    lanes: dict[str, dict[str, int]] = field(default_factory=dict)


async def beat(redis: Redis, heartbeat: Heartbeat, ttl_s: float) -> None:
    key = replica_key(heartbeat.queue_name, heartbeat.replica_id)
    await redis.set(key, json.dumps(asdict(heartbeat)), px=int(ttl_s * 1000))


async def forget(redis: Redis, queue_name: str, replica_id: str) -> None:
    await redis.delete(replica_key(queue_name, replica_id))


async def live_replicas(redis: Redis, queue_name: str) -> list[dict[str, Any]]:
    """Replicas whose last heartbeat has not expired, oldest first."""
    keys = [key async for key in redis.scan_iter(match=replica_key(queue_name, "*"), count=500)]
    if not keys:
        return []
    beats = [json.loads(value) for value in await redis.mget(keys) if value is not None]
    # The pattern also matches queues named "<queue_name>:…": keep this queue's own replicas.
    found = [beat for beat in beats if beat.get("queue_name") == queue_name]
    return sorted(found, key=lambda beat: (beat["started_at"], beat["replica_id"]))
