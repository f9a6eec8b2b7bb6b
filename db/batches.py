"""Batches in PostgreSQL: registered as they are submitted, their figures summed from the rows
their chunk jobs write with their totals (db/totals.py), so a batch can be read back long after
its results left Redis."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from sqlalchemy import bindparam, insert, select, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import Batch, BatchChunk

ZERO = Decimal("0.00")
RECENT_BATCHES = 100  # how far back `running_batches` looks, newest first

State = Literal["queued", "running", "done", "failed"]


@dataclass(frozen=True, slots=True)
class ChunkRecord:
    index: int
    job_id: str
    order_count: int
    order_ids: list[int] | None  # kept for small chunks only, to name them if they fail


@dataclass(slots=True)
class BatchStatus:
    batch_id: str
    state: State = "queued"
    requested: int = 0
    computed: int = 0
    missing: list[int] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)
    total_sum: Decimal = ZERO
    chunks: int = 0
    chunks_done: int = 0  # chunk jobs finished, or failed for good: read by `running_batches`
    submitted_at: datetime | None = None
    updated_at: datetime | None = None

    def as_json(self) -> dict[str, Any]:
        """The fields of `orderworker totals --json`."""
        return {
            "batch_id": self.batch_id,
            "state": self.state,
            "requested": self.requested,
            "computed": self.computed,
            "missing": sorted(self.missing),
            "failed": self.failed,
            "total_sum": f"{self.total_sum:.2f}",
        }

    @property
    def finished(self) -> bool:
        return self.state in ("done", "failed")


async def register_chunks(
    session: AsyncSession, batch_id: str, chunks: Sequence[ChunkRecord], *, seal: bool
) -> None:
    """Record chunk jobs of a batch before they are enqueued (creating the batch on its first
    call); `seal` once the submission is over: its counts are then final. Never commits."""
    statement = postgresql.insert(Batch).values(
        batch_id=batch_id,
        requested=sum(chunk.order_count for chunk in chunks),
        chunks=len(chunks),
        sealed=seal,
    )
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=[Batch.batch_id],
            set_={
                "requested": Batch.requested + statement.excluded.requested,
                "chunks": Batch.chunks + statement.excluded.chunks,
                "sealed": statement.excluded.sealed,
                "updated_at": statement.excluded.updated_at,
            },
        )
    )
    if chunks:
        rows = [
            {
                "batch_id": batch_id,
                "chunk_index": chunk.index,
                "job_id": chunk.job_id,
                "order_count": chunk.order_count,
                "order_ids": chunk.order_ids,
            }
            for chunk in chunks
        ]
        await session.execute(insert(BatchChunk), rows)


# The batch's first chunk job to run sets it, every run of its chunks reads it: all of them
# split alike. Once set, it is only read: no row version and no row lock per chunk.
PIN_SUBCHUNK_SIZE = text(
    "WITH pinned AS (UPDATE batches SET subchunk_size = :size"
    " WHERE batch_id = :batch_id AND subchunk_size IS NULL RETURNING subchunk_size)"
    " SELECT subchunk_size FROM pinned"
    " UNION ALL SELECT subchunk_size FROM batches"
    " WHERE batch_id = :batch_id AND subchunk_size IS NOT NULL"
)
# After a race the statement above returns nothing: its read saw the row before the winner's
# update, which its own update then skipped. Read it again.
SUBCHUNK_SIZE = text("SELECT subchunk_size FROM batches WHERE batch_id = :batch_id")


async def batch_subchunk_size(session: AsyncSession, batch_id: str, size: int) -> int:
    """The sub-chunk size a chunk job of `batch_id` splits by: the one its batch's first chunk
    used, else `size` (which is then the batch's). A batch not registered takes `size`."""
    params = {"size": size, "batch_id": batch_id}
    pinned = await session.scalar(PIN_SUBCHUNK_SIZE, params)
    if pinned is None:
        pinned = await session.scalar(SUBCHUNK_SIZE, params)
    return size if pinned is None else int(pinned)


PROGRESS = text(
    """
    SELECT COALESCE(sum(requested), 0) AS accounted, COALESCE(sum(computed), 0) AS computed,
        COALESCE(sum(total_sum), 0) AS total_sum, max(recorded_at) AS last_recorded
    FROM batch_subchunks WHERE batch_id = :batch_id
    """
)
MISSING = text(
    """
    SELECT m.id FROM batch_subchunks s, unnest(s.missing) AS m(id)
    WHERE s.batch_id = :batch_id ORDER BY m.id
    """
)
# A chunk whose job failed for good is in failed_jobs under its job id (the job may also have
# committed some of its sub-chunks before it failed: those count, the rest never will).
FAILED_CHUNKS = text(
    """
    SELECT c.job_id, c.order_count, c.order_ids, f.error_code, f.error_message,
        (SELECT COALESCE(sum(s.requested), 0) FROM batch_subchunks s
         WHERE s.batch_id = c.batch_id AND s.job_id = c.job_id) AS accounted
    FROM batch_chunks c JOIN failed_jobs f ON f.job_id = c.job_id
    WHERE c.batch_id = :batch_id ORDER BY c.chunk_index
    """
)
# A chunk is done once its sub-chunks account for all its ids, or once its job failed for good.
CHUNKS_OF_BATCH = """
    WITH accounted AS (
        SELECT job_id, sum(requested) AS requested FROM batch_subchunks
        WHERE batch_id = :batch_id GROUP BY job_id
    ), chunk AS (
        SELECT c.job_id, c.chunk_index, COALESCE(a.requested, 0) >= c.order_count
            OR EXISTS (SELECT 1 FROM failed_jobs f WHERE f.job_id = c.job_id) AS done
        FROM batch_chunks c LEFT JOIN accounted a ON a.job_id = c.job_id
        WHERE c.batch_id = :batch_id
    )
"""
CHUNKS_DONE = text(f"{CHUNKS_OF_BATCH} SELECT count(*) FROM chunk WHERE done")
# Only once its submission ended, and a while ago: until then a chunk may be recorded here and not
# yet enqueued (chunks are recorded first).
UNFINISHED_CHUNKS = text(
    f"""
    {CHUNKS_OF_BATCH}
    SELECT chunk.job_id FROM chunk JOIN batches b ON b.batch_id = :batch_id
    WHERE NOT chunk.done AND b.sealed AND b.updated_at < now() - make_interval(secs => :quiet_s)
    ORDER BY chunk.chunk_index
    """
)
RECENT = text(
    "SELECT batch_id FROM batches ORDER BY submitted_at DESC, batch_id DESC LIMIT :limit"
).bindparams(bindparam("limit"))


async def batch_status(session: AsyncSession, batch_id: str) -> BatchStatus | None:
    """How a batch stands, read in one snapshot; None if no batch has that id.

    Call on a session that has not begun its transaction yet."""
    await session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
    return await _status(session, batch_id)


async def running_batches(session: AsyncSession, limit: int = RECENT_BATCHES) -> list[BatchStatus]:
    """Queued and running batches among the `limit` most recently submitted, newest first, with
    their chunks done.

    Call on a session that has not begun its transaction yet."""
    await session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
    recent = (await session.execute(RECENT, {"limit": limit})).scalars().all()
    found = []
    for batch_id in recent:
        status = await _status(session, batch_id)
        if status is not None and not status.finished:
            status.chunks_done = int(await session.scalar(CHUNKS_DONE, {"batch_id": batch_id}) or 0)
            found.append(status)
    return found


async def _status(session: AsyncSession, batch_id: str) -> BatchStatus | None:
    batch = await session.scalar(select(Batch).where(Batch.batch_id == batch_id))
    if batch is None:
        return None
    values = {"batch_id": batch_id}
    progress = (await session.execute(PROGRESS, values)).one()
    failed_rows = (await session.execute(FAILED_CHUNKS, values)).all()
    status = BatchStatus(
        batch_id=batch_id,
        state="queued",
        requested=int(batch.requested),
        computed=int(progress.computed),
        missing=[int(order_id) for order_id in (await session.execute(MISSING, values)).scalars()],
        failed=[_failure(row) for row in failed_rows],
        total_sum=Decimal(progress.total_sum).quantize(ZERO),
        chunks=int(batch.chunks),
        submitted_at=batch.submitted_at,
        updated_at=max(batch.updated_at, progress.last_recorded or batch.updated_at),
    )
    # Ids of failed chunks that no sub-chunk accounted for: they will never be computed.
    lost = sum(max(0, int(row.order_count) - int(row.accounted)) for row in failed_rows)
    status.state = _state(batch.sealed, batch.requested, int(progress.accounted), lost, status)
    return status


async def unfinished_chunks(session: AsyncSession, batch_id: str, quiet_s: float) -> list[str]:
    """Job ids of the chunks of `batch_id` not done yet, once its submission has been over for
    `quiet_s` (none before)."""
    found = await session.scalars(UNFINISHED_CHUNKS, {"batch_id": batch_id, "quiet_s": quiet_s})
    return list(found)


def _state(sealed: bool, requested: int, accounted: int, lost: int, status: BatchStatus) -> State:
    if not sealed or accounted + lost < requested:
        return "running" if accounted or status.failed else "queued"
    return "failed" if status.failed else "done"


def _failure(row: Any) -> dict[str, Any]:
    where: dict[str, Any] = (
        {"order_ids": [int(order_id) for order_id in row.order_ids]}
        if row.order_ids is not None
        else {"job_id": row.job_id}
    )
    return {**where, "error": {"code": row.error_code, "message": row.error_message}}
