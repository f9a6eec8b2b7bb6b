"""A replica frozen with SIGSTOP for three leases mid-run, then woken with SIGCONT: the other
replica takes its jobs over once its lease lapses, and the woken one's late results are discarded
(fencing). No order is placed twice, no total is wrong, nothing fails, no dead letter is written.

Each freeze lands with jobs in flight on the frozen replica: its slots hold jobs blocked on a row
lock the test holds (a customer row for `place_order`, order rows for a totals batch), released
while it is frozen, so its database work waits for it to wake, and the jobs the other replica took
over wait on that work too.
"""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections.abc import Iterator
from itertools import cycle, repeat

import pytest
from sqlalchemy import text

from jobs.client import JobOutcome, JobRequest
from tests.conftest import poll_until
from tests.faults.conftest import (
    BATCH_DEADLINE_S,
    CONCURRENCY,
    LEASE_S,
    FaultScenario,
    assert_batch_exact,
    logged,
    wait_for_batch,
    waiting_on_locks,
)
from worker.harness.checks import OrdersCheck, check_orders
from worker.harness.replicas import Replica, sample, scrape
from worker.harness.servers import free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

FREEZE_S = 3 * LEASE_S
ORDER_JOBS = 300
BLOCKED_CUSTOMER = 3
LOCK_CUSTOMER = text("SELECT id FROM customer WHERE id = :id FOR UPDATE")
DEAD_LETTERS = text("SELECT count(*) FROM failed_jobs")


def order_requests(count: int, customers: Iterator[int]) -> list[JobRequest]:
    """`place_order` jobs without idempotency keys: only the job id guards against a rerun."""
    items = [{"item_id": 1, "quantity": 2}, {"item_id": 3, "quantity": 1}]
    return [
        JobRequest(
            "place_order", {"customer_id": next(customers), "items": items}, uuid.uuid4().hex
        )
        for _ in range(count)
    ]


async def freeze(victim: Replica, while_frozen: asyncio.Future[None] | None = None) -> None:
    """SIGSTOP for FREEZE_S (the fault's length, not a wait for anything), then SIGCONT."""
    victim.process.send_signal(signal.SIGSTOP)
    try:
        if while_frozen is not None:
            await while_frozen
        await asyncio.sleep(FREEZE_S)
    finally:
        victim.process.send_signal(signal.SIGCONT)


def assert_taken_over(victim: Replica, survivor: Replica, blocked: list[str]) -> None:
    """The frozen replica's in-flight jobs moved to the other, whose outcome is the one kept."""
    reclaimed = {
        job_id for event in survivor.events("job.reclaimed") for job_id in event["job_ids"]
    }
    assert len(reclaimed & set(blocked)) >= CONCURRENCY, reclaimed
    lost = {event["job_id"] for event in victim.events("job.lease_lost")}
    assert lost and lost <= reclaimed, (lost, reclaimed)
    assert victim.alive() and survivor.alive(), victim.excerpt()


def assert_counted(
    ports: tuple[int, int], replicas: tuple[Replica, Replica], function: str, jobs: int
) -> None:
    """The metrics say the same: leases lost and reclaimed, and each job counted once, by the
    replica whose outcome was kept."""
    victim, survivor = replicas
    victim_samples, survivor_samples = scrape(ports[0]), scrape(ports[1])
    lost = len(victim.events("job.lease_lost"))
    reclaimed = sum(len(event["job_ids"]) for event in survivor.events("job.reclaimed"))
    assert sample(victim_samples, "orderworker_leases_lost_total") == lost > 0
    assert sample(survivor_samples, "orderworker_leases_reclaimed_total") == reclaimed
    successes = [
        sample(samples, "orderworker_jobs_total", function=function, outcome="success")
        for samples in (victim_samples, survivor_samples)
    ]
    assert sum(successes) == jobs, successes


async def test_a_frozen_replica_places_no_order_twice_and_no_job_fails(
    scenario: FaultScenario,
) -> None:
    ports = (free_port(), free_port())
    victim, survivor = await asyncio.gather(
        *(scenario.spawn(ORDERWORKER_WORKER__METRICS_PORT=str(port)) for port in ports)
    )
    client, engine = scenario.client, scenario.engine
    lock = await engine.connect()
    await lock.execute(LOCK_CUSTOMER, {"id": BLOCKED_CUSTOMER})
    blocked = order_requests(2 * CONCURRENCY, repeat(BLOCKED_CUSTOMER))
    await client.enqueue_many(blocked)
    # Every slot of both replicas holds an order waiting on the customer's row lock.
    await poll_until(lambda: waiting_on_locks(engine, 2 * CONCURRENCY), "orders blocked")
    others = order_requests(ORDER_JOBS, cycle([1, 2]))
    await client.enqueue_many(others)

    async def unlock() -> None:
        await lock.rollback()
        await lock.close()

    frozen_at = time.monotonic()
    await freeze(victim, asyncio.ensure_future(unlock()))
    job_ids = [request.job_id for request in blocked + others]
    outcomes: dict[str, JobOutcome] = {}

    async def all_finished() -> bool:
        outcomes.update(await client.outcomes(job_ids))
        return len(outcomes) == len(job_ids)

    await poll_until(all_finished, "every order job finished", BATCH_DEADLINE_S)
    print(
        f"\nSIGSTOP {FREEZE_S:g}s: {len(job_ids)} orders done {time.monotonic() - frozen_at:.1f}s"
    )

    assert [o.result for o in outcomes.values() if not o.success] == []
    async with engine.connect() as connection:
        assert (await connection.execute(DEAD_LETTERS)).scalar_one() == 0
    reported = {job_id: outcome.result.get("order_id") for job_id, outcome in outcomes.items()}
    placed = await check_orders(engine, reported)  # every order placed once, the one reported
    assert placed == OrdersCheck(jobs=len(job_ids), duplicates=0, lost=0, misreported=0)
    assert_taken_over(victim, survivor, [request.job_id for request in blocked])
    assert_counted(ports, (victim, survivor), "place_order", len(job_ids))


async def test_a_frozen_replica_leaves_a_totals_batch_exact(scenario: FaultScenario) -> None:
    victim, survivor = await asyncio.gather(scenario.spawn(), scenario.spawn())
    stalled = await scenario.stall(locked=2 * CONCURRENCY)
    await freeze(victim, asyncio.ensure_future(stalled.release()))
    summary = await wait_for_batch(stalled.run)
    await assert_batch_exact(summary, scenario.engine)  # every result a success, no dead letter
    assert_taken_over(victim, survivor, stalled.locked_job_ids)
    assert logged([victim, survivor], "dead_letter.recorded") == []
