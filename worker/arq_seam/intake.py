"""Taking jobs: slots per lane, one claim script a poll, and waiting for news instead of sleeping.

Mirrors arq 0.28.0 `Worker.start_jobs` (its semaphore and counter; the claim itself is
lane_claims.py) and `Worker._release_sem_dec_counter_on_complete` (the bookkeeping when a job's
task ends). arq's `max_jobs` stays the total; at most `batch_slots` of them run batch jobs, so
interactive jobs always find a slot once one frees.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import structlog
from arq.utils import timestamp_ms
from arq.worker import Worker

from jobs.lanes import Lane
from worker.arq_seam.lane_claims import LaneClaims
from worker.arq_seam.openings import Opening
from worker.arq_seam.scripts import QueueScripts
from worker.metrics import ReplicaMetrics

log = structlog.get_logger("orderworker.worker")


class Intake:
    def __init__(
        self, worker: Worker, batch_slots: int, metrics: ReplicaMetrics | None = None
    ) -> None:
        self.worker = worker
        self.metrics = metrics
        self.batch_slots = batch_slots
        self.lanes: dict[str, Lane] = {}  # the lane of each job this replica is running
        self.batch_running = 0
        self._slot_freed = asyncio.Event()
        self._news = asyncio.Event()  # a wake-up, or a freed slot a due job may use
        self._more: frozenset[Lane] = frozenset()  # lanes the last claim did not read to the end
        # Held while a claim is on its way: a drain waits for it before it stops the poll loop,
        # so no claim is ever cut off between Redis setting in-progress keys and us hearing so.
        self.claiming = asyncio.Lock()
        # Jobs whose function arq has reached (its on_job_start hook): only those may be cut
        # off; before it, arq's run_job has not yet reached the code that puts a cancelled job back.
        self.started: set[str] = set()
        # arq's opening of each claimed job, done by the claim, until run_job takes it.
        self.openings: dict[str, Opening] = {}

    def free_slots(self) -> int:
        return self.worker.max_jobs - self.worker.job_counter

    def room(self, at_most: int | None) -> int:
        """How many jobs a claim may take now: the free slots, and no more than `at_most`."""
        return self.free_slots() if at_most is None else min(at_most, self.free_slots())

    def free_batch_slots(self) -> int:
        return min(self.batch_slots - self.batch_running, self.free_slots())

    def may_take(self) -> bool:
        return self.worker.allow_pick_jobs and self.free_slots() > 0

    def could_take_more(self) -> bool:
        """Whether a claim now may find a job the last one left: a lane it did not read to the
        end, with a slot that lane may use. Otherwise only a wake-up or the poll delay is news."""
        more = self._more
        return ("interactive" in more and self.free_slots() > 0) or (
            "batch" in more and self.free_batch_slots() > 0
        )

    async def wait_for_free_slot(self) -> bool:
        """With every slot busy arq sleeps a whole poll period before it looks again, and slots
        sit idle once short jobs end. Wait for the first one to end instead; bounded, so the
        poll loop still beats its heartbeat. True if a slot is free and jobs may be taken (a
        SIGTERM during the wait means no)."""
        worker = self.worker
        if worker.allow_pick_jobs and self.free_slots() <= 0:
            self._slot_freed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(worker.health_check_interval):
                    await self._slot_freed.wait()
        return self.may_take()

    def forget_news(self) -> None:
        """Called before a claim: what happens during it is news for the wait after it."""
        self._news.clear()

    async def wait_for_news(self, timeout_s: float) -> None:
        """After a claim took all it could: until a wake-up, a freed slot that may take a job
        left due (could_take_more), or `timeout_s`."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._news.wait()

    def woken(self) -> None:
        self._news.set()

    async def take(
        self,
        claims: LaneClaims,
        scripts: QueueScripts,
        read_limit: int,
        at_most: int | None,
        may_reclaim: bool,
    ) -> int:
        """Claim up to the free slots of each lane (and `at_most`) in one round trip and start
        those jobs; how many were claimed. A Redis error claims nothing, so takes no slot. With
        `may_reclaim`, jobs of replicas whose lease lapsed are taken over (leases.py)."""
        worker = self.worker
        free = self.room(at_most)
        async with self.claiming:
            claimed = await claims.claim(
                free=free,
                batch_free=min(free, self.free_batch_slots()),
                read_limit=read_limit,
                now_ms=timestamp_ms(),
                in_progress_ttl_ms=int(worker.in_progress_timeout_s * 1000),
                may_reclaim=may_reclaim,
                running=self.lanes.keys(),
            )
            jobs = claimed.jobs()
            self._more = claimed.more
            self.openings.update(claimed.openings)
            if claimed.reclaimed:
                log.info("job.reclaimed", job_ids=claimed.reclaimed)
                if self.metrics is not None:
                    self.metrics.leases_reclaimed.inc(len(claimed.reclaimed))
            if not worker.allow_pick_jobs:  # a drain began while the claim was on its way
                await self._give_back(scripts, [job_id for job_id, _, _ in jobs])
                return 0
            # A job retried at once can be due again before its last run's task has ended here:
            # give it back rather than run two tasks under one id; the next poll takes it.
            still_ending = [job for job in jobs if job[0] in self.lanes]
            if still_ending:
                await self._give_back(scripts, [job_id for job_id, _, _ in still_ending])
                self._more |= {lane for _, _, lane in still_ending}  # due once their tasks end
                jobs = [job for job in jobs if job not in still_ending]
        for job_id, score, lane in jobs:
            await worker.sem.acquire()  # free at once: only this loop takes slots
            self._spawn(job_id, score, lane)
        return len(jobs)

    async def _give_back(self, scripts: QueueScripts, job_ids: list[str]) -> None:
        for job_id in job_ids:
            self.openings.pop(job_id, None)
        await scripts.release(job_ids)

    def _spawn(self, job_id: str, score: int, lane: Lane) -> None:
        worker = self.worker
        worker.job_counter += 1
        self.lanes[job_id] = lane
        if lane == "batch":
            self.batch_running += 1
        task = worker.loop.create_task(worker.run_job(job_id, score))
        task.add_done_callback(lambda _: self._job_ended(job_id))
        worker.tasks[job_id] = task

    def lane_of(self, job_id: str) -> Lane:
        return self.lanes.get(job_id, "interactive")

    def job_started(self, job_id: str) -> None:
        self.started.add(job_id)

    def _job_ended(self, job_id: str) -> None:
        # arq's _release_sem_dec_counter_on_complete, plus a wake-up for the waits above.
        self.started.discard(job_id)
        self.openings.pop(job_id, None)  # a task cancelled before run_job took it
        if self.lanes.pop(job_id, None) == "batch":
            self.batch_running -= 1
        self.worker.job_counter -= 1
        self.worker.sem.release()
        self._slot_freed.set()
        if self.could_take_more():
            self._news.set()


def running_jobs(tasks: dict[str, asyncio.Task[Any]]) -> list[str]:
    # arq drops finished tasks from Worker.tasks only between polls: count the running ones.
    return [job_id for job_id, task in tasks.items() if not task.done()]
