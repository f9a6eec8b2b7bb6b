"""A real replica's /metrics, scraped while it works: the jobs it counts are the results stored,
and the oldest-ready-age gauge follows a backlog up and back to 0 within 2 s each way."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from jobs.client import JobRequest, OrderClient
from tests.conftest import REPO_ROOT, cli_env, poll_until
from worker.harness.polling import DEADLINE_S
from worker.harness.replicas import Replica, Samples, sample, scrape, stop_all
from worker.harness.servers import free_port
from worker.settings import Settings

GAUGE_DEADLINE_S = 2.0  # the bound, each way
AGE = "orderworker_queue_oldest_ready_age_seconds"


def jobs_counted(samples: Samples, function: str, outcome: str) -> int:
    return int(sample(samples, "orderworker_jobs_total", function=function, outcome=outcome))


StartReplica = Callable[..., Awaitable[int]]


@pytest.fixture
async def metrics_replica(settings: Settings, tmp_path: Path) -> AsyncIterator[StartReplica]:
    """Start a worker process serving /metrics on a free port (its logs in a file: a pipe nobody
    reads would fill and stall it); the port, once it answers. Stopped after the test."""
    started: list[Replica] = []

    async def start(*args: str, **extra_env: str) -> int:
        port = free_port()
        env = cli_env(settings, ORDERWORKER_WORKER__METRICS_PORT=str(port), **extra_env)
        replica = Replica.spawn(env, tmp_path / f"replica-{len(started)}.log", *args, cwd=REPO_ROOT)
        started.append(replica)

        async def serving() -> bool:
            assert replica.alive(), replica.excerpt()
            try:
                await asyncio.to_thread(scrape, port)
            except OSError:
                return False
            return True

        await poll_until(serving, "the replica's /metrics")
        return port

    yield start
    assert stop_all(started, DEADLINE_S) == [0] * len(started)


async def test_jobs_counted_equal_results_stored_under_load(
    seeded: None,
    client: OrderClient,
    sessionmaker: async_sessionmaker[AsyncSession],
    metrics_replica: StartReplica,
) -> None:
    port = await metrics_replica()
    requests = [
        JobRequest("compute_order_total", {"order_id": 1 + n % 3}, f"ok-{n}") for n in range(600)
    ]
    requests += [
        JobRequest("compute_order_total", {"order_id": 999}, f"bad-{n}") for n in range(30)
    ]
    await client.enqueue_many(requests)
    job_ids = [request.job_id for request in requests]

    scrapes = []
    while len(outcomes := await client.outcomes(job_ids)) < len(job_ids):
        scrapes.append(await asyncio.to_thread(scrape, port))  # under load: as fast as it goes
        assert len(scrapes) < 2000, f"{len(outcomes)} of {len(job_ids)} jobs finished"
    final = await asyncio.to_thread(scrape, port)

    stored_ok = sum(outcome.success for outcome in outcomes.values())
    assert jobs_counted(final, "compute_order_total", "success") == stored_ok == 600
    assert jobs_counted(final, "compute_order_total", "failed") == len(job_ids) - stored_ok
    async with sessionmaker() as session:
        rows = (await session.execute(text("SELECT count(*) FROM failed_jobs"))).scalar_one()
    assert sample(final, "orderworker_dead_letters_total", code="unknown_order") == rows == 30
    count = sample(final, "orderworker_job_duration_seconds_count", function="compute_order_total")
    assert count == len(job_ids)
    waits = sample(final, "orderworker_job_wait_seconds_count", function="compute_order_total")
    assert waits == len(job_ids)
    counted = [jobs_counted(sample, "compute_order_total", "success") for sample in scrapes]
    assert counted == sorted(counted)  # a counter never goes back
    assert sample(final, "orderworker_jobs_in_flight") == 0
    assert sample(final, "orderworker_lane_slots", lane="interactive") == 20
    assert sample(final, "orderworker_lane_slots", lane="batch") == 2
    assert sample(final, "orderworker_lane_slots_in_use", lane="batch") == 0

    async def queue_empty() -> bool:  # the queue gauges may be up to a second old
        return sample(await asyncio.to_thread(scrape, port), "orderworker_queue_ready_jobs") == 0

    await poll_until(queue_empty, "the ready gauge at 0", GAUGE_DEADLINE_S)
    assert sample(final, "orderworker_leases_lost_total") == 0


async def test_the_oldest_ready_age_follows_a_backlog_up_and_down_within_2s(
    seeded: None,
    client: OrderClient,
    engine: AsyncEngine,
    metrics_replica: StartReplica,
) -> None:
    # One slot, and its job held by a row lock: whatever is enqueued next waits in the queue.
    port = await metrics_replica("--concurrency", "1", ORDERWORKER_WORKER__JOB_TIMEOUT_S="60")
    async with engine.connect() as blocker:
        await blocker.execute(text("INSERT INTO order_totals (order_id, total) VALUES (1, 0)"))
        held = await client.compute_order_total(1)

        async def gauge(predicate: Callable[[Samples], bool]) -> bool:
            return predicate(await asyncio.to_thread(scrape, port))

        await poll_until(
            lambda: gauge(lambda s: sample(s, "orderworker_jobs_in_flight") == 1), "the held job"
        )
        assert sample(await asyncio.to_thread(scrape, port), AGE) == 0
        backlog = [await client.compute_order_total(2 + n % 2) for n in range(20)]
        built = time.monotonic()
        await poll_until(lambda: gauge(lambda s: sample(s, AGE) > 0), "age up", GAUGE_DEADLINE_S)
        rose_after_s = time.monotonic() - built
        await poll_until(lambda: gauge(lambda s: sample(s, AGE) > 1.0), "age rising")
        samples = await asyncio.to_thread(scrape, port)
        assert sample(samples, "orderworker_queue_ready_jobs") == 20
        assert sample(samples, "orderworker_queue_in_progress_jobs") == 1
        await blocker.rollback()  # the held job goes on; the backlog drains behind it

    outcomes = [await client.wait(job_id, 30) for job_id in [held, *backlog]]
    assert all(outcome.success for outcome in outcomes)
    # Cleared: every job finished. The gauge reads 0 again within the bound.
    await poll_until(lambda: gauge(lambda s: sample(s, AGE) == 0), "age back", GAUGE_DEADLINE_S)
    assert rose_after_s <= GAUGE_DEADLINE_S


async def test_a_metrics_port_in_use_stops_the_replica_with_one_line(
    worker_processes: Callable[..., subprocess.Popen[str]],
) -> None:
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = worker_processes(ORDERWORKER_WORKER__METRICS_PORT=str(port))
        _, stderr = await asyncio.to_thread(process.communicate, timeout=DEADLINE_S)

    assert process.returncode == 1
    [line] = [line for line in stderr.splitlines() if line.startswith("orderworker:")]
    assert line.startswith(f"orderworker: startup_failed: metrics port {port}: ")
    assert "ORDERWORKER_WORKER__METRICS_PORT" in line
    assert "Traceback" not in stderr
