"""Redis scripts for claiming and finishing jobs, with arq's own keys and rules.

arq claims each job on its own (WATCH, EXISTS and ZSCORE, then MULTI/PSETEX/EXEC: three round
trips and six commands a job) and finishes it with a six-command transaction. For jobs that take
a millisecond, that bookkeeping is most of a replica's CPU. These scripts do the same checks and
writes atomically in one command: a claim for a whole list of job ids, a finish for one job. Other
arq workers and producers on the same queue stay compatible: keys, TTLs and conditions are arq's
(checked against arq's Worker.start_jobs and Worker.finish_job, arq 0.28.0, by
tests/integration/test_queue_scripts.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from arq.constants import (
    abort_jobs_ss,
    in_progress_key_prefix,
    job_key_prefix,
    result_key_prefix,
    retry_key_prefix,
)
from redis.asyncio import Redis
from redis.commands.core import AsyncScript

# KEYS[1]: the queue. ARGV: now in ms, the in-progress TTL in ms, how many jobs to claim at most,
# the in-progress key prefix, then the job ids in the order read from the queue.
# Returns how many ids it examined, then (job id, score) for each job it claimed.
CLAIM_SCRIPT = """
local now, ttl, wanted, prefix = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3]), ARGV[4]
local result = {0}
local claimed = 0
for i = 5, #ARGV do
    if claimed >= wanted then break end
    result[1] = i - 4
    local job_id = ARGV[i]
    local score = redis.call('ZSCORE', KEYS[1], job_id)
    -- not queued any more (finished) or deferred: skip; running elsewhere: skip
    if score and tonumber(score) <= now and redis.call('EXISTS', prefix .. job_id) == 0 then
        redis.call('PSETEX', prefix .. job_id, ttl, '1')
        claimed = claimed + 1
        result[#result + 1] = job_id
        result[#result + 1] = score
    end
end
return result
"""


# A job that ran to its end, as arq's finish_job does it: KEYS are the result, in-progress, retry
# and job keys, the abort set and the queue; ARGV the result, its TTL in ms ('' keeps it forever)
# and the job id.
FINISH_SCRIPT = """
if ARGV[2] == '' then
    redis.call('SET', KEYS[1], ARGV[1])
else
    redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
end
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
redis.call('ZREM', KEYS[5], ARGV[3])
redis.call('ZREM', KEYS[6], ARGV[3])
return 1
"""


# KEYS: retry keys of jobs cut off by a drain. A key that is gone belongs to a job that finished
# after all (arq deleted it): decrementing it would leave a stray negative count behind.
GIVE_BACK_SCRIPT = """
for i = 1, #KEYS do
    if redis.call('EXISTS', KEYS[i]) == 1 then redis.call('DECR', KEYS[i]) end
end
return 1
"""


@dataclass(frozen=True, slots=True)
class Claimed:
    examined: int  # how many of the given ids were looked at; the rest are for a later call
    jobs: list[tuple[str, int]]  # (job id, queue score) of each job now ours to run


class QueueScripts:
    def __init__(self, redis: Redis, queue_name: str) -> None:
        self.queue_name = queue_name
        self._claim: AsyncScript = redis.register_script(CLAIM_SCRIPT)
        self._finish: AsyncScript = redis.register_script(FINISH_SCRIPT)
        self._give_back: AsyncScript = redis.register_script(GIVE_BACK_SCRIPT)
        self._redis = redis

    async def claim(
        self,
        job_ids: list[bytes],
        *,
        wanted: int,
        now_ms: int,
        in_progress_ttl_ms: int,
    ) -> Claimed:
        """Claim up to `wanted` of `job_ids` (in order) that are due and not running elsewhere."""
        reply = await self._claim(
            keys=[self.queue_name],
            args=[now_ms, in_progress_ttl_ms, wanted, in_progress_key_prefix, *job_ids],
        )
        pairs = reply[1:]
        jobs = [
            (job_id.decode(), int(float(score)))
            for job_id, score in zip(pairs[::2], pairs[1::2], strict=True)
        ]
        return Claimed(examined=int(reply[0]), jobs=jobs)

    async def finish(self, job_id: str, result: bytes, result_ttl_ms: int | None) -> None:
        """Store a finished job's result and remove the job, as arq's finish_job does."""
        keys = [
            result_key_prefix + job_id,
            in_progress_key_prefix + job_id,
            retry_key_prefix + job_id,
            job_key_prefix + job_id,
            abort_jobs_ss,
            self.queue_name,
        ]
        ttl = "" if result_ttl_ms is None else str(result_ttl_ms)
        await self._finish(keys=keys, args=[result, ttl, job_id])

    async def release(self, job_ids: list[str]) -> None:
        """Give back claims on jobs that were never started: free for any replica at once."""
        if job_ids:
            await self._redis.delete(*(in_progress_key_prefix + job_id for job_id in job_ids))

    async def give_back_tries(self, job_ids: list[str]) -> None:
        """Jobs cut off mid-run by a drain run again later without losing a try."""
        if job_ids:
            await self._give_back(keys=[retry_key_prefix + job_id for job_id in job_ids])
