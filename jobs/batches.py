"""Batch totals from the producer's side: split ids into chunk jobs, enqueue them pipelined, follow
their results and sum them up. Shared by `orderworker totals` and `orderworker demo`."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.batches import BatchStatus, ChunkRecord, register_chunks
from jobs.client import JobRequest, OrderClient, new_batch_id
from jobs.connection import REDIS_ERRORS
from jobs.notices import FALLBACK_READ_S

FALLBACK_WINDOW = 1000  # oldest chunk results read per fallback read
ENQUEUE_IDS = 50_000  # order ids buffered per pipelined flush while paging
READ_TIMEOUT_S = 5.0  # one read of chunk results, at most
NAMED_CHUNK_IDS = 100  # a failed chunk up to this size is reported by its ids, else by its job id
LOST_CHECK_S = 5.0  # how often a wait looks for chunks Redis no longer holds
LOST = "job_lost"  # the error of a chunk Redis lost (with its data, or by expiry): it never runs


@dataclass(slots=True)
class BatchSummary(BatchStatus):
    """A batch as one producer submitted and followed it: its figures, plus its own counts."""

    jobs: int = 0
    finished_jobs: int = 0
    elapsed_s: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed


Progress = Callable[[BatchSummary], None]


CHUNK_PREFIX = "totals:"


def chunk_job_id(batch_id: str, index: int) -> str:
    # Deterministic ids: a chunk enqueued twice is one job, and its result is found by name.
    return f"{CHUNK_PREFIX}{batch_id}:{index}"


def chunked(order_ids: Iterable[int], chunk_size: int) -> Iterator[list[int]]:
    chunk: list[int] = []
    for order_id in order_ids:
        chunk.append(order_id)
        if len(chunk) >= chunk_size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


class ResultsUnreachableError(Exception):
    """Redis stayed unreachable longer than the wait allows: the batch itself runs on."""


class BatchRun:
    """One batch: submit its chunks (registered in PostgreSQL first when given `sessions`), then
    wait for every chunk's result."""

    def __init__(
        self,
        client: OrderClient,
        batch_id: str | None = None,
        sessions: async_sessionmaker[AsyncSession] | None = None,
    ) -> None:
        self.client = client
        self.summary = BatchSummary(batch_id=batch_id or new_batch_id())
        self.sessions = sessions
        self._pending: dict[str, list[int] | int] = {}
        self._unsent: list[JobRequest] = []
        self._unrecorded: list[ChunkRecord] = []
        self._started = time.monotonic()
        self._unreachable_since: float | None = None

    async def submit_chunks(self, chunks: Iterable[list[int]]) -> None:
        for chunk in chunks:
            self._take(chunk)
        await self._flush(seal=True)

    async def submit_pages(self, pages: AsyncIterator[list[int]]) -> None:
        """Enqueue pages as they arrive; with --all the ids are never all held at once."""
        buffered = 0
        try:
            async for page in pages:
                self._take(page)
                buffered += len(page)
                # The first page goes out at once: replicas start on it while the rest is paged.
                if buffered >= ENQUEUE_IDS or self.summary.jobs == 1:
                    await self._flush(seal=False)
                    buffered = 0
        finally:
            # Interrupted or not, the pages taken are submitted and the batch sealed with them,
            # so it can finish.
            await self._flush(seal=True)

    def _take(self, chunk: list[int]) -> None:
        index = self.summary.jobs
        job_id = chunk_job_id(self.summary.batch_id, index)
        self.summary.jobs += 1
        self.summary.requested += len(chunk)
        # Keep the ids only for small chunks (to report them if the chunk fails); else the count.
        small = len(chunk) <= NAMED_CHUNK_IDS
        self._pending[job_id] = chunk if small else len(chunk)
        self._unrecorded.append(ChunkRecord(index, job_id, len(chunk), chunk if small else None))
        self._unsent.append(
            JobRequest(
                function="compute_batch_totals",
                kwargs={"order_ids": chunk, "batch_id": self.summary.batch_id},
                job_id=job_id,
            )
        )

    async def _flush(self, *, seal: bool) -> None:
        requests, records = self._unsent, self._unrecorded
        self._unsent, self._unrecorded = [], []
        write = asyncio.ensure_future(self._write(requests, records, seal))
        try:
            await asyncio.shield(write)
        except asyncio.CancelledError:
            await write  # a write begun is finished: the batch's record and the queue agree
            raise

    async def _write(
        self, requests: list[JobRequest], records: list[ChunkRecord], seal: bool
    ) -> None:
        # Recorded before enqueued: a chunk never reports progress for a batch nobody knows.
        if self.sessions is not None:
            async with self.sessions.begin() as session:
                await register_chunks(session, self.summary.batch_id, records, seal=seal)
        if requests:
            await self.client.enqueue_many(requests)

    async def wait(
        self,
        progress: Progress | None = None,
        timeout_s: float | None = None,
        unreachable_s: float | None = None,
    ) -> None:
        """Until every chunk has a result: read the notified ones, and a fallback window. Raises
        ResultsUnreachableError once Redis has been unreachable for `unreachable_s`."""
        if not self._report(None):
            return
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        notices = self.client.notices
        with notices.watching(list(self._pending)) as watch:
            await notices.subscribed(min(FALLBACK_READ_S, timeout_s or FALLBACK_READ_S))
            watch.drain()
            # Once subscribed, every result stored earlier is read once; later ones are notified.
            await self._read(list(self._pending))
            next_fallback = time.monotonic() + FALLBACK_READ_S
            next_lost_check = time.monotonic() + LOST_CHECK_S
            while self._report(progress) and not self._timed_out(deadline):
                now = time.monotonic()
                until = next_fallback if deadline is None else min(next_fallback, deadline)
                await watch.wait(until - now)
                notified, resync = watch.drain()
                job_ids = [job_id for job_id in notified if job_id in self._pending]
                if resync:
                    job_ids = list(self._pending)  # resubscribed: notices may have been lost
                elif time.monotonic() >= next_fallback:
                    # Results stored without a notice: look at the oldest chunks, as they finish
                    # roughly in submission order.
                    job_ids.extend(itertools.islice(self._pending, FALLBACK_WINDOW))
                    next_fallback = time.monotonic() + FALLBACK_READ_S
                await self._read(list(dict.fromkeys(job_ids)))
                if time.monotonic() >= next_lost_check:
                    await self._give_up_lost()
                    next_lost_check = time.monotonic() + LOST_CHECK_S
                self._check_reachable(unreachable_s)

    async def _read(self, job_ids: list[str]) -> None:
        if not job_ids:
            return  # no command sent: says nothing about whether Redis is back
        try:
            # Bounded: a frozen Redis answers nothing, and never closes the connection either.
            async with asyncio.timeout(READ_TIMEOUT_S):
                finished = await self.client.outcomes(job_ids)
        except REDIS_ERRORS:  # TimeoutError among them
            # Redis restarting: the results are still coming, the fallback reads again.
            self._unreachable_since = self._unreachable_since or time.monotonic()
            return
        self._unreachable_since = None
        for job_id, outcome in finished.items():
            chunk = self._pending.pop(job_id, None)
            if chunk is None:
                continue  # read twice (notified and in the window): counted once
            self.summary.finished_jobs += 1
            if outcome.success:
                self.summary.computed += int(outcome.result["computed"])
                self.summary.missing.extend(outcome.result["missing"])
                self.summary.total_sum += Decimal(outcome.result["total_sum"])
            else:
                self.summary.failed.append({**_where(job_id, chunk), "error": outcome.result})

    async def _give_up_lost(self) -> None:
        """Chunks Redis holds neither queued nor finished will never finish: failed, by name.
        Their results are read before they are looked for, so a chunk just done is not lost."""
        try:
            async with asyncio.timeout(READ_TIMEOUT_S):
                lost = await self.client.unknown(list(self._pending))
        except REDIS_ERRORS:  # TimeoutError among them: looked for again later
            return
        message = "no longer in Redis (expired, or lost with Redis's data); submit its orders again"
        for job_id in lost:
            where = _where(job_id, self._pending.pop(job_id))
            self.summary.failed.append({**where, "error": {"code": LOST, "message": message}})

    def _check_reachable(self, unreachable_s: float | None) -> None:
        since = self._unreachable_since
        if unreachable_s is None or since is None or time.monotonic() - since < unreachable_s:
            return
        raise ResultsUnreachableError(
            f"Redis unreachable for {unreachable_s:g}s while waiting for batch "
            f"{self.summary.batch_id}"
        )

    def _report(self, progress: Progress | None) -> bool:
        """Show progress; True while chunks are pending."""
        self.summary.elapsed_s = time.monotonic() - self._started
        summary = self.summary
        if self._pending:
            summary.state = "running" if summary.finished_jobs else "queued"
        else:
            summary.state = "failed" if summary.failed else "done"
        if progress is not None:
            progress(self.summary)
        return bool(self._pending)

    def _timed_out(self, deadline: float | None) -> bool:
        if deadline is None or time.monotonic() < deadline:
            return False
        for job_id in self._pending:
            self.summary.failed.append(
                {"job_id": job_id, "error": {"code": "timeout", "message": "not finished"}}
            )
        self._pending.clear()
        return True


def _where(job_id: str, chunk: list[int] | int) -> dict[str, Any]:
    """How a failed chunk is named: by its ids when it is small enough to list, else its job id."""
    return {"order_ids": chunk} if isinstance(chunk, list) else {"job_id": job_id}
