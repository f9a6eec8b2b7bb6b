"""SIGTERM: a replica stops taking jobs, lets in-flight ones finish within the grace period, exits 0
with no traceback; a job cut off by the grace period is requeued without using up a try."""

from __future__ import annotations

import signal
import time

import pytest
from arq.constants import in_progress_key_prefix, retry_key_prefix

from tests.conftest import poll_until, queued_ids
from tests.faults.conftest import (
    CHUNK_SIZE,
    CONCURRENCY,
    ORDER_COUNT,
    FaultScenario,
    assert_batch_exact,
    count_totals,
    job_tries,
    totals_reach,
    wait_for_batch,
)
from worker.harness.replicas import Replica

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

# Jobs here wait on the test's row locks for a while; a long job timeout keeps them waiting.
SLOW_JOBS = {"ORDERWORKER_WORKER__JOB_TIMEOUT_S": "10"}
GRACE_S = 10.0
SHORT_GRACE_S = 0.5
EXIT_MARGIN_S = 5.0


async def test_sigterm_finishes_in_flight_jobs_takes_no_new_ones_and_exits_0(
    scenario: FaultScenario,
) -> None:
    draining = await scenario.spawn(ORDERWORKER_WORKER__SHUTDOWN_GRACE_S=str(GRACE_S), **SLOW_JOBS)
    stalled = await scenario.stall(locked=CONCURRENCY)
    queue = scenario.client.queue_name
    queued_at_stop = len(await queued_ids(scenario.client.redis, queue))
    assert queued_at_stop > CONCURRENCY  # jobs still waiting besides the blocked ones

    draining.process.send_signal(signal.SIGTERM)
    signalled_at = time.monotonic()
    await poll_until(lambda: bool(draining.events("worker.draining")), "worker.draining")
    await stalled.release()  # the in-flight jobs can finish now, inside the grace period
    assert await draining.exited(GRACE_S + EXIT_MARGIN_S) == 0, draining.excerpt()
    drain_s = time.monotonic() - signalled_at
    print(f"\nSIGTERM drain: exited 0 after {drain_s:.2f}s (grace {GRACE_S:g}s)")

    assert drain_s < GRACE_S
    assert_clean_log(draining)
    [started_draining] = draining.events("worker.draining")
    [drained] = draining.events("worker.drained")
    assert (started_draining["in_flight"], drained["requeued"]) == (CONCURRENCY, 0)
    assert drained["requeued_job_ids"] == []
    [started] = draining.events("worker.started")
    assert {line.get("replica_id") for line in draining.events()} == {started["replica_id"]}
    chunk_lines = [line for line in draining.events() if line.get("job") == "compute_batch_totals"]
    assert chunk_lines
    assert {line.get("batch_id") for line in chunk_lines} == {stalled.run.summary.batch_id}
    events = [event["event"] for event in draining.events()]
    finished_while_draining = events[events.index("worker.draining") :].count("job.done")
    assert finished_while_draining == CONCURRENCY
    # It took nothing new: exactly the in-flight chunks left the queue.
    assert len(await queued_ids(scenario.client.redis, queue)) == queued_at_stop - CONCURRENCY
    expected_totals = stalled.totals_at_stall + CONCURRENCY * CHUNK_SIZE
    assert await count_totals(scenario.engine) == expected_totals

    replacement = await scenario.spawn()
    summary = await wait_for_batch(stalled.run)
    await assert_batch_exact(summary, scenario.engine)
    assert replacement.alive(), replacement.excerpt()


async def test_a_job_cut_off_by_the_grace_period_is_requeued_without_using_a_try(
    scenario: FaultScenario,
) -> None:
    stopping = await scenario.spawn(
        ORDERWORKER_WORKER__SHUTDOWN_GRACE_S=str(SHORT_GRACE_S), **SLOW_JOBS
    )
    stalled = await scenario.stall(locked=1)
    [job_id] = stalled.locked_job_ids
    await poll_until(
        lambda: totals_reach(scenario.engine, ORDER_COUNT - CHUNK_SIZE), "every other chunk done"
    )
    redis = scenario.client.redis
    assert await redis.get(retry_key_prefix + job_id) == b"1"  # its first try is running

    stopping.process.send_signal(signal.SIGTERM)
    signalled_at = time.monotonic()
    assert await stopping.exited(SHORT_GRACE_S + EXIT_MARGIN_S) == 0, stopping.excerpt()
    print(f"\nSIGTERM cut-off: exited 0 after {time.monotonic() - signalled_at:.2f}s")

    assert_clean_log(stopping)
    [drained] = stopping.events("worker.drained")
    assert (drained["requeued"], drained["requeued_job_ids"]) == (1, [job_id])
    [stopped] = stopping.events("worker.stopped")
    assert stopped["jobs_retried"] == 0  # requeued by the drain, without using a try
    assert await redis.get(retry_key_prefix + job_id) == b"0"  # the try was given back
    assert not await redis.exists(in_progress_key_prefix + job_id)
    assert job_id in await queued_ids(redis, scenario.client.queue_name)  # still queued

    await stalled.release()
    successor = await scenario.spawn()
    summary = await wait_for_batch(stalled.run)
    await assert_batch_exact(summary, scenario.engine)
    assert await job_tries(redis, [job_id]) == {job_id: 1}
    assert successor.alive(), successor.excerpt()


def assert_clean_log(worker: Replica) -> None:
    """No traceback, no logged exception, nothing at error level."""
    assert "Traceback" not in worker.log(), worker.excerpt()
    bad = [e for e in worker.events() if "exception" in e or e["level"] in ("error", "critical")]
    assert bad == [], bad[:3]
