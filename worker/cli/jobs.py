"""`orderworker jobs`: failed jobs (dead letters): list, retry, purge."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import typer

from db import failed_jobs
from db.engine import create_sessionmaker
from db.models import FailedJob
from jobs.client import JobRequest
from jobs.errors import PERMANENT_CODES
from worker.cli.exits import EXIT_FAILED, UsageError, error_field, reports_errors
from worker.cli.resources import database, producer
from worker.cli.runtime import configured, run_async
from worker.settings import Settings

RETRY_PAGE = 500
IDS_SHOWN = 20  # a line names at most this many ids, then says how many more

jobs_app = typer.Typer(help="Failed jobs (dead letters): list, retry, purge.", no_args_is_help=True)

CodeOption = Annotated[
    list[str] | None,
    typer.Option("--code", help="Only failures with this error code; repeat for more."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="One JSON object on stdout.")]


@jobs_app.command("failed")
@reports_errors
@configured(database=True, redis=False)
def jobs_failed(
    settings: Settings,
    limit: Annotated[int, typer.Option(min=1, help="Most recent N.")] = 100,
    code: CodeOption = None,
    as_json: JsonOption = False,
) -> None:
    """List failed jobs, most recent first, after how many there are in all and since when."""
    listing = run_async(list_failed(settings, limit, code))
    if as_json:
        typer.echo(json.dumps(listing))
        return
    failures = listing["failed"]
    if not failures:
        with_codes = f" with code {', '.join(code)}" if code else ""
        typer.echo(f"no failed jobs{with_codes}", err=True)
        return
    shown = "" if len(failures) == listing["count"] else f"; the {len(failures)} most recent:"
    typer.echo(
        f"{listing['count']} failed jobs, first at {_when(listing['first_failed_at'])},"
        f" last at {_when(listing['last_failed_at'])}{shown}"
    )
    for failure in failures:
        error = failure["error"]
        first, last = _when(failure["first_failed_at"]), _when(failure["last_failed_at"])
        when = f"at {last}" if first == last else f"first {first}  last {last}"
        typer.echo(
            f"{failure['job_id']}  {failure['function']}  tries={failure['tries']}  {when}"
            f"  {error['code']}: {error['message']}"
        )


# One string, not a docstring: the help keeps a docstring's line breaks within a paragraph.
RETRY_HELP = (
    "Enqueue failed jobs again under their own job ids (a job that had committed its work before"
    " it failed finds it) and remove them from the failed list."
    "\n\n--all replays only failures a replay may cure: permanent ones (bad input:"
    f" {', '.join(sorted(PERMANENT_CODES))}) would fail the same way again, so they stay listed"
    " unless --include-permanent is given. Ids named on the command line are replayed whatever"
    " their code (say, once the missing customer exists)."
)


@jobs_app.command("retry", help=RETRY_HELP)
@reports_errors
def jobs_retry(
    job_ids: Annotated[list[str] | None, typer.Argument(help="Failed job ids.")] = None,
    all_jobs: Annotated[bool, typer.Option("--all", help="Every failed job.")] = False,
    code: CodeOption = None,
    include_permanent: Annotated[
        bool,
        typer.Option("--include-permanent", help="With --all: permanent failures (bad input) too."),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    if bool(job_ids) == all_jobs:
        raise UsageError("give failed job ids or --all (exactly one)")
    if job_ids and (code or include_permanent):
        raise UsageError("--code and --include-permanent go with --all; named ids are all replayed")
    named = list(dict.fromkeys(job_ids)) if job_ids else None
    # The input is checked before the settings are: bad input is reported first.
    retry_and_report(named, code, include_permanent, as_json)


@configured(database=True, redis=True)
def retry_and_report(
    settings: Settings,
    job_ids: list[str] | None,
    codes: list[str] | None,
    include_permanent: bool,
    as_json: bool,
) -> None:
    replay = run_async(retry_failed(settings, job_ids, codes, include_permanent))
    stuck = [skip["job_id"] for skip in replay.skipped if skip["reason"] == NO_PAYLOAD]
    failure = replay_failure(replay, stuck if job_ids else [])
    if as_json:
        typer.echo(json.dumps({**asdict(replay), **(error_field(*failure) if failure else {})}))
    else:
        typer.echo(f"{len(replay.replayed)} jobs enqueued again")
    permanent = Counter(skip["code"] for skip in replay.skipped if skip["reason"] == PERMANENT)
    if permanent:
        by_code = ", ".join(f"{code} {count}" for code, count in sorted(permanent.items()))
        typer.echo(
            f"skipped {permanent.total()} permanent failures ({by_code}): a replay would fail the"
            " same way; --include-permanent replays them",
            err=True,
        )
    if stuck and not job_ids:  # --all: a note; for named ids, part of the failure below
        typer.echo(f"skipped, no replayable payload: {_listed(stuck)}", err=True)
    if failure:
        typer.echo(f"orderworker: {failure[0]}: {failure[1]}", err=True)
        raise typer.Exit(EXIT_FAILED)


def replay_failure(replay: Replay, named_stuck: list[str]) -> tuple[str, str] | None:
    """Why a retry failed (exit 1), as code and message: ids that are not failed jobs, or named
    failures with nothing to replay."""
    problems = []
    if replay.unknown:
        problems.append(f"some ids were not failed jobs: {_listed(replay.unknown)}")
    if named_stuck:
        problems.append(f"skipped, no replayable payload: {_listed(named_stuck)}")
    if not problems:
        return None
    return (UNKNOWN_JOB if replay.unknown else NO_PAYLOAD), "; ".join(problems)


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


async def list_failed(settings: Settings, limit: int, codes: list[str] | None) -> dict[str, Any]:
    async with database(settings) as engine, create_sessionmaker(engine)() as session:
        rows = await failed_jobs.list_failures(session, limit, codes=codes)
        summary = await failed_jobs.summarise_failures(session, codes)
    return {
        "failed": [
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
        ],
        "count": summary.count,
        "first_failed_at": _isoformat(summary.first_failed_at),
        "last_failed_at": _isoformat(summary.last_failed_at),
    }


PERMANENT = "permanent"
NO_PAYLOAD = "no_replayable_payload"
UNKNOWN_JOB = "unknown_job"  # a named id is no failed job's


@dataclass
class Replay:
    """What a retry did: ids enqueued again, failures left in place (and why), unknown ids."""

    replayed: list[str] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)

    def choose(self, page: list[FailedJob], include_permanent: bool) -> list[JobRequest]:
        chosen = []
        for row in page:
            request = _replay(row)
            if not include_permanent and row.error_code in PERMANENT_CODES:
                self.skipped.append(_skip(row, PERMANENT))
            elif request is None:
                self.skipped.append(_skip(row, NO_PAYLOAD))
            else:
                chosen.append(request)
        return chosen


async def retry_failed(
    settings: Settings,
    job_ids: list[str] | None,
    codes: list[str] | None = None,
    include_permanent: bool = False,
) -> Replay:
    """Enqueue dead letters again under their own job ids (so a job that did commit before it
    failed finds its own effects); payloads that were not decodable JSON cannot be replayed."""
    replay = Replay()
    async with database(settings) as engine, producer(settings) as client:
        sessions = create_sessionmaker(engine)
        after = ""
        while True:
            async with sessions() as session:
                page = await failed_jobs.failures_after(session, after, RETRY_PAGE, job_ids, codes)
            if not page:
                break
            after = page[-1].job_id
            requests = replay.choose(page, include_permanent or job_ids is not None)
            await client.enqueue_many(requests)
            replayed = {request.job_id for request in requests}
            async with sessions.begin() as session:
                await failed_jobs.remove_replayed(
                    session, [row for row in page if row.job_id in replayed]
                )
            replay.replayed.extend(request.job_id for request in requests)
    if job_ids is not None:
        seen = {*replay.replayed, *(skip["job_id"] for skip in replay.skipped)}
        replay.unknown = [job_id for job_id in job_ids if job_id not in seen]
    return replay


def _replay(row: FailedJob) -> JobRequest | None:
    try:
        kwargs = json.loads(row.payload or "")["k"]
    except (ValueError, KeyError, TypeError):
        return None
    return JobRequest(row.function, kwargs, row.job_id) if isinstance(kwargs, dict) else None


def _skip(row: FailedJob, reason: str) -> dict[str, str]:
    return {"job_id": row.job_id, "code": row.error_code, "reason": reason}


def _listed(job_ids: list[str]) -> str:
    more = len(job_ids) - IDS_SHOWN
    return ", ".join(job_ids[:IDS_SHOWN]) + (f" and {more} more" if more > 0 else "")


def _isoformat(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _when(isoformat: str) -> str:
    """A listed time for people: UTC to the second."""
    return datetime.fromisoformat(isoformat).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


async def purge_failed(settings: Settings, older_than: timedelta) -> int:
    async with database(settings) as engine, create_sessionmaker(engine).begin() as session:
        return await failed_jobs.purge_failures(session, older_than)
