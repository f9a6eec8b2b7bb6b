"""What the CLI commands do, as coroutines over explicit resources (no globals)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy.ext.asyncio import AsyncEngine

from db import failed_jobs
from db import seed as sample
from db.engine import create_engine, create_sessionmaker
from db.models import FailedJob
from db.order_ids import order_id_pages
from db.schema import current_revision
from jobs.client import JobOutcome, JobRequest, OrderClient
from jobs.connection import redis_settings_from_url
from worker import health
from jobs.batches import BatchRun, BatchSummary, chunked
from worker.settings import Settings

RETRY_PAGE = 500


@asynccontextmanager
async def database(settings: Settings) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(
        settings.database_dsn(),
        pool_size=2,
        statement_cache_size=settings.database.statement_cache_size,
        connect_timeout_s=settings.database.connect_timeout_s,
        application_name="orderworker-cli",
    )
    try:
        yield engine
    finally:
        await engine.dispose()


@asynccontextmanager
async def producer(settings: Settings) -> AsyncIterator[OrderClient]:
    client = await OrderClient.connect(
        redis_settings_from_url(settings.redis_dsn(), conn_retries=2), settings.queue_name
    )
    try:
        yield client
    finally:
        await client.close()


async def upgrade(settings: Settings) -> str | None:
    from db.migrate import upgrade_to_head  # Alembic is heavy to import: only for this command

    async with database(settings) as engine:
        await upgrade_to_head(engine)
        return await current_revision(engine)


async def seed(settings: Settings, generated_orders: int) -> int:
    async with database(settings) as engine:
        async with create_sessionmaker(engine).begin() as session:
            await sample.load_sample(session)
            await sample.generate_orders(session, generated_orders)
        async with create_sessionmaker(engine)() as session:
            return await sample.count_orders(session)


async def place_order(
    settings: Settings,
    customer_id: int,
    items: list[dict[str, int]],
    idempotency_key: str | None,
    timeout_s: float,
) -> JobOutcome:
    async with producer(settings) as client:
        job_id = await client.place_order(customer_id, items, idempotency_key)
        return await client.wait(job_id, timeout_s)


async def totals(
    settings: Settings,
    *,
    ids: list[int] | None,
    chunk_size: int,
    wait: bool,
    show_progress: bool,
    timeout_s: float | None,
) -> BatchSummary:
    """`ids=None` means every order, paged from the database by keyset."""
    async with producer(settings) as client:
        run = BatchRun(client)
        if ids is None:
            async with database(settings) as engine:
                await run.submit_pages(order_id_pages(engine, chunk_size))
        else:
            await run.submit_chunks(chunked(ids, chunk_size))
        if wait:
            if show_progress:
                with progress_bar(run.summary.requested) as update:
                    await run.wait(update, timeout_s)
            else:
                await run.wait(None, timeout_s)
        return run.summary


class progress_bar:
    """A rich progress bar on stderr, advanced from batch summaries."""

    def __init__(self, requested: int) -> None:
        self.progress = Progress(
            TextColumn("totals"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("orders"),
            TimeElapsedColumn(),
            transient=False,
        )
        self.task = self.progress.add_task("totals", total=requested)

    def __enter__(self) -> Any:
        self.progress.start()

        def update(summary: BatchSummary) -> None:
            done = summary.computed + len(summary.missing)
            self.progress.update(self.task, completed=done)

        return update

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()


def describe_batch(summary: BatchSummary) -> str:
    rate = summary.computed / summary.elapsed_s if summary.elapsed_s else 0.0
    return (
        f"batch {summary.batch_id}: {summary.requested} requested, {summary.computed} computed, "
        f"{len(summary.missing)} missing, {len(summary.failed)} failed jobs, "
        f"total_sum {summary.total_sum:.2f} in {summary.elapsed_s:.2f}s ({rate:,.0f} orders/s)"
    )


async def replicas(settings: Settings) -> list[dict[str, Any]]:
    async with producer(settings) as client:
        return await health.live_replicas(client.redis, settings.queue_name)


# ---------------------------------------------------------------- dead letters


async def list_failed(settings: Settings, limit: int) -> list[dict[str, Any]]:
    async with database(settings) as engine, create_sessionmaker(engine)() as session:
        rows = await failed_jobs.list_failures(session, limit)
    return [
        {
            "job_id": row.job_id,
            "function": row.function,
            "error": {"code": row.error_code, "message": row.error_message},
            "tries": row.tries,
            "payload": row.payload,
            "first_failed_at": row.first_failed_at.isoformat(),
            "last_failed_at": row.last_failed_at.isoformat(),
        }
        for row in rows
    ]


async def retry_failed(settings: Settings, job_ids: list[str] | None) -> list[str]:
    """Enqueue dead letters again under their own job ids (so a job that did commit before it
    failed finds its own effects); payloads that were not decodable JSON cannot be replayed."""
    replayed: list[str] = []
    async with database(settings) as engine, producer(settings) as client:
        sessions = create_sessionmaker(engine)
        after = ""
        while True:
            async with sessions() as session:
                page = await failed_jobs.failures_after(session, after, RETRY_PAGE, job_ids)
            if not page:
                return replayed
            after = page[-1].job_id
            requests = [request for row in page if (request := _replay(row)) is not None]
            await client.enqueue_many(requests)
            async with sessions.begin() as session:
                await failed_jobs.remove_failures(session, [request.job_id for request in requests])
            replayed.extend(request.job_id for request in requests)


def _replay(row: FailedJob) -> JobRequest | None:
    try:
        kwargs = json.loads(row.payload or "")["k"]
    except (ValueError, KeyError, TypeError):
        return None
    return JobRequest(row.function, kwargs, row.job_id) if isinstance(kwargs, dict) else None


async def purge_failed(settings: Settings, older_than: timedelta) -> int:
    async with database(settings) as engine, create_sessionmaker(engine).begin() as session:
        return await failed_jobs.purge_failures(session, older_than)
