"""Redis restarted mid-batch: replicas reconnect with backoff and carry on (they never exit), the
batch completes, with AOF no job enqueued before the restart is lost, and no job runs twice: the
results of jobs that finished while Redis was away are kept and written once it is back, and no
replica takes over another's jobs before it had a lease to renew its own. One restart serves two
pairs of replicas at once, each on its own database and queue: at a low concurrency, and at the
full default one (which must also resume promptly, with nothing logged at error level)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import pytest

from jobs.batches import chunk_job_id
from tests.conftest import poll_until, queued_ids
from tests.faults.conftest import (
    BATCH_DEADLINE_S,
    CHUNK_SIZE,
    CONCURRENCY,
    FaultScenario,
    NewScenario,
    PrivateStack,
    StalledBatch,
    assert_batch_exact,
    job_done_counts,
    job_tries,
    totals_reach,
    wait_for_batch,
)
from worker.harness.replicas import Replica
from worker.liveness import live_replicas
from worker.replica import MAX_RECONNECT_DELAY_S

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

FULL_CONCURRENCY = 20  # the default
# Once Redis is back, a replica sleeps at most one reconnect delay before it takes jobs again.
RESUME_BOUND_S = MAX_RECONNECT_DELAY_S + 2


@dataclass
class MidBatch:
    """A pair of replicas at `concurrency` with a stalled batch, when Redis goes down."""

    scenario: FaultScenario
    concurrency: int
    workers: list[Replica]
    stalled: StalledBatch
    queued: set[str]  # chunks not yet started
    recovered_s: float = 0.0  # from Redis being back to both replicas taking jobs again


async def _replicas(scenario: FaultScenario, concurrency: int) -> list[Replica]:
    env = {
        "ORDERWORKER_WORKER__CONCURRENCY": str(concurrency),
        "ORDERWORKER_DATABASE__POOL_SIZE": str(concurrency),
        "ORDERWORKER_WORKER__BATCH_SLOTS": str(concurrency),
        "ORDERWORKER_DATABASE__BATCH_CONNECTIONS": str(concurrency),
    }
    return list(await asyncio.gather(scenario.spawn(**env), scenario.spawn(**env)))


async def _stall_mid_batch(
    scenario: FaultScenario, concurrency: int, workers: list[Replica]
) -> MidBatch:
    stalled = await scenario.stall(locked=2 * concurrency)
    client = scenario.client
    queued = await queued_ids(client.redis, client.queue_name)
    assert len(queued) > 2 * concurrency  # chunks not yet started, besides the blocked ones
    return MidBatch(scenario, concurrency, workers, stalled, queued)


async def _committed_during_the_outage(batch: MidBatch) -> None:
    # The blocked chunks now commit their totals but cannot store their results: each replica
    # keeps them in memory and writes them once Redis is back, so these chunks never run again.
    await batch.stalled.release()
    committed = batch.stalled.totals_at_stall + 2 * batch.concurrency * CHUNK_SIZE
    engine = batch.scenario.engine
    await poll_until(lambda: totals_reach(engine, committed), "blocked chunks committed")


async def _reconnected(batch: MidBatch, back_at: float, deadline_s: float) -> None:
    await poll_until(
        lambda: all(worker.events("worker.redis_recovered") for worker in batch.workers),
        f"every replica at concurrency {batch.concurrency} reconnected",
        deadline_s,
    )
    batch.recovered_s = time.monotonic() - back_at


async def _completed_exactly(batch: MidBatch, back_at: float) -> None:
    summary = await wait_for_batch(batch.stalled.run, BATCH_DEADLINE_S)
    print(
        f"\nRedis restart, concurrency {batch.concurrency}: replicas reconnected "
        f"{batch.recovered_s:.1f}s after Redis was back; "
        f"batch complete after {time.monotonic() - back_at:.1f}s"
    )
    await assert_batch_exact(summary, batch.scenario.engine)
    tries = await job_tries(batch.scenario.client.redis, sorted(batch.queued))
    assert set(tries) == batch.queued  # every job queued before the restart finished after it
    job_ids = [chunk_job_id(summary.batch_id, n) for n in range(summary.jobs)]
    # Ran once each: one try, one `job.done`; the blocked chunks' results waited out the outage.
    assert await job_tries(batch.scenario.client.redis, job_ids) == dict.fromkeys(job_ids, 1)
    assert job_done_counts(batch.workers, job_ids) == dict.fromkeys(job_ids, 1)
    for worker in batch.workers:
        assert worker.alive(), worker.excerpt()


def _turned_since(workers: list[Replica], since: float) -> bool:
    now = time.time()
    turned = {live.pid for live in live_replicas() if now - live.last_turn_age_s > since}
    return {worker.pid for worker in workers} <= turned


async def test_replicas_survive_a_redis_restart_resume_promptly_and_lose_no_enqueued_job(
    private_stack: PrivateStack, new_scenario: NewScenario
) -> None:
    scenarios = {CONCURRENCY: await new_scenario(), FULL_CONCURRENCY: await new_scenario()}
    replicas = await asyncio.gather(*(_replicas(s, n) for n, s in scenarios.items()))
    # Both batches stall at once: a chunk blocked for longer than its timeout frees its slot.
    low, full = await asyncio.gather(
        *(
            _stall_mid_batch(scenario, n, workers)
            for (n, scenario), workers in zip(scenarios.items(), replicas, strict=True)
        )
    )
    await asyncio.to_thread(private_stack.redis.stop)
    stopped_at = time.time()
    await asyncio.gather(_committed_during_the_outage(low), _committed_during_the_outage(full))
    # Keep Redis down until every replica has hit the outage in its own poll loop: a restart
    # quicker than that would be hidden by the client's reconnects and prove nothing.
    workers = low.workers + full.workers
    await poll_until(
        lambda: all(worker.events("worker.redis_unavailable") for worker in workers),
        "every replica saw the outage",
    )
    for worker in workers:
        assert worker.alive(), worker.excerpt()
    # Liveness (`health --live`) never depends on Redis: the loops turn on through the outage.
    turned = "every replica's loop turned while Redis was down"
    await poll_until(lambda: _turned_since(workers, stopped_at), turned)
    await asyncio.to_thread(private_stack.redis.start)
    back_at = time.monotonic()
    await asyncio.gather(
        _reconnected(low, back_at, BATCH_DEADLINE_S), _reconnected(full, back_at, RESUME_BOUND_S)
    )
    await asyncio.gather(_completed_exactly(low, back_at), _completed_exactly(full, back_at))

    assert full.recovered_s < RESUME_BOUND_S
    for worker in full.workers:
        errors = [event for event in worker.events() if event.get("level") == "error"]
        assert errors == [], [event["event"][:120] for event in errors]
