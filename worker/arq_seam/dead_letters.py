"""Dead letters: every job that ends in failure gets a row in PostgreSQL.

The job runner records the failures it classifies (jobs/runner.py); the seam records the ones arq
decides itself: `finish_failed_job` (undecodable payload, unknown function, expired, max tries
exceeded) and arq's own timeout (finishing.py). Either way the row holds the same fields. A
failure is recorded only while the job's in-progress key names this replica: a replica that woke
after its lease moved on does not record the job another replica now runs (leases.py).
"""

from __future__ import annotations

import asyncio
from typing import Any

import structlog
from arq.constants import in_progress_key_prefix, job_key_prefix
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.failed_jobs import FailureRecord, record_failure
from jobs.context import JobContext
from jobs.errors import error_document
from jobs.serialization import decode_result
from worker.metrics import ReplicaMetrics

log = structlog.get_logger("orderworker.worker")

DEAD_LETTER_TIMEOUT_S = 5.0


class DeadLetters:
    def __init__(
        self,
        redis: Redis,
        queue_name: str,
        sessionmaker: async_sessionmaker[AsyncSession],
        db_slots: asyncio.Semaphore,
        *,
        replica_id: str,
        metrics: ReplicaMetrics | None = None,
    ) -> None:
        self.redis = redis
        self.metrics = metrics
        self.replica_id = replica_id
        self.queue_name = queue_name
        self.sessionmaker = sessionmaker
        self.db_slots = db_slots

    async def record_job_failure(
        self, ctx: JobContext, function: str, error: BaseException
    ) -> None:
        """A failure the job runner classified (a JobError, a crash, retries given up)."""
        document = error_document(error)
        await self._record(
            ctx["job_id"],
            function=function,
            error_code=document["code"],
            error_message=document["message"],
            tries=ctx["job_try"],
        )

    async def record_stored_result(self, job_id: str, result_data: bytes) -> None:
        """A failure arq decided itself, as arq stored it: read back from its result."""
        try:
            stored = decode_result(result_data)
        except Exception as problem:
            log.error("dead_letter.not_recorded", job_id=job_id, **error_document(problem))
            return
        if stored.get("s", True):
            return
        result = stored.get("r")
        error: dict[str, Any] = result if isinstance(result, dict) else {}
        await self._record(
            job_id,
            function=str(stored.get("f", "<unknown>")),
            error_code=str(error.get("code", "job_failed")),
            error_message=str(error.get("message", result)),
            tries=int(stored.get("t") or 1),
        )

    async def _record(
        self, job_id: str, *, function: str, error_code: str, error_message: str, tries: int
    ) -> None:
        try:
            raw, holder = await self.redis.mget(
                [job_key_prefix + job_id, in_progress_key_prefix + job_id]
            )
            if holder is None or holder.decode() != self.replica_id:
                log.warning("job.lease_lost", job_id=job_id, dead_letter=error_code)
                return
            failure = FailureRecord(
                job_id=job_id,
                function=function,
                queue_name=self.queue_name,
                payload=_payload_text(raw),
                error_code=error_code,
                error_message=error_message,
                tries=tries,
            )
            # Bounded like any job's database work, and never long enough to stall the worker.
            async with (
                asyncio.timeout(DEAD_LETTER_TIMEOUT_S),
                self.db_slots,
                self.sessionmaker.begin() as session,
            ):
                await record_failure(session, failure)
        except Exception as problem:
            # The failure stays visible in Redis as the job's result even if this write fails.
            log.error("dead_letter.not_recorded", job_id=job_id, **error_document(problem))
            return
        log.warning("dead_letter.recorded", job_id=job_id, code=error_code)
        if self.metrics is not None:
            self.metrics.dead_letter(error_code)


def _payload_text(raw: bytes | None) -> str | None:
    if raw is None:
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
