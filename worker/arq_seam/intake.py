"""Taking jobs: claim a batch with one script, and wait for a free slot instead of sleeping.

Mirrors arq 0.28.0 `Worker.start_jobs` (its checks and keys, see scripts.py) and
`Worker._release_sem_dec_counter_on_complete` (the bookkeeping when a job's task ends).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from arq.utils import timestamp_ms
from arq.worker import Worker

from worker.arq_seam.scripts import QueueScripts


class Intake:
    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self._slot_freed = asyncio.Event()
        # Held while a claim is on its way: a drain waits for it before it stops the poll loop,
        # so no claim is ever cut off between Redis setting in-progress keys and us hearing so.
        self.claiming = asyncio.Lock()
        # Jobs whose function arq has reached (its on_job_start hook): only those may be cut
        # off; a cancel in arq's opening transaction could leave its try counted or not.
        self.started: set[str] = set()

    async def wait_for_free_slot(self) -> bool:
        """With every slot busy arq sleeps a whole poll period before it looks again, and slots
        sit idle once short jobs end. Wait for the first one to end instead; bounded, so the
        poll loop still beats its heartbeat. True if a slot is free and jobs may be taken (a
        SIGTERM during the wait means no)."""
        worker = self.worker
        if worker.allow_pick_jobs and worker.job_counter >= worker.max_jobs:
            self._slot_freed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(worker.health_check_interval):
                    await self._slot_freed.wait()
        return worker.allow_pick_jobs and worker.job_counter < worker.max_jobs

    async def start_jobs(self, scripts: QueueScripts, job_ids: list[bytes]) -> None:
        """arq's start_jobs with the claims batched: while ids remain, wait for a free slot, then
        claim as many ids as there are free slots in one round trip. A Redis error claims
        nothing, so no slot is taken for a job that never started."""
        worker = self.worker
        pending = job_ids
        while pending and await self.wait_for_free_slot():
            async with self.claiming:
                claimed = await scripts.claim(
                    pending,
                    wanted=worker.max_jobs - worker.job_counter,
                    now_ms=timestamp_ms(),
                    in_progress_ttl_ms=int(worker.in_progress_timeout_s * 1000),
                )
                if not worker.allow_pick_jobs:  # a drain began while the claim was on its way
                    await scripts.release([job_id for job_id, _ in claimed.jobs])
                    return
            pending = pending[claimed.examined :]
            for job_id, score in claimed.jobs:
                await worker.sem.acquire()  # free at once: only this loop takes slots
                self._spawn(job_id, score)

    def _spawn(self, job_id: str, score: int) -> None:
        worker = self.worker
        worker.job_counter += 1
        task = worker.loop.create_task(worker.run_job(job_id, score))
        task.add_done_callback(lambda _: self._job_ended(job_id))
        worker.tasks[job_id] = task

    def job_started(self, job_id: str) -> None:
        self.started.add(job_id)

    def _job_ended(self, job_id: str) -> None:
        # arq's _release_sem_dec_counter_on_complete, plus a wake-up for wait_for_free_slot.
        self.started.discard(job_id)
        self.worker.job_counter -= 1
        self.worker.sem.release()
        self._slot_freed.set()


def running_jobs(tasks: dict[str, asyncio.Task[Any]]) -> list[str]:
    # arq drops finished tasks from Worker.tasks only between polls: count the running ones.
    return [job_id for job_id, task in tasks.items() if not task.done()]
