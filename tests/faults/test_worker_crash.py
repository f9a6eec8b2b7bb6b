"""A replica killed with SIGKILL mid-batch: its jobs run again on another replica once its lease
lapses, within `lease_s` plus a few seconds, not after arq's in-progress TTL."""

from __future__ import annotations

import asyncio
import signal
import time

import pytest
from arq.constants import in_progress_key_prefix

from tests.faults.conftest import (
    CHUNK_SIZE,
    CONCURRENCY,
    IN_PROGRESS_TTL_S,
    LEASE_S,
    ORDER_COUNT,
    FaultScenario,
    assert_batch_exact,
    job_tries,
    logged,
    wait_for_batch,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

# The victim's jobs are taken over once its lease lapses (LEASE_S after its last renewal); the
# margin covers the survivor's own blocked chunks, polling and the rest of the batch.
RECOVERY_BOUND_S = LEASE_S + 6


async def test_jobs_of_a_killed_replica_run_again_on_the_other_within_the_lease(
    scenario: FaultScenario,
) -> None:
    victim, survivor = await asyncio.gather(scenario.spawn(), scenario.spawn())
    # Every slot of both replicas holds a blocked chunk: the victim dies with CONCURRENCY in flight.
    stalled = await scenario.stall(locked=2 * CONCURRENCY)
    assert 0 < stalled.totals_at_stall < ORDER_COUNT - 2 * CONCURRENCY * CHUNK_SIZE
    holders = await scenario.client.redis.mget(
        [in_progress_key_prefix + job_id for job_id in stalled.locked_job_ids]
    )
    # Each claim names its replica (not arq's `1`): the victim's are taken over by that name.
    assert {holder.decode() for holder in holders if holder} == {
        event["replica_id"] for event in logged([victim, survivor], "worker.started")
    }

    victim.process.send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    assert await victim.exited(10) == -signal.SIGKILL
    await stalled.release()
    summary = await wait_for_batch(stalled.run)
    recovery_s = time.monotonic() - killed_at
    print(
        f"\nSIGKILL recovery: batch complete {recovery_s:.1f}s after the kill "
        f"(bound {RECOVERY_BOUND_S:.0f}s, lease {LEASE_S:g}s, arq's TTL {IN_PROGRESS_TTL_S:.0f}s)"
    )

    await assert_batch_exact(summary, scenario.engine)
    assert survivor.alive(), survivor.excerpt()
    tries = await job_tries(scenario.client.redis, stalled.locked_job_ids)
    rerun = [job_id for job_id, job_try in tries.items() if job_try >= 2]
    assert len(rerun) >= CONCURRENCY, tries  # the victim's in-flight chunks ran a second time
    reclaimed = {
        job_id for event in survivor.events("job.reclaimed") for job_id in event["job_ids"]
    }
    assert len(reclaimed & set(stalled.locked_job_ids)) >= CONCURRENCY, reclaimed
    assert recovery_s < RECOVERY_BOUND_S < IN_PROGRESS_TTL_S
