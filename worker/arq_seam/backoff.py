"""Redis outages: back off and carry on instead of dying on the first error.

arq 0.28.0 `Worker.main` lets any error of `_poll_iteration` end the worker; a replica waits out a
Redis restart instead, with jittered exponential backoff.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable

import structlog

from jobs.connection import REDIS_ERRORS

log = structlog.get_logger("orderworker.worker")

MAX_RECONNECT_DELAY_S = 10.0


class RedisBackoff:
    def __init__(self) -> None:
        self.failures = 0

    async def run(self, iteration: Callable[[], Awaitable[None]]) -> None:
        try:
            await iteration()
        except REDIS_ERRORS as error:
            self.failures += 1
            delay = random.uniform(0, min(MAX_RECONNECT_DELAY_S, 0.2 * 2**self.failures))
            log.warning(
                "worker.redis_unavailable",
                error=f"{type(error).__name__}: {error}",
                failures=self.failures,
                retry_in_s=round(delay, 2),
            )
            await asyncio.sleep(delay)
        else:
            self.succeeded()

    def succeeded(self) -> None:
        """Redis answered: the next outage starts from the shortest delay again."""
        if self.failures:
            log.info("worker.redis_recovered", after_failures=self.failures)
        self.failures = 0
