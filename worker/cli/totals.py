"""`orderworker totals`: batch totals as chunk jobs, with progress and a summary."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any

import typer

from db.batches import BatchStatus, batch_status
from db.engine import create_sessionmaker
from db.order_ids import largest_order_id, order_id_pages
from jobs.batches import LOST, BatchRun, BatchSummary, ResultsUnreachableError, chunked
from jobs.client import OrderClient, new_batch_id
from jobs.connection import REDIS_ERRORS
from worker import health as heartbeats
from worker.cli.chunk_limits import check_chunk_size, check_chunk_size_for_ids_up_to
from worker.cli.exits import EXIT_FAILED, EXIT_INTERRUPTED, UsageError, fail, reports_errors
from worker.cli.numbers import ascii_int, cut_short, quoted
from worker.cli.resources import database, producer
from worker.cli.runtime import configured, run_async
from worker.cli.totals_lines import chunk_name, describe_batch, describe_lost, progress_bar
from worker.settings import Settings

MAX_ORDER_ID = 2**63 - 1  # orders.id is a bigint
INVALID_INPUT = "invalid_input"  # the ids given are not order ids
REDIS_UNREACHABLE_S = 30.0  # a wait gives up after Redis has been unreachable this long
REPLICA_CHECK_S = 5.0  # how often a wait looks for live replicas until it has warned once


@reports_errors
def totals(
    order_ids: Annotated[
        list[int] | None, typer.Argument(help="Order ids.", show_default=False)
    ] = None,
    file: Annotated[
        str | None, typer.Option("--file", help="Read ids from PATH, or '-' for stdin.")
    ] = None,
    all_orders: Annotated[bool, typer.Option("--all", help="Every order, paged by id.")] = False,
    chunk_size: Annotated[int | None, typer.Option(min=1, max=100_000, help="Ids per job.")] = None,
    no_wait: Annotated[bool, typer.Option("--no-wait", help="Submit and exit.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object on stdout.")] = False,
    timeout: Annotated[
        float | None, typer.Option(min=0.1, help="Give up waiting after this many seconds.")
    ] = None,
) -> None:
    """Submit batch totals as chunk jobs, show progress (stderr, TTY only), print a summary."""
    ids = requested_ids(order_ids, file, all_orders)
    # The input is checked before the settings are: bad input is reported first.
    if all_orders:
        submit_every_order(None, chunk_size, no_wait, as_json, timeout)
    else:
        submit_ids(ids, chunk_size, no_wait, as_json, timeout)


def requested_ids(order_ids: list[int] | None, file: str | None, all_orders: bool) -> list[int]:
    sources = sum([bool(order_ids), file is not None, all_orders])
    if sources != 1:
        raise UsageError("give order ids, --file PATH|- or --all (exactly one)")
    ids = list(order_ids or [])
    if file is not None:
        ids = read_ids(file)
        if not ids:
            raise UsageError(f"--file {file}: no order ids in it")
    ids = list(dict.fromkeys(ids))  # a repeated id is one order to total, counted once
    out_of_range = [order_id for order_id in ids if not 1 <= order_id <= MAX_ORDER_ID]
    if out_of_range:
        message = f"{cut_short(str(out_of_range[0]))} is not an order id (1 to {MAX_ORDER_ID})"
        raise UsageError(message, INVALID_INPUT)
    return ids


def read_ids(source: str) -> list[int]:
    """Ids separated by newlines, spaces or commas, in ASCII digits, from UTF-8 text."""
    try:
        data = sys.stdin.buffer.read() if source == "-" else Path(source).read_bytes()
        text_in = data.decode("utf-8-sig")  # a byte-order mark, as Windows editors write, is no id
    except OSError as error:
        raise UsageError(f"--file {source}: {error.strerror}", INVALID_INPUT) from None
    except UnicodeDecodeError as error:
        where = f"byte 0x{data[error.start]:02x} at offset {error.start}"
        raise UsageError(f"--file {source}: not UTF-8 text ({where})", INVALID_INPUT) from None
    ids = []
    for number, line in enumerate(text_in.splitlines(), start=1):
        for token in line.replace(",", " ").split():
            order_id = ascii_int(token)
            if order_id is None or order_id < 1:
                message = f"--file {source}, line {number}: {quoted(token)} is not an order id"
                raise UsageError(message, INVALID_INPUT)
            ids.append(order_id)
    return ids


@dataclass(slots=True)
class Submission:
    """What an interrupted `totals` can still say: its batch id, and what it had submitted."""

    batch_id: str = field(default_factory=new_batch_id)
    run: BatchRun | None = None

    def interrupted(self) -> str:
        if self.run is None or not self.run.summary.jobs:
            return f"before batch {self.batch_id} was submitted: nothing was enqueued"
        summary = self.run.summary
        return (
            f"batch {self.batch_id} ({summary.requested} orders in {summary.jobs}"
            f" jobs) keeps running; follow it with: {follow_up(self.batch_id)}"
        )


def submit_and_report(
    settings: Settings,
    ids: list[int] | None,
    chunk_size: int | None,
    no_wait: bool,
    as_json: bool,
    timeout: float | None,
) -> None:
    chunk_size = chunk_size or settings.totals.chunk_size
    if ids is not None:
        check_chunk_size(ids, chunk_size, settings.worker.max_payload_bytes)
    submission = Submission()
    try:
        summary = run_async(
            run_batch(
                settings,
                ids=ids,
                chunk_size=chunk_size,
                wait=not no_wait,
                show_progress=sys.stderr.isatty() and not no_wait,
                timeout_s=timeout,
                submission=submission,
            )
        )
    except KeyboardInterrupt:
        fail(submission.interrupted(), EXIT_INTERRUPTED, fields={"batch_id": submission.batch_id})
    except ResultsUnreachableError as error:
        follow = follow_up(submission.batch_id)
        message = f"{error}; it runs on: follow it with: {follow}"
        fail(message, EXIT_FAILED, "redis_unavailable", {"batch_id": submission.batch_id})
    if no_wait:
        submitted = f"batch {summary.batch_id}: {summary.requested} orders in {summary.jobs} jobs"
        follow = follow_up(summary.batch_id)
        typer.echo(f"{submitted} submitted; follow it with: {follow}", err=as_json)
    elif lost := [failure for failure in summary.failed if failure["error"]["code"] == LOST]:
        lost_chunks = describe_lost(summary.batch_id, len(lost), chunk_name(lost[0]))
        typer.echo(f"orderworker: warning: {lost_chunks}", err=True)
    elif summary.state in ("queued", "running"):  # the wait ran out: the batch runs on
        within = "" if timeout is None else f" within {timeout:g}s"
        typer.echo(
            f"orderworker: timeout: batch {summary.batch_id} not done{within}; it runs on:"
            f" follow it with: {follow_up(summary.batch_id)}",
            err=True,
        )
    if as_json:
        typer.echo(json.dumps(summary.as_json()))
    elif not no_wait:
        typer.echo(describe_batch(summary))
    if not summary.ok:
        raise typer.Exit(EXIT_FAILED)


# The batch is recorded in the database; --all also pages its ids from it.
submit_ids = submit_every_order = configured(database=True, redis=True)(submit_and_report)


async def run_batch(
    settings: Settings,
    *,
    ids: list[int] | None,
    chunk_size: int,
    wait: bool,
    show_progress: bool,
    timeout_s: float | None,
    submission: Submission | None = None,
) -> BatchSummary:
    """`ids=None` means every order, paged from the database by keyset. The summary's figures
    are the batch's record in PostgreSQL, plus the chunks a wait gave up on."""
    submission = submission or Submission()
    async with producer(settings) as client, database(settings) as engine:
        sessions = create_sessionmaker(engine)
        run = submission.run = BatchRun(client, submission.batch_id, sessions)
        if ids is None:
            largest = await largest_order_id(engine)
            if largest is not None:  # checked before the first page is enqueued
                cap = settings.worker.max_payload_bytes
                check_chunk_size_for_ids_up_to(largest, chunk_size, cap)
            await run.submit_pages(order_id_pages(engine, chunk_size))
        else:
            await run.submit_chunks(chunked(ids, chunk_size))
        if wait:
            async with warn_without_replicas(client):
                await wait_for(run, show_progress, timeout_s)
        async with sessions() as session:
            recorded = await batch_status(session, run.summary.batch_id)
    return with_record(run.summary, recorded)


async def wait_for(run: BatchRun, show_progress: bool, timeout_s: float | None) -> None:
    if show_progress:
        with progress_bar(run.summary.requested) as update:
            await run.wait(update, timeout_s, REDIS_UNREACHABLE_S)
    else:
        await run.wait(None, timeout_s, REDIS_UNREACHABLE_S)


@asynccontextmanager
async def warn_without_replicas(client: OrderClient) -> AsyncIterator[None]:
    """While waiting: one line on stderr if no live replica reports, since then nothing runs."""

    async def watch() -> None:
        while True:
            with contextlib.suppress(*REDIS_ERRORS):
                if not await heartbeats.live_replicas(client.redis, client.queue_name):
                    typer.echo(
                        f"orderworker: warning: no live worker replica is reporting on queue "
                        f"{client.queue_name}; the batch waits until one starts",
                        err=True,
                    )
                    return
            await asyncio.sleep(REPLICA_CHECK_S)

    task = asyncio.create_task(watch())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def with_record(summary: BatchSummary, recorded: BatchStatus | None) -> BatchSummary:
    """The summary as recorded in PostgreSQL, keeping failures only this wait saw (chunks it
    gave up on, or whose failure could not be recorded)."""
    if recorded is None:  # recorded before anything was enqueued: only if the record was lost
        return summary
    known = [without_error(failure) for failure in recorded.failed]
    seen_here = [failure for failure in summary.failed if without_error(failure) not in known]
    return replace(
        summary,
        state=recorded.state,
        requested=recorded.requested,
        computed=recorded.computed,
        missing=recorded.missing,
        failed=recorded.failed + seen_here,
        total_sum=recorded.total_sum,
    )


def without_error(failure: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in failure.items() if key != "error"}


def follow_up(batch_id: str) -> str:
    return f"orderworker totals status {batch_id} --wait"
