"""One worker replica: arq's Worker with our lifecycle, dead letters, heartbeats, Redis reconnects
and a graceful drain on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import socket
import time
import uuid
from typing import Any

import structlog
from arq.constants import job_key_prefix, retry_key_prefix
from arq.utils import timestamp_ms, to_ms
from arq.worker import Worker
from sqlalchemy.ext.asyncio import AsyncEngine

from db.engine import create_engine, create_sessionmaker
from db.failed_jobs import FailureRecord, record_failure
from db.schema import current_revision
from jobs.connection import REDIS_ERRORS, redacted, redis_settings_from_url
from jobs.context import JobPolicy
from jobs.errors import describe, error_document
from jobs.functions import registry
from jobs.serialization import decode_result, make_deserializer, serialize
from worker import health
from worker.queue_scripts import QueueScripts
from worker.settings import Settings

log = structlog.get_logger("orderworker.worker")

MAX_RECONNECT_DELAY_S = 10.0
STARTUP_DB_ATTEMPTS = 5
DEAD_LETTER_TIMEOUT_S = 5.0
# How a failed job's result reads in our compact JSON (jobs.serialization.serialize).
FAILED_RESULT_MARKER = b'"s":false'


class StartupError(Exception):
    """The replica cannot start; the message says why in one line."""


class OrderWorker(Worker):
    def __init__(self, settings: Settings, **kwargs: Any) -> None:
        tuning = settings.worker
        super().__init__(
            functions=registry(tuning.job_timeout_s, tuning.max_tries),
            queue_name=settings.queue_name,
            redis_settings=redis_settings_from_url(settings.redis_dsn()),
            handle_signals=False,
            poll_delay=tuning.poll_delay_s,
            max_tries=tuning.max_tries,
            health_check_interval=tuning.health_interval_s,
            keep_result=tuning.keep_result_s,
            job_serializer=serialize,
            job_deserializer=make_deserializer(tuning.max_payload_bytes),
            log_results=False,
            **kwargs,
        )
        self.settings = settings
        self.replica_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.started_at = time.time()
        self.stopping = False
        self._redis_failures = 0
        self._drain_deadline = 0.0
        self._drain_task: asyncio.Task[None] | None = None
        self._slot_freed = asyncio.Event()
        self.on_startup = self._startup
        self.on_shutdown = self._shutdown

    async def _startup(self, ctx: dict[str, Any]) -> None:
        database = self.settings.database
        engine = create_engine(
            self.settings.database_dsn(),
            pool_size=database.pool_size,
            max_overflow=database.max_overflow,
            pool_timeout_s=database.pool_timeout_s,
            statement_cache_size=database.statement_cache_size,
            connect_timeout_s=database.connect_timeout_s,
            application_name=f"orderworker-{self.replica_id}",
        )
        await self._check_database(engine)
        ctx["engine"] = engine
        self._scripts = QueueScripts(self.pool, self.queue_name)
        ctx["sessionmaker"] = create_sessionmaker(engine)
        # For units of work that are one statement: no BEGIN/COMMIT round trips around it.
        ctx["single_statement_sessionmaker"] = create_sessionmaker(
            engine.execution_options(isolation_level="AUTOCOMMIT")
        )
        ctx["db_slots"] = asyncio.Semaphore(database.pool_size + database.max_overflow)
        ctx["policy"] = JobPolicy(
            job_timeout_s=self.settings.worker.job_timeout_s,
            max_tries=self.settings.worker.max_tries,
            retry_base_delay_s=self.settings.worker.retry_base_delay_s,
            retry_max_delay_s=self.settings.worker.retry_max_delay_s,
            subchunk_size=self.settings.totals.subchunk_size,
        )
        log.info(
            "worker.started",
            replica_id=self.replica_id,
            queue=self.queue_name,
            concurrency=self.max_jobs,
            redis=redacted(self.redis_settings) if self.redis_settings else "shared pool",
        )

    async def _check_database(self, engine: AsyncEngine) -> None:
        """Refuse to start against a database that is unreachable or not migrated."""
        attempts = STARTUP_DB_ATTEMPTS
        for attempt in range(1, attempts + 1):
            try:
                revision = await current_revision(engine)
                break
            except Exception as error:
                if attempt == attempts:
                    await engine.dispose()
                    raise StartupError(
                        f"database unreachable: {describe(error)['message']}"
                    ) from None
                log.warning("worker.database_unavailable", attempt=attempt, **describe(error))
                await asyncio.sleep(min(5.0, 0.5 * 2**attempt))
        if revision is None:
            await engine.dispose()
            raise StartupError("database has no schema: run `orderworker db upgrade` first")

    async def _shutdown(self, ctx: dict[str, Any]) -> None:
        engine = ctx.get("engine")
        if engine is not None:  # absent when startup failed
            await engine.dispose()

    # --- Redis outages: back off and carry on instead of dying on the first error ---

    async def _poll_iteration(self) -> None:
        await self._wait_for_free_slot()
        try:
            await super()._poll_iteration()
        except REDIS_ERRORS as error:
            self._redis_failures += 1
            delay = random.uniform(0, min(MAX_RECONNECT_DELAY_S, 0.2 * 2**self._redis_failures))
            log.warning(
                "worker.redis_unavailable",
                error=f"{type(error).__name__}: {error}",
                failures=self._redis_failures,
                retry_in_s=round(delay, 2),
            )
            await asyncio.sleep(delay)
        else:
            if self._redis_failures:
                log.info("worker.redis_recovered", after_failures=self._redis_failures)
            self._redis_failures = 0

    # --- Taking jobs ---

    async def _wait_for_free_slot(self) -> bool:
        """With every slot busy arq sleeps a whole poll period before it looks again, and slots
        sit idle once short jobs end. Wait for the first one to end instead; bounded, so the
        poll loop still beats its heartbeat. True if a slot is free and jobs may be taken (a
        SIGTERM during the wait means no)."""
        if self.allow_pick_jobs and self.job_counter >= self.max_jobs:
            self._slot_freed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.health_check_interval):
                    await self._slot_freed.wait()
        return self.allow_pick_jobs and self.job_counter < self.max_jobs

    def _release_sem_dec_counter_on_complete(self) -> None:
        super()._release_sem_dec_counter_on_complete()
        self._slot_freed.set()

    async def start_jobs(self, job_ids: list[bytes]) -> None:
        """arq's start_jobs with the claims batched (worker/queue_scripts.py): while ids remain,
        wait for a free slot, then claim as many ids as there are free slots in one round trip.
        A Redis error claims nothing, so no slot is taken for a job that never started."""
        pending = job_ids
        while pending and await self._wait_for_free_slot():
            claimed = await self._scripts.claim(
                pending,
                wanted=self.max_jobs - self.job_counter,
                now_ms=timestamp_ms(),
                in_progress_ttl_ms=int(self.in_progress_timeout_s * 1000),
            )
            pending = pending[claimed.examined :]
            for job_id, score in claimed.jobs:
                await self.sem.acquire()  # free at once: only this loop takes slots
                self.job_counter += 1
                task = self.loop.create_task(self.run_job(job_id, score))
                task.add_done_callback(lambda _: self._release_sem_dec_counter_on_complete())
                self.tasks[job_id] = task

    async def run_job(self, job_id: str, score: int) -> None:
        try:
            await super().run_job(job_id, score)
        except REDIS_ERRORS as error:
            # Redis went away while the job ran: its result is lost, but the job is still queued
            # and runs again once its in-progress key expires. Not a new outage to back off from.
            log.warning(
                "job.result_not_stored", job_id=job_id, error=f"{type(error).__name__}: {error}"
            )

    # --- Heartbeats: arq's queue-wide key plus one key per replica ---

    async def record_health(self) -> None:
        due = time.time() - self._last_health_check >= self.health_check_interval
        await super().record_health()
        if due:
            await health.beat(self.pool, self.heartbeat(), ttl_s=3 * self.health_check_interval)

    def unfinished_jobs(self) -> list[str]:
        # arq drops finished tasks from self.tasks only between polls: count the running ones.
        return [job_id for job_id, task in self.tasks.items() if not task.done()]

    def heartbeat(self) -> health.Heartbeat:
        return health.Heartbeat(
            replica_id=self.replica_id,
            host=socket.gethostname(),
            pid=os.getpid(),
            queue_name=self.queue_name,
            jobs_done=self.jobs_complete,
            jobs_failed=self.jobs_failed,
            jobs_retried=self.jobs_retried,
            in_flight=len(self.unfinished_jobs()),
            last_beat=time.time(),
            started_at=self.started_at,
        )

    # --- Finishing jobs; dead letters: every job that ends in failure is recorded in PostgreSQL ---

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
        if finish and result_data:
            await self._record_if_failed(job_id, result_data)
            if keep_in_progress is None:  # the usual end of a job: one script, not six commands
                expire = None if keep_result_forever else result_timeout_s
                await self._scripts.finish(job_id, result_data, to_ms(expire))
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
        if result_data is not None:
            await self._record_if_failed(job_id, result_data)
        await super().finish_failed_job(job_id, result_data)

    async def _record_if_failed(self, job_id: str, result_data: bytes) -> None:
        if FAILED_RESULT_MARKER not in result_data:  # most jobs succeed: no need to decode theirs
            return
        try:
            await self._record_failure(job_id, decode_result(result_data))
        except Exception as problem:
            # The failure stays visible in Redis as the job's result even if this write fails.
            log.error("dead_letter.not_recorded", job_id=job_id, **error_document(problem))

    async def _record_failure(self, job_id: str, stored: dict[str, Any]) -> None:
        if stored.get("s", True):
            return
        raw = await self.pool.get(job_key_prefix + job_id)
        result = stored.get("r")
        error: dict[str, Any] = result if isinstance(result, dict) else {}
        failure = FailureRecord(
            job_id=job_id,
            function=str(stored.get("f", "<unknown>")),
            queue_name=self.queue_name,
            payload=_payload_text(raw),
            error_code=str(error.get("code", "job_failed")),
            error_message=str(error.get("message", stored.get("r"))),
            tries=int(stored.get("t") or 1),
        )
        # Bounded like any job's database work, and never long enough to stall the worker.
        async with (
            asyncio.timeout(DEAD_LETTER_TIMEOUT_S),
            self.ctx["db_slots"],
            self.ctx["sessionmaker"].begin() as session,
        ):
            await record_failure(session, failure)
        log.warning("dead_letter.recorded", job_id=job_id, code=failure.error_code)

    # --- Graceful shutdown ---

    def request_stop(self, signum: signal.Signals) -> None:
        if self.stopping:  # a second signal cuts the grace period short
            log.info("worker.stopping_now", signal=signum.name)
            self._drain_deadline = 0.0
            return
        self.stopping = True
        self.allow_pick_jobs = False
        grace_s = self.settings.worker.shutdown_grace_s
        self._drain_deadline = time.monotonic() + grace_s
        log.info(
            "worker.draining",
            signal=signum.name,
            in_flight=len(self.unfinished_jobs()),
            grace_s=grace_s,
        )
        self._drain_task = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        while self.unfinished_jobs():
            if time.monotonic() >= self._drain_deadline:
                break
            await asyncio.sleep(0.05)
        unfinished = self.unfinished_jobs()
        for job_id in unfinished:
            self.tasks[job_id].cancel()
        if unfinished:
            await asyncio.gather(
                *(self.tasks[job_id] for job_id in unfinished), return_exceptions=True
            )
            await self._give_back_tries(unfinished)
        log.info("worker.drained", requeued=len(unfinished))
        if self.main_task is not None:
            self.main_task.cancel()

    async def _give_back_tries(self, job_ids: list[str]) -> None:
        """Jobs cut off by the grace period run again later without losing a try."""
        try:
            async with self.pool.pipeline(transaction=False) as pipe:
                for job_id in job_ids:
                    pipe.decr(retry_key_prefix + job_id)
                await pipe.execute()
        except REDIS_ERRORS as error:
            log.warning("worker.tries_not_restored", error=str(error))

    async def close(self) -> None:
        if self._pool is not None:
            with contextlib.suppress(*REDIS_ERRORS):
                await health.forget(self.pool, self.queue_name, self.replica_id)
        await super().close()


def _payload_text(raw: bytes | None) -> str | None:
    if raw is None:
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


async def run_replica(settings: Settings, *, burst: bool = False) -> None:
    """Run until SIGTERM/SIGINT (drain, then exit) or, with burst, until the queue is empty."""
    worker = OrderWorker(settings, burst=burst, max_jobs=settings.worker.concurrency)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, worker.request_stop, signum)
    try:
        await worker.async_run()
    except asyncio.CancelledError:
        if not worker.stopping:
            raise
    finally:
        await worker.close()
        log.info(
            "worker.stopped",
            replica_id=worker.replica_id,
            jobs_done=worker.jobs_complete,
            jobs_failed=worker.jobs_failed,
            jobs_retried=worker.jobs_retried,
        )
