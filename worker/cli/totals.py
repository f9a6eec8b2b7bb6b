"""`orderworker totals`: batch totals as chunk jobs, with progress and a summary."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from db.order_ids import largest_order_id, order_id_pages
from jobs.batches import BatchRun, BatchSummary, chunked
from worker.cli.chunk_limits import check_chunk_size, check_chunk_size_for_ids_up_to
from worker.cli.exits import EXIT_FAILED, UsageError, reports_errors
from worker.cli.numbers import ascii_int
from worker.cli.resources import database, producer
from worker.cli.runtime import configured, run_async
from worker.settings import Settings

MAX_ORDER_ID = 2**63 - 1  # orders.id is a bigint
INVALID_INPUT = "invalid_input"  # the ids given are not order ids


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
        message = f"{out_of_range[0]} is not an order id (1 to {MAX_ORDER_ID})"
        raise UsageError(message, INVALID_INPUT)
    return ids


def read_ids(source: str) -> list[int]:
    """Ids separated by newlines, spaces or commas, in ASCII digits, from UTF-8 text."""
    try:
        data = sys.stdin.buffer.read() if source == "-" else Path(source).read_bytes()
        text_in = data.decode("utf-8")
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
                message = f"--file {source}, line {number}: {token!r} is not an order id"
                raise UsageError(message, INVALID_INPUT)
            ids.append(order_id)
    return ids


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
    summary = run_async(
        run_batch(
            settings,
            ids=ids,
            chunk_size=chunk_size,
            wait=not no_wait,
            show_progress=sys.stderr.isatty() and not no_wait,
            timeout_s=timeout,
        )
    )
    if no_wait:
        submitted = f"batch {summary.batch_id}: {summary.requested} orders in {summary.jobs} jobs"
        typer.echo(f"{submitted} submitted", err=as_json)
    if as_json:
        typer.echo(json.dumps(summary.as_json()))
    elif not no_wait:
        typer.echo(describe_batch(summary))
    if not summary.ok:
        raise typer.Exit(EXIT_FAILED)


submit_ids = configured(database=False, redis=True)(submit_and_report)
submit_every_order = configured(database=True, redis=True)(submit_and_report)  # pages ids from it


async def run_batch(
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
                largest = await largest_order_id(engine)
                if largest is not None:  # checked before the first page is enqueued
                    cap = settings.worker.max_payload_bytes
                    check_chunk_size_for_ids_up_to(largest, chunk_size, cap)
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
