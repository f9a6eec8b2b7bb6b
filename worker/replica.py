"""One worker replica: its lifecycle (the engine, sessionmakers and policy its jobs share) on top of
arq's Worker as the seam changes it (worker/arq_seam/), and `run_replica` for the CLI."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import uuid
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from db.engine import create_engine, create_sessionmaker
from db.schema import SchemaMissingError, require_schema
from jobs.connection import name_connections, redacted, redis_settings_from_url
from jobs.context import JobPolicy, WorkerContext
from jobs.errors import describe, is_transient
from jobs.functions import registry
from jobs.serialization import make_deserializer
from worker.arq_seam.backoff import MAX_RECONNECT_DELAY_S
from worker.arq_seam.dead_letters import DeadLetters
from worker.arq_seam.worker import SeamWorker
from worker.metrics import MetricsServer, QueueCollector, ReplicaMetrics, SlotCollector
from worker.settings import Settings, at_most, settings_file

__all__ = [
    "MAX_RECONNECT_DELAY_S",
    "OrderWorker",
    "StartupError",
    "run_replica",
    "run_until_stopped",
]

log = structlog.get_logger("orderworker.worker")

STARTUP_DB_ATTEMPTS = 5


class StartupError(Exception):
    """The replica cannot start; the message says why in one line, `code` in one word."""

    def __init__(self, message: str, *, code: str = "startup_failed") -> None:
        super().__init__(message)
        self.code = code


class OrderWorker(SeamWorker):
    def __init__(self, settings: Settings, **kwargs: Any) -> None:
        tuning = settings.worker
        functions = registry(tuning.job_timeout_s, tuning.max_tries)
        super().__init__(
            functions=functions,
            metrics=ReplicaMetrics([f.name for f in functions]) if tuning.metrics_port else None,
            replica_id=f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}",
            shutdown_grace_s=tuning.shutdown_grace_s,
            batch_slots=_batch_slots(settings),
            lease_s=tuning.lease_s,
            queue_name=settings.queue_name,
            redis_settings=redis_settings_from_url(settings.redis_dsn()),
            poll_delay=tuning.poll_delay_s,
            max_tries=tuning.max_tries,
            health_check_interval=tuning.health_interval_s,
            keep_result=tuning.keep_result_s,
            job_deserializer=make_deserializer(tuning.max_payload_bytes),
            log_results=False,
            **kwargs,
        )
        self.settings = settings
        self.on_startup = self._startup
        self.on_shutdown = self._shutdown
        self.metrics_server: MetricsServer | None = None

    async def _startup(self, ctx: dict[str, Any]) -> None:
        await name_connections(self.pool, f"orderworker-{self.replica_id}")  # as in PostgreSQL
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
        ctx.update(self._worker_context(engine))
        if self.metrics is not None:
            self._serve_metrics(self.metrics)
        log.info(
            "worker.started",
            replica_id=self.replica_id,
            queue=self.queue_name,
            concurrency=self.max_jobs,
            batch_slots=self.intake.batch_slots,
            metrics_port=self.settings.worker.metrics_port or None,
            redis=redacted(self.redis_settings) if self.redis_settings else "shared pool",
            settings_file=str(path) if (path := settings_file()) else None,
        )

    def _serve_metrics(self, metrics: ReplicaMetrics) -> None:
        """The engine is in the context by now: shutdown disposes of it if this fails."""
        registry, port = metrics.registry, self.settings.worker.metrics_port
        registry.register(SlotCollector(self.slot_use))
        registry.register(QueueCollector(self.pool, self.queue_name, asyncio.get_running_loop()))
        server = MetricsServer(registry, port)
        try:
            server.start()
        except OSError as error:
            message = f"metrics port {port}: {error.strerror or error}"
            raise StartupError(f"{message} (set ORDERWORKER_WORKER__METRICS_PORT)") from None
        self.metrics_server = server

    def _worker_context(self, engine: AsyncEngine) -> WorkerContext:
        database, tuning = self.settings.database, self.settings.worker
        sessionmaker = create_sessionmaker(engine)
        db_slots = asyncio.Semaphore(database.pool_size + database.max_overflow)
        dead_letters = DeadLetters(
            self.pool,
            self.queue_name,
            sessionmaker,
            db_slots,
            replica_id=self.replica_id,
            metrics=self.metrics,
        )
        self.use_dead_letters(dead_letters)
        return WorkerContext(
            redis=self.pool,
            engine=engine,
            sessionmaker=sessionmaker,
            # For units of work that are one statement: no BEGIN/COMMIT round trips around it.
            single_statement_sessionmaker=create_sessionmaker(
                engine.execution_options(isolation_level="AUTOCOMMIT")
            ),
            db_slots=db_slots,
            batch_db_slots=asyncio.Semaphore(database.batch_connection_count()),
            policy=JobPolicy(
                job_timeout_s=tuning.job_timeout_s,
                max_tries=tuning.max_tries,
                retry_base_delay_s=tuning.retry_base_delay_s,
                retry_max_delay_s=tuning.retry_max_delay_s,
                subchunk_size=self.settings.totals.subchunk_size,
            ),
            dead_letters=dead_letters,
        )

    async def _check_database(self, engine: AsyncEngine) -> None:
        """Refuse to start against a database that is unreachable, refuses us or is not migrated.
        Only an unreachable one is waited for: a refused login or a missing schema stays so."""
        for attempt in range(1, STARTUP_DB_ATTEMPTS + 1):
            try:
                await require_schema(engine)
                return
            except SchemaMissingError as error:
                await engine.dispose()
                raise StartupError(str(error), code=error.code) from None
            except Exception as error:
                if attempt == STARTUP_DB_ATTEMPTS or not is_transient(error):
                    await engine.dispose()
                    document = describe(error)  # a DatabaseConnectError names host and port
                    raise StartupError(document["message"], code=document["code"]) from None
                log.warning("worker.database_unavailable", attempt=attempt, **describe(error))
                await asyncio.sleep(min(5.0, 0.5 * 2**attempt))

    async def _shutdown(self, ctx: dict[str, Any]) -> None:
        if self.metrics_server is not None:
            await self.metrics_server.stop()
            self.metrics_server = None
        engine = ctx.get("engine")
        if engine is not None:  # absent when startup failed
            await engine.dispose()


def _batch_slots(settings: Settings) -> int:
    # `--concurrency` replaces the concurrency after validation: check the pair again.
    tuning = settings.worker
    try:
        at_most(tuning.batch_slots, tuning.concurrency, "worker.concurrency")
    except ValueError as error:
        message = f"invalid setting ORDERWORKER_WORKER__BATCH_SLOTS: {error}"
        raise StartupError(message, code="invalid_setting") from None
    return tuning.batch_slot_count()


async def run_replica(settings: Settings, *, burst: bool = False) -> None:
    """Run until SIGTERM/SIGINT (drain, then exit) or, with burst, until the queue is empty."""
    worker = OrderWorker(settings, burst=burst, max_jobs=settings.worker.concurrency)
    # Bound before the signal handlers are added: the drain they start carries it too.
    structlog.contextvars.bind_contextvars(replica_id=worker.replica_id)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, worker.request_stop, signum)
    await run_until_stopped(worker)


async def run_until_stopped(worker: OrderWorker) -> None:
    """Run a replica to its end: a drain ends it without an error, whatever came in between.
    Every line it logs names it: the tasks it starts inherit the binding."""
    structlog.contextvars.bind_contextvars(replica_id=worker.replica_id)
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
