"""The poll loop: one claim script for both lanes, then a wait for news instead of a sleep.

Mirrors arq 0.28.0 `Worker.main` (its startup and burst exit; `poll()`'s fixed sleep is gone,
so a wake-up is never followed by the rest of a poll period) and `Worker._poll_iteration` (the
read of due ids and `start_jobs`, dropping finished tasks, the heartbeat; a replica aborts no
jobs, so arq's abort check is never due). Results kept through a Redis outage (pending.py) are
written before anything new is claimed.
"""

from __future__ import annotations

from collections.abc import Callable

from arq.worker import Worker

from worker.arq_seam.intake import Intake
from worker.arq_seam.lane_claims import LaneClaims
from worker.arq_seam.leases import LeaseKeeper
from worker.arq_seam.pending import PendingWrites
from worker.arq_seam.scripts import QueueScripts


class Polling:
    def __init__(
        self,
        worker: Worker,
        intake: Intake,
        claims: Callable[[], LaneClaims],
        scripts: Callable[[], QueueScripts],
        pending: PendingWrites,
        leases: LeaseKeeper,
    ) -> None:
        self.worker = worker
        self.intake = intake
        self.claims = claims
        self.scripts = scripts
        self.pending = pending
        self.leases = leases

    async def iteration(self) -> None:
        """Worker._poll_iteration: claim what the free slots allow; unless that filled them all,
        wait for a wake-up or a freed slot, at most `poll_delay_s` (arq's sleep between polls)."""
        worker = self.worker
        at_most = self._burst_jobs_remaining()
        if at_most is not None and at_most < 1:
            return
        # Jobs that finished while Redis was away are finished before any job is claimed.
        await self.pending.flush()
        may_take = await self.intake.wait_for_free_slot()
        self.intake.forget_news()  # news from here on (during the claim) ends the wait below
        if may_take:
            await self.intake.take(
                self.claims(),
                self.scripts(),
                worker.queue_read_limit,
                at_most,
                self.leases.may_reclaim(),
            )
        # Unless the claim left due jobs that a free slot may take, asking again at once would
        # find nothing, and would sit between the jobs just started and Redis. Jobs it could not
        # take yet (slots or a batch lane full) make a freed slot news.
        if not may_take or not self.intake.could_take_more():
            await self.intake.wait_for_news(worker.poll_delay_s)
        for job_id, task in list(worker.tasks.items()):
            if task.done():
                del worker.tasks[job_id]
                task.result()  # as arq: errors of run_job are raised here
        await worker.heart_beat()

    def _burst_jobs_remaining(self) -> int | None:
        worker = self.worker
        if worker.burst and worker.max_burst_jobs >= 0:
            return worker.max_burst_jobs - worker._jobs_started()
        return None

    async def burst_done(self) -> bool:
        """Worker.main's burst exit, over both lanes: True once there is nothing left to run."""
        worker = self.worker
        if 0 <= worker.max_burst_jobs <= worker._jobs_started():
            return True
        queued = 0
        for lane in self.claims().lanes:
            queued += await worker.pool.zcard(lane)
        return queued == 0
