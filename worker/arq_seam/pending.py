"""Finishes that could not reach Redis: kept in memory and written once it answers again.

arq 0.28.0 `Worker.run_job` loses a job's result when `finish_job` meets a Redis error: the job is
still queued and runs again once its claim lapses. Here the finish (or, for a job whose opening
transaction failed, the give-back of its claim) waits in a bounded buffer instead, and the poll
loop writes it, still fenced by the lease, before it claims anything new (polling.py).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable

import structlog

from jobs.connection import REDIS_ERRORS

log = structlog.get_logger("orderworker.worker")

MAX_PENDING = 10_000

Write = Callable[[], Awaitable[None]]


class PendingWrites:
    def __init__(self, limit: int = MAX_PENDING) -> None:
        self.limit = limit
        self._writes: OrderedDict[str, Write] = OrderedDict()

    def __len__(self) -> int:
        return len(self._writes)

    async def attempt(self, job_id: str, write: Write) -> None:
        """Write now; if Redis is unreachable, keep the write for `flush`."""
        try:
            await write()
        except REDIS_ERRORS as error:
            self.keep(job_id, write, error)

    def keep(self, job_id: str, write: Write, error: BaseException) -> None:
        self._writes[job_id] = write
        self._writes.move_to_end(job_id)
        log.warning(
            "job.result_kept", job_id=job_id, error=f"{type(error).__name__}", pending=len(self)
        )
        while len(self._writes) > self.limit:
            dropped, _ = self._writes.popitem(last=False)
            # Its claim lapses with arq's TTL: the job runs again then.
            log.error("job.result_dropped", job_id=dropped, limit=self.limit)

    async def flush(self) -> None:
        """Write what was kept, oldest first; a Redis error stops here and keeps the rest."""
        if self._writes:
            log.info("job.results_flushing", pending=len(self))
        while self._writes:
            job_id, write = next(iter(self._writes.items()))
            await write()  # a Redis error propagates: the poll loop backs off and comes back
            self._writes.pop(job_id, None)
