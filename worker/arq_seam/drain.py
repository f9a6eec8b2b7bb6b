"""The drain on SIGTERM: stop claiming, let running jobs finish within the grace period, then cut
off the rest and requeue them without using a try.

Replaces arq 0.28.0 `Worker.handle_sig_wait_for_completion` / `_wait_for_tasks_to_complete`, which
cancel every task whatever it is doing. A job is only cut off once arq has reached its function
(`on_job_start`): there arq's own `run_job` catches the cancel, deletes the in-progress key and
leaves the job queued. A job that has not got there yet (arq's opening, answered from the claim
in openings.py, and its checks) is left to get there, for at most `UNSTARTED_GRACE_S` more.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable

import structlog
from arq.worker import Worker

from jobs.connection import REDIS_ERRORS
from worker.arq_seam.intake import Intake, running_jobs
from worker.arq_seam.scripts import QueueScripts

log = structlog.get_logger("orderworker.worker")

DRAIN_POLL_S = 0.05
UNSTARTED_GRACE_S = 5.0


class Drain:
    def __init__(
        self,
        worker: Worker,
        intake: Intake,
        grace_s: float,
        scripts: Callable[[], QueueScripts],
    ) -> None:
        self.worker = worker
        self.intake = intake
        self.grace_s = grace_s
        self.scripts = scripts
        self.stopping = False
        # Jobs cut off, in cut-off order; those arq then put back (not all: a job may end on its
        # own before the cancel reaches it) are named in `worker.drained`, never retried.
        self.cut_off: list[str] = []
        self.requeued: list[str] = []
        self._deadline = 0.0
        self._task: asyncio.Task[None] | None = None

    def request(self, signum: signal.Signals) -> None:
        if self.stopping:  # a second signal cuts the grace period short
            log.info("worker.stopping_now", signal=signum.name)
            self._deadline = min(self._deadline, time.monotonic())
            return
        self.stopping = True
        # From here on a claim that comes back is given back (intake.py): no new job starts.
        self.worker.allow_pick_jobs = False
        self._deadline = time.monotonic() + self.grace_s
        log.info(
            "worker.draining",
            signal=signum.name,
            in_flight=len(running_jobs(self.worker.tasks)),
            grace_s=self.grace_s,
        )
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def finished(self) -> None:
        if self._task is not None:
            await self._task

    def uncount_retry(self, job_id: str, finish: bool) -> bool:
        """arq counts a job it saw cancelled as retried (Worker.run_job, just before finish_job);
        one the drain cut off has used no try, so it is not a retry. True for such a job: once it
        is back in its lane (`put_back`), `worker.drained` names it."""
        if not finish and job_id in self.cut_off:
            self.worker.jobs_retried -= 1
            return True
        return False

    def put_back(self, job_id: str) -> None:
        # Only once the lease was found ours: a job another replica took over is not ours to name.
        self.requeued.append(job_id)

    async def _run(self) -> None:
        cut_off = await self._wait_then_cut_off()
        if cut_off:
            await self._give_back_tries(cut_off)  # a finished job has no try count: no change
        # A claim on its way ends (and is given back) before the poll loop is stopped.
        async with self.intake.claiming:
            requeued = self.requeued
            log.info("worker.drained", requeued=len(requeued), requeued_job_ids=requeued)
            if self.worker.main_task is not None:
                self.worker.main_task.cancel()

    async def _wait_then_cut_off(self) -> list[str]:
        tasks = self.worker.tasks
        cut_off = self.cut_off
        while unfinished := running_jobs(tasks):
            overdue_s = time.monotonic() - self._deadline
            for job_id in unfinished:
                started = job_id in self.intake.started
                if job_id not in cut_off and overdue_s >= (0 if started else UNSTARTED_GRACE_S):
                    tasks[job_id].cancel()
                    cut_off.append(job_id)
            await asyncio.sleep(DRAIN_POLL_S)
        for job_id in cut_off:
            # As arq's _poll_iteration drops finished tasks: Worker.close must not gather a
            # cancelled one again (it would raise CancelledError out of close).
            tasks.pop(job_id, None)
        return cut_off

    async def _give_back_tries(self, job_ids: list[str]) -> None:
        try:
            await self.scripts().give_back_tries(job_ids)
        except REDIS_ERRORS as error:
            log.warning("worker.tries_not_restored", error=str(error))
