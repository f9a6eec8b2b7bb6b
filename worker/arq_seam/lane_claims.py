"""Reading both lanes and claiming jobs from them: one script, one round trip a poll.

Replaces arq 0.28.0 `Worker._poll_iteration`'s read (ZRANGEBYSCORE of the due ids, at most
`queue_read_limit`) and `Worker.start_jobs`' claim (WATCH, EXISTS and ZSCORE, then a PSETEX of
the in-progress key with arq's TTL; a job running elsewhere, finished or deferred is skipped). The
script does both for the two lanes of jobs/lanes.py, and moves a batch job a plain arq producer
wrote into the interactive lane (arq's queue) to the batch lane, with its score, before anyone
runs it there. A job running elsewhere is never moved: the replica running it removes it from
the queue it took it from.

The in-progress key holds the claiming replica's id instead of arq's `1` (leases.py). A due job
whose claim names a replica with no lease left is taken over (reclaimed); arq's own `1` and our
own id are never taken over (arq's claim lasts its TTL; our own job is still running here).

Per poll the script costs one read of each lane plus a few commands per job it claims or moves,
not per job it passes: the replica's own running jobs (named in the call) are passed without a
look, so are jobs another replica held at a look less than HELD_RECHECK_S ago, and the read stops
at the last free slot. arq's start_jobs re-checks every id it reads, every poll. A lane is read a
page at a time, each page as large as the free slots plus the ids passed over (which so never hide
a due job), up to `queue_read_limit` ids beyond those: a busy queue is not read 100 ids at a time
to fill one slot. The reply says which lanes have due jobs the claim did not reach, so a freed
slot is worth another claim only then. With each claimed job the script also does arq's opening
transaction of `run_job` (read the job, count the try) and returns its result (openings.py).
"""

from __future__ import annotations

import time
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

import structlog
from arq.constants import in_progress_key_prefix, job_key_prefix, retry_key_prefix
from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from jobs.lanes import BATCH_FUNCTIONS, Lane, lane_queue
from worker.arq_seam.claim_script import CLAIM_SCRIPT
from worker.arq_seam.leases import lease_prefix
from worker.arq_seam.openings import Opening

# How long a claim seen held by another replica is passed over unread: the delay it adds, at most,
# to taking over a lapsed claim, against one look per held job per claim (20 claims a second and
# more on a busy replica).
HELD_RECHECK_S = 0.2

BATCH_FUNCTION_NAMES = sorted(BATCH_FUNCTIONS)

log = structlog.get_logger("orderworker.worker")


@dataclass(frozen=True, slots=True)
class LaneClaim:
    """What one claim took: (job id, queue score) of each job now ours to run, by lane, with
    arq's opening of each (openings.py), and which of them were taken over from a replica whose
    lease had lapsed."""

    interactive: list[tuple[str, int]]
    batch: list[tuple[str, int]]
    reclaimed: list[str] = field(default_factory=list)
    # Lanes with due jobs the claim did not reach: a later claim, with a slot free, may find them.
    more: frozenset[Lane] = frozenset()
    openings: dict[str, Opening] = field(default_factory=dict)

    def jobs(self) -> list[tuple[str, int, Lane]]:
        taken: list[tuple[str, int, Lane]] = [(i, s, "interactive") for i, s in self.interactive]
        return taken + [(job_id, score, "batch") for job_id, score in self.batch]


class LaneClaims:
    def __init__(
        self,
        redis: Redis,
        queue_name: str,
        replica_id: str,
        held_recheck_s: float = HELD_RECHECK_S,
    ) -> None:
        self.lanes = [lane_queue(queue_name, "interactive"), lane_queue(queue_name, "batch")]
        self.replica_id = replica_id
        self.lease_prefix = lease_prefix(queue_name)
        self.held_recheck_s = held_recheck_s
        self._held: set[str] = set()  # seen claimed elsewhere since _held_since (monotonic)
        self._held_since = 0.0
        self._held_reclaiming = False  # may_reclaim when they were seen: lapsed ones count then
        self.redis = redis
        self._claim: AsyncScript = redis.register_script(CLAIM_SCRIPT)

    async def claim(
        self,
        *,
        free: int,
        batch_free: int,
        read_limit: int,
        now_ms: int,
        in_progress_ttl_ms: int,
        may_reclaim: bool = False,
        running: Collection[str] = (),
    ) -> LaneClaim:
        """Claim up to `free` due jobs, of them at most `batch_free` batch jobs; interactive
        jobs first, each lane in score order; with `may_reclaim`, lapsed claims count as free.
        `running`: the jobs this replica is running, passed over without a look."""
        stale = time.monotonic() - self._held_since >= self.held_recheck_s
        if stale or may_reclaim != self._held_reclaiming:  # look at each of them again
            self._held, self._held_since = set(), time.monotonic()
            self._held_reclaiming = may_reclaim
        counts = [now_ms, in_progress_ttl_ms, free, batch_free, read_limit]
        prefixes = [in_progress_key_prefix, job_key_prefix, retry_key_prefix]
        ours: list[str] = [self.replica_id, self.lease_prefix, "1" if may_reclaim else "0"]
        functions: list[str | int] = [len(BATCH_FUNCTION_NAMES), *BATCH_FUNCTION_NAMES]
        args: list[str | int] = [*counts, *prefixes, *ours, *functions, *running, *self._held]
        reply = await self._claim(keys=self.lanes, args=args)
        interactive, batch, reclaimed, held, (more_interactive, more_batch) = reply
        self._held.update(_texts(held))
        unreadable: list[tuple[str, bytes]] = []
        more: set[Lane] = {"interactive"} if more_interactive else set()
        if more_batch:
            more.add("batch")
        openings: dict[str, Opening] = {}
        claim = LaneClaim(
            interactive=_claimed(interactive, self.lanes[0], openings, unreadable),
            batch=_claimed(batch, self.lanes[1], openings, unreadable),
            reclaimed=_texts(reclaimed),
            more=frozenset(more),
            openings=openings,
        )
        if unreadable:
            await self._drop(unreadable)
        return claim

    async def _drop(self, unreadable: list[tuple[str, bytes]]) -> None:
        """Job ids that are not UTF-8 name no job arq (or any waiter) can read: they are removed
        with their keys, as arq skips a payload it cannot decode, not left to stop every claim."""
        async with self.redis.pipeline(transaction=True) as pipe:
            for lane, raw in unreadable:
                pipe.zrem(lane, raw)
                for prefix in (in_progress_key_prefix, job_key_prefix, retry_key_prefix):
                    pipe.delete(prefix.encode() + raw)
            await pipe.execute()
        for lane, raw in unreadable:
            log.warning(
                "job.refused",
                job_id=raw.decode(errors="backslashreplace"),
                lane=lane,
                code="undecodable_payload",
                message="job id is not UTF-8 text",
            )


def _texts(job_ids: list[bytes]) -> list[str]:
    return [job_id.decode() for job_id in job_ids if _is_text(job_id)]


def _is_text(job_id: bytes) -> bool:
    try:
        job_id.decode()
    except UnicodeDecodeError:
        return False
    return True


def _claimed(
    flat: list[Any],
    lane: str,
    openings: dict[str, Opening],
    unreadable: list[tuple[str, bytes]],
) -> list[tuple[str, int]]:
    """(job id, score) of each job in the claim's reply (id, score, envelope, try, ...), its
    opening into `openings`; ids that are not UTF-8 go to `unreadable`."""
    claimed = []
    for job_id, score, envelope, job_try in zip(*[iter(flat)] * 4, strict=True):
        if _is_text(job_id):
            text = job_id.decode()
            claimed.append((text, int(float(score))))
            openings[text] = Opening(text, envelope, int(job_try))
        else:
            unreadable.append((lane, job_id))
    return claimed
