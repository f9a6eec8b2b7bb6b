"""`orderworker` operations run as subprocesses: db, health, worker start and stop, dead letters."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.engine import create_engine
from db.migrate import alembic_config
from jobs.client import OrderClient
from tests.conftest import (
    StartWorker,
    cli_env,
    poll_until,
    run_cli,
)
from worker.harness.servers import free_port
from worker.health import live_replicas
from worker.settings import Settings

Process = subprocess.CompletedProcess[str]


async def cli(settings: Settings, *args: str, **extra_env: str) -> Process:
    """Run `orderworker ARGS` off the event loop, so in-process workers keep working meanwhile."""
    return await asyncio.to_thread(run_cli, *args, env=cli_env(settings, **extra_env))


async def scalar(sessionmaker: async_sessionmaker[AsyncSession], sql: str) -> object:
    async with sessionmaker() as session:
        return (await session.execute(text(sql))).scalar_one()


# ---------------------------------------------------------------- db


async def test_db_upgrade_migrates_an_empty_database_and_is_idempotent(
    settings: Settings, empty_database_url: str
) -> None:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    for attempt in ("first", "second"):
        result = await cli(settings, "db", "upgrade", ORDERWORKER_DATABASE_URL=empty_database_url)
        assert result.returncode == 0, f"{attempt} run: {result.stderr}"
        assert result.stdout.strip() == f"database at revision {head}"
    engine = create_engine(empty_database_url)
    try:
        async with engine.connect() as connection:
            version = await connection.scalar(text("SELECT version_num FROM alembic_version"))
            tables = await connection.scalar(
                text(
                    "SELECT count(*) FROM unnest(ARRAY['orders', 'order_items', 'order_totals',"
                    " 'failed_jobs']) AS name WHERE to_regclass(name) IS NOT NULL"
                )
            )
    finally:
        await engine.dispose()
    assert version == head
    assert tables == 4


async def test_db_seed_loads_the_sample_orders_plus_generated_ones(
    settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    result = await cli(settings, "db", "seed", "--orders", "50")

    assert result.returncode == 0, result.stderr
    assert "53 orders in all" in result.stdout
    assert await scalar(sessionmaker, "SELECT count(*) FROM orders") == 53
    async with sessionmaker() as session:
        sample = await session.execute(
            text(
                "SELECT orders.id, orders.customer_id,"
                " COALESCE(SUM(item.price * order_items.quantity), 0)"
                " FROM orders LEFT JOIN order_items ON order_items.order_id = orders.id"
                " LEFT JOIN item ON item.id = order_items.item_id"
                " WHERE orders.id IN (1, 2, 3) GROUP BY orders.id ORDER BY orders.id"
            )
        )
        rows = [(order_id, customer_id, Decimal(total)) for order_id, customer_id, total in sample]
    assert rows == [(1, 1, Decimal("30.00")), (2, 3, Decimal("12.00")), (3, 2, Decimal("0.00"))]


# ---------------------------------------------------------------- health


def replica_count_is(redis: Redis, queue_name: str, expected: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return len(await live_replicas(redis, queue_name)) == expected

    return check


async def test_health_follows_a_replica_from_absent_to_live_and_back(
    settings: Settings, start_worker: StartWorker, redis: Redis
) -> None:
    absent = await cli(settings, "health")
    assert absent.returncode == 1
    assert "no live worker replica" in absent.stderr

    worker = await start_worker()
    await poll_until(replica_count_is(redis, settings.queue_name, 1), "the replica heartbeat")
    live = await cli(settings, "health", "--json")

    assert live.returncode == 0, live.stderr
    body = json.loads(live.stdout)
    assert body["healthy"] is True
    [replica] = body["replicas"]
    assert replica["replica_id"] == worker.replica_id
    assert replica["host"] == socket.gethostname()
    assert replica["jobs_done"] == 0
    assert replica["in_flight"] == 0
    assert time.time() - 60 < replica["last_beat"] <= time.time()

    # A stopped replica's key is deleted on close, or expires after three health intervals.
    worker.request_stop(signal.SIGTERM)
    await poll_until(replica_count_is(redis, settings.queue_name, 0), "the replica to leave")
    gone = await cli(settings, "health", "--json")

    assert gone.returncode == 1
    error = {"code": "no_live_replica", "message": "no live worker replica"}
    assert json.loads(gone.stdout) == {"healthy": False, "replicas": [], "error": error}
    assert gone.stderr == "orderworker: no_live_replica: no live worker replica\n"


# ---------------------------------------------------------------- worker start and stop


async def test_worker_refuses_to_start_with_no_urls_configured(tmp_path: Path) -> None:
    empty_settings = tmp_path / "settings.toml"
    empty_settings.write_text("")
    env = {key: value for key, value in os.environ.items() if not key.startswith("ORDERWORKER_")}
    env["ORDERWORKER_SETTINGS_FILE"] = str(empty_settings)

    result = await asyncio.to_thread(run_cli, "worker", env=env)

    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "ORDERWORKER_DATABASE_URL" in lines[0]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("variable", "value"),
    [("ORDERWORKER_WORKER__CONCURRENCY", "abc"), ("ORDERWORKER_DATABASE_URL", "mysql://x")],
)
async def test_worker_stops_on_an_invalid_setting_with_one_line_naming_it(
    settings: Settings, variable: str, value: str
) -> None:
    result = await cli(settings, "worker", **{variable: value})

    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert variable in lines[0]
    if variable.endswith("_URL"):
        assert value not in result.stderr  # URLs are secrets: never echoed


async def test_worker_burst_drains_the_queue_and_exits(
    settings: Settings,
    seeded: None,
    client: OrderClient,
    redis: Redis,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    job_ids = [await client.compute_order_total(order_id) for order_id in (1, 2, 3)]
    place_job = await client.place_order(1, [{"item_id": 3, "quantity": 2}])
    job_ids.append(place_job)

    result = await cli(settings, "worker", "--burst")

    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert await redis.zcard(settings.queue_name) == 0
    outcomes = await client.outcomes(job_ids)
    assert all(outcomes[job_id].success for job_id in job_ids), outcomes
    placed = outcomes[place_job].result
    assert placed["total"] == "21.00"
    async with sessionmaker() as session:
        rows = await session.execute(text("SELECT order_id, total FROM order_totals"))
        stored = {int(order_id): Decimal(total) for order_id, total in rows}
    expected = {1: "30.00", 2: "12.00", 3: "0.00", placed["order_id"]: "21.00"}
    assert stored == {order_id: Decimal(total) for order_id, total in expected.items()}


async def test_worker_process_exits_cleanly_on_sigterm(
    settings: Settings,
    seeded: None,
    client: OrderClient,
    redis: Redis,
    worker_processes: Callable[..., subprocess.Popen[str]],
) -> None:
    process = worker_processes()
    outcome = await client.wait(await client.compute_order_total(1), 30)
    assert outcome.success, outcome.result
    await poll_until(replica_count_is(redis, settings.queue_name, 1), "the replica heartbeat")

    process.send_signal(signal.SIGTERM)
    stdout, stderr = await asyncio.to_thread(process.communicate, timeout=30)

    assert process.returncode == 0, stderr
    assert "Traceback" not in stdout + stderr
    assert "worker.stopped" in stderr
    assert await live_replicas(redis, settings.queue_name) == []  # its key is deleted on stop


# ---------------------------------------------------------------- dead letters


async def test_failed_job_is_listed_and_a_retry_replays_it_once_fixed(
    settings: Settings,
    seeded: None,
    client: OrderClient,
    start_worker: StartWorker,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    await start_worker()
    job_id = await client.place_order(99, [{"item_id": 1, "quantity": 2}])
    outcome = await client.wait(job_id, 30)
    assert not outcome.success
    assert outcome.result["code"] == "unknown_customer"

    listed = await cli(settings, "jobs", "failed", "--json")

    assert listed.returncode == 0, listed.stderr
    [failure] = json.loads(listed.stdout)["failed"]
    assert failure["job_id"] == job_id
    assert failure["function"] == "place_order"
    assert failure["error"]["code"] == "unknown_customer"
    assert failure["tries"] == 1  # bad input is never retried

    async with sessionmaker.begin() as session:
        await session.execute(
            text("INSERT INTO customer (id, name, address_id) VALUES (99, 'Dana', 1)")
        )
    retried = await cli(settings, "jobs", "retry", job_id)

    assert retried.returncode == 0, retried.stderr
    assert "1 jobs enqueued again" in retried.stdout

    async def order_placed() -> bool:
        count = await scalar(sessionmaker, "SELECT count(*) FROM orders WHERE customer_id = 99")
        return count == 1

    await poll_until(order_placed, "the replayed order")
    assert await scalar(sessionmaker, "SELECT count(*) FROM failed_jobs") == 0


async def test_jobs_purge_removes_records_older_than_the_cutoff(
    settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    async with sessionmaker.begin() as session:
        await session.execute(
            text(
                "INSERT INTO failed_jobs (job_id, function, queue_name, payload, error_code,"
                " error_message, tries, first_failed_at, last_failed_at) VALUES"
                " ('old', 'place_order', 'q', NULL, 'unknown_item', 'x', 1,"
                "  now() - interval '3 days', now() - interval '3 days'),"
                " ('recent', 'place_order', 'q', NULL, 'unknown_item', 'x', 1, now(), now())"
            )
        )

    older = await cli(settings, "jobs", "purge", "--older-than-days", "1")

    assert older.returncode == 0, older.stderr
    assert "1 failed-job records purged" in older.stdout
    assert await scalar(sessionmaker, "SELECT string_agg(job_id, ',') FROM failed_jobs") == "recent"

    everything = await cli(settings, "jobs", "purge", "--older-than-days", "0")

    assert everything.returncode == 0, everything.stderr
    assert "1 failed-job records purged" in everything.stdout
    assert await scalar(sessionmaker, "SELECT count(*) FROM failed_jobs") == 0


@pytest.mark.parametrize(
    "args",
    [("health",), ("totals", "1", "2"), ("order", "place", "--customer", "1", "--item", "1:1")],
)
async def test_an_unreachable_redis_is_one_line_and_exit_1(
    settings: Settings, args: tuple[str, ...]
) -> None:
    port = free_port()  # nothing listens there
    result = await cli(
        settings, *args, ORDERWORKER_REDIS_URL=f"redis://:hunter2@127.0.0.1:{port}/0"
    )
    assert result.returncode == 1, result.stderr
    refused = f"orderworker: redis_unavailable: Redis at 127.0.0.1:{port} refused the connection"
    if args[0] == "order":  # its key comes first, and the line says how to retry with it
        announced, failed = result.stderr.splitlines()
        key = announced.removeprefix("idempotency key ")
        assert failed.startswith(refused + "; if it was queued it still runs: to retry safely")
        assert failed.endswith(f"--idempotency-key {key}")
    else:
        assert result.stderr == refused + "\n"
