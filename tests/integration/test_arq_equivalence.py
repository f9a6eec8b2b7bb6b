"""Our claim and finish against arq's own, on a real Redis: the same keys laid out, arq's code run,
then ours, and the Redis state each leaves compared (values, TTLs, queue and abort-set membership).
The queue holds no batch jobs, so the batch lane plays no part: ours must be arq's to the key. A
claim is compared once its jobs have reached their function: arq's poll, start_jobs and run_job's
opening transaction against our claim script, which does that opening too (openings.py).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from arq.connections import ArqRedis, create_pool
from arq.constants import (
    abort_jobs_ss,
    in_progress_key_prefix,
    job_key_prefix,
    result_key_prefix,
    retry_key_prefix,
)
from arq.jobs import serialize_job
from arq.typing import WorkerCoroutine
from arq.worker import Worker, func

from jobs.connection import redis_settings_from_url
from worker.arq_seam.worker import SeamWorker
from worker.harness.polling import poll_until

TTL_TOLERANCE_MS = 1_000
KEY_PREFIXES = (in_progress_key_prefix, retry_key_prefix, job_key_prefix, result_key_prefix)
REPLICA_ID = "equivalence"


async def never_called(ctx: dict[str, Any]) -> None:
    raise AssertionError("jobs are parked in these tests, never run")


@pytest.fixture
async def pool(redis_url: str) -> AsyncIterator[ArqRedis]:
    arq_redis = await create_pool(redis_settings_from_url(redis_url))
    yield arq_redis
    await arq_redis.aclose()


Job = WorkerCoroutine


def arq_worker(pool: ArqRedis, queue_name: str, max_jobs: int, job: Job = never_called) -> Worker:
    return Worker(
        functions=[func(job, name="job")],
        redis_pool=pool,
        queue_name=queue_name,
        max_jobs=max_jobs,
        handle_signals=False,
        health_check_interval=0.05,
    )


def seam_worker(
    pool: ArqRedis, queue_name: str, max_jobs: int, job: Job = never_called
) -> SeamWorker:
    return SeamWorker(
        functions=[func(job, name="job")],
        replica_id=REPLICA_ID,
        shutdown_grace_s=1.0,
        redis_pool=pool,
        queue_name=queue_name,
        max_jobs=max_jobs,
        health_check_interval=0.05,
    )


def parking(started: list[tuple[str, int]]) -> Job:
    """A job function that records its job and waits: only the claim and opening are compared."""

    async def parked(ctx: dict[str, Any]) -> None:
        started.append((ctx["job_id"], ctx["score"]))
        await asyncio.Event().wait()

    return parked


async def unpark(worker: Worker) -> None:
    for task in worker.tasks.values():
        task.cancel()
    await asyncio.gather(*worker.tasks.values(), return_exceptions=True)


Snapshot = tuple[dict[str, Any], dict[str, int]]


async def snapshot(redis: ArqRedis, queue_name: str, job_ids: list[str]) -> Snapshot:
    """Every arq key of the given jobs: (values and memberships, TTLs in ms)."""
    values: dict[str, Any] = {}
    ttls: dict[str, int] = {}
    for job_id in job_ids:
        values[f"queue:{job_id}"] = await redis.zscore(queue_name, job_id)
        values[f"abort:{job_id}"] = await redis.zscore(abort_jobs_ss, job_id)
        for prefix in KEY_PREFIXES:
            values[prefix + job_id] = await redis.get(prefix + job_id)
            ttls[prefix + job_id] = await redis.pttl(prefix + job_id)
    return values, ttls


def assert_same(theirs: Snapshot, ours: Snapshot) -> None:
    assert ours[0] == theirs[0]
    for key, their_ttl in theirs[1].items():
        our_ttl = ours[1][key]
        if their_ttl < 0:  # -2: no key, -1: no expiry
            assert our_ttl == their_ttl, key
        else:
            assert abs(our_ttl - their_ttl) <= TTL_TOLERANCE_MS, key


async def forget(redis: ArqRedis, queue_name: str, job_ids: list[str]) -> None:
    keys = [prefix + job_id for job_id in job_ids for prefix in KEY_PREFIXES]
    await redis.delete(queue_name, *keys)
    await redis.zrem(abort_jobs_ss, *job_ids)


# ---------------------------------------------------------------- claiming


async def lay_out_queue(redis: ArqRedis, queue_name: str, ids: dict[str, str], now: int) -> None:
    """Five due jobs, one running elsewhere, one deferred, one no longer queued."""
    due = {ids[name]: now - 10 + offset for offset, name in enumerate("abcde")}
    await redis.zadd(queue_name, {**due, ids["running"]: now - 20, ids["deferred"]: now + 60_000})
    await redis.set(in_progress_key_prefix + ids["running"], b"1", px=30_000)
    for job_id in ids.values():
        await redis.set(
            job_key_prefix + job_id, serialize_job("job", (), {}, None, 1_000), px=60_000
        )
    await redis.set(retry_key_prefix + ids["b"], b"1", px=60_000)


async def claim_with(
    make: Callable[[ArqRedis, str, int, Job], Worker],
    pool: ArqRedis,
    queue_name: str,
    ids: dict[str, str],
) -> tuple[list[tuple[str, int]], Snapshot]:
    now = int(time.time() * 1000)
    await lay_out_queue(pool, queue_name, ids, now)
    started: list[tuple[str, int]] = []
    worker = make(pool, queue_name, 3, parking(started))
    # One poll: arq reads the due ids, then claims them one by one; ours is one script.
    await worker._poll_iteration()
    await poll_until(lambda: len(started) == 3, "the three claimed jobs to reach their function")
    state = await snapshot(pool, queue_name, list(ids.values()))
    await unpark(worker)
    await forget(pool, queue_name, list(ids.values()))
    scores = relative_scores(started, now)
    return scores, state


def relative_scores(started: list[tuple[str, int]], now: int) -> list[tuple[str, int]]:
    # In queue order: the jobs' tasks reach their function in whatever order they are scheduled.
    return sorted(((job_id, score - now) for job_id, score in started), key=lambda job: job[1])


async def test_our_claim_leaves_what_arqs_poll_start_jobs_and_opening_leave(
    pool: ArqRedis, queue_name: str
) -> None:
    names = ["a", "b", "c", "d", "e", "running", "deferred", "gone"]
    ids = {name: f"claim-{name}-{uuid.uuid4().hex[:8]}" for name in names}
    their_jobs, theirs = await claim_with(arq_worker, pool, queue_name, ids)
    our_jobs, ours = await claim_with(seam_worker, pool, queue_name, ids)
    assert [job_id for job_id, _ in their_jobs] == [ids["a"], ids["b"], ids["c"]]
    assert our_jobs == their_jobs  # the same jobs, with the same queue scores
    # Scores were laid out relative to each run's clock: compare them the same way.
    for state in (theirs, ours):
        for name in names:
            score = state[0][f"queue:{ids[name]}"]
            if score is not None:
                state[0][f"queue:{ids[name]}"] = "queued"
    # arq's claim writes `1`, ours the claiming replica's id; every other value and TTL agrees.
    owner = in_progress_key_prefix + ids["a"]
    assert (theirs[0][owner], ours[0][owner]) == (b"1", REPLICA_ID.encode())
    for key, value in ours[0].items():
        if key.startswith(in_progress_key_prefix) and value == REPLICA_ID.encode():
            ours[0][key] = b"1"
    assert_same(theirs, ours)
    assert theirs[0][in_progress_key_prefix + ids["d"]] is None


# ---------------------------------------------------------------- finishing

FINISHES = {
    "result_kept_an_hour": (True, b'{"s":true}', 3600.0, False, None, None),
    "result_kept_forever": (True, b'{"s":true}', 3600.0, True, None, None),
    "failed_result": (True, b'{"s":false}', 60.0, False, None, None),
    "no_result_kept": (True, None, 3600.0, False, None, None),
    "retry_deferred": (False, None, 3600.0, False, 5_000, None),
    "cancelled_to_run_again": (False, None, 3600.0, False, None, None),
    "in_progress_kept": (True, b'{"s":true}', 3600.0, False, None, 30.0),
}


async def lay_out_running_job(redis: ArqRedis, queue_name: str, job_id: str) -> None:
    await redis.zadd(queue_name, {job_id: 1_000, f"{job_id}-other": 2_000})
    await redis.set(job_key_prefix + job_id, b"{}", px=60_000)
    await redis.set(retry_key_prefix + job_id, b"1", px=88_400_000)
    # Claimed by the seam worker: its finish writes only while the in-progress key names it.
    await redis.set(in_progress_key_prefix + job_id, REPLICA_ID, px=20_000)
    await redis.zadd(abort_jobs_ss, {job_id: 1})


async def finish_with(
    finish: Callable[..., Awaitable[None]], redis: ArqRedis, queue_name: str, case: tuple[Any, ...]
) -> Snapshot:
    job_id = f"finish-{uuid.uuid4().hex[:8]}"
    await lay_out_running_job(redis, queue_name, job_id)
    await finish(job_id, *case)
    values, ttls = await snapshot(redis, queue_name, [job_id, f"{job_id}-other"])
    await forget(redis, queue_name, [job_id, f"{job_id}-other"])
    # Each run uses a job id of its own: compare by role, not by name.
    return (
        {key.replace(job_id, "<job>"): value for key, value in values.items()},
        {key.replace(job_id, "<job>"): ttl for key, ttl in ttls.items()},
    )


@pytest.mark.parametrize("case", FINISHES.values(), ids=FINISHES.keys())
async def test_our_finish_leaves_what_arqs_finish_job_leaves(
    case: tuple[Any, ...], pool: ArqRedis, queue_name: str
) -> None:
    worker = seam_worker(pool, queue_name, 1)

    async def arqs_own(job_id: str, *args: Any) -> None:
        await Worker.finish_job(worker, job_id, *args)

    theirs = await finish_with(arqs_own, pool, queue_name, case)
    ours = await finish_with(worker.finish_job, pool, queue_name, case)
    assert_same(theirs, ours)
