"""Finishing jobs: dead letters for the failures arq decides itself.

arq 0.28.0 `Worker.run_job` fails a job without our runner in two ways: before it runs (expired,
undecodable, unknown function, max tries exceeded; all through `finish_failed_job`) and when its
own timeout cuts the job off (`finish_job` with a TimeoutError result). The runner never saw
either, so they are recorded here, from the result arq stored.

A replica whose lease may have lapsed (it was frozen, or cut off from Redis) asks, before it
starts a job it claimed, whether the claim is still its own; a job another replica took over is
handed back to arq as `RetryJob` (arq's "cancelled, will be run again"), whose finish the lease
then fences off: the job body does not run twice.

With metrics on, the same wrapper times each run and notes whether the function returned: the
outcome arq then decides (`finish_job`'s `finish`) is counted from that (`outcome`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

from arq.worker import Function, RetryJob

from jobs.serialization import decode_result
from worker.arq_seam.dead_letters import DeadLetters
from worker.metrics import UNKNOWN_FUNCTION, Outcome, ReplicaMetrics


class Finishing:
    def __init__(self, metrics: ReplicaMetrics | None = None) -> None:
        self.dead_letters: DeadLetters | None = None  # set once the database is reachable
        self.metrics = metrics
        self._cut_off: set[str] = set()
        # With metrics: job id -> (function, whether it returned), until arq finishes the job.
        self._ran: dict[str, tuple[str, bool]] = {}
        # Whether a job is still ours to start; set by the worker once its pool exists.
        self.still_ours: Callable[[str], Awaitable[bool]] | None = None

    def track(self, function: Function) -> Function:
        """The function arq runs, noting jobs cancelled mid-run (arq's timeout, a drain)."""
        coroutine, name = function.coroutine, function.name
        cut_off, ran, metrics = self._cut_off, self._ran, self.metrics
        finishing = self

        async def tracked(ctx: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
            still_ours = finishing.still_ours
            if still_ours is not None and not await still_ours(ctx["job_id"]):
                raise RetryJob()
            if metrics is None:
                try:
                    return await coroutine(ctx, *args, **kwargs)
                except asyncio.CancelledError:
                    cut_off.add(ctx["job_id"])
                    raise
            if ctx["job_try"] == 1:  # enqueue to start: a retry's wait would hold its backoff
                metrics.job_started(name, time.time() - ctx["enqueue_time"].timestamp())
            started, returned = time.perf_counter(), False
            try:
                result = await coroutine(ctx, *args, **kwargs)
                returned = True
                return result
            except asyncio.CancelledError:
                cut_off.add(ctx["job_id"])
                raise
            finally:
                metrics.job_ran(name, time.perf_counter() - started)
                ran[ctx["job_id"]] = (name, returned)

        return replace(function, coroutine=tracked)

    def outcome(self, job_id: str, finish: bool) -> tuple[str, Outcome]:
        """The job's function and outcome, as arq decided it; asked once, when it finishes."""
        function, returned = self._ran.pop(job_id, (UNKNOWN_FUNCTION, False))
        if not finish:
            return function, "retried"
        return function, "success" if returned else "failed"

    def count(self, function: str, outcome: Outcome) -> None:
        if self.metrics is not None:
            self.metrics.job_finished(function, outcome)

    def was_cut_off(self, job_id: str) -> bool:
        """Whether the job's run ended in a cancel; asked once, when arq finishes the job."""
        if job_id not in self._cut_off:
            return False
        self._cut_off.discard(job_id)
        return True

    def forget(self, job_id: str) -> None:
        """When the job's task ends, whether or not arq finished it."""
        self._cut_off.discard(job_id)
        self._ran.pop(job_id, None)

    async def record(self, job_id: str, result_data: bytes) -> None:
        if self.dead_letters is not None:
            await self.dead_letters.record_stored_result(job_id, result_data)


def function_of(result_data: bytes | None) -> str:
    """The function named in a result arq failed the job with (rare: no cost per job)."""
    try:
        return str(decode_result(result_data or b"").get("f", UNKNOWN_FUNCTION))
    except Exception:
        return UNKNOWN_FUNCTION
