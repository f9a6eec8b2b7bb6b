"""The typed context arq hands to every job: resources built once per worker, plus the job's ids."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, TypedDict

from arq import ArqRedis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker


@dataclass(frozen=True, slots=True)
class JobPolicy:
    job_timeout_s: float
    max_tries: int
    retry_base_delay_s: float
    retry_max_delay_s: float
    subchunk_size: int


class DeadLetterRecorder(Protocol):
    async def record_job_failure(
        self, ctx: JobContext, function: str, error: BaseException
    ) -> None:
        """Record a job that failed for good; never raises (a failure to record is logged)."""


class WorkerContext(TypedDict):
    redis: ArqRedis
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    # Sessions in autocommit mode: for work that is a single statement (its own transaction).
    single_statement_sessionmaker: async_sessionmaker[AsyncSession]
    # Bounds concurrent database work across all jobs of this replica to the pool's size.
    db_slots: asyncio.Semaphore
    # Bounds the database work of batch sub-chunks (taken before db_slots) below the pool's
    # size, so an interactive job never waits for a connection behind a whole batch.
    batch_db_slots: asyncio.Semaphore
    policy: JobPolicy
    dead_letters: DeadLetterRecorder


class JobContext(WorkerContext):
    job_id: str
    job_try: int
    enqueue_time: datetime
    score: int
