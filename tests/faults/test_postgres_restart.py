"""PostgreSQL restarted mid-batch: the jobs it cut off are retried, the batch completes, and both
replicas stay up."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.faults.conftest import (
    CHUNK_SIZE,
    CONCURRENCY,
    ORDER_COUNT,
    FaultScenario,
    PrivateStack,
    assert_batch_exact,
    wait_for_batch,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


async def test_jobs_cut_off_by_a_postgres_restart_are_retried_and_the_batch_completes(
    private_stack: PrivateStack,
    scenario: FaultScenario,
) -> None:
    workers = await asyncio.gather(scenario.spawn(), scenario.spawn())
    # Every slot holds a chunk inside an open transaction when the server goes down.
    stalled = await scenario.stall(locked=2 * CONCURRENCY)
    assert 0 < stalled.totals_at_stall < ORDER_COUNT - 2 * CONCURRENCY * CHUNK_SIZE

    restarted_at = time.monotonic()
    await asyncio.to_thread(private_stack.postgres.restart)
    restart_s = time.monotonic() - restarted_at
    await stalled.release()  # its session died with the restart; this only closes it
    summary = await wait_for_batch(stalled.run)
    print(
        f"\nPostgreSQL restart took {restart_s:.2f}s; "
        f"batch complete {time.monotonic() - restarted_at:.1f}s after it began"
    )

    await assert_batch_exact(summary, scenario.engine)
    for worker in workers:
        assert worker.alive(), worker.excerpt()
        assert worker.events("job.failed") == worker.events("job.gave_up") == []
    retried = [event for worker in workers for event in worker.events("job.retrying")]
    assert len(retried) >= 2 * CONCURRENCY  # each blocked chunk was retried at least once
