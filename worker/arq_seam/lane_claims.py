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
at the last free slot. arq's start_jobs re-checks every id it reads, every poll.
"""

from __future__ import annotations

import time
from collections.abc import Collection
from dataclasses import dataclass, field

import structlog
from arq.constants import in_progress_key_prefix, job_key_prefix, retry_key_prefix
from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from jobs.lanes import BATCH_FUNCTIONS, Lane, lane_queue
from worker.arq_seam.leases import lease_prefix

# How long a claim seen held by another replica is passed over unread: the delay it adds, at most,
# to taking over a lapsed claim, against one look per held job per claim (20 claims a second and
# more on a busy replica).
HELD_RECHECK_S = 0.2

# KEYS[1]: the interactive lane, KEYS[2]: the batch lane. ARGV: now in ms, the in-progress TTL
# in ms, free slots, free batch slots, how many due ids to read from each lane, the in-progress
# and job key prefixes, this replica's id, the lease key prefix, '1' if claims of replicas
# without a lease may be taken over, how many batch function names follow, those names, then the
# ids of jobs to pass over unread (ours, and those seen held elsewhere a moment ago). Returns
# {interactive, batch, reclaimed, held}: the first two a flat list of job id, score for the jobs
# claimed; `held` the ids it found claimed by another replica (or by us) and left alone.
CLAIM_SCRIPT = """
local now, ttl = ARGV[1], ARGV[2]
local free, batch_free, limit = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local running, envelopes = ARGV[6], ARGV[7]
local owner, leases, may_reclaim = ARGV[8], ARGV[9], ARGV[10] == '1'
local last_name = 11 + tonumber(ARGV[11])
local batch_functions, ours = {}, {}
for i = 12, last_name do batch_functions[ARGV[i]] = true end
for i = last_name + 1, #ARGV do ours[ARGV[i]] = true end

-- A missing or undecodable envelope is interactive: arq's run_job fails it as it always did.
local function is_batch(job_id)
    local envelope = redis.call('GET', envelopes .. job_id)
    if not envelope then return false end
    local named = false
    for name in pairs(batch_functions) do  -- most envelopes are never decoded
        if string.find(envelope, name, 1, true) then named = true end
    end
    if not named then return false end
    local ok, decoded = pcall(cjson.decode, envelope)
    return ok and type(decoded) == 'table' and batch_functions[decoded['f']] == true
end

-- 'free' (no claim), 'lapsed' (its replica's lease is gone) or false: ours, or held (noted).
local held = {}
local function claim_state(job_id)
    if ours[job_id] then return false end
    local holder = redis.call('GET', running .. job_id)
    if not holder then return 'free' end
    if may_reclaim and holder ~= '1' and holder ~= owner
        and redis.call('EXISTS', leases .. holder) == 0 then
        return 'lapsed'
    end
    held[#held + 1] = job_id
    return false
end

local reclaimed = {}
local function claim(into, job_id, score, state)
    redis.call('PSETEX', running .. job_id, ttl, owner)
    into[#into + 1] = job_id
    into[#into + 1] = score
    if state == 'lapsed' then reclaimed[#reclaimed + 1] = job_id end
    free = free - 1
end

local interactive, batch = {}, {}
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'WITHSCORES', 'LIMIT', 0, limit)
for i = 1, #due, 2 do
    if free == 0 then break end  -- batch jobs further on move when a later claim reaches them
    local job_id, score = due[i], due[i + 1]
    local state = claim_state(job_id)
    if state then
        if is_batch(job_id) then
            -- Touch the in-progress key: a plain arq worker between its WATCH of it and its EXEC
            -- then fails its claim instead of running the job in the lane it just left.
            redis.call('SET', running .. job_id, 'moving', 'PX', 1)
            redis.call('DEL', running .. job_id)
            redis.call('ZADD', KEYS[2], score, job_id)
            redis.call('ZREM', KEYS[1], job_id)
        else
            claim(interactive, job_id, score, state)
        end
    end
end
batch_free = math.min(batch_free, free)
if batch_free > 0 then
    due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'WITHSCORES', 'LIMIT', 0, limit)
    for i = 1, #due, 2 do
        if batch_free == 0 then break end
        local state = claim_state(due[i])
        if state then
            claim(batch, due[i], due[i + 1], state)
            batch_free = batch_free - 1
        end
    end
end
return {interactive, batch, reclaimed, held}
"""

log = structlog.get_logger("orderworker.worker")


@dataclass(frozen=True, slots=True)
class LaneClaim:
    """What one claim took: (job id, queue score) of each job now ours to run, by lane, and
    which of them were taken over from a replica whose lease had lapsed."""

    interactive: list[tuple[str, int]]
    batch: list[tuple[str, int]]
    reclaimed: list[str] = field(default_factory=list)

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
        reply = await self._claim(
            keys=self.lanes,
            args=[
                now_ms,
                in_progress_ttl_ms,
                free,
                batch_free,
                read_limit,
                in_progress_key_prefix,
                job_key_prefix,
                self.replica_id,
                self.lease_prefix,
                "1" if may_reclaim else "0",
                len(BATCH_FUNCTIONS),
                *sorted(BATCH_FUNCTIONS),
                *running,
                *self._held,
            ],
        )
        interactive, batch, reclaimed, held = reply
        self._held.update(_texts(held))
        unreadable: list[tuple[str, bytes]] = []
        claim = LaneClaim(
            interactive=_pairs(interactive, self.lanes[0], unreadable),
            batch=_pairs(batch, self.lanes[1], unreadable),
            reclaimed=_texts(reclaimed),
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


def _pairs(
    flat: list[bytes], lane: str, unreadable: list[tuple[str, bytes]]
) -> list[tuple[str, int]]:
    """(job id, score) pairs of the claim's reply; ids that are not UTF-8 go to `unreadable`."""
    pairs = []
    for job_id, score in zip(flat[::2], flat[1::2], strict=True):
        if _is_text(job_id):
            pairs.append((job_id.decode(), int(float(score))))
        else:
            unreadable.append((lane, job_id))
    return pairs
