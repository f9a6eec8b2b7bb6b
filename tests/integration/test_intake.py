"""Taking jobs on a real Redis: a job claimed again while this replica's last run of it is still
ending is given back, and a batch job moved between lanes cannot be claimed by a plain arq worker
that read it in the lane it left."""

from __future__ import annotations

import time
from typing import Any

import pytest
from arq.connections import ArqRedis
from arq.constants import in_progress_key_prefix, job_key_prefix
from arq.worker import Worker, func
from redis.exceptions import WatchError

from jobs.lanes import lane_queue
from tests.integration.test_queue_scripts import named
from worker.arq_seam.intake import Intake
from worker.arq_seam.lane_claims import LaneClaims
from worker.arq_seam.scripts import QueueScripts

US = "replica-us"


async def noop(ctx: dict[str, Any]) -> None:
    return None


async def test_a_job_still_ending_here_is_given_back_not_started_twice(
    redis: ArqRedis, queue_name: str
) -> None:
    ending, fresh = named(queue_name, "ending", "fresh")
    now = int(time.time() * 1000)
    await redis.zadd(lane_queue(queue_name, "batch"), {ending: now - 2, fresh: now - 1})
    for job_id in (ending, fresh):
        await redis.set(job_key_prefix + job_id, b'{"f":"compute_batch_totals"}', px=60_000)
    worker = Worker(functions=[func(noop, name="noop")], redis_pool=redis, queue_name=queue_name)
    intake = Intake(worker, batch_slots=3)  # room for both: only the one still ending is refused
    intake.lanes[ending] = "batch"  # its last run's task has not ended yet
    intake.batch_running = 1
    worker.job_counter = 1
    started = await intake.take(
        LaneClaims(redis, queue_name, US),
        QueueScripts(redis, queue_name, US),
        read_limit=10,
        at_most=None,
        may_reclaim=False,
    )
    assert started == 1
    assert set(worker.tasks) == {fresh}
    assert intake.batch_running == 2
    assert not await redis.exists(in_progress_key_prefix + ending)  # free for the next poll
    assert await redis.get(in_progress_key_prefix + fresh) == US.encode()
    for task in worker.tasks.values():
        task.cancel()
    await redis.delete(
        *(
            prefix + job_id
            for job_id in (ending, fresh)
            for prefix in (job_key_prefix, in_progress_key_prefix)
        ),
        lane_queue(queue_name, "batch"),
    )


async def test_moving_a_batch_job_fails_a_plain_arq_claim_begun_before_it(
    redis: ArqRedis, queue_name: str
) -> None:
    """arq's start_jobs WATCHes the in-progress key, then claims with MULTI/PSETEX/EXEC: a move
    to the batch lane in between must make that EXEC fail, or arq would run the job in the lane
    it left while the batch lane still holds it."""
    [job_id] = named(queue_name, "raw-batch")
    now = int(time.time() * 1000)
    await redis.zadd(queue_name, {job_id: now - 1})
    await redis.set(job_key_prefix + job_id, b'{"f":"compute_batch_totals"}', px=60_000)
    async with redis.pipeline(transaction=True) as arq_claim:
        await arq_claim.watch(in_progress_key_prefix + job_id)
        moved = await LaneClaims(redis, queue_name, US).claim(
            free=5, batch_free=0, read_limit=10, now_ms=now, in_progress_ttl_ms=60_000
        )
        assert moved.jobs() == []
        arq_claim.multi()  # type: ignore[no-untyped-call]
        arq_claim.psetex(in_progress_key_prefix + job_id, 60_000, b"1")
        with pytest.raises(WatchError):
            await arq_claim.execute()
    assert await redis.zscore(lane_queue(queue_name, "batch"), job_id) == now - 1
    assert not await redis.exists(in_progress_key_prefix + job_id)
    await redis.delete(job_key_prefix + job_id, lane_queue(queue_name, "batch"))
