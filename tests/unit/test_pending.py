"""Finishes kept through a Redis outage: bounded, oldest dropped first, written in order later."""

from __future__ import annotations

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from worker.arq_seam.pending import PendingWrites, Write


class FlakyRedis:
    """Stands in for Redis: down until told otherwise; records what was written."""

    def __init__(self) -> None:
        self.up = False
        self.written: list[str] = []

    def write(self, job_id: str) -> Write:
        async def write() -> None:
            if not self.up:
                raise RedisConnectionError("Connection refused")
            self.written.append(job_id)

        return write


async def test_writes_wait_for_redis_and_are_written_oldest_first() -> None:
    redis, pending = FlakyRedis(), PendingWrites(limit=3)
    for job_id in ("a", "b", "c", "d"):
        await pending.attempt(job_id, redis.write(job_id))
    assert len(pending) == 3  # "a", the oldest, was dropped: it runs again after arq's TTL
    with pytest.raises(RedisConnectionError):
        await pending.flush()
    assert len(pending) == 3
    redis.up = True
    await pending.flush()
    assert redis.written == ["b", "c", "d"]
    assert len(pending) == 0
    await pending.attempt("e", redis.write("e"))
    assert redis.written[-1] == "e" and len(pending) == 0
