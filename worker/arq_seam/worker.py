"""arq's Worker with every override a replica makes, each delegating to one collaborator.

Each method says which arq 0.28.0 code it mirrors or wraps; `CHECKED_ARQ_VERSION` guards them.
"""

from __future__ import annotations

import contextlib
import signal
from typing import Any

import structlog
from arq.utils import to_ms
from arq.worker import Function, Worker

from jobs.connection import REDIS_ERRORS
from worker.arq_seam.backoff import RedisBackoff
from worker.arq_seam.dead_letters import DeadLetters
from worker.arq_seam.drain import Drain
from worker.arq_seam.finishing import Finishing
from worker.arq_seam.heartbeats import Heartbeats
from worker.arq_seam.intake import Intake
from worker.arq_seam.scripts import QueueScripts
from worker.arq_seam.wording import serialize_job_data

log = structlog.get_logger("orderworker.worker")


class SeamWorker(Worker):
    def __init__(
        self,
        *,
        functions: list[Function],
        replica_id: str,
        shutdown_grace_s: float,
        **arq_options: Any,
    ) -> None:
        self.finishing = Finishing()
        super().__init__(
            functions=[self.finishing.track(function) for function in functions],
            handle_signals=False,
            job_serializer=serialize_job_data,
            on_job_start=self._job_started,
            **arq_options,
        )
        self.replica_id = replica_id
        self.intake = Intake(self)
        self.backoff = RedisBackoff()
        self.heartbeats = Heartbeats(self, replica_id)
        self.drain = Drain(self, self.intake, shutdown_grace_s, lambda: self.scripts)
        self._scripts: QueueScripts | None = None

    @property
    def scripts(self) -> QueueScripts:
        if self._scripts is None:  # the pool exists once arq's main() has started
            self._scripts = QueueScripts(self.pool, self.queue_name)
        return self._scripts

    @property
    def stopping(self) -> bool:
        return self.drain.stopping

    def use_dead_letters(self, dead_letters: DeadLetters) -> None:
        self.finishing.dead_letters = dead_letters

    def request_stop(self, signum: signal.Signals) -> None:
        """Instead of arq's handle_sig / handle_sig_wait_for_completion: see drain.py."""
        self.drain.request(signum)

    async def _job_started(self, ctx: dict[str, Any]) -> None:
        # arq's on_job_start hook: run_job has counted the try and is about to call the job.
        self.intake.job_started(ctx["job_id"])

    # --- Taking jobs; Redis outages ---

    async def _poll_iteration(self) -> None:
        """Wraps arq's private Worker._poll_iteration (called by Worker.main once per poll):
        waits for a free slot first, and backs off on a Redis error instead of ending main()."""
        await self.intake.wait_for_free_slot()
        await self.backoff.run(super()._poll_iteration)

    async def start_jobs(self, job_ids: list[bytes]) -> None:
        """Replaces Worker.start_jobs: the same checks, one claim script per batch (intake.py)."""
        await self.intake.start_jobs(self.scripts, job_ids)

    # --- Finishing jobs ---

    async def run_job(self, job_id: str, score: int) -> None:
        """Wraps Worker.run_job: a Redis error while the job ran loses its result, but the job is
        still queued and runs again once its in-progress key expires. Not an outage to back off
        from, and not a reason to end the poll loop (arq re-raises task errors there)."""
        try:
            await super().run_job(job_id, score)
        except REDIS_ERRORS as error:
            log.warning(
                "job.result_not_stored", job_id=job_id, error=f"{type(error).__name__}: {error}"
            )
        finally:
            self.finishing.was_cut_off(job_id)  # forgotten even if finish_job never ran

    async def finish_job(
        self,
        job_id: str,
        finish: bool,
        result_data: bytes | None,
        result_timeout_s: float | None,
        keep_result_forever: bool,
        incr_score: int | None,
        keep_in_progress: float | None,
    ) -> None:
        """Worker.finish_job, with arq's seven parameters: a job that ran to its end is finished
        by one script (scripts.py) instead of a six-command transaction; a job arq's own timeout
        cut off is recorded as a dead letter first."""
        cut_off = self.finishing.was_cut_off(job_id)
        if finish and result_data:
            if cut_off:
                await self.finishing.record(job_id, result_data)
            if keep_in_progress is None:  # the usual end of a job (not a cron job)
                expire = None if keep_result_forever else result_timeout_s
                await self.scripts.finish(job_id, result_data, to_ms(expire))
                return
        await super().finish_job(
            job_id,
            finish,
            result_data,
            result_timeout_s,
            keep_result_forever,
            incr_score,
            keep_in_progress,
        )

    async def finish_failed_job(self, job_id: str, result_data: bytes | None) -> None:
        """Wraps Worker.finish_failed_job (arq's path for jobs it fails before running them):
        records the dead letter, then lets arq remove the job."""
        if result_data is not None:
            await self.finishing.record(job_id, result_data)
        await super().finish_failed_job(job_id, result_data)

    # --- Heartbeats; closing ---

    async def record_health(self) -> None:
        """Wraps Worker.record_health: this replica's own key on the same beat as arq's."""
        due = self.heartbeats.due()
        await super().record_health()
        if due:
            await self.heartbeats.beat()

    async def close(self) -> None:
        """Wraps Worker.close: after the drain, and without this replica's heartbeat."""
        await self.drain.finished()
        if self._pool is not None:  # arq's private pool: None before main() and after close()
            with contextlib.suppress(*REDIS_ERRORS):
                await self.heartbeats.forget()
        await super().close()
