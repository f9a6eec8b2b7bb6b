"""Fault tests: a private PostgreSQL and Redis that the tests restart (one pair for every fault
test: each restart ends with the server up again), 20,000 orders in a database per test (cloned
from a template seeded once), and real `orderworker worker` subprocesses the tests kill or stop.

Never the machine's shared servers, even when ORDERWORKER_TEST_* are set: these tests restart them.
A batch is stalled on purpose with row locks (`FaultScenario.stall`), so every fault lands
mid-batch with jobs in flight and jobs still queued, instead of whenever the timing allows.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import pytest
from arq.constants import result_key_prefix
from pydantic import SecretStr
from redis.asyncio import Redis
from sqlalchemy import bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY, BIGINT
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from db.engine import create_engine, create_sessionmaker
from db.migrate import upgrade_to_head
from db.seed import generate_orders, load_sample
from jobs.batches import BatchRun, BatchSummary, chunk_job_id, chunked
from jobs.client import OrderClient, new_batch_id
from jobs.connection import REDIS_ERRORS, redis_settings_from_url
from jobs.functions import ARQ_TIMEOUT_MARGIN_S
from tests.conftest import REPO_ROOT, cli_env
from worker.harness.checks import check_totals
from worker.harness.databases import admin_execute, create_database, drop_database
from worker.harness.polling import poll_until
from worker.harness.replicas import Replica
from worker.harness.servers import LocalStack, PrivatePostgres, PrivateRedis
from worker.settings import Settings

ORDER_COUNT = 20_000  # the 3 sample orders plus generated ones
CHUNK_SIZE = 200
CONCURRENCY = 4
# As short as the stalls allow: a chunk blocked on the test's locks must not time out before the
# fault lands (~1-2 s after the stall began, on a loaded machine): a timed-out chunk frees its slot
# and the batch moves on.
JOB_TIMEOUT_S = 3.0
# A killed or frozen replica's jobs move on this long after its last lease renewal: short, so the
# suite stays fast, and still three renewals long on a loaded machine.
LEASE_S = 1.0
# arq keeps a started job's in-progress key for its largest job timeout (ours plus a margin) plus
# 10 s: the backstop for a claim whose lease is never looked at again.
ARQ_IN_PROGRESS_EXTRA_S = 10.0
IN_PROGRESS_TTL_S = JOB_TIMEOUT_S + ARQ_TIMEOUT_MARGIN_S + ARQ_IN_PROGRESS_EXTRA_S
BATCH_DEADLINE_S = 45.0
RECONNECT_PAUSE_S = 0.2
WORKER_ENV = {
    "ORDERWORKER_WORKER__CONCURRENCY": str(CONCURRENCY),
    # The stalls block every slot with a batch chunk: batch jobs may take all of them here.
    "ORDERWORKER_WORKER__BATCH_SLOTS": str(CONCURRENCY),
    "ORDERWORKER_DATABASE__BATCH_CONNECTIONS": str(CONCURRENCY),
    "ORDERWORKER_WORKER__JOB_TIMEOUT_S": str(JOB_TIMEOUT_S),
    "ORDERWORKER_WORKER__LEASE_S": str(LEASE_S),
    "ORDERWORKER_WORKER__MAX_TRIES": "20",
    "ORDERWORKER_WORKER__RETRY_BASE_DELAY_S": "0.05",
    "ORDERWORKER_WORKER__RETRY_MAX_DELAY_S": "1.0",
}

ORDER_IDS = text("SELECT id FROM orders ORDER BY id")
COUNT_TOTALS = text("SELECT count(*) FROM order_totals")
LOCK_ORDERS = text("SELECT id FROM orders WHERE id = ANY(:ids) ORDER BY id FOR UPDATE").bindparams(
    bindparam("ids", type_=ARRAY(BIGINT))
)
WAITING_ON_LOCKS = text(
    "SELECT count(*) FROM pg_stat_activity"
    " WHERE datname = current_database() AND wait_event_type = 'Lock'"
)


@dataclass(frozen=True)
class PrivateStack:
    postgres: PrivatePostgres
    redis: PrivateRedis


@pytest.fixture(scope="session")
def private_stack() -> Iterator[PrivateStack]:
    root = Path(tempfile.mkdtemp(prefix="orderworker-faults-"))
    stack = LocalStack(root, name="faults", redis_fsync="always")
    try:
        with stack:
            assert stack.postgres is not None and stack.redis is not None
            yield PrivateStack(stack.postgres, stack.redis)
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
async def orders_template(private_stack: PrivateStack) -> AsyncIterator[str]:
    """A migrated database of ORDER_COUNT orders, seeded once; each test gets a copy of it."""
    admin_url = private_stack.postgres.admin_url
    name = f"faults_template_{uuid.uuid4().hex[:12]}"
    engine = create_engine(await create_database(admin_url, name))
    try:
        await upgrade_to_head(engine)
        async with create_sessionmaker(engine).begin() as session:
            await load_sample(session)
            await generate_orders(session, ORDER_COUNT - 3)
        async with engine.connect() as connection:
            autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
            await autocommit.execute(text("VACUUM ANALYZE"))  # copies start with statistics
    finally:
        await engine.dispose()
    # A database is copied only while nobody is connected to it: not even autovacuum, then.
    await admin_execute(admin_url, f"ALTER DATABASE {name} WITH ALLOW_CONNECTIONS false")
    yield name
    await drop_database(admin_url, name)


@dataclass
class StalledBatch:
    """A submitted batch whose `locked_job_ids` wait on row locks held by the test."""

    run: BatchRun
    locked_job_ids: list[str]
    totals_at_stall: int
    connection: AsyncConnection
    released: bool = field(default=False)

    async def release(self) -> None:
        """Roll back the locking transaction; after a database restart the locks are gone anyway."""
        if self.released:
            return
        self.released = True
        with contextlib.suppress(Exception):
            await self.connection.rollback()
        with contextlib.suppress(Exception):
            await self.connection.close()


@dataclass
class FaultScenario:
    """A database of ORDER_COUNT orders and a queue of their own, on the private stack, with the
    worker subprocesses and stalled batches started on them."""

    settings: Settings
    engine: AsyncEngine
    client: OrderClient
    log_dir: Path
    workers: list[Replica] = field(default_factory=list)
    stalled: list[StalledBatch] = field(default_factory=list)

    async def spawn(self, **extra_env: str) -> Replica:
        """Start an `orderworker worker` subprocess (ready once it logs worker.started)."""
        env = cli_env(self.settings, **{**WORKER_ENV, **extra_env})
        log_path = self.log_dir / f"worker-{len(self.workers)}.log"
        worker = Replica.spawn(env, log_path, cwd=REPO_ROOT)
        self.workers.append(worker)
        await poll_until(
            lambda: bool(worker.events("worker.started")) or not worker.alive(), "worker start"
        )
        assert worker.alive(), f"worker exited at start:\n{worker.excerpt()}"
        return worker

    async def stall(self, locked: int) -> StalledBatch:
        """Submit a batch of every order in CHUNK_SIZE chunks, with `locked` chunks blocked on row
        locks; return once all of them are waiting. arq picks due jobs in (score, job id) order
        and all chunks share one score, so the locked chunks are the middle ones in job-id order:
        chunks before them are done, chunks after them are still queued while the workers' slots
        are all blocked."""
        async with self.engine.connect() as connection:
            ids = list((await connection.execute(ORDER_IDS)).scalars())
        chunks = list(chunked(ids, CHUNK_SIZE))
        run = BatchRun(self.client, new_batch_id())
        pick_order = sorted(range(len(chunks)), key=lambda n: chunk_job_id(run.summary.batch_id, n))
        first = (len(chunks) - locked) // 2
        locked_chunks = pick_order[first : first + locked]
        connection = await self.engine.connect()
        locked_ids = [order_id for n in locked_chunks for order_id in chunks[n]]
        await connection.execute(LOCK_ORDERS, {"ids": locked_ids})
        job_ids = [chunk_job_id(run.summary.batch_id, n) for n in locked_chunks]
        batch = StalledBatch(run, job_ids, 0, connection)
        self.stalled.append(batch)
        await run.submit_chunks(chunks)
        await poll_until(lambda: waiting_on_locks(self.engine, locked), "chunks blocked on locks")
        batch.totals_at_stall = await count_totals(self.engine)
        return batch

    async def close(self) -> None:
        for batch in self.stalled:
            await batch.release()
        for worker in self.workers:
            worker.kill()
        await self.client.close()
        await self.engine.dispose()


NewScenario = Callable[..., Awaitable[FaultScenario]]


@pytest.fixture
async def new_scenario(
    private_stack: PrivateStack, orders_template: str, tmp_path: Path
) -> AsyncIterator[NewScenario]:
    """Make fault scenarios, each on a copy of the orders template; all are closed after."""
    admin_url = private_stack.postgres.admin_url
    made: list[tuple[str, FaultScenario]] = []

    async def new(redis_url: str | None = None) -> FaultScenario:
        """On the private stack's Redis, or on the Redis at `redis_url` when given."""
        name = f"faults_{uuid.uuid4().hex[:12]}"
        database_url = await create_database(admin_url, name, template=orders_template)
        redis_url = redis_url or private_stack.redis.url
        settings = Settings(
            database_url=SecretStr(database_url),
            redis_url=SecretStr(redis_url),
            queue_name=f"faults:{uuid.uuid4().hex[:12]}:queue",
        )
        redis_settings = redis_settings_from_url(redis_url)
        client = await OrderClient.connect(redis_settings, settings.queue_name)
        scenario = FaultScenario(
            settings, create_engine(database_url), client, tmp_path / f"scenario-{len(made)}"
        )
        made.append((name, scenario))
        return scenario

    yield new
    for name, scenario in made:
        await scenario.close()
        await drop_database(admin_url, name)


@pytest.fixture
async def scenario(new_scenario: NewScenario) -> FaultScenario:
    return await new_scenario()


async def waiting_on_locks(engine: AsyncEngine, expected: int) -> bool:
    async with engine.connect() as connection:
        return int((await connection.execute(WAITING_ON_LOCKS)).scalar_one()) == expected


async def count_totals(engine: AsyncEngine) -> int:
    async with engine.connect() as connection:
        return int((await connection.execute(COUNT_TOTALS)).scalar_one())


async def totals_reach(engine: AsyncEngine, count: int) -> bool:
    return await count_totals(engine) == count


async def wait_for_batch(run: BatchRun, timeout_s: float = BATCH_DEADLINE_S) -> BatchSummary:
    """Wait for every chunk's result; a lost Redis connection (the producer's too) is retried."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            await run.wait(timeout_s=max(0.0, deadline - time.monotonic()))
        except REDIS_ERRORS:
            await asyncio.sleep(RECONNECT_PAUSE_S)  # Redis is down: pause between attempts
            continue
        return run.summary


async def assert_batch_exact(summary: BatchSummary, engine: AsyncEngine) -> None:
    """Nothing failed (no dead letters either), every order computed, every total exact."""
    assert summary.failed == [], summary.failed[:3]
    assert summary.computed == ORDER_COUNT
    assert summary.missing == []
    check = await check_totals(engine)
    assert (check.expected, check.stored, check.absent, check.wrong) == (ORDER_COUNT,) * 2 + (0, 0)
    assert check.dead_letters == 0
    assert summary.total_sum == Decimal(check.expected_sum)


async def job_tries(redis: Redis, job_ids: list[str]) -> dict[str, int]:
    """The try recorded in each finished job's stored result (arq's `t`)."""
    raw = await redis.mget([result_key_prefix + job_id for job_id in job_ids])
    return {
        job_id: int(json.loads(data)["t"])
        for job_id, data in zip(job_ids, raw, strict=True)
        if data is not None
    }


def job_done_counts(workers: list[Replica], job_ids: list[str]) -> dict[str, int]:
    """How many times each job ran to its end, over every replica: its `job.done` log lines."""
    counts = dict.fromkeys(job_ids, 0)
    for worker in workers:
        for event in worker.events("job.done"):
            if event.get("job_id") in counts:
                counts[event["job_id"]] += 1
    return counts


def logged(workers: list[Replica], event: str) -> list[dict[str, object]]:
    return [line for worker in workers for line in worker.events(event)]
