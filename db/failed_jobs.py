"""Dead letters: one row per failed job id; a repeated failure updates it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import Select, delete, func, select, tuple_
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import FailedJob

PAYLOAD_CAP_CHARS = 65_536

SelectT = TypeVar("SelectT", bound=Select[*tuple[Any, ...]])


@dataclass(frozen=True, slots=True)
class FailureRecord:
    job_id: str
    function: str
    queue_name: str
    payload: str | None
    error_code: str
    error_message: str
    tries: int


def _storable(value: str) -> str:
    # PostgreSQL text cannot hold NUL characters; keep them visible, escaped.
    return value.replace("\x00", "\\u0000")


async def record_failure(session: AsyncSession, failure: FailureRecord) -> None:
    """Upsert a dead letter. Never commits."""
    payload = None if failure.payload is None else _storable(failure.payload)
    if payload is not None and len(payload) > PAYLOAD_CAP_CHARS:
        payload = payload[:PAYLOAD_CAP_CHARS]
    values = {
        "job_id": failure.job_id,
        "function": _storable(failure.function)[:200],
        "queue_name": failure.queue_name,
        "payload": payload,
        "error_code": failure.error_code[:100],
        "error_message": _storable(failure.error_message),
        "tries": failure.tries,
    }
    statement = insert(FailedJob).values(values)
    statement = statement.on_conflict_do_update(
        index_elements=[FailedJob.job_id],
        set_={
            "function": statement.excluded.function,
            "payload": statement.excluded.payload,
            "error_code": statement.excluded.error_code,
            "error_message": statement.excluded.error_message,
            "tries": statement.excluded.tries,
            "last_failed_at": statement.excluded.last_failed_at,
        },
    )
    await session.execute(statement)


@dataclass(frozen=True, slots=True)
class FailureSummary:
    count: int
    first_failed_at: datetime | None
    last_failed_at: datetime | None


def _matching(
    query: SelectT, job_ids: Sequence[str] | None, codes: Sequence[str] | None
) -> SelectT:
    if job_ids is not None:
        query = query.where(FailedJob.job_id.in_(job_ids))
    if codes:
        query = query.where(FailedJob.error_code.in_(codes))
    return query


async def list_failures(
    session: AsyncSession,
    limit: int = 100,
    job_ids: Sequence[str] | None = None,
    codes: Sequence[str] | None = None,
) -> list[FailedJob]:
    query = select(FailedJob).order_by(FailedJob.last_failed_at.desc()).limit(limit)
    return list((await session.scalars(_matching(query, job_ids, codes))).all())


async def summarise_failures(
    session: AsyncSession, codes: Sequence[str] | None = None
) -> FailureSummary:
    """How many failures there are in all (not only the ones listed), and when they happened."""
    query = select(
        func.count(), func.min(FailedJob.first_failed_at), func.max(FailedJob.last_failed_at)
    ).select_from(FailedJob)
    count, first, last = (await session.execute(_matching(query, None, codes))).one()
    return FailureSummary(int(count), first, last)


async def failures_after(
    session: AsyncSession,
    after_job_id: str,
    limit: int,
    job_ids: Sequence[str] | None = None,
    codes: Sequence[str] | None = None,
) -> list[FailedJob]:
    """Keyset pages by job id: replaying every failure never loads them all at once."""
    query = (
        select(FailedJob)
        .where(FailedJob.job_id > after_job_id)
        .order_by(FailedJob.job_id)
        .limit(limit)
    )
    return list((await session.scalars(_matching(query, job_ids, codes))).all())


async def remove_replayed(session: AsyncSession, replayed: Sequence[FailedJob]) -> int:
    """Delete the dead letters of replayed jobs, unless one failed again since it was read: its
    new failure (a later `last_failed_at`) is kept."""
    if not replayed:
        return 0
    read = [(row.job_id, row.last_failed_at) for row in replayed]
    key = tuple_(FailedJob.job_id, FailedJob.last_failed_at)
    result = await session.execute(delete(FailedJob).where(key.in_(read)))
    return int(result.rowcount)  # type: ignore[attr-defined]


async def purge_failures(session: AsyncSession, older_than: timedelta) -> int:
    cutoff = func.now() - older_than  # the database's clock, the one that stamped the rows
    result = await session.execute(delete(FailedJob).where(FailedJob.last_failed_at < cutoff))
    return int(result.rowcount)  # type: ignore[attr-defined]


async def failure_counts_since(session: AsyncSession, within: timedelta) -> dict[str, int]:
    """Failed jobs whose last failure is within `within` of now, by error code."""
    cutoff = func.now() - within  # the database's clock, the one that stamped the rows
    query = (
        select(FailedJob.error_code, func.count())
        .where(FailedJob.last_failed_at >= cutoff)
        .group_by(FailedJob.error_code)
        .order_by(func.count().desc(), FailedJob.error_code)
    )
    return {code: int(count) for code, count in (await session.execute(query)).all()}
