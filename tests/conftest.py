"""Shared fixtures. Integration tests run against real servers: ORDERWORKER_TEST_DATABASE_URL and
ORDERWORKER_TEST_REDIS_URL when set (CI), otherwise a private local stack started for the session.
With ORDERWORKER_TEST_POOLER_URL (a PgBouncer in front of that PostgreSQL) the product's connections
go through the pooler, while databases are still created and emptied on PostgreSQL directly.
Every test that asks for `database_url` gets a migrated, empty database of its own: a copy of a
migrated template, emptied again after its test and handed to the next one.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from redis.asyncio import Redis
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from db.engine import create_engine, create_sessionmaker
from db.migrate import upgrade_to_head
from db.seed import load_sample
from jobs.client import OrderClient
from jobs.connection import redis_settings_from_url
from jobs.lanes import lane_queue
from worker.harness.databases import (
    admin_execute,
    create_database,
    database_url_named,
    drop_database,
    empty_database,
)
from worker.harness.polling import DEADLINE_S, poll_until
from worker.harness.replicas import replica_env, worker_command
from worker.harness.servers import LocalStack
from worker.replica import OrderWorker
from worker.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[1]
# Re-exported for the test modules, which import them from here.
__all__ = ["admin_execute", "database_url_named", "poll_until"]


FAULTS_DIR = Path(__file__).with_name("faults")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test under tests/faults/ is marked `faults`: `pytest -m "not faults"` skips them.
    They share one private stack that they restart, so they all run in one xdist worker."""
    for item in items:
        if FAULTS_DIR in item.path.parents:
            item.add_marker(pytest.mark.faults)
            item.add_marker(pytest.mark.xdist_group("faults"))


POOLER_URL_VARIABLE = "ORDERWORKER_TEST_POOLER_URL"


@dataclass(frozen=True)
class Servers:
    admin_database_url: str
    redis_url: str
    pooler_url: str | None = None

    def product_url(self, direct_url: str) -> str:
        """How the product reaches a test database: through the pooler when there is one."""
        if self.pooler_url is None:
            return direct_url
        pooler = make_url(self.pooler_url)
        pooled = make_url(direct_url).set(host=pooler.host, port=pooler.port, query={})
        return pooled.render_as_string(hide_password=False)


async def _check_reachable(database_url: str, redis_url: str) -> None:
    engine = create_engine(database_url, connect_timeout_s=5)
    try:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
    finally:
        await engine.dispose()
    redis = Redis.from_url(redis_url, socket_connect_timeout=5)
    try:
        await redis.ping()
    finally:
        await redis.aclose()


@pytest.fixture(scope="session")
async def servers() -> AsyncIterator[Servers]:
    database_url = os.environ.get("ORDERWORKER_TEST_DATABASE_URL")
    redis_url = os.environ.get("ORDERWORKER_TEST_REDIS_URL")
    if database_url and redis_url:
        try:
            await _check_reachable(database_url, redis_url)
        except Exception as error:  # a configured server that is down is a failure, never a skip
            pytest.fail(f"test servers unreachable: {type(error).__name__}: {error}", pytrace=False)
        yield Servers(database_url, redis_url, os.environ.get(POOLER_URL_VARIABLE))
        return
    # One private stack per xdist worker: each has its own state folder.
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    stack = LocalStack(name=f"tests-{worker}", fresh_redis=True)
    urls = await asyncio.to_thread(stack.start)
    try:
        yield Servers(urls.database_url, urls.redis_url)
    finally:
        await asyncio.to_thread(stack.stop)


@pytest.fixture(scope="session")
async def template_database(servers: Servers) -> AsyncIterator[str]:
    name = f"orderworker_template_{os.getpid()}"
    engine = create_engine(await create_database(servers.admin_database_url, name, replace=True))
    try:
        await upgrade_to_head(engine)
    finally:
        await engine.dispose()
    yield name
    await drop_database(servers.admin_database_url, name)


@pytest.fixture(scope="session")
async def clean_databases(servers: Servers) -> AsyncIterator[list[str]]:
    """Databases copied from the template and emptied again after their test, ready for the next."""
    free: list[str] = []
    yield free
    for name in free:
        await drop_database(servers.admin_database_url, name)


@pytest.fixture
async def database_url(
    servers: Servers, template_database: str, clean_databases: list[str]
) -> AsyncIterator[str]:
    """A migrated, empty database for this test only: a copy of the template, or one emptied."""
    if clean_databases:
        url = database_url_named(servers.admin_database_url, clean_databases.pop())
    else:
        name = f"orderworker_test_{uuid.uuid4().hex[:12]}"
        url = await create_database(servers.admin_database_url, name, template=template_database)
    yield servers.product_url(url)
    await empty_database(url)
    clean_databases.append(str(make_url(url).database))


@pytest.fixture
async def empty_database_url(servers: Servers) -> AsyncIterator[str]:
    """A database with no tables at all, unlike `database_url` (cloned from a migrated one)."""
    name = f"orderworker_test_{uuid.uuid4().hex[:12]}"
    await admin_execute(servers.admin_database_url, f"CREATE DATABASE {name}")
    yield database_url_named(servers.admin_database_url, name)
    await admin_execute(servers.admin_database_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
async def engine(settings: Settings) -> AsyncIterator[AsyncEngine]:
    # The product's statement cache setting: 0 behind PgBouncer in transaction mode.
    cache_size = settings.database.statement_cache_size
    engine = create_engine(settings.database_dsn(), pool_size=5, statement_cache_size=cache_size)
    yield engine
    await engine.dispose()


@pytest.fixture
def sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return create_sessionmaker(engine)


@pytest.fixture
async def seeded(sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    """The seed service's sample data: orders 1, 2, 3 total 30.00, 12.00 and 0.00."""
    async with sessionmaker.begin() as session:
        await load_sample(session)


@pytest.fixture
def redis_url(servers: Servers) -> str:
    return servers.redis_url


@pytest.fixture
def queue_name() -> str:
    """A queue of this test's own: replicas and jobs of other tests never see it."""
    return f"test:{uuid.uuid4().hex[:12]}:queue"


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def settings(database_url: str, redis_url: str, queue_name: str) -> Settings:
    """Fast polling and short retry delays, so tests finish quickly."""
    return Settings(
        database_url=SecretStr(database_url),
        redis_url=SecretStr(redis_url),
        queue_name=queue_name,
        worker={  # type: ignore[arg-type]
            "poll_delay_s": 0.01,
            "health_interval_s": 0.5,
            "retry_base_delay_s": 0.01,
            "retry_max_delay_s": 0.05,
            "shutdown_grace_s": 5,
            "metrics_port": 0,  # tests run many replicas at once on one host
        },
        totals={"chunk_size": 100, "subchunk_size": 25},  # type: ignore[arg-type]
    )


@pytest.fixture
async def client(redis_url: str, queue_name: str) -> AsyncIterator[OrderClient]:
    client = await OrderClient.connect(redis_settings_from_url(redis_url), queue_name)
    yield client
    await client.close()


StartWorker = Callable[..., Awaitable[OrderWorker]]


@pytest.fixture
async def start_worker(settings: Settings) -> AsyncIterator[StartWorker]:
    """Start in-process worker replicas (real arq workers, real connections); stopped after."""
    running: list[tuple[OrderWorker, asyncio.Task[None]]] = []

    async def start(**overrides: Any) -> OrderWorker:
        worker_settings = settings.model_copy(update=overrides) if overrides else settings
        worker = OrderWorker(worker_settings, max_jobs=worker_settings.worker.concurrency)
        task = asyncio.create_task(worker.async_run())
        running.append((worker, task))
        await poll_until(lambda: worker.ctx.get("sessionmaker") is not None, "worker startup")
        return worker

    yield start
    for worker, task in running:
        if not task.done():
            worker.request_stop(signal.SIGTERM)
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, DEADLINE_S)
        await worker.close()


def cli_env(settings: Settings, **extra: str) -> dict[str, str]:
    """Environment for running `orderworker` as a subprocess against the test servers."""
    base = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
    # CLI tests are dominated by interpreter start-up: cache bytecode outside the repository.
    base.setdefault("PYTHONPYCACHEPREFIX", str(Path(tempfile.gettempdir()) / "orderworker-pycache"))
    # The test's own statement cache setting (0 behind PgBouncer), dropped with the rest above.
    cache_size = str(settings.database.statement_cache_size)
    cache = {"ORDERWORKER_DATABASE__STATEMENT_CACHE_SIZE": cache_size}
    fast = {
        "ORDERWORKER_WORKER__POLL_DELAY_S": "0.01",
        "ORDERWORKER_WORKER__HEALTH_INTERVAL_S": "0.5",
        "ORDERWORKER_WORKER__RETRY_BASE_DELAY_S": "0.01",
        "ORDERWORKER_WORKER__RETRY_MAX_DELAY_S": "0.05",
    }
    return replica_env(
        settings.database_dsn(),
        settings.redis_dsn(),
        settings.queue_name,
        base=base,
        inherit_settings=False,
        extra={**cache, **fast, **extra},
    )


def run_cli(
    *args: str, env: dict[str, str], stdin: str | None = None, timeout_s: float = 120
) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "worker", *args]
    options: dict[str, Any] = {"capture_output": True, "text": True, "cwd": REPO_ROOT}
    return subprocess.run(command, env=env, input=stdin, timeout=timeout_s, check=False, **options)


@pytest.fixture
def worker_processes(settings: Settings) -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """Start `orderworker worker` subprocesses; any still running are killed after the test."""
    started: list[subprocess.Popen[str]] = []

    def start(*args: str, **extra_env: str) -> subprocess.Popen[str]:
        process = subprocess.Popen(
            worker_command(*args),
            env=cli_env(settings, **extra_env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO_ROOT,
        )
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=DEADLINE_S)


async def queued_ids(redis: Redis, queue_name: str) -> set[str]:
    """Jobs waiting or running in either lane (a batch chunk may be in arq's queue until a
    replica moves it to the batch lane)."""
    lanes = [lane_queue(queue_name, "interactive"), lane_queue(queue_name, "batch")]
    return {job_id.decode() for lane in lanes for job_id in await redis.zrange(lane, 0, -1)}
