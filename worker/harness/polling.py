"""Waiting with a deadline: the only way the harness and the tests wait for something to happen."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

DEADLINE_S = 30.0
POLL_INTERVAL_S = 0.02


async def poll_until(
    condition: Callable[[], bool | Awaitable[bool]],
    what: str,
    timeout_s: float = DEADLINE_S,
    interval_s: float = POLL_INTERVAL_S,
) -> None:
    """Wait for `condition` (a function, sync or async) to hold; AssertionError after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while True:
        outcome = condition()
        if not isinstance(outcome, bool):
            outcome = await outcome
        if outcome:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g}s waiting for {what}")
        await asyncio.sleep(interval_s)
