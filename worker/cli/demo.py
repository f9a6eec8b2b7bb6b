"""`orderworker demo`: the whole pipeline end to end, on a private local stack by default."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Annotated

import typer
from pydantic import SecretStr
from sqlalchemy import text

from worker.cli.db import seed, upgrade
from worker.cli.exits import UsageError, reports_errors
from worker.cli.health_checks import live_replicas
from worker.cli.resources import database, producer
from worker.cli.runtime import configured, run_async
from worker.cli.totals import run_batch
from worker.cli.totals_lines import describe_batch
from worker.harness.replicas import Replica, replica_env, stop_all
from worker.harness.servers import LocalStack, missing_server_packages, state_dir
from worker.settings import Settings

WORKERS = 2
STARTUP_TIMEOUT_S = 30.0
SAMPLE_TOTALS = {1: Decimal("30.00"), 2: Decimal("12.00"), 3: Decimal("0.00")}


def say(message: str) -> None:
    typer.echo(message)


@contextmanager
def stack_for(settings: Settings) -> Iterator[Settings]:
    if settings.database_url is not None and settings.redis_url is not None:
        say("using the configured PostgreSQL and Redis")
        yield settings
        return
    missing = missing_server_packages()
    if missing:
        raise UsageError(
            f"no local stack here ({' and '.join(missing)}: development dependencies, installed "
            "by `uv sync`): set ORDERWORKER_DATABASE_URL and ORDERWORKER_REDIS_URL to run the "
            "demo on your own servers"
        )
    stack = LocalStack(name="demo")
    stack.wipe()  # a fresh database on every run, so the figures are the same each time
    started = time.monotonic()
    with stack as urls:
        elapsed = time.monotonic() - started
        say(f"local stack: private PostgreSQL and Redis started in {elapsed:.1f}s")
        yield settings.model_copy(
            update={
                "database_url": SecretStr(urls.database_url),
                "redis_url": SecretStr(urls.redis_url),
            }
        )


@contextmanager
def worker_processes(
    settings: Settings, count: int, log_dir: Path
) -> Iterator[list[subprocess.Popen[bytes]]]:
    env = replica_env(settings.database_dsn(), settings.redis_dsn(), settings.queue_name)
    replicas = [
        Replica.spawn(env, log_dir / f"worker-{number}.log") for number in range(1, count + 1)
    ]
    try:
        yield [replica.process for replica in replicas]
    finally:
        stop_all(replicas, settings.worker.shutdown_grace_s + 10)


async def wait_for_replicas(settings: Settings, count: int) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while len(await live_replicas(settings)) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"{count} worker replicas did not report within {STARTUP_TIMEOUT_S:g}s"
            )
        await asyncio.sleep(0.1)


ALEX_BASKET = [{"item_id": 1, "quantity": 2}, {"item_id": 3, "quantity": 1}]  # 2 Milk, 1 Bread


async def sample_jobs(settings: Settings) -> bool:
    """A few single jobs through the queue: sample totals, idempotent placement, bad input."""
    ok = True
    async with producer(settings) as client:
        for order_id, expected in SAMPLE_TOTALS.items():
            outcome = await client.wait(await client.compute_order_total(order_id), 30)
            got = Decimal(outcome.result["total"]) if outcome.success else None
            ok &= got == expected
            say(f"compute_order_total({order_id}) -> {got} (expected {expected})")
        placed = [
            await client.wait(await client.place_order(1, ALEX_BASKET, "demo-order-1"), 30)
            for _ in range(2)
        ]
        ok &= placed[0].success and placed[1].result == placed[0].result
        say(f"place_order(Alex: 2 Milk, 1 Bread) -> {placed[0].result}")
        say(f"place_order again, same idempotency key -> {placed[1].result}")
        bad = await client.wait(await client.place_order(999_999, ALEX_BASKET), 30)
        ok &= not bad.success and bad.result.get("code") == "unknown_customer"
        say(
            f"place_order(customer 999999) -> {bad.result.get('code')}: {bad.result.get('message')}"
        )
    return ok


async def batch_of_everything(settings: Settings) -> bool:
    say("batch totals over every order (the code path of `orderworker totals --all`):")
    summary = await run_batch(
        settings,
        ids=None,
        chunk_size=settings.totals.chunk_size,
        wait=True,
        show_progress=sys.stderr.isatty(),
        timeout_s=120,
    )
    say(describe_batch(summary))
    async with database(settings) as engine, engine.connect() as connection:
        query = text("SELECT count(*), SUM(total) FROM order_totals")
        rows, total_sum = (await connection.execute(query)).one()
    matches = rows == summary.computed and Decimal(total_sum) == summary.total_sum
    verdict = "matches" if matches else "DOES NOT MATCH"
    say(f"order_totals: {rows} rows, sum {total_sum} ({verdict} the batch)")
    return matches and summary.ok and summary.computed == summary.requested


async def pipeline(settings: Settings, generated: int) -> bool:
    revision = await upgrade(settings)
    say(f"migrations applied (revision {revision})")
    started = time.monotonic()
    orders = await seed(settings, generated)
    elapsed = time.monotonic() - started
    say(
        f"seeded the sample data + {generated} generated orders ({orders} in all) in {elapsed:.1f}s"
    )
    await wait_for_replicas(settings, WORKERS)
    say(f"{WORKERS} worker replicas reporting")
    jobs_ok = await sample_jobs(settings)
    return await batch_of_everything(settings) and jobs_ok


def run_demo(settings: Settings, generated_orders: int) -> int:
    # The demo prints its own story; migration chatter stays out of it.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    started = time.monotonic()
    with stack_for(settings) as live:
        log_dir = state_dir() / "demo-logs"
        with worker_processes(live, WORKERS, log_dir) as workers:
            ok = run_async(pipeline(live, generated_orders))
        codes = [worker.returncode for worker in workers]
        say(f"workers stopped with SIGTERM, exit codes {codes} (logs in {log_dir})")
        ok &= all(code == 0 for code in codes)
    say(f"demo {'succeeded' if ok else 'FAILED'} in {time.monotonic() - started:.1f}s")
    return 0 if ok else 1


@reports_errors
@configured(database=False, redis=False)
def demo(
    settings: Settings,
    orders: Annotated[int, typer.Option(min=0, help="Generated orders to total.")] = 10_000,
) -> None:
    """The whole pipeline end to end, on a private local stack unless URLs are configured."""
    raise typer.Exit(run_demo(settings, orders))
