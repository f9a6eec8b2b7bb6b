"""arq's Worker with every override a replica makes, each delegating to one collaborator.

Each method says which arq 0.28.0 code it mirrors or wraps; `CHECKED_ARQ_VERSION` guards them.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from typing import Any, cast

import structlog
from arq.connections import ArqRedis, create_pool, log_redis_info
from arq.constants import in_progress_key_prefix
from arq.utils import to_ms
from arq.worker import Function, Worker
from arq.worker import logger as arq_logger

from jobs.connection import REDIS_ERRORS, close_sentinels
from jobs.lanes import Lane, lane_queue
from worker.arq_seam.backoff import MAX_RECONNECT_DELAY_S, RedisBackoff
from worker.arq_seam.dead_letters import DeadLetters
from worker.arq_seam.drain import Drain
from worker.arq_seam.finishing import Finishing, function_of
from worker.arq_seam.heartbeats import Heartbeats
from worker.arq_seam.intake import Intake
from worker.arq_seam.lane_claims import LaneClaims
from worker.arq_seam.lane_finish import LaneFinish
from worker.arq_seam.leases import LeaseKeeper
from worker.arq_seam.openings import CURRENT_OPENING, OpeningPool, take_opening
from worker.arq_seam.pending import PendingWrites
from worker.arq_seam.polling import Polling
from worker.arq_seam.scripts import QueueScripts
from worker.arq_seam.wakeups import Wakeups
from worker.arq_seam.wording import serialize_job_data
from worker.liveness import LivenessFile
from worker.metrics import ReplicaMetrics, SlotUse

log = structlog.get_logger("orderworker.worker")


class SeamWorker(Worker):
    def __init__(
        self,
        *,
        functions: list[Function],
        replica_id: str,
        shutdown_grace_s: float,
        batch_slots: int | None = None,
        lease_s: float = 2.0,
        metrics: ReplicaMetrics | None = None,
        **arq_options: Any,
    ) -> None:
        self.metrics = metrics
        self.finishing = Finishing(metrics)
        super().__init__(
            functions=[self.finishing.track(function) for function in functions],
            handle_signals=False,
            job_serializer=serialize_job_data,
            on_job_start=self._job_started,
            **arq_options,
        )
        if self.allow_abort_jobs:  # the claim does arq's opening without the abort check
            raise ValueError("a replica does not abort jobs: allow_abort_jobs must be False")
        self.replica_id = replica_id
        # Without a cap of their own (a worker that runs no batch jobs), batch jobs may fill it.
        self.intake = Intake(
            self, self.max_jobs if batch_slots is None else batch_slots, metrics=metrics
        )
        self.backoff = RedisBackoff()
        self.heartbeats = Heartbeats(self, replica_id, self.slot_use)
        self.drain = Drain(self, self.intake, shutdown_grace_s, lambda: self.scripts)
        self.leases = LeaseKeeper(self.queue_name, replica_id, lease_s)
        self.pending = PendingWrites()
        self.polling = Polling(
            self, self.intake, lambda: self.claims, lambda: self.scripts, self.pending, self.leases
        )
        self.wakeups = Wakeups(self.queue_name, self.intake.woken)
        self.lane_finish = LaneFinish(self.queue_name, replica_id)
        # A turn waits at most a health interval for a free slot or a backoff delay for Redis.
        stale_after_s = 3 * (self.health_check_interval + MAX_RECONNECT_DELAY_S)
        self.liveness = LivenessFile(replica_id, stale_after_s, self._liveness_unwritable)
        self._scripts: QueueScripts | None = None
        self._claims: LaneClaims | None = None
        self.finishing.still_ours = self._still_ours

    @property
    def pool(self) -> ArqRedis:
        """Worker.pool, except for the one read of it that opens a claimed job's run_job: that
        transaction was done by the claim (openings.py)."""
        opening = take_opening()
        if opening is not None:
            return cast(ArqRedis, OpeningPool(opening))
        return cast(ArqRedis, self._pool)

    @property
    def scripts(self) -> QueueScripts:
        if self._scripts is None:  # the pool exists once arq's main() has started
            self._scripts = QueueScripts(self.pool, self.queue_name, self.replica_id)
        return self._scripts

    @property
    def claims(self) -> LaneClaims:
        if self._claims is None:  # as scripts: once the pool exists
            self._claims = LaneClaims(self.pool, self.queue_name, self.replica_id)
        return self._claims

    def slot_use(self) -> SlotUse:
        """For the slot gauges, read on the metrics server's thread: plain integers only."""
        batch = self.intake.batch_running
        in_flight = self.job_counter
        lanes: dict[Lane, tuple[int, int]] = {
            "interactive": (max(0, in_flight - batch), self.max_jobs),
            "batch": (batch, self.intake.batch_slots),
        }
        return SlotUse(in_flight=in_flight, lanes=lanes)

    @property
    def stopping(self) -> bool:
        return self.drain.stopping

    def use_dead_letters(self, dead_letters: DeadLetters) -> None:
        self.finishing.dead_letters = dead_letters

    def request_stop(self, signum: signal.Signals) -> None:
        """Instead of arq's handle_sig / handle_sig_wait_for_completion: see drain.py."""
        self.drain.request(signum)

    async def _still_ours(self, job_id: str) -> bool:
        """One GET, and only while our lease may have lapsed: no round trip per job otherwise.
        Unsure (Redis unreachable) means yes: the finish is fenced anyway."""
        if not self.leases.lapsed():
            return True
        try:
            holder = await self.pool.get(in_progress_key_prefix + job_id)
        except REDIS_ERRORS:
            return True
        return holder is not None and holder.decode() == self.replica_id

    def _liveness_unwritable(self, error: OSError) -> None:
        log.warning("worker.liveness_unwritable", path=str(self.liveness.path), error=str(error))

    async def _job_started(self, ctx: dict[str, Any]) -> None:
        # arq's on_job_start hook: run_job has counted the try and is about to call the job.
        self.intake.job_started(ctx["job_id"])

    # --- Taking jobs; wake-ups; Redis outages ---

    async def main(self) -> None:
        """Replaces Worker.main: arq's startup, then our poll loop (polling.py) with the wake-up
        listener started, backing off on a Redis error instead of ending main()."""
        if self._pool is None:
            self._pool = await create_pool(
                self.redis_settings,
                job_deserializer=self.job_deserializer,
                job_serializer=self.job_serializer,
                default_queue_name=self.queue_name,
                expires_extra_ms=self.expires_extra_ms,
            )
        arq_logger.info(
            "Starting worker for %d functions: %s", len(self.functions), ", ".join(self.functions)
        )
        await log_redis_info(self.pool, arq_logger.info)
        self.ctx["redis"] = self.pool
        if self.on_startup:
            await self.on_startup(self.ctx)
        await self.leases.beat(self.pool)  # our lease exists before our first claim names us
        self.leases.start(self.pool)
        self.wakeups.start(self.pool)
        self.liveness.start()
        while True:
            await self.backoff.run(self._poll_iteration)
            self.liveness.turned()
            if self.burst and await self.polling.burst_done():
                await asyncio.gather(*self.tasks.values())
                return

    async def _poll_iteration(self) -> None:
        """Replaces arq's private Worker._poll_iteration: see polling.py."""
        await self.polling.iteration()

    # --- Finishing jobs ---

    async def run_job(self, job_id: str, score: int) -> None:
        """Wraps Worker.run_job: its opening transaction is answered from the claim (openings.py);
        a Redis error before the job's finish gives the claim back once Redis answers
        (pending.py). Not an outage to back off from, and not a reason to end the poll loop (arq
        re-raises task errors there)."""
        CURRENT_OPENING.set(self.intake.openings.pop(job_id, None))  # this task's context only
        try:
            await super().run_job(job_id, score)
        except REDIS_ERRORS as error:
            self.pending.keep(job_id, lambda: self.scripts.release([job_id]), error)
        finally:
            self.finishing.forget(job_id)  # even if finish_job never ran

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
        """Worker.finish_job, with arq's seven parameters, on the job's lane and only while the
        job's lease is ours: a job that ran to its end is finished by one script (scripts.py)
        instead of a six-command transaction; the rest by arq's transaction (lane_finish.py). A
        job arq's own timeout cut off is recorded as a dead letter first. Kept for later if
        Redis is unreachable (pending.py)."""
        requeued = self.drain.uncount_retry(job_id, finish)  # not counted as retried either
        cut_off = self.finishing.was_cut_off(job_id)
        function, outcome = self.finishing.outcome(job_id, finish)
        lane = self.intake.lane_of(job_id)  # now: the task's end forgets it

        async def write() -> None:
            if finish and result_data and cut_off:
                await self.finishing.record(job_id, result_data)
            if finish and result_data and keep_in_progress is None:  # not a cron job
                expire = None if keep_result_forever else result_timeout_s
                owned = await self.scripts.finish(job_id, result_data, to_ms(expire), lane)
            else:
                owned = await self.lane_finish.finish_job(
                    self.pool,
                    lane_queue(self.queue_name, lane),
                    job_id,
                    finish,
                    result_data,
                    result_timeout_s,
                    keep_result_forever,
                    incr_score,
                    keep_in_progress,
                )
            if self._owned(owned, job_id):
                if requeued:
                    self.drain.put_back(job_id)
                else:
                    self.finishing.count(function, outcome)

        await self.pending.attempt(job_id, write)

    async def finish_failed_job(self, job_id: str, result_data: bytes | None) -> None:
        """Worker.finish_failed_job (arq's path for jobs it fails before running them): records
        the dead letter, then removes the job from its lane as arq does (lane_finish.py), both
        only while the lease is ours."""
        lane = self.intake.lane_of(job_id)

        async def write() -> None:
            if result_data is not None:
                await self.finishing.record(job_id, result_data)
            owned = await self.lane_finish.finish_failed_job(
                self.pool,
                lane_queue(self.queue_name, lane),
                job_id,
                result_data,
                self.keep_result_forever,
                self.keep_result_s,
            )
            if self._owned(owned, job_id) and self.metrics is not None:
                self.metrics.job_finished(function_of(result_data), "failed")

        await self.pending.attempt(job_id, write)

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
        self.liveness.stop()
        await self.wakeups.close()
        await self.leases.close(self._pool)
        pool = self._pool  # arq's private pool: None before main() and after close()
        if pool is not None:
            with contextlib.suppress(*REDIS_ERRORS):
                await self.heartbeats.forget()
        await super().close()
        if pool is not None:
            await close_sentinels(pool)

    def _owned(self, owned: bool, job_id: str) -> bool:
        if not owned:  # another replica took the job over: its outcome is the one that counts
            log.warning("job.lease_lost", job_id=job_id)
            if self.metrics is not None:
                self.metrics.leases_lost.inc()
        return owned
