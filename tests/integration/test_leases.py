"""Leases in the claim and finish scripts on a real Redis: a claim names its replica, a lapsed
replica's claims are taken over, arq's own claims never are, and a replica that lost a job's
lease writes nothing for it."""

from __future__ import annotations

import time

from arq.connections import ArqRedis
from arq.constants import (
    in_progress_key_prefix,
    job_key_prefix,
    result_key_prefix,
    retry_key_prefix,
)
from redis.asyncio import Redis

from tests.integration.test_queue_scripts import TTL_MS, claim, named, queue_jobs
from worker.arq_seam.lane_claims import LaneClaims
from worker.arq_seam.lane_finish import LaneFinish
from worker.arq_seam.leases import LeaseKeeper, lease_key
from worker.arq_seam.scripts import QueueScripts

LIVE, DEAD, US = "replica-live", "replica-dead", "replica-us"


async def test_claims_of_a_replica_without_a_lease_are_taken_over(
    redis: Redis, queue_name: str
) -> None:
    now = int(time.time() * 1000)
    lapsed, held, arqs, ours = named(queue_name, "lapsed", "held", "arqs", "ours")
    await queue_jobs(redis, queue_name, {lapsed: now - 4, held: now - 3, arqs: now - 2, ours: now})
    await redis.set(lease_key(queue_name, LIVE), LIVE, px=TTL_MS)
    await redis.set(lease_key(queue_name, US), US, px=TTL_MS)
    for job_id, holder in ((lapsed, DEAD), (held, LIVE), (arqs, "1"), (ours, US)):
        await redis.set(in_progress_key_prefix + job_id, holder, px=TTL_MS)
    claims = LaneClaims(redis, queue_name, US)
    # Until our own lease has lasted a whole one, nothing is taken over.
    assert (await claim(claims, now)).jobs() == []
    claimed = await claim(claims, now, may_reclaim=True)
    assert claimed.interactive == [(lapsed, now - 4)]
    assert claimed.reclaimed == [lapsed]
    assert await redis.get(in_progress_key_prefix + lapsed) == US.encode()
    assert 0 < await redis.pttl(in_progress_key_prefix + lapsed) <= TTL_MS  # arq's TTL, renewed
    # A live replica's claim, a plain arq worker's `1` and our own running job stay as they are.
    for job_id, holder in ((held, LIVE), (arqs, "1"), (ours, US)):
        assert await redis.get(in_progress_key_prefix + job_id) == holder.encode()
    await redis.delete(*(lease_key(queue_name, r) for r in (LIVE, US)))


async def test_a_claim_held_elsewhere_is_passed_over_unread_until_it_is_looked_at_again(
    redis: Redis, queue_name: str
) -> None:
    """Another replica's running jobs cost a look per recheck period, not one per claim."""
    now = int(time.time() * 1000)
    [held] = named(queue_name, "held")
    await queue_jobs(redis, queue_name, {held: now})
    await redis.set(in_progress_key_prefix + held, LIVE, px=TTL_MS)
    claims = LaneClaims(redis, queue_name, US, held_recheck_s=3600)
    assert (await claim(claims, now)).jobs() == []
    await redis.delete(in_progress_key_prefix + held)  # given back: free for anyone
    assert (await claim(claims, now)).jobs() == []  # passed over: not looked at again yet
    claims.held_recheck_s = 0
    assert (await claim(claims, now)).jobs() == [(held, now, "interactive")]


async def test_a_finish_without_the_lease_writes_nothing(redis: Redis, queue_name: str) -> None:
    job_id, other = named(queue_name, "taken-over", "other")
    await queue_jobs(redis, queue_name, {job_id: 1, other: 2})
    await redis.set(job_key_prefix + job_id, b"{}")
    await redis.set(retry_key_prefix + job_id, b"2")
    await redis.set(in_progress_key_prefix + job_id, LIVE)  # another replica runs it now
    scripts = QueueScripts(redis, queue_name, US)
    stored = await scripts.finish(job_id, b'{"s":false}', result_ttl_ms=60_000, lane="interactive")
    assert stored is False
    assert not await redis.exists(result_key_prefix + job_id)
    for prefix in (job_key_prefix, retry_key_prefix, in_progress_key_prefix):
        assert await redis.exists(prefix + job_id), prefix
    assert await redis.zscore(queue_name, job_id) == 1
    # Given back: only our own claims.
    await scripts.release([job_id])
    assert await redis.get(in_progress_key_prefix + job_id) == LIVE.encode()
    await redis.delete(*(prefix + job_id for prefix in (job_key_prefix, retry_key_prefix)))
    await redis.delete(in_progress_key_prefix + job_id)


async def test_arqs_retry_and_failure_transactions_need_the_lease(
    redis: Redis, queue_name: str
) -> None:
    pool = ArqRedis(connection_pool=redis.connection_pool)
    (job_id,) = named(queue_name, "retried")
    await queue_jobs(redis, queue_name, {job_id: 1_000})
    await redis.set(in_progress_key_prefix + job_id, LIVE)
    lanes = LaneFinish(queue_name, US)
    retried = await lanes.finish_job(pool, queue_name, job_id, False, None, 60, False, 5_000, None)
    failed = await lanes.finish_failed_job(pool, queue_name, job_id, b"{}", False, 60)
    assert (retried, failed) == (False, False)
    assert await redis.zscore(queue_name, job_id) == 1_000  # neither re-scored nor removed
    assert await redis.get(in_progress_key_prefix + job_id) == LIVE.encode()
    assert not await redis.exists(result_key_prefix + job_id)
    await redis.set(in_progress_key_prefix + job_id, US)  # ours: arq's retry, as arq does it
    assert await lanes.finish_job(pool, queue_name, job_id, False, None, 60, False, 5_000, None)
    assert await redis.zscore(queue_name, job_id) == 6_000
    assert not await redis.exists(in_progress_key_prefix + job_id)


async def test_a_replica_renews_one_lease_and_removes_it_on_close(
    redis: Redis, queue_name: str
) -> None:
    keeper = LeaseKeeper(queue_name, US, lease_s=0.3)
    keeper.start(redis)
    deadline = time.monotonic() + 5
    while not keeper.may_reclaim():  # once renewed without a gap for long enough
        assert time.monotonic() < deadline
        await redis.ping()
    assert await redis.get(lease_key(queue_name, US)) == US.encode()
    assert 0 < await redis.pttl(lease_key(queue_name, US)) <= 300
    await keeper.close(redis)
    assert not await redis.exists(lease_key(queue_name, US))
