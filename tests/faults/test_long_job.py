"""A job that runs far longer than a lease on a live replica keeps its lease and runs once: the
replica's liveness holds its claim, not the job's duration."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from arq.constants import result_key_prefix

from tests.faults.conftest import (
    LEASE_S,
    FaultScenario,
    assert_batch_exact,
    job_done_counts,
    job_tries,
    logged,
    wait_for_batch,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

RUN_S = 5 * LEASE_S
# Long enough for the blocked chunk: it must end because the test lets it, not by a timeout.
LONG_JOBS = {"ORDERWORKER_WORKER__JOB_TIMEOUT_S": str(4 * RUN_S)}


async def test_a_job_running_five_leases_on_a_live_replica_runs_once(
    scenario: FaultScenario,
) -> None:
    workers = list(await asyncio.gather(scenario.spawn(**LONG_JOBS), scenario.spawn(**LONG_JOBS)))
    stalled = await scenario.stall(locked=1)
    (job_id,) = stalled.locked_job_ids
    stalled_ms = time.time() * 1000  # the job is running: its statement waits on a lock
    await asyncio.sleep(RUN_S)  # the job's length: it holds its slot, its replica keeps beating
    released_ms = time.time() * 1000
    await stalled.release()
    summary = await wait_for_batch(stalled.run)

    await assert_batch_exact(summary, scenario.engine)
    # Why a run could be short comes first: a lease lost under load, a second try.
    assert logged(workers, "worker.lease_not_renewed") == []
    assert logged(workers, "job.reclaimed") == []
    assert logged(workers, "job.lease_lost") == []
    assert await job_tries(scenario.client.redis, [job_id]) == {job_id: 1}
    assert job_done_counts(workers, [job_id]) == {job_id: 1}
    stored = json.loads(await scenario.client.redis.get(result_key_prefix + job_id))
    # One run, from before the stall was seen until after its locks were released (the same
    # host's clock as the replica's).
    assert stored["st"] <= stalled_ms and stored["ft"] >= released_ms, (stalled_ms, released_ms)
