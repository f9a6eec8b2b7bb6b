"""arq's finishing transactions on the job's own lane, with the done notice.

arq 0.28.0 `Worker.finish_job` (the paths the finish script does not take: a retry, a job
cancelled to run again, a result not kept, a cron job) and `Worker.finish_failed_job` re-score
or remove the job in `self.queue_name`. A batch job lives in the batch lane: a ZINCRBY there on
arq's queue would create it in the wrong lane with a score near zero. These are arq's
transactions with the lane's queue instead, and a PUBLISH on `<queue>:done` in the same
transaction whenever the job is finished for good (never on a retry). Each runs only while the
job's in-progress key names this replica (fencing, leases.py): the key is WATCHed and read
first, and a transaction that finds another owner, or none, writes nothing and returns False.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from arq.connections import ArqRedis
from arq.constants import (
    abort_jobs_ss,
    in_progress_key_prefix,
    job_key_prefix,
    result_key_prefix,
    retry_key_prefix,
)
from arq.utils import to_ms
from redis.asyncio.client import Pipeline
from redis.exceptions import WatchError

from jobs.lanes import done_channel


class LeaseLost(Exception):
    """The job's in-progress key no longer names this replica: nothing was written."""


class LaneFinish:
    def __init__(self, queue_name: str, replica_id: str) -> None:
        self.done_channel = done_channel(queue_name)
        self.replica_id = replica_id

    @asynccontextmanager
    async def _owned(self, pool: ArqRedis, job_id: str) -> AsyncIterator[Pipeline]:
        """arq's transaction, started only while the job is ours and run only if it still is."""
        in_progress_key = in_progress_key_prefix + job_id
        async with pool.pipeline(transaction=True) as tr:
            await tr.watch(in_progress_key)
            holder = await tr.get(in_progress_key)
            if holder is None or holder.decode() != self.replica_id:
                raise LeaseLost(job_id)
            tr.multi()  # type: ignore[no-untyped-call]
            yield tr
            try:
                await tr.execute()
            except WatchError:  # taken over between the check and the write
                raise LeaseLost(job_id) from None

    async def finish_job(
        self,
        pool: ArqRedis,
        lane_queue: str,
        job_id: str,
        finish: bool,
        result_data: bytes | None,
        result_timeout_s: float | None,
        keep_result_forever: bool,
        incr_score: int | None,
        keep_in_progress: float | None,
    ) -> bool:
        """Worker.finish_job, line by line, on `lane_queue`; a finished job is announced.
        False (nothing written) if the lease was lost."""
        try:
            async with self._owned(pool, job_id) as tr:
                delete_keys = []
                in_progress_key = in_progress_key_prefix + job_id
                if keep_in_progress is None:
                    delete_keys += [in_progress_key]
                else:
                    tr.pexpire(in_progress_key, to_ms(keep_in_progress))
                if finish:
                    if result_data:
                        expire = None if keep_result_forever else result_timeout_s
                        tr.set(result_key_prefix + job_id, result_data, px=to_ms(expire))
                    delete_keys += [retry_key_prefix + job_id, job_key_prefix + job_id]
                    tr.zrem(abort_jobs_ss, job_id)
                    tr.zrem(lane_queue, job_id)
                    tr.publish(self.done_channel, job_id)
                elif incr_score:
                    tr.zincrby(lane_queue, incr_score, job_id)
                if delete_keys:
                    tr.delete(*delete_keys)
        except LeaseLost:
            return False
        return True

    async def finish_failed_job(
        self,
        pool: ArqRedis,
        lane_queue: str,
        job_id: str,
        result_data: bytes | None,
        keep_result_forever: bool,
        keep_result_s: float,
    ) -> bool:
        """Worker.finish_failed_job, line by line, on `lane_queue`; the failure is announced.
        False (nothing written) if the lease was lost."""
        try:
            async with self._owned(pool, job_id) as tr:
                tr.delete(
                    retry_key_prefix + job_id,
                    in_progress_key_prefix + job_id,
                    job_key_prefix + job_id,
                )
                tr.zrem(abort_jobs_ss, job_id)
                tr.zrem(lane_queue, job_id)
                keep_result = keep_result_forever or keep_result_s > 0
                if result_data is not None and keep_result:
                    expire = 0 if keep_result_forever else keep_result_s
                    tr.set(result_key_prefix + job_id, result_data, px=to_ms(expire))
                tr.publish(self.done_channel, job_id)
        except LeaseLost:
            return False
        return True
