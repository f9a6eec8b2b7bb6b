"""Finishing jobs: dead letters for the failures arq decides itself.

arq 0.28.0 `Worker.run_job` fails a job without our runner in two ways: before it runs (expired,
undecodable, unknown function, max tries exceeded; all through `finish_failed_job`) and when its
own timeout cuts the job off (`finish_job` with a TimeoutError result). The runner never saw
either, so they are recorded here, from the result arq stored.

A replica whose lease may have lapsed (it was frozen, or cut off from Redis) asks, before it
starts a job it claimed, whether the claim is still its own; a job another replica took over is
handed back to arq as `RetryJob` (arq's "cancelled, will be run again"), whose finish the lease
then fences off: the job body does not run twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

from arq.worker import Function, RetryJob

from worker.arq_seam.dead_letters import DeadLetters


class Finishing:
    def __init__(self) -> None:
        self.dead_letters: DeadLetters | None = None  # set once the database is reachable
        self._cut_off: set[str] = set()
        # Whether a job is still ours to start; set by the worker once its pool exists.
        self.still_ours: Callable[[str], Awaitable[bool]] | None = None

    def track(self, function: Function) -> Function:
        """The function arq runs, noting jobs cancelled mid-run (arq's timeout, a drain)."""
        coroutine = function.coroutine
        cut_off = self._cut_off
        finishing = self

        async def tracked(ctx: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
            still_ours = finishing.still_ours
            if still_ours is not None and not await still_ours(ctx["job_id"]):
                raise RetryJob()
            try:
                return await coroutine(ctx, *args, **kwargs)
            except asyncio.CancelledError:
                cut_off.add(ctx["job_id"])
                raise

        return replace(function, coroutine=tracked)

    def was_cut_off(self, job_id: str) -> bool:
        """Whether the job's run ended in a cancel; asked once, when arq finishes the job."""
        if job_id not in self._cut_off:
            return False
        self._cut_off.discard(job_id)
        return True

    async def record(self, job_id: str, result_data: bytes) -> None:
        if self.dead_letters is not None:
            await self.dead_letters.record_stored_result(job_id, result_data)
