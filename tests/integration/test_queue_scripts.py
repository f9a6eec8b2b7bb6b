"""The claim and finish scripts on a real Redis: arq's keys and rules, one command each."""

from __future__ import annotations

import time

from arq.constants import (
    abort_jobs_ss,
    in_progress_key_prefix,
    job_key_prefix,
    result_key_prefix,
    retry_key_prefix,
)
from redis.asyncio import Redis

from worker.arq_seam.scripts import QueueScripts

TTL_MS = 15_000


async def queue_jobs(redis: Redis, queue_name: str, scores: dict[str, int]) -> None:
    await redis.zadd(queue_name, {job_id: score for job_id, score in scores.items()})


def named(queue_name: str, *names: str) -> list[str]:
    """Job ids of this test's own: job keys are shared by every queue on the server."""
    return [f"{queue_name}:{name}" for name in names]


async def test_claims_due_jobs_in_order_up_to_the_number_wanted(
    redis: Redis, queue_name: str
) -> None:
    now = int(time.time() * 1000)
    a, b, c = named(queue_name, "a", "b", "c")
    await queue_jobs(redis, queue_name, {a: now - 3, b: now - 2, c: now - 1})
    scripts = QueueScripts(redis, queue_name)
    claimed = await scripts.claim(
        [a.encode(), b.encode(), c.encode()], wanted=2, now_ms=now, in_progress_ttl_ms=TTL_MS
    )
    assert claimed.jobs == [(a, now - 3), (b, now - 2)]
    assert claimed.examined == 2  # c is left for the next call
    for job_id in (a, b):
        ttl = await redis.pttl(in_progress_key_prefix + job_id)
        assert 0 < ttl <= TTL_MS
    assert not await redis.exists(in_progress_key_prefix + c)


async def test_skips_jobs_running_elsewhere_deferred_or_no_longer_queued(
    redis: Redis, queue_name: str
) -> None:
    now = int(time.time() * 1000)
    running, gone, deferred, due = named(queue_name, "running", "gone", "deferred", "due")
    await queue_jobs(redis, queue_name, {running: now, deferred: now + 60_000, due: now})
    await redis.set(in_progress_key_prefix + running, b"1", px=TTL_MS)
    scripts = QueueScripts(redis, queue_name)
    ids = [job_id.encode() for job_id in (running, gone, deferred, due)]
    claimed = await scripts.claim(ids, wanted=5, now_ms=now, in_progress_ttl_ms=TTL_MS)
    assert claimed.jobs == [(due, now)]
    assert claimed.examined == len(ids)
    assert not await redis.exists(in_progress_key_prefix + deferred)
    assert not await redis.exists(in_progress_key_prefix + gone)
    # Claimed once: a second replica asking for the same ids gets nothing.
    again = await scripts.claim(ids, wanted=5, now_ms=now, in_progress_ttl_ms=TTL_MS)
    assert again.jobs == []


async def test_finish_stores_the_result_and_removes_the_job_as_arq_does(
    redis: Redis, queue_name: str
) -> None:
    job_id, other, kept = named(queue_name, "finished", "other", "kept")
    await queue_jobs(redis, queue_name, {job_id: 1, other: 2})
    await redis.set(job_key_prefix + job_id, b"{}")
    await redis.set(retry_key_prefix + job_id, b"1")
    await redis.set(in_progress_key_prefix + job_id, b"1")
    await redis.zadd(abort_jobs_ss, {job_id: 1})
    scripts = QueueScripts(redis, queue_name)
    await scripts.finish(job_id, b'{"s":true}', result_ttl_ms=60_000)
    assert await redis.get(result_key_prefix + job_id) == b'{"s":true}'
    assert 0 < await redis.pttl(result_key_prefix + job_id) <= 60_000
    for prefix in (job_key_prefix, retry_key_prefix, in_progress_key_prefix):
        assert not await redis.exists(prefix + job_id)
    assert await redis.zrange(queue_name, 0, -1) == [other.encode()]
    assert await redis.zscore(abort_jobs_ss, job_id) is None
    await scripts.finish(kept, b"{}", result_ttl_ms=None)
    assert await redis.pttl(result_key_prefix + kept) == -1  # kept forever
    await redis.delete(result_key_prefix + job_id, result_key_prefix + kept)
