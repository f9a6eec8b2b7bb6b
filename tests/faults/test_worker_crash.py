"""A replica killed with SIGKILL mid-batch: its jobs run again on another replica within a bound."""

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
    ORDER_COUNT,
    FaultScenario,
    assert_batch_exact,
    job_tries,
    wait_for_batch,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

# A lost job waits for its in-progress key to expire (IN_PROGRESS_TTL_S after it started), then
# runs on the surviving replica; the margin covers polling and the rest of the batch.
RECOVERY_BOUND_S = IN_PROGRESS_TTL_S + 10


async def test_jobs_of_a_killed_replica_run_again_on_the_other_within_the_bound(
    scenario: FaultScenario,
) -> None:
    victim, survivor = await asyncio.gather(scenario.spawn(), scenario.spawn())
    # Every slot of both replicas holds a blocked chunk: the victim dies with CONCURRENCY in flight.
    stalled = await scenario.stall(locked=2 * CONCURRENCY)
    assert 0 < stalled.totals_at_stall < ORDER_COUNT - 2 * CONCURRENCY * CHUNK_SIZE
    in_progress_ms = await scenario.client.redis.pttl(
        in_progress_key_prefix + stalled.locked_job_ids[0]
    )
    assert 0 < in_progress_ms <= IN_PROGRESS_TTL_S * 1000  # the bound below rests on this expiry

    victim.process.send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    assert await victim.exited(10) == -signal.SIGKILL
    await stalled.release()
    summary = await wait_for_batch(stalled.run)
    recovery_s = time.monotonic() - killed_at
    print(
        f"\nSIGKILL recovery: batch complete {recovery_s:.1f}s after the kill "
        f"(bound {RECOVERY_BOUND_S:.0f}s, in-progress expiry {IN_PROGRESS_TTL_S:.0f}s)"
    )

    await assert_batch_exact(summary, scenario.engine)
    assert survivor.alive(), survivor.excerpt()
    tries = await job_tries(scenario.client.redis, stalled.locked_job_ids)
    rerun = [job_id for job_id, job_try in tries.items() if job_try >= 2]
    assert len(rerun) >= CONCURRENCY, tries  # the victim's in-flight chunks ran a second time
    assert recovery_s < RECOVERY_BOUND_S
