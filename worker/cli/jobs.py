"""`orderworker jobs`: failed jobs (dead letters): list, retry, purge."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Annotated, Any

import typer

from db import failed_jobs
from db.engine import create_sessionmaker
from db.models import FailedJob
from jobs.client import JobRequest
from worker.cli.exits import EXIT_FAILED, UsageError, reports_errors
from worker.cli.resources import database, producer
from worker.cli.runtime import configured, run_async
from worker.settings import Settings

RETRY_PAGE = 500

jobs_app = typer.Typer(help="Failed jobs (dead letters): list, retry, purge.", no_args_is_help=True)


@jobs_app.command("failed")
@reports_errors
@configured(database=True, redis=False)
def jobs_failed(
    settings: Settings,
    limit: Annotated[int, typer.Option(min=1, help="Most recent N.")] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object on stdout.")] = False,
) -> None:
    """List failed jobs, most recent first."""
    failures = run_async(list_failed(settings, limit))
    if as_json:
        typer.echo(json.dumps({"failed": failures}))
        return
    for failure in failures:
        error = failure["error"]
        typer.echo(
            f"{failure['job_id']}  {failure['function']}  tries={failure['tries']}  "
            f"{error['code']}: {error['message']}"
        )
    if not failures:
        typer.echo("no failed jobs", err=True)


@jobs_app.command("retry")
@reports_errors
def jobs_retry(
    job_ids: Annotated[list[str] | None, typer.Argument(help="Failed job ids.")] = None,
    all_jobs: Annotated[bool, typer.Option("--all", help="Every failed job.")] = False,
) -> None:
    """Enqueue failed jobs again (under new job ids) and remove them from the failed list."""
    if bool(job_ids) == all_jobs:
        raise UsageError("give failed job ids or --all (exactly one)")
    # The input is checked before the settings are: bad input is reported first.
    retry_and_report(None if all_jobs else job_ids)


@configured(database=True, redis=True)
def retry_and_report(settings: Settings, job_ids: list[str] | None) -> None:
    requeued = run_async(retry_failed(settings, job_ids))
    typer.echo(f"{len(requeued)} jobs enqueued again")
    if job_ids and len(requeued) < len(job_ids):
        typer.echo("some ids were not failed jobs, or had no replayable payload", err=True)
        raise typer.Exit(EXIT_FAILED)


@jobs_app.command("purge")
@reports_errors
@configured(database=True, redis=False)
def jobs_purge(
    settings: Settings,
    older_than_days: Annotated[float, typer.Option(min=0, help="Age in days.")] = 30.0,
) -> None:
    """Delete failed-job records older than N days."""
    removed = run_async(purge_failed(settings, timedelta(days=older_than_days)))
    typer.echo(f"{removed} failed-job records purged")


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
