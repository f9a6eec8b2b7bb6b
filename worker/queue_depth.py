"""How a queue stands, both lanes together: the one reading behind the queue gauges (metrics.py)
and `orderworker status`.

A job is *ready* when its score (the time it is due, in ms) has come and no replica holds its
in-progress key; *deferred* when its score is still ahead; *in progress* while a replica holds
it (arq keeps a running job in its sorted set until it finishes). Two round trips of plain
commands, whatever the backlog: one pipeline of counts and the oldest due ids of each lane, then
one MGET of those ids' in-progress keys.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

from arq.constants import in_progress_key_prefix
from redis.asyncio import Redis

from jobs.lanes import Lane, lane_queue

LANES: tuple[Lane, ...] = ("interactive", "batch")
# Due ids looked at per lane for in-progress keys. Replicas claim the oldest due jobs first, so
# running jobs are among the oldest: exact while a lane has fewer running jobs than this.
IN_PROGRESS_SCAN = 2000


@dataclass(frozen=True, slots=True)
class LaneDepth:
    """One lane's jobs: ready (due, not running), deferred (due later), in progress."""

    ready: int
    deferred: int
    in_progress: int
    oldest_ready_age_s: float  # 0 when nothing is ready


@dataclass(frozen=True, slots=True)
class QueueDepth(LaneDepth):
    """Both lanes together, and each of them."""

    lanes: dict[Lane, LaneDepth]

    @classmethod
    def of(cls, lanes: dict[Lane, LaneDepth]) -> QueueDepth:
        each = lanes.values()
        return cls(
            ready=sum(lane.ready for lane in each),
            deferred=sum(lane.deferred for lane in each),
            in_progress=sum(lane.in_progress for lane in each),
            oldest_ready_age_s=max(lane.oldest_ready_age_s for lane in each),
            lanes=lanes,
        )

    def as_json(self) -> dict[str, object]:
        shown = asdict(self)  # the lanes too, as dicts
        shown["oldest_ready_age_s"] = round(self.oldest_ready_age_s, 3)
        return shown


async def read_queue_depth(
    redis: Redis, queue_name: str, *, now_ms: int | None = None, scan: int = IN_PROGRESS_SCAN
) -> QueueDepth:
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    async with redis.pipeline(transaction=False) as pipe:
        for lane in LANES:
            key = lane_queue(queue_name, lane)
            pipe.zcount(key, "-inf", now_ms)
            pipe.zcount(key, f"({now_ms}", "+inf")
            pipe.zrangebyscore(key, "-inf", now_ms, start=0, num=scan, withscores=True)
        replies = await pipe.execute()
    due_by_lane: list[list[tuple[bytes, float]]] = replies[2::3]
    held = iter(await _held(redis, [job_id for due in due_by_lane for job_id, _ in due]))
    lanes: dict[Lane, LaneDepth] = {}
    for index, lane in enumerate(LANES):
        due_count, deferred, due = replies[3 * index], replies[3 * index + 1], due_by_lane[index]
        running = [next(held) for _ in due]
        oldest = next(
            (score for (_, score), busy in zip(due, running, strict=True) if not busy), None
        )
        lanes[lane] = LaneDepth(
            ready=int(due_count) - sum(running),
            deferred=int(deferred),
            in_progress=sum(running),
            oldest_ready_age_s=0.0 if oldest is None else max(0.0, (now_ms - oldest) / 1000),
        )
    return QueueDepth.of(lanes)


async def _held(redis: Redis, job_ids: list[bytes]) -> list[bool]:
    if not job_ids:
        return []
    # As bytes: an id that is not UTF-8 (any producer can write one) is still just a key here.
    prefix = in_progress_key_prefix.encode()
    holders = await redis.mget([prefix + job_id for job_id in job_ids])
    return [holder is not None for holder in holders]
