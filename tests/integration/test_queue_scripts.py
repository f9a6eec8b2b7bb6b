"""The claim and finish scripts on a real Redis: arq's keys and rules, one command each, and
the lanes: batch jobs moved out of arq's queue, batch slots, done notices."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Sequence

from arq.constants import (
    abort_jobs_ss,
    in_progress_key_prefix,
    job_key_prefix,
    result_key_prefix,
    retry_key_prefix,
)
from redis.asyncio import Redis
from redis.asyncio.client import PubSub

from jobs.lanes import done_channel, lane_queue
from jobs.serialization import serialize
from worker.arq_seam.lane_claims import LaneClaim, LaneClaims
from worker.arq_seam.scripts import QueueScripts

TTL_MS = 15_000
REPLICA = "replica-a"  # the replica whose scripts these are


async def queue_jobs(redis: Redis, queue_name: str, scores: dict[str, int]) -> None:
    await redis.zadd(queue_name, {job_id: score for job_id, score in scores.items()})


def named(queue_name: str, *names: str) -> list[str]:
    """Job ids of this test's own: job keys are shared by every queue on the server."""
    return [f"{queue_name}:{name}" for name in names]


def claim(
    claims: LaneClaims,
    now: int,
    *,
    free: int = 5,
    batch_free: int = 5,
    read_limit: int = 100,
    may_reclaim: bool = False,
    running: Sequence[str] = (),
) -> Awaitable[LaneClaim]:
    limits = {"free": free, "batch_free": batch_free, "read_limit": read_limit, "now_ms": now}
    return claims.claim(
        **limits, in_progress_ttl_ms=TTL_MS, may_reclaim=may_reclaim, running=running
    )


async def test_claims_due_jobs_in_order_up_to_the_free_slots(redis: Redis, queue_name: str) -> None:
    now = int(time.time() * 1000)
    a, b, c = named(queue_name, "a", "b", "c")
    await queue_jobs(redis, queue_name, {a: now - 3, b: now - 2, c: now - 1})
    claimed = await claim(LaneClaims(redis, queue_name, REPLICA), now, free=2)
    assert claimed.interactive == [(a, now - 3), (b, now - 2)]
    assert claimed.batch == []
    for job_id in (a, b):
        ttl = await redis.pttl(in_progress_key_prefix + job_id)
        assert 0 < ttl <= TTL_MS
        assert await redis.get(in_progress_key_prefix + job_id) == REPLICA.encode()  # the owner
    assert not await redis.exists(in_progress_key_prefix + c)  # left for the next claim


async def test_skips_jobs_running_elsewhere_deferred_or_no_longer_queued(
    redis: Redis, queue_name: str
) -> None:
    now = int(time.time() * 1000)
    running, deferred, due = named(queue_name, "running", "deferred", "due")
    await queue_jobs(redis, queue_name, {running: now, deferred: now + 60_000, due: now})
    await redis.set(in_progress_key_prefix + running, b"1", px=TTL_MS)
    claims = LaneClaims(redis, queue_name, REPLICA)
    claimed = await claim(claims, now)
    assert claimed.interactive == [(due, now)]
    assert not await redis.exists(in_progress_key_prefix + deferred)
    # Claimed once: a second replica claiming at the same time gets nothing.
    again = await claim(claims, now)
    assert again.jobs() == []


async def test_moves_batch_jobs_to_their_lane_and_claims_within_the_batch_slots(
    redis: Redis, queue_name: str
) -> None:
    now = int(time.time() * 1000)
    batch_lane = lane_queue(queue_name, "batch")
    raw, queued, interactive, broken, missing = named(
        queue_name, "raw", "queued", "interactive", "broken", "missing"
    )
    await queue_jobs(redis, queue_name, {raw: now - 5, interactive: now - 4, broken: now - 3})
    await queue_jobs(redis, queue_name, {missing: now - 2})
    await queue_jobs(redis, batch_lane, {queued: now - 9})
    for job_id in (raw, queued):
        await redis.set(job_key_prefix + job_id, envelope("compute_batch_totals"), px=TTL_MS)
    await redis.set(job_key_prefix + interactive, envelope("place_order"), px=TTL_MS)
    await redis.set(job_key_prefix + broken, b"compute_batch_totals{", px=TTL_MS)
    claimed = await claim(LaneClaims(redis, queue_name, REPLICA), now, free=5, batch_free=1)
    # Undecodable or missing envelopes are interactive: arq's run_job fails them as always.
    assert claimed.interactive == [(interactive, now - 4), (broken, now - 3), (missing, now - 2)]
    assert claimed.batch == [(queued, now - 9)]  # one batch slot: the earliest batch job
    assert await redis.zscore(queue_name, raw) is None
    assert await redis.zscore(batch_lane, raw) == now - 5  # moved with its score, not claimed
    assert not await redis.exists(in_progress_key_prefix + raw)
    await redis.delete(*(job_key_prefix + job_id for job_id in (raw, queued, interactive, broken)))


async def test_a_batch_job_running_elsewhere_is_not_moved(redis: Redis, queue_name: str) -> None:
    now = int(time.time() * 1000)
    (running,) = named(queue_name, "running")
    await queue_jobs(redis, queue_name, {running: now})
    await redis.set(job_key_prefix + running, envelope("compute_batch_totals"), px=TTL_MS)
    await redis.set(in_progress_key_prefix + running, b"1", px=TTL_MS)
    claimed = await claim(LaneClaims(redis, queue_name, REPLICA), now)
    assert claimed.jobs() == []
    # A plain arq worker runs it: its finish removes it from arq's queue, where it still is.
    assert await redis.zscore(queue_name, running) == now
    await redis.delete(job_key_prefix + running, in_progress_key_prefix + running)


async def test_passes_our_running_jobs_without_a_look_and_reads_no_further_than_needed(
    redis: Redis, queue_name: str
) -> None:
    """Per poll the script costs what it claims, not what it passes: our own running jobs are
    skipped unread (here: one whose claim is gone is still not taken), and the read stops at the
    last free slot, so a batch job beyond it stays where it is until a later claim reaches it."""
    now = int(time.time() * 1000)
    ours, due, beyond = named(queue_name, "ours", "due", "beyond")
    await queue_jobs(redis, queue_name, {ours: now - 3, due: now - 2, beyond: now - 1})
    await redis.set(job_key_prefix + beyond, envelope("compute_batch_totals"), px=TTL_MS)
    claims = LaneClaims(redis, queue_name, REPLICA)
    claimed = await claim(claims, now, free=1, running=[ours])
    assert claimed.jobs() == [(due, now - 2, "interactive")]
    assert not await redis.exists(in_progress_key_prefix + ours)
    assert await redis.zscore(queue_name, beyond) == now - 1  # not moved yet
    moved = await claim(claims, now, batch_free=0)
    assert moved.jobs() == [(ours, now - 3, "interactive")]  # no longer named as ours
    assert await redis.zscore(lane_queue(queue_name, "batch"), beyond) == now - 1
    await redis.delete(job_key_prefix + beyond)


async def test_says_which_lanes_have_due_jobs_it_did_not_reach(
    redis: Redis, queue_name: str
) -> None:
    """A freed slot is worth another claim only when the last one left due jobs behind."""
    now = int(time.time() * 1000)
    batch_lane = lane_queue(queue_name, "batch")
    first, second, chunk = named(queue_name, "first", "second", "chunk")
    claims = LaneClaims(redis, queue_name, REPLICA)
    assert (await claim(claims, now)).more == frozenset()  # both lanes read to their end
    await queue_jobs(redis, queue_name, {first: now - 2, second: now - 1})
    await queue_jobs(redis, batch_lane, {chunk: now - 3})
    out_of_slots = await claim(claims, now, free=1)
    assert out_of_slots.jobs() == [(first, now - 2, "interactive")]
    assert out_of_slots.more == {"interactive", "batch"}  # the batch lane was not read at all
    batch_full = await claim(claims, now, batch_free=0, running=[first])
    assert batch_full.jobs() == [(second, now - 1, "interactive")]
    assert batch_full.more == {"batch"}
    rest = await claim(claims, now, running=[first, second])
    assert (rest.jobs(), rest.more) == ([(chunk, now - 3, "batch")], frozenset())


async def test_jobs_passed_over_take_no_room_in_the_read_window(
    redis: Redis, queue_name: str
) -> None:
    """Ids held here or elsewhere ahead of a due job never hide it, whatever the read limit."""
    now = int(time.time() * 1000)
    ours, held, due = named(queue_name, "ours", "held", "due")
    await queue_jobs(redis, queue_name, {ours: now - 3, held: now - 2, due: now - 1})
    await redis.set(in_progress_key_prefix + held, b"other-replica", px=TTL_MS)
    claims = LaneClaims(redis, queue_name, REPLICA)
    first = await claim(claims, now, read_limit=1, running=[ours])
    assert first.jobs() == [] and first.more == {"interactive"}  # the window ended at `held`
    second = await claim(claims, now, read_limit=1, running=[ours])  # `held` now passed unread
    assert second.jobs() == [(due, now - 1, "interactive")]
    assert second.more == {"interactive"}  # the window was full again: there may be more
    await redis.delete(in_progress_key_prefix + held)


async def test_a_claim_does_arqs_opening_and_a_release_gives_its_try_back(
    redis: Redis, queue_name: str
) -> None:
    """The claim reads the job and counts its try (arq's run_job opening); a claim given back
    unstarted leaves the try count as it was before, gone if it was the first."""
    now = int(time.time() * 1000)
    first, again, expired = named(queue_name, "first", "again", "expired")
    await queue_jobs(redis, queue_name, {first: now - 3, again: now - 2, expired: now - 1})
    for job_id in (first, again):
        await redis.set(job_key_prefix + job_id, envelope("place_order"), px=TTL_MS)
    await redis.set(retry_key_prefix + again, b"2")
    claimed = await claim(LaneClaims(redis, queue_name, REPLICA), now)
    openings = {job_id: (o.envelope, o.job_try) for job_id, o in claimed.openings.items()}
    assert openings == {
        first: (envelope("place_order"), 1),
        again: (envelope("place_order"), 3),
        expired: (None, 1),  # arq's run_job then fails it as expired
    }
    assert 88_000 < await redis.ttl(retry_key_prefix + first) <= 88_400  # arq's expiry
    await QueueScripts(redis, queue_name, REPLICA).release([first, again, expired])
    assert await redis.get(retry_key_prefix + again) == b"2"
    assert not await redis.exists(retry_key_prefix + first, retry_key_prefix + expired)
    assert not await redis.exists(*(in_progress_key_prefix + job_id for job_id in openings))
    await redis.delete(*(job_key_prefix + job_id for job_id in openings), retry_key_prefix + again)


async def next_message(pubsub: PubSub, timeout_s: float = 5.0) -> bytes | None:
    """The next message's data; the subscription's own confirmation is skipped."""
    async with asyncio.timeout(timeout_s):
        while True:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=timeout_s)
            if message is not None:
                data: bytes = message["data"]
                return data


def envelope(function: str) -> bytes:
    return serialize({"t": 1, "f": function, "a": [], "k": {"order_ids": [1]}, "et": 1})


async def test_finish_stores_the_result_and_removes_the_job_as_arq_does(
    redis: Redis, queue_name: str
) -> None:
    job_id, other, kept = named(queue_name, "finished", "other", "kept")
    await queue_jobs(redis, queue_name, {job_id: 1, other: 2})
    await redis.set(job_key_prefix + job_id, b"{}")
    await redis.set(retry_key_prefix + job_id, b"1")
    await redis.set(in_progress_key_prefix + job_id, REPLICA)
    await redis.zadd(abort_jobs_ss, {job_id: 1})
    scripts = QueueScripts(redis, queue_name, REPLICA)
    async with redis.pubsub() as pubsub:
        await pubsub.subscribe(done_channel(queue_name))
        await scripts.finish(job_id, b'{"s":true}', result_ttl_ms=60_000, lane="interactive")
        notice = await next_message(pubsub)
    assert notice == job_id.encode()
    assert await redis.get(result_key_prefix + job_id) == b'{"s":true}'
    assert 0 < await redis.pttl(result_key_prefix + job_id) <= 60_000
    for prefix in (job_key_prefix, retry_key_prefix, in_progress_key_prefix):
        assert not await redis.exists(prefix + job_id)
    assert await redis.zrange(queue_name, 0, -1) == [other.encode()]
    assert await redis.zscore(abort_jobs_ss, job_id) is None
    await redis.set(in_progress_key_prefix + kept, REPLICA)
    await scripts.finish(kept, b"{}", result_ttl_ms=None, lane="interactive")
    assert await redis.pttl(result_key_prefix + kept) == -1  # kept forever
    await redis.delete(result_key_prefix + job_id, result_key_prefix + kept)


async def test_finish_removes_a_batch_job_from_the_batch_lane(
    redis: Redis, queue_name: str
) -> None:
    batch_lane = lane_queue(queue_name, "batch")
    job_id, other = named(queue_name, "finished", "other")
    await queue_jobs(redis, batch_lane, {job_id: 1, other: 2})
    await redis.set(in_progress_key_prefix + job_id, REPLICA)
    await QueueScripts(redis, queue_name, REPLICA).finish(
        job_id, b"{}", result_ttl_ms=60_000, lane="batch"
    )
    assert await redis.zrange(batch_lane, 0, -1) == [other.encode()]
    assert not await redis.exists(in_progress_key_prefix + job_id)
    await redis.delete(result_key_prefix + job_id)
