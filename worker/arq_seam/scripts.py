"""Redis scripts for finishing jobs and giving back drained ones, with arq's own keys and rules.

arq claims each job on its own (WATCH, EXISTS and ZSCORE, then MULTI/PSETEX/EXEC: three round
trips and six commands a job) and finishes it with a six-command transaction. For jobs that take
a millisecond, that bookkeeping is most of a replica's CPU. These scripts do the same checks and
writes atomically in one command: a claim for both lanes (lane_claims.py), a finish for one job.
Other arq workers and producers on the same queue stay compatible: keys, TTLs and conditions are
arq's (checked against arq's Worker.start_jobs and Worker.finish_job, arq 0.28.0, by
tests/integration/test_arq_equivalence.py and test_queue_scripts.py), except that the
in-progress key holds the owning replica's id and a finish writes only while it still does
(fencing, leases.py).
"""

from __future__ import annotations

from arq.constants import (
    abort_jobs_ss,
    in_progress_key_prefix,
    job_key_prefix,
    result_key_prefix,
    retry_key_prefix,
)
from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from jobs.lanes import Lane, done_channel, lane_queue

# A job that ran to its end, as arq's finish_job does it, while this replica still owns it:
# KEYS are the result, in-progress, retry and job keys, the abort set and the job's lane; ARGV the
# result, its TTL in ms ('' keeps it forever), the job id, the done channel (told the id once the
# result is stored) and this replica's id. Returns 0, writing nothing, if the in-progress key
# names another replica or none: the lease was lost (leases.py).
FINISH_SCRIPT = """
if redis.call('GET', KEYS[2]) ~= ARGV[5] then return 0 end
if ARGV[2] == '' then
    redis.call('SET', KEYS[1], ARGV[1])
else
    redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
end
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
redis.call('ZREM', KEYS[5], ARGV[3])
redis.call('ZREM', KEYS[6], ARGV[3])
redis.call('PUBLISH', ARGV[4], ARGV[3])
return 1
"""

# KEYS: the in-progress key, then the retry key, of each claim given back; ARGV[1]: this
# replica's id. Only our own claims; the try the claim counted (openings.py) is given back, and a
# count back at 0 is removed, as before the claim.
RELEASE_SCRIPT = """
for i = 1, #KEYS, 2 do
    if redis.call('GET', KEYS[i]) == ARGV[1] then
        redis.call('DEL', KEYS[i])
        if redis.call('EXISTS', KEYS[i + 1]) == 1 and redis.call('DECR', KEYS[i + 1]) <= 0 then
            redis.call('DEL', KEYS[i + 1])
        end
    end
end
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


class QueueScripts:
    def __init__(self, redis: Redis, queue_name: str, replica_id: str) -> None:
        self.queue_name = queue_name
        self.replica_id = replica_id
        self.done_channel = done_channel(queue_name)
        self._finish: AsyncScript = redis.register_script(FINISH_SCRIPT)
        self._give_back: AsyncScript = redis.register_script(GIVE_BACK_SCRIPT)
        self._release: AsyncScript = redis.register_script(RELEASE_SCRIPT)

    async def finish(
        self, job_id: str, result: bytes, result_ttl_ms: int | None, lane: Lane
    ) -> bool:
        """Store a finished job's result and remove the job from its lane, as arq's finish_job
        does (from arq's queue), then publish the done notice; False (nothing written) if the
        job's lease was lost."""
        keys = [
            result_key_prefix + job_id,
            in_progress_key_prefix + job_id,
            retry_key_prefix + job_id,
            job_key_prefix + job_id,
            abort_jobs_ss,
            lane_queue(self.queue_name, lane),
        ]
        ttl = "" if result_ttl_ms is None else str(result_ttl_ms)
        args: list[bytes | str] = [result, ttl, job_id, self.done_channel, self.replica_id]
        return bool(await self._finish(keys=keys, args=args))

    async def release(self, job_ids: list[str]) -> None:
        """Give back claims on jobs that were never started, and the tries their claims counted:
        free for any replica at once."""
        if job_ids:
            keys = [
                key
                for job_id in job_ids
                for key in (in_progress_key_prefix + job_id, retry_key_prefix + job_id)
            ]
            await self._release(keys=keys, args=[self.replica_id])

    async def give_back_tries(self, job_ids: list[str]) -> None:
        """Jobs cut off mid-run by a drain run again later without losing a try."""
        if job_ids:
            await self._give_back(keys=[retry_key_prefix + job_id for job_id in job_ids])
